/**
 * Chat prompt rendering for the OpenAI chat route: the tokenizer_config.json `chat_template`
 * (a Jinja string, or a list of named templates of which "default" is used) rendered with
 * @huggingface/jinja, or a simple ChatML-like default when the model ships none.
 */
import { Template } from '@huggingface/jinja'
import { ServeError } from '../errors.ts'
import { tokenString } from './tokenizer.ts'

/** One chat message (text content only; content parts are joined by the route layer). */
export interface ChatMessage { role: string; content: string }

/** Used when tokenizer_config.json has no chat_template. */
export const DEFAULT_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"

/** A compiled chat template bound to the tokenizer's special token strings. */
export class ChatTemplate {
  private readonly template: Template
  readonly source: string
  readonly isDefault: boolean

  constructor(private readonly tokenizerConfig: Record<string, unknown>) {
    let src = tokenizerConfig.chat_template
    if (Array.isArray(src)) {
      const named = src as Array<{ name?: string; template?: string }>
      src = (named.find((t) => t.name === 'default') ?? named[0])?.template
    }
    this.isDefault = typeof src !== 'string' || src.length === 0
    this.source = this.isDefault ? DEFAULT_CHAT_TEMPLATE : (src as string)
    try {
      this.template = new Template(this.source)
    } catch (e) {
      throw new ServeError('CONFIG_INVALID', `chat_template does not parse: ${(e as Error).message}`, { cause: e })
    }
  }

  /** Renders the prompt; template errors are VALIDATION (TGI reports them as 422 template_error). */
  render(messages: readonly ChatMessage[], addGenerationPrompt = true, extra: Record<string, unknown> = {}): string {
    try {
      return this.template.render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: tokenString(this.tokenizerConfig.bos_token) ?? '',
        eos_token: tokenString(this.tokenizerConfig.eos_token) ?? '',
        ...extra,
      })
    } catch (e) {
      throw new ServeError('VALIDATION', `Template error: ${(e as Error).message}`, { cause: e, details: { errorType: 'template_error' } })
    }
  }
}
