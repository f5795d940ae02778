/**
 * OpenAI-compatible routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models.
 * Finish reasons use OpenAI's names (`stop`, `length`); streams end with `data: [DONE]`.
 * Validation errors are 422 (as TGI's OpenAI routes) with OpenAI's error body shape.
 */
import { randomUUID } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ServeError, toServeError } from '../../errors.ts'
import type { ChatMessage, ChatToolCall } from '../../llm/chat-template.ts'
import type { DoneEvent, FinishReason, GenerateParameters, GenerateRequest, TokenEvent, ValidGenerate } from '../../llm/types.ts'
import type { ChatPromptRequest } from '../../llm/validate.ts'
import { checkGrammar, jsonSchemaSpec } from '../../llm/grammar.ts'
import type { GrammarSpec } from '../../llm/grammar.ts'
import { namedCallReader, readAll, requiredCallReader, toolCallReader, type ToolCallDelta, type ToolCallReader, type ToolEvent } from '../../llm/tool-calls.ts'
import type { LlmDispatcher } from '../../runtime/llm-dispatch.ts'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { collect, noLlm, parseJson, relayEvents, relaySse, tracked, type Collected, type EventRelay } from './llm-common.ts'
import { clientGone, openSse, type SseWriter } from './sse.ts'
import { openAiError } from '../error-render.ts'

const CREATED = Math.floor(Date.now() / 1000)

function openAiFinish(r: FinishReason): 'stop' | 'length' {
  return r === 'length' ? 'length' : 'stop'
}

function bad(message: string): never {
  throw new ServeError('VALIDATION', message)
}

function num(b: Record<string, unknown>, k: string): number | undefined {
  const v = b[k]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isFinite(v)) bad(`\`${k}\` must be a number (got ${JSON.stringify(v)})`)
  return v
}

/** OpenAI sampling fields -> engine parameters. temperature 0 means greedy. */
function samplingFrom(b: Record<string, unknown>, defaultMaxTokens?: number): GenerateParameters {
  const p: GenerateParameters = {}
  const maxTokens = num(b, 'max_completion_tokens') ?? num(b, 'max_tokens') ?? defaultMaxTokens
  if (maxTokens !== undefined) p.maxNewTokens = maxTokens
  const t = num(b, 'temperature')
  if (t !== undefined) {
    if (t < 0 || t > 2) bad('`temperature` must be between 0 and 2')
    if (t > 0) { p.temperature = t; p.doSample = true }
  }
  const topP = num(b, 'top_p')
  if (topP !== undefined && topP < 1) { p.topP = topP; p.doSample = true }
  // vLLM's extra sampling field: -1 (or 0) is off; like top_p < 1 (and TGI's top_k) it samples.
  const topK = num(b, 'top_k')
  if (topK !== undefined) {
    if (!Number.isInteger(topK) || topK < -1) bad(`\`top_k\` must be an integer >= 1, or -1 / 0 for off (got ${topK})`)
    if (topK > 0) { p.topK = topK; p.doSample = true }
  }
  const seed = num(b, 'seed')
  if (seed !== undefined) p.seed = seed
  const fp = num(b, 'frequency_penalty')
  if (fp !== undefined && fp !== 0) p.frequencyPenalty = fp
  const pp = num(b, 'presence_penalty')
  if (pp !== undefined && pp !== 0) {
    if (pp < -2 || pp > 2) bad('`presence_penalty` must be between -2 and 2')
    p.repetitionPenalty = pp + 2 // TGI's mapping
  }
  const rp = num(b, 'repetition_penalty')
  if (rp !== undefined) p.repetitionPenalty = rp
  const stop = b.stop
  if (typeof stop === 'string') p.stop = [stop]
  else if (Array.isArray(stop) && stop.every((s) => typeof s === 'string')) p.stop = stop
  else if (stop !== undefined && stop !== null) bad('`stop` must be a string or a list of strings')
  const n = num(b, 'n')
  if (n !== undefined && n !== 1) bad('`n` != 1 is not supported by ms-serve')
  return p
}

