/**
 * OpenAI-compatible routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models.
 * Finish reasons use OpenAI's names (`stop`, `length`); streams end with `data: [DONE]`.
 * Validation errors are 422 (as TGI's OpenAI routes) with OpenAI's error body shape.
 */
import { randomUUID } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ServeError, toServeError } from '../../errors.ts'
import type { ChatMessage } from '../../llm/chat-template.ts'
import type { FinishReason, GenerateParameters, GenerateRequest, TokenEvent, ValidGenerate } from '../../llm/types.ts'
import type { LlmDispatcher } from '../../runtime/llm-dispatch.ts'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { collect, noLlm, parseJson, relaySse } from './llm-common.ts'
import { clientGone } from './sse.ts'
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

function pickModel(registry: ServableRegistry, b: Record<string, unknown>): LlmDispatcher {
  const model = b.model
  if (model !== undefined && model !== null && typeof model !== 'string') bad('`model` must be a string')
  const byName = typeof model === 'string' && model !== '' && model !== 'tgi' ? registry.llm(model) ?? registry.llms().find((l) => l.info.modelId === model) : registry.llm()
  if (!byName) throw typeof model === 'string' && model ? new ServeError('SERVABLE_NOT_FOUND', `The model \`${model}\` does not exist`) : noLlm()
  return byName
}

function chatMessages(b: Record<string, unknown>): ChatMessage[] {
  const msgs = b.messages
  if (!Array.isArray(msgs) || msgs.length === 0) bad('`messages` must be a non-empty list')
  return msgs.map((m, i) => {
    if (!m || typeof m !== 'object') bad(`messages[${i}] must be an object`)
    const { role, content } = m as { role?: unknown; content?: unknown }
    if (typeof role !== 'string') bad(`messages[${i}].role must be a string`)
    let text: string
    if (typeof content === 'string') text = content
    else if (Array.isArray(content)) {
      text = content.map((part, j) => {
        if (part && typeof part === 'object' && (part as { type?: unknown }).type === 'text' && typeof (part as { text?: unknown }).text === 'string') return (part as { text: string }).text
        return bad(`messages[${i}].content[${j}]: only text parts are supported`)
      }).join('')
    } else if (content === null || content === undefined) text = ''
    else return bad(`messages[${i}].content must be a string or a list of text parts`)
    return { role, content: text }
  })
}

interface Kind { chat: boolean; id: string; model: string }

function chunk(k: Kind, content: { text?: string; role?: boolean }, finish: string | null, logprobs: unknown = null) {
  if (k.chat) {
    const delta: Record<string, string> = {}
    if (content.role) delta.role = 'assistant'
    if (content.text !== undefined) delta.content = content.text
    return { id: k.id, object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: k.model, system_fingerprint: 'ms-serve', choices: [{ index: 0, delta, logprobs, finish_reason: finish }] }
  }
  return { id: k.id, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: k.model, system_fingerprint: 'ms-serve', choices: [{ index: 0, text: content.text ?? '', logprobs, finish_reason: finish }] }
}

function stream(k: Kind, llm: LlmDispatcher, valid: ValidGenerate, includeUsage: boolean, withLogprobs: boolean, reply: FastifyReply): Promise<void> {
  let offset = 0
  return relaySse(llm, valid, reply, {
    open: (sse) => { if (k.chat) sse.send(chunk(k, { role: true, text: '' }, null)) },
    token: (sse, t) => {
      if (t.special) return
      // With logprobs every text token gets its chunk, even one that adds no text yet (mid-character).
      if (withLogprobs) {
        sse.send(chunk(k, { text: t.text }, null, k.chat ? { content: [chatLogprob(t)], refusal: null } : completionLogprobs([t], offset)))
        offset += t.text.length
      } else if (t.text) sse.send(chunk(k, { text: t.text }, null))
    },
    done: (sse, ev) => {
      sse.send(chunk(k, k.chat ? {} : { text: '' }, openAiFinish(ev.finishReason)))
      if (includeUsage) sse.send({ id: k.id, object: k.chat ? 'chat.completion.chunk' : 'text_completion', created: Math.floor(Date.now() / 1000), model: k.model, choices: [], usage: { prompt_tokens: ev.inputTokens, completion_tokens: ev.generatedTokens, total_tokens: ev.inputTokens + ev.generatedTokens } })
    },
    error: (sse, ev) => {
      const { status, body } = openAiError(ev)
      sse.send({ error: { ...body.error, http_status_code: status } })
    },
    close: (sse) => { sse.send('[DONE]', true) },
  })
}

