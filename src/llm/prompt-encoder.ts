/**
 * The listener's copy of an LLM servable's tokenizer and chat template, built once per servable
 * version at load from the same files the replica's engine reads (tokenizer.ts finds them next to
 * the model or in `tokenizerDir`), so validation tokenizes in the listener as TGI's router does.
 */
import { dirname } from 'node:path'
import { ChatTemplate } from './chat-template.ts'
import { loadTokenizer } from './tokenizer.ts'
import { detectToolParser, type ToolParserName } from './tool-calls.ts'
import type { PromptEncoder } from './validate.ts'

/** Where load-time warnings go (one line each); default stderr. */
export type LoadLog = (line: string) => void

const stderrLine: LoadLog = (line) => { process.stderr.write(line + '\n') }

/**
 * Loads the tokenizer and compiles the chat template; CONFIG_INVALID when the template does not
 * parse. Warns once (naming the folder) when the model has no chat template and the default is used.
 * `toolParser`: declareLlm's choice; absent, the template's tool format decides (tool-calls.ts).
 */
export async function loadPromptEncoder(modelPath: string, tokenizerDir?: string, log: LoadLog = stderrLine, toolParser?: ToolParserName): Promise<PromptEncoder> {
  const tokenizer = await loadTokenizer(modelPath, tokenizerDir)
  const chatTemplate = new ChatTemplate(tokenizer.config)
  if (chatTemplate.isDefault) {
    const dir = tokenizer.source?.dir ?? tokenizerDir ?? dirname(modelPath)
    const looked = 'chat_template.jinja, chat_template.json or "chat_template" in tokenizer_config.json'
    log(`ms-serve: warning: model ${modelPath}: no chat template in ${dir} (${looked}); /v1/chat/completions renders with ms-serve's default template, which the model was not trained on`)
  }
  return { tokenizer, chatTemplate, toolParser: toolParser ?? detectToolParser(chatTemplate.sources) }
}