/**
 * `logprobs` as asked: completions `logprobs: N` (0..5; null/absent = off); chat `logprobs: true`
 * with `top_logprobs: N` (0..20; ignored without logprobs, as TGI). N becomes the engine's
 * top_n_tokens, so the server's max_top_n_tokens (TGI default 5) also caps it, with TGI's 422.
 * Returns N, or null when no logprobs are wanted.
 */
function logprobsFrom(b: Record<string, unknown>, chat: boolean): number | null {
  const lp = b.logprobs
  if (lp === undefined || lp === null) return null
  if (!chat) {
    if (!Number.isInteger(lp) || (lp as number) < 0 || (lp as number) > 5) bad('`logprobs` must be an integer between 0 and 5')
    return lp as number
  }
  if (typeof lp !== 'boolean') bad('`logprobs` must be a boolean')
  if (!lp) return null
  const top = b.top_logprobs
  if (top === undefined || top === null) return 0
  if (!Number.isInteger(top) || (top as number) < 0 || (top as number) > 20) bad('`top_logprobs` must be an integer between 0 and 20')
  return top as number
}

const utf8 = new TextEncoder()

/** Chat `logprobs.content` entry for one token (OpenAI shape). The token string is the text it added. */
function chatLogprob(t: TokenEvent) {
  return {
    token: t.text,
    logprob: t.logprob,
    bytes: [...utf8.encode(t.text)],
    top_logprobs: (t.topTokens ?? []).map((c) => ({ token: c.text, logprob: c.logprob, bytes: [...utf8.encode(c.text)] })),
  }
}

/** Legacy completions `logprobs` for some tokens; `offset` is the first token's offset in the text. */
function completionLogprobs(ts: TokenEvent[], offset: number) {
  const text_offset: number[] = []
  for (const t of ts) { text_offset.push(offset); offset += t.text.length }
  return {
    tokens: ts.map((t) => t.text),
    token_logprobs: ts.map((t) => t.logprob),
    // The top N plus the chosen token (OpenAI: up to logprobs + 1 entries).
    top_logprobs: ts.map((t) => {
      const o: Record<string, number> = {}
      for (const c of t.topTokens ?? []) if (!(c.text in o)) o[c.text] = c.logprob
      if (!(t.text in o)) o[t.text] = t.logprob
      return o
    }),
    text_offset,
  }
}

/**
 * The LLM servable a request's `model` names: a servable name or a model id. A name no servable
 * has still reaches the default one when that is unambiguous (`--default-llm`, or only one LLM
 * servable loaded), as TGI answers any name with its one model (HF InferenceClient sends a
 * placeholder); with several and no default it is a 404.
 */
function pickModel(registry: ServableRegistry, b: Record<string, unknown>): LlmDispatcher {
  const model = b.model
  if (model !== undefined && model !== null && typeof model !== 'string') bad('`model` must be a string')
  if (typeof model !== 'string' || model === '' || model === 'tgi') return registry.llm() ?? throwNoLlm()
  const named = registry.llm(model)
  if (named) return named
  const llms = registry.llms()
  const byId = llms.find((l) => l.info?.modelId === model)
  if (byId) return byId
  if (registry.defaultLlm !== undefined || llms.length === 1) {
    const fallback = registry.llm()
    if (fallback) return fallback
  }
  throw llms.length === 0 ? noLlm() : new ServeError('SERVABLE_NOT_FOUND', `The model \`${model}\` does not exist`)
}

function throwNoLlm(): never {
  throw noLlm()
}

/** A message's content: a string, null (an assistant's tool call), or text parts joined as TGI joins them. */
function messageText(content: unknown, path: string): string {
  if (typeof content === 'string') return content
  if (content === null || content === undefined) return ''
  if (!Array.isArray(content)) bad(`${path} must be a string or a list of text parts`)
  return content.map((part, j) => {
    const { type, text } = (part ?? {}) as { type?: unknown; text?: unknown }
    if (type === 'text' && typeof text === 'string') return text
    return bad(`${path}[${j}]: only text parts are supported`)
  }).join('')
}

