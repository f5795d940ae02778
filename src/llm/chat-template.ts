/**
 * Chat prompt rendering for the OpenAI chat route, as transformers' apply_chat_template does it:
 * the model's chat template (tokenizer.ts resolves it from chat_template.jinja, chat_template.json or
 * tokenizer_config.json into `config.chat_template`: one template, or named ones of which "tool_use"
 * is picked when tools are passed and "default" otherwise) rendered with @huggingface/jinja, with the
 * tokenizer's special token strings, `messages`, `tools` and `add_generation_prompt` in the context.
 * A simple ChatML-like default stands in when the model ships none.
 */
import { Template } from '@huggingface/jinja'
import { ServeError } from '../errors.ts'
import { normalizeChatTemplate, tokenString } from './tokenizer.ts'

/** A tool call of an assistant message, as OpenAI sends it (`arguments` parsed into an object when it is JSON). */
export interface ChatToolCall {
  id?: string
  type: string
  function: { name: string; arguments: unknown }
}

/**
 * One chat message as the template sees it (transformers' message dict): text content (content
 * parts joined by the route layer), an assistant's `tool_calls`, a tool result's `tool_call_id`/`name`.
 */
export interface ChatMessage {
  role: string
  content: string
  tool_calls?: ChatToolCall[]
  tool_call_id?: string
  name?: string
}

/** Used when the model ships no chat template. */
export const DEFAULT_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"

/** transformers' SPECIAL_TOKENS_ATTRIBUTES: each is in the template context as a string when the tokenizer has it. */
const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token']

/** What a render may add beside the messages. */
export interface ChatRenderOptions {
  /** OpenAI `tools` (`[{type: "function", function: {name, description, parameters}}]`), passed as transformers passes them. */
  tools?: readonly unknown[]
  /** Further template variables (transformers' template kwargs). */
  [key: string]: unknown
}

/** A compiled chat template (or set of named ones) bound to the tokenizer's special token strings. */
export class ChatTemplate {
  private readonly templates = new Map<string, Template>()
  /** The source of the template used without tools. */
  readonly source: string
  /** The sources of every template (named ones included). */
  readonly sources: readonly string[]
  readonly isDefault: boolean
  private readonly specialTokens: Record<string, string> = {}

  constructor(tokenizerConfig: Record<string, unknown>) {
    const spec = normalizeChatTemplate(tokenizerConfig.chat_template)
    this.isDefault = spec === undefined
    const named: Record<string, string> = typeof spec === 'string' ? { default: spec } : spec ?? { default: DEFAULT_CHAT_TEMPLATE }
    for (const [name, src] of Object.entries(named)) {
      try {
        this.templates.set(name, new Template(src))
      } catch (e) {
        const which = name === 'default' ? 'chat_template' : `chat_template "${name}"`
        throw new ServeError('CONFIG_INVALID', `${which} does not parse: ${(e as Error).message}`, { cause: e })
      }
    }
    // transformers refuses named templates without a "default" when none is asked for; ms-serve
    // has no way to ask, so the first one stands in (a name that sorts first is as good as any).
    this.source = named.default ?? Object.values(named)[0]!
    this.sources = Object.values(named)
    for (const k of SPECIAL_TOKEN_KEYS) {
      const s = tokenString(tokenizerConfig[k])
      if (s !== null) this.specialTokens[k] = s
    }
  }

  /** The names of the templates (["default"] for a single one). */
  get names(): string[] { return [...this.templates.keys()] }

  /** transformers' get_chat_template: "tool_use" when tools are passed and the model has it, else "default". */
  private pick(withTools: boolean): Template {
    if (withTools && this.templates.has('tool_use')) return this.templates.get('tool_use')!
    return this.templates.get('default') ?? this.templates.values().next().value!
  }

  /** Renders the prompt; template errors are VALIDATION (TGI reports them as 422 template_error). */
  render(messages: readonly ChatMessage[], addGenerationPrompt = true, extra: ChatRenderOptions = {}): string {
    const withTools = Array.isArray(extra.tools)
    try {
      return this.pick(withTools).render({
        // The special tokens map first: transformers passes it as kwargs, with the caller's kwargs over it.
        bos_token: '',
        eos_token: '',
        ...this.specialTokens,
        ...extra,
        // transformers always passes these, None when absent (templates test `tools is not none`).
        tools: extra.tools ?? null,
        documents: extra.documents ?? null,
        messages,
        add_generation_prompt: addGenerationPrompt,
      })
    } catch (e) {
      throw new ServeError('VALIDATION', `Template error: ${(e as Error).message}`, { cause: e, details: { errorType: 'template_error' } })
    }
  }
}
