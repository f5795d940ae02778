/**
 * The listener's copy of an LLM servable's tokenizer and chat template, built once per servable
 * version at load from the same files the replica's engine reads (tokenizer.ts finds them next to
 * the model or in `tokenizerDir`), so validation tokenizes in the listener as TGI's router does.
 */
import { ChatTemplate } from './chat-template.ts'
import { loadTokenizer } from './tokenizer.ts'
import type { PromptEncoder } from './validate.ts'

/** Loads the tokenizer and compiles the chat template; CONFIG_INVALID when the template does not parse. */
export async function loadPromptEncoder(modelPath: string, tokenizerDir?: string): Promise<PromptEncoder> {
  const tokenizer = await loadTokenizer(modelPath, tokenizerDir)
  return { tokenizer, chatTemplate: new ChatTemplate(tokenizer.config) }
}