/**
 * An assistant message's OpenAI `tool_calls`. `function.arguments` arrives as a JSON string; the
 * template gets it parsed (as vLLM passes it), since templates write it with `| tojson` and
 * transformers documents it as a dict. Text that is not JSON is passed on as it is.
 */
function toolCalls(v: unknown, path: string): ChatToolCall[] {
  if (!Array.isArray(v)) bad(`${path} must be a list`)
  return v.map((c, j) => {
    const { id, type, function: fn } = (c ?? {}) as { id?: unknown; type?: unknown; function?: unknown }
    const { name, arguments: args } = (fn ?? {}) as { name?: unknown; arguments?: unknown }
    if (typeof name !== 'string') bad(`${path}[${j}].function.name must be a string`)
    let parsed: unknown = args ?? {}
    if (typeof args === 'string') {
      try { parsed = JSON.parse(args) } catch { parsed = args }
    }
    const call: ChatToolCall = { type: typeof type === 'string' ? type : 'function', function: { name, arguments: parsed } }
    if (typeof id === 'string') call.id = id
    return call
  })
}

function chatMessages(b: Record<string, unknown>): ChatMessage[] {
  const msgs = b.messages
  if (!Array.isArray(msgs) || msgs.length === 0) bad('`messages` must be a non-empty list')
  return msgs.map((m, i) => {
    if (!m || typeof m !== 'object') bad(`messages[${i}] must be an object`)
    const { role, content, tool_calls, tool_call_id, name } = m as Record<string, unknown>
    if (typeof role !== 'string') bad(`messages[${i}].role must be a string`)
    const msg: ChatMessage = { role, content: messageText(content, `messages[${i}].content`) }
    if (tool_calls !== undefined && tool_calls !== null) msg.tool_calls = toolCalls(tool_calls, `messages[${i}].tool_calls`)
    if (typeof tool_call_id === 'string') msg.tool_call_id = tool_call_id
    if (typeof name === 'string') msg.name = name
    return msg
  })
}

/** The request's tools, the grammar when tool_choice constrains the output, and the reader of its calls (null: none). */
interface ChatTools { tools: unknown[]; grammar?: GrammarSpec; reader: ToolCallReader | null }

/**
 * OpenAI `tools` for the chat template, and `tool_choice`. "none": the template renders the tools,
 * the output is content. "auto" (or absent): the model chooses, and the servable's tool parser
 * (declareLlm toolParser, or the chat template's format) reads calls from the output. "required" or
 * a named function (`{"type":"function","function":{"name"}}`) constrain the output: to the named
 * function's `parameters` schema, or for "required" to `{"name": <one of the tools>, "arguments":
 * <its parameters>}`. Calls answer as `message.tool_calls` (streamed as tool-call deltas).
 */