export function registerOpenAiRoutes(app: FastifyInstance, registry: ServableRegistry): void {
  const handle = (chat: boolean) => async (req: FastifyRequest, reply: FastifyReply) => {
    try {
      const b = parseJson(req.body)
      const llm = pickModel(registry, b)
      const k: Kind = { chat, id: `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`, model: llm.info.modelId }
      let request: GenerateRequest
      let lp: number | null
      if (chat) {
        if (b.tools !== undefined || b.response_format !== undefined && (b.response_format as { type?: string })?.type !== 'text') bad('`tools` and `response_format` are not supported by ms-serve')
        request = { messages: chatMessages(b), parameters: samplingFrom(b) }
        lp = logprobsFrom(b, true)
      } else {
        if (b.suffix !== undefined && b.suffix !== null) bad('`suffix` is not supported')
        let prompt = b.prompt
        if (Array.isArray(prompt)) {
          if (prompt.length !== 1) bad('a list of prompts is not supported by ms-serve; send one prompt per request')
          prompt = prompt[0]
        }
        if (typeof prompt !== 'string') bad('`prompt` must be a string')
        request = { inputs: prompt, parameters: samplingFrom(b, 16) }
        lp = logprobsFrom(b, false)
      }
      if (lp) request.parameters = { ...request.parameters, topNTokens: lp }
      // The chat template renders and the prompt is tokenized and checked here, in the listener.
      const valid = llm.validate(request)
      const opts = b.stream_options as { include_usage?: unknown } | undefined
      if (b.stream === true) return await stream(k, llm, valid, opts?.include_usage === true, lp !== null, reply)
      const ac = clientGone(reply)
      const { tokens, done } = await collect(llm, valid, ac.signal)
      // Logprobs cover the tokens of the text (special ones such as EOS are not in it).
      const textTokens = lp === null ? [] : tokens.filter((t) => !t.special)
      const usage = { prompt_tokens: done.inputTokens, completion_tokens: done.generatedTokens, total_tokens: done.inputTokens + done.generatedTokens }
      const created = Math.floor(Date.now() / 1000)
      if (chat) {
        return reply.send({ id: k.id, object: 'chat.completion', created, model: k.model, system_fingerprint: 'ms-serve', choices: [{ index: 0, message: { role: 'assistant', content: done.generatedText }, logprobs: lp === null ? null : { content: textTokens.map(chatLogprob), refusal: null }, finish_reason: openAiFinish(done.finishReason) }], usage })
      }
      return reply.send({ id: k.id, object: 'text_completion', created, model: k.model, system_fingerprint: 'ms-serve', choices: [{ index: 0, text: done.generatedText, logprobs: lp === null ? null : completionLogprobs(textTokens, 0), finish_reason: openAiFinish(done.finishReason) }], usage })
    } catch (e) {
      if (reply.sent || reply.raw.headersSent) return
      const { status, body } = openAiError(toServeError(e))
      return reply.code(status).send(body)
    }
  }
  app.post('/v1/completions', handle(false))
  app.post('/v1/chat/completions', handle(true))
  app.get('/v1/models', async () => ({
    object: 'list',
    data: registry.llms().map((l) => ({ id: l.info?.modelId ?? l.name, object: 'model', created: CREATED, owned_by: 'ms-serve' })),
  }))
}