function chatTools(b: Record<string, unknown>, llm: LlmDispatcher): ChatTools | undefined {
  const { tools, tool_choice: choice } = b
  if (tools === undefined || tools === null) {
    if (choice !== undefined && choice !== null && choice !== 'none' && choice !== 'auto') bad('`tool_choice` needs `tools`')
    return undefined
  }
  if (!Array.isArray(tools) || tools.some((t) => !t || typeof t !== 'object' || typeof (t as { function?: { name?: unknown } }).function?.name !== 'string')) {
    bad('`tools` must be a list of `{"type": "function", "function": {"name", ...}}`')
  }
  if (choice === 'none') return { tools, reader: null }
  if (choice === undefined || choice === null || choice === 'auto') return { tools, reader: toolCallReader(llm.toolParser) }
  const fns = (tools as Array<{ function: { name: string; parameters?: unknown } }>).map((t) => t.function)
  const params = (f: { parameters?: unknown }): unknown => f.parameters ?? { type: 'object' }
  if (choice === 'required') {
    const alt = fns.map((f) => ({ type: 'object', properties: { name: { const: f.name }, arguments: params(f) }, required: ['name', 'arguments'], additionalProperties: false }))
    return { tools, grammar: jsonSchemaSpec(alt.length === 1 ? alt[0] : { anyOf: alt }, 'tools'), reader: requiredCallReader() }
  }
  const name = (choice as { type?: unknown; function?: { name?: unknown } } | null)?.function?.name
  if (typeof choice !== 'object' || (choice as { type?: unknown }).type !== 'function' || typeof name !== 'string') {
    bad('`tool_choice` must be "none", "auto", "required" or `{"type": "function", "function": {"name"}}`')
  }
  const f = fns.find((x) => x.name === name)
  if (!f) bad(`\`tool_choice\` names the function "${name}", which is not in \`tools\``)
  return { tools, grammar: jsonSchemaSpec(params(f), `tools[${fns.indexOf(f)}].function.parameters`), reader: namedCallReader(name) }
}

/** OpenAI's finish reason for an answer that made tool calls, or not. */
function chatFinish(r: FinishReason, calls: number): 'stop' | 'length' | 'tool_calls' {
  return r === 'length' ? 'length' : calls > 0 ? 'tool_calls' : 'stop'
}

/** A chunk's `tool_calls` entry for one delta (OpenAI: id, type and name on a call's first one). */
function toolCallDelta(d: ToolCallDelta) {
  if (d.id === undefined) return { index: d.index, function: { arguments: d.arguments } }
  return { index: d.index, id: d.id, type: 'function', function: { name: d.name, arguments: d.arguments } }
}

/**
 * OpenAI completions `prompt`: a string, a list of token ids, or a list of either (one choice
 * per prompt). Empty lists are refused; an empty string reaches validation (TGI's text).
 */
function completionPrompts(prompt: unknown): Array<Pick<GenerateRequest, 'inputs' | 'inputIds'>> {
  const ids = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number')
  if (typeof prompt === 'string') return [{ inputs: prompt }]
  if (!Array.isArray(prompt) || prompt.length === 0) bad('`prompt` must be a string, a list of token ids, or a non-empty list of either')
  if (ids(prompt)) return [{ inputIds: prompt }]
  return prompt.map((p, i) => {
    if (typeof p === 'string') return { inputs: p }
    if (ids(p)) return { inputIds: p }
    return bad(`\`prompt[${i}]\` must be a string or a non-empty list of token ids`)
  })
}

interface Kind { chat: boolean; id: string; model: string }

/** The fields every answer and chunk starts with. */
function head(k: Kind, object: string) {
  return { id: k.id, object, created: Math.floor(Date.now() / 1000), model: k.model, system_fingerprint: 'ms-serve' }
}

function chunk(k: Kind, content: { text?: string; role?: boolean; toolCalls?: ToolCallDelta[] }, finish: string | null, logprobs: unknown = null, index = 0) {
  if (k.chat) {
    const delta: Record<string, unknown> = {}
    if (content.role) delta.role = 'assistant'
    if (content.text !== undefined) delta.content = content.text
    if (content.toolCalls) delta.tool_calls = content.toolCalls.map(toolCallDelta)
    return { ...head(k, 'chat.completion.chunk'), choices: [{ index, delta, logprobs, finish_reason: finish }] }
  }
  return { ...head(k, 'text_completion'), choices: [{ index, text: content.text ?? '', logprobs, finish_reason: finish }] }
}

function usageOf(done: readonly DoneEvent[]) {
  let prompt = 0
  let completion = 0
  for (const d of done) { prompt += d.inputTokens; completion += d.generatedTokens }
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
}

function usageChunk(k: Kind, done: readonly DoneEvent[]) {
  const { system_fingerprint: _f, ...h } = head(k, k.chat ? 'chat.completion.chunk' : 'text_completion')
  return { ...h, choices: [], usage: usageOf(done) }
}

/**
 * One choice's events as OpenAI chunks carrying its `index`. With a tool-call reader (chat with
 * tools), token texts go through it and come out as content and tool-call deltas; with logprobs,
 * the tokens' entries ride on the next chunk the reader lets out (the reader holds text back while
 * it might open a call), the rest on the finishing chunk: the stream's entries together are the
 * non-streamed answer's `logprobs.content`, every text token once, in order.
 */
function choiceRelay(k: Kind, index: number, withLogprobs: boolean, onDone: (ev: DoneEvent) => void, reader: ToolCallReader | null = null): EventRelay<SseWriter> {
  let offset = 0
  let pending: ReturnType<typeof chatLogprob>[] = []
  const takePending = () => {
    if (pending.length === 0) return null
    const lp = { content: pending, refusal: null }
    pending = []
    return lp
  }
  const sendTools = (sse: SseWriter, evs: readonly ToolEvent[]) => {
    for (const ev of evs) sse.send(chunk(k, 'content' in ev ? { text: ev.content } : { toolCalls: [ev.call] }, null, takePending(), index))
  }
  return {
    token: (sse, t) => {
      if (t.special) return
      if (reader) {
        if (withLogprobs) pending.push(chatLogprob(t))
        sendTools(sse, reader.push(t.text))
      }
      // With logprobs every text token gets its chunk, even one that adds no text yet (mid-character).
      else if (withLogprobs) {
        sse.send(chunk(k, { text: t.text }, null, k.chat ? { content: [chatLogprob(t)], refusal: null } : completionLogprobs([t], offset), index))
        offset += t.text.length
      } else if (t.text) sse.send(chunk(k, { text: t.text }, null, null, index))
    },
    done: (sse, ev) => {
      if (reader) sendTools(sse, reader.end())
      const finish = k.chat ? chatFinish(ev.finishReason, reader?.calls ?? 0) : openAiFinish(ev.finishReason)
      sse.send(chunk(k, k.chat ? {} : { text: '' }, finish, takePending(), index))
      onDone(ev)
    },
    error: (sse, ev) => {
      const { status, body } = openAiError(ev)
      sse.send({ error: { ...body.error, http_status_code: status } })
    },
  }
}

function stream(k: Kind, llm: LlmDispatcher, valid: ValidGenerate, includeUsage: boolean, withLogprobs: boolean, reply: FastifyReply, reader: ToolCallReader | null = null): Promise<void> {
  const done: DoneEvent[] = []
  const relay = choiceRelay(k, 0, withLogprobs, (ev) => done.push(ev), reader)
  return relaySse(llm, valid, reply, {
    ...relay,
    open: (sse) => { if (k.chat) sse.send(chunk(k, { role: true, text: '' }, null)) },
    done: (sse, ev, last) => {
      relay.done(sse, ev, last)
      if (includeUsage) sse.send(usageChunk(k, done))
    },
    close: (sse) => { sse.send('[DONE]', true) },
  })
}

/**
 * Streams several completions (a list of prompts) as one SSE response, chunks interleaved as their
 * tokens come, each carrying its choice `index` (as OpenAI and vLLM stream them). Every request is
 * admitted before the stream opens, so overload is still a 429; once open, a failed choice sends
 * the error event and cancels the others. Usage (when asked) sums all choices.
 */
async function streamMany(k: Kind, llm: LlmDispatcher, valids: readonly ValidGenerate[], includeUsage: boolean, withLogprobs: boolean, reply: FastifyReply): Promise<void> {
  const ac = clientGone(reply)
  const streams = startAll(valids, ac, (v, signal) => llm.stream(v, signal))
  const sse = openSse(reply)
  const done: DoneEvent[] = []
  let failed = false
  await Promise.all(streams.map(async (events, index) => {
    const relay = choiceRelay(k, index, withLogprobs, (ev) => done.push(ev))
    const ok = await relayEvents(sse, events, {
      ...relay,
      error: (w, ev) => {
        if (!failed) relay.error(w, ev)
        failed = true
        ac.abort()
      },
    })
    if (!ok && !failed) {
      failed = true
      ac.abort()
      relay.error(sse, { type: 'error', requestId: '', code: 'INTERNAL', message: 'Request failed during generation: the stream ended without a final event' })
    }
  }))
  if (includeUsage && !failed) sse.send(usageChunk(k, done))
  sse.send('[DONE]', true)
  sse.end()
}

/** Starts one request per entry; if one cannot start, the started ones are cancelled and its error is thrown. */
function startAll<T>(valids: readonly ValidGenerate[], ac: AbortController, start: (v: ValidGenerate, signal: AbortSignal) => T): T[] {
  try {
    return valids.map((v) => start(v, ac.signal))
  } catch (e) {
    ac.abort()
    throw e
  }
}

/** Runs every prompt's request concurrently to completion; one failure cancels the others. Results in prompt order. */
async function collectAll(llm: LlmDispatcher, valids: readonly ValidGenerate[], reply: FastifyReply): Promise<Collected[]> {
  const ac = clientGone(reply)
  try {
    return await Promise.all(startAll(valids, ac, (v, signal) => collect(llm, v, signal)))
  } catch (e) {
    ac.abort()
    throw e
  }
}

async function completions(b: Record<string, unknown>, llm: LlmDispatcher, k: Kind, reply: FastifyReply): Promise<unknown> {
  if (b.suffix !== undefined && b.suffix !== null) bad('`suffix` is not supported')
  const prompts = completionPrompts(b.prompt)
  const parameters = samplingFrom(b, 16)
  const lp = logprobsFrom(b, false)
  if (lp) parameters.topNTokens = lp
  // vLLM takes response_format on completions too.
  const grammar = await responseFormat(b.response_format)
  if (grammar) parameters.grammar = grammar
  // Each prompt is tokenized and checked here, in the listener, before any of them starts.
  const valids = prompts.map((p) => tracked(reply, llm, llm.validate({ ...p, parameters })))
  const opts = b.stream_options as { include_usage?: unknown } | undefined
  const includeUsage = opts?.include_usage === true
  if (b.stream === true && valids.length === 1) return stream(k, llm, valids[0]!, includeUsage, lp !== null, reply)
  if (b.stream === true) return streamMany(k, llm, valids, includeUsage, lp !== null, reply)
  const results = await collectAll(llm, valids, reply)
  const choices = results.map(({ tokens, done }, index) => {
    // Logprobs cover the tokens of the text (special ones such as EOS are not in it).
    const logprobs = lp === null ? null : completionLogprobs(tokens.filter((t) => !t.special), 0)
    return { index, text: done.generatedText, logprobs, finish_reason: openAiFinish(done.finishReason) }
  })
  return reply.send({ ...head(k, 'text_completion'), choices, usage: usageOf(results.map((r) => r.done)) })
}

/**
 * OpenAI `response_format`: `text` (or absent) leaves decoding free; `json_object` constrains it to
 * JSON; `json_schema` (`{name, schema, strict}`) to the schema, checked by xgrammar here (422 if it
 * cannot compile). Output always follows the schema, whether or not `strict` is set.
 */
async function responseFormat(f: unknown): Promise<GrammarSpec | undefined> {
  if (f === undefined || f === null) return undefined
  if (typeof f !== 'object' || Array.isArray(f)) bad('`response_format` must be an object')
  const { type, json_schema: js } = f as { type?: unknown; json_schema?: unknown }
  if (type === 'text') return undefined
  if (type === 'json_object') return { type: 'json' }
  if (type !== 'json_schema') bad('`response_format.type` must be "text", "json_object" or "json_schema"')
  if (js === null || typeof js !== 'object' || Array.isArray(js)) bad('`response_format.json_schema` must be an object with `name` and `schema`')
  const { name, schema } = js as { name?: unknown; schema?: unknown }
  if (typeof name !== 'string' || name.length === 0) bad('`response_format.json_schema.name` must be a non-empty string')
  const spec = schema === undefined ? { type: 'json' as const } : jsonSchemaSpec(schema, 'response_format.json_schema.schema')
  await checkGrammar(spec)
  return spec
}

async function chatCompletions(b: Record<string, unknown>, llm: LlmDispatcher, k: Kind, reply: FastifyReply): Promise<unknown> {
  const request: ChatPromptRequest = { messages: chatMessages(b), parameters: samplingFrom(b) }
  const tools = chatTools(b, llm)
  if (tools !== undefined) request.tools = tools.tools
  const forced = tools?.grammar
  let grammar = await responseFormat(b.response_format)
  if (forced) {
    if (grammar) bad('`response_format` cannot be combined with `tool_choice` "required" or a named function')
    await checkGrammar(forced)
    grammar = forced
  }
  if (grammar) request.parameters = { ...request.parameters, grammar }
  // vLLM's extension: false renders the conversation without opening an assistant turn.
  if (typeof b.add_generation_prompt === 'boolean') request.addGenerationPrompt = b.add_generation_prompt
  const kwargs = b.chat_template_kwargs
  if (kwargs !== undefined && kwargs !== null) {
    if (typeof kwargs !== 'object' || Array.isArray(kwargs)) bad('`chat_template_kwargs` must be an object')
    request.templateKwargs = kwargs as Record<string, unknown>
  }
  const lp = logprobsFrom(b, true)
  if (lp) request.parameters = { ...request.parameters, topNTokens: lp }
  // The chat template renders and the prompt is tokenized and checked here, in the listener.
  const valid = tracked(reply, llm, llm.validate(request))
  const opts = b.stream_options as { include_usage?: unknown } | undefined
  const reader = tools?.reader ?? null
  if (b.stream === true) return stream(k, llm, valid, opts?.include_usage === true, lp !== null, reply, reader)
  const [{ tokens, done }] = await collectAll(llm, [valid], reply) as [Collected]
  const textTokens = lp === null ? [] : tokens.filter((t) => !t.special)
  const read = reader ? readAll(reader, done.generatedText) : null
  const message = read && read.calls.length > 0
    ? { role: 'assistant', content: read.content, tool_calls: read.calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })) }
    : { role: 'assistant', content: done.generatedText }
  const logprobs = lp === null ? null : { content: textTokens.map(chatLogprob), refusal: null }
  const choices = [{ index: 0, message, logprobs, finish_reason: chatFinish(done.finishReason, read?.calls.length ?? 0) }]
  return reply.send({ ...head(k, 'chat.completion'), choices, usage: usageOf([done]) })
}

export function registerOpenAiRoutes(app: FastifyInstance, registry: ServableRegistry): void {
  const handle = (chat: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    try {
      const b = parseJson(req.body)
      const llm = pickModel(registry, b)
      const k: Kind = { chat, id: `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`, model: llm.info.modelId }
      return await (chat ? chatCompletions(b, llm, k, reply) : completions(b, llm, k, reply))
    } catch (e) {
      if (reply.sent || reply.raw.headersSent) return
      const { status, body } = openAiError(toServeError(e))
      return reply.code(status).send(body)
    }
  }
  app.post('/v1/completions', handle(false))
  app.post('/v1/chat/completions', handle(true))
  // vLLM's fields: `max_model_len` is the most tokens (prompt + generated) one request may hold.
  app.get('/v1/models', async () => ({
    object: 'list',
    data: registry.llms().map((l) => ({
      id: l.info?.modelId ?? l.name, object: 'model', created: CREATED, owned_by: 'ms-serve', max_model_len: l.info?.maxTotalTokens ?? null,
    })),
  }))
}
