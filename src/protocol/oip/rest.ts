/**
 * Open Inference Protocol v2 over REST (model-servers.md §2.1-2.5): `GET /v2`, model metadata,
 * model readiness and `POST .../infer` with the JSON tensor form and the binary tensor extension
 * (`Inference-Header-Content-Length`). Errors are `{"error": "..."}` with the error table's status.
 * Server health (`/v2/health/*`) is registered with the other health routes (rest/server.ts).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ServeError, toServeError } from '../../errors.ts'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { oipError } from '../error-render.ts'
import { requestTimeoutHeader } from '../rest/mindspore.ts'
import { handleOipGenerate } from './generate.ts'
import { modelMetadata, oipInfer, parseVersion, resolveModel, serverMetadata, type OipInferRequest, type OipInferResponse, type OipTarget } from './infer.ts'
import { jsonDataOf, oipDatatype, rawOf, tensorFromJson, tensorFromRaw, type OipTensor } from './tensors.ts'

/** The actions a `/v2/models/...` path can end in (a path without one is the model's metadata). */
const ACTIONS = new Set(['ready', 'infer', 'generate', 'generate_stream'])

export interface ModelPath { model: string; version: string | undefined; action: string | null }

/**
 * `/v2/models/{model}[/versions/{v}][/{action}]`, where `{model}` is `servable` or
 * `servable/method` (two segments, or one with `%2F`). Null when the path is not of that form.
 */
export function parseModelPath(url: string): ModelPath | null {
  const path = url.split('?', 1)[0]!
  if (!path.startsWith('/v2/models/')) return null
  let segs: string[]
  try { segs = path.slice('/v2/models/'.length).split('/').map(decodeURIComponent) } catch { return null }
  if (segs.length > 0 && segs[segs.length - 1] === '') segs.pop()
  let action: string | null = null
  if (segs.length > 1 && ACTIONS.has(segs[segs.length - 1]!)) action = segs.pop()!
  let version: string | undefined
  if (segs.length > 2 && segs[segs.length - 2] === 'versions') { version = segs.pop()!; segs.pop() }
  if (segs.length < 1 || segs.length > 2 || segs.some((s) => s === '')) return null
  return { model: segs.join('/'), version, action }
}

const invalid = (msg: string) => new ServeError('INVALID_REQUEST', msg)

interface JsonInput { name?: unknown; datatype?: unknown; shape?: unknown; data?: unknown; parameters?: Record<string, unknown> }
interface JsonRequest { id?: unknown; inputs?: unknown; outputs?: unknown; parameters?: Record<string, unknown> }

/** What the request asked of its outputs: which, and which go back as binary. */
interface OutputChoice { names: string[] | undefined; binary: (name: string) => boolean }

/** The inference request in a REST body (JSON, or JSON header + binary tensors). */
export function parseInferBody(body: Buffer, headerLength: string | string[] | undefined, target: OipTarget): { req: OipInferRequest; out: OutputChoice; timeoutUs?: number } {
  let jsonEnd = body.length
  if (headerLength !== undefined) {
    const n = Number(Array.isArray(headerLength) ? headerLength[0] : headerLength)
    if (!Number.isSafeInteger(n) || n < 0 || n > body.length) throw invalid(`header Inference-Header-Content-Length must be an integer in [0, ${body.length}] (the body's length; got "${headerLength}")`)
    jsonEnd = n
  }
  if (jsonEnd === 0) return rawRequest(body, target)
  let json: JsonRequest
  try { json = JSON.parse(body.subarray(0, jsonEnd).toString('utf8')) as JsonRequest } catch (e) {
    throw invalid(`the inference request is not valid JSON (${(e as Error).message})${headerLength === undefined && body.length > 0 ? '; a binary body needs the Inference-Header-Content-Length header' : ''}`)
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw invalid('the inference request must be a JSON object with "inputs"')
  if (!Array.isArray(json.inputs) || json.inputs.length === 0) throw invalid('the inference request needs "inputs": a non-empty list of {name, shape, datatype, data}')
  if (json.id !== undefined && typeof json.id !== 'string') throw invalid(`"id" must be a string (got ${JSON.stringify(json.id)})`)
  let at = jsonEnd
  const inputs: OipTensor[] = json.inputs.map((x: JsonInput, i: number) => {
    if (x === null || typeof x !== 'object' || typeof x.name !== 'string' || !x.name) throw invalid(`inputs[${i}] needs a "name" (a non-empty string)`)
    const size = x.parameters?.['binary_data_size']
    if (size === undefined) return tensorFromJson(x.name, x.datatype, x.shape, x.data)
    if (x.data !== undefined) throw invalid(`input ${x.name}: has both "data" and parameters.binary_data_size; send one`)
    if (!Number.isSafeInteger(size) || (size as number) < 0) throw invalid(`input ${x.name}: parameters.binary_data_size must be a non-negative integer (got ${JSON.stringify(size)})`)
    if (at + (size as number) > body.length) throw invalid(`input ${x.name}: binary_data_size ${size} runs past the end of the body (${body.length - at} bytes left)`)
    const raw = body.subarray(at, at + (size as number))
    at += size as number
    return tensorFromRaw(x.name, x.datatype, x.shape, raw, x.parameters?.['content_type'])
  })
  if (at !== body.length) throw invalid(`${body.length - at} bytes after the last binary tensor; binary_data_size must cover the body after the JSON header`)
  const all = json.parameters?.['binary_data_output'] === true
  let names: string[] | undefined
  const perOutput = new Map<string, boolean>()
  if (json.outputs !== undefined) {
    if (!Array.isArray(json.outputs)) throw invalid('"outputs" must be a list of {name, parameters?}')
    names = json.outputs.map((o: { name?: unknown; parameters?: Record<string, unknown> }, i: number) => {
      if (o === null || typeof o !== 'object' || typeof o.name !== 'string') throw invalid(`outputs[${i}] needs a "name"`)
      const b = o.parameters?.['binary_data']
      if (b !== undefined) perOutput.set(o.name, b === true)
      return o.name
    })
  }
  const timeout = json.parameters?.['timeout']
  if (timeout !== undefined && (!Number.isSafeInteger(timeout) || (timeout as number) <= 0)) throw invalid(`parameters.timeout must be a positive integer of microseconds (got ${JSON.stringify(timeout)})`)
  return {
    req: { ...(json.id !== undefined ? { id: json.id as string } : {}), inputs, ...(names ? { outputs: names } : {}) },
    out: { names, binary: (n) => perOutput.get(n) ?? all },
    ...(timeout !== undefined ? { timeoutUs: timeout as number } : {}),
  }
}

/** A raw body (header length 0): one tensor for a single-input model whose type and shape are known; batch 1. */
function rawRequest(body: Buffer, target: OipTarget): { req: OipInferRequest; out: OutputChoice } {
  const inputs = target.method.inputs
  const only = inputs[0]
  if (inputs.length !== 1 || only === undefined) throw invalid(`a raw request body (Inference-Header-Content-Length: 0) is one tensor, for models with one input; model ${target.modelName} has ${inputs.length}`)
  if (only.dtype === null || only.shape === null || only.shape.some((d) => d < 0)) throw invalid(`a raw request body needs the input's datatype and whole shape from the model metadata; input ${only.name} of model ${target.modelName} has a free dim or a type set at run time, so send a JSON header`)
  const shape = target.method.batched ? [1, ...only.shape] : only.shape
  return { req: { inputs: [tensorFromRaw(only.name, oipDatatype(only.dtype), shape, body)] }, out: { names: undefined, binary: () => true } }
}

/** The response: JSON, or (any binary output) JSON header + binary tensors with its length header. */
export function renderInferResponse(res: OipInferResponse, out: OutputChoice): { body: Buffer | string; headerLength?: number } {
  const binaries: Uint8Array[] = []
  const outputs = res.outputs.map((t) => {
    if (!out.binary(t.name)) return { name: t.name, datatype: t.datatype, shape: t.shape, data: jsonDataOf(t) }
    const raw = rawOf(t)
    binaries.push(raw)
    return { name: t.name, datatype: t.datatype, shape: t.shape, parameters: { binary_data_size: raw.byteLength } }
  })
  const json = JSON.stringify({ model_name: res.model_name, model_version: res.model_version, ...(res.id !== undefined ? { id: res.id } : {}), outputs })
  if (binaries.length === 0) return { body: json }
  const header = Buffer.from(json)
  return { body: Buffer.concat([header, ...binaries]), headerLength: header.length }
}

export function registerOipRoutes(app: FastifyInstance, registry: ServableRegistry): void {
  const sendError = (reply: FastifyReply, e: unknown) => {
    const { status, body } = oipError(toServeError(e, 'INVALID_REQUEST'))
    return reply.code(status).type('application/json').send(body)
  }
  app.get('/v2', async () => serverMetadata())

  const handle = async (req: FastifyRequest, reply: FastifyReply) => {
    const p = parseModelPath(req.url)
    if (p === null) return sendError(reply, new ServeError('SERVABLE_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}: OIP model routes are /v2/models/{model}[/versions/{v}][/ready|/infer], {model} = servable or servable/method`))
    const verb = p.action === 'infer' || p.action === 'generate' || p.action === 'generate_stream' ? 'POST' : 'GET'
    if (req.method !== verb) return sendError(reply, new ServeError('METHOD_NOT_ALLOWED', `${req.method} ${req.url.split('?')[0]}: use ${verb}`))
    if (p.action === 'ready') return ready(p, reply)
    if (p.action === 'generate' || p.action === 'generate_stream') {
      let v: number
      try { v = parseVersion(p.version) } catch (e) { return sendError(reply, e) }
      const llm = registry.get(p.model, v)?.servable.llm ? registry.llm(p.model, v) : undefined
      if (!llm) return sendError(reply, new ServeError('SERVABLE_NOT_FOUND', `no LLM model ${p.model}${p.version ? ` version ${p.version}` : ''}; generate serves LLM servables (loaded: ${registry.llms().map((l) => l.name).join(', ') || 'none'}), tensor models answer /infer`))
      req.access = { servable: llm.name, version: llm.version, method: p.action }
      return handleOipGenerate(llm, p.action === 'generate_stream', p.model, req, reply)
    }
    let target: OipTarget
    try { target = resolveModel(registry, p.model, p.version) } catch (e) { return sendError(reply, e) }
    if (p.action === null) return modelMetadata(registry, target)
    try {
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0)
      if (body.length === 0) throw invalid('the inference request has no body: send {"inputs": [...]}')
      const parsed = parseInferBody(body, req.headers['inference-header-content-length'], target)
      const header = requestTimeoutHeader(req.headers['x-request-timeout-ms'])
      const fromParam = parsed.timeoutUs === undefined ? undefined : Math.ceil(parsed.timeoutUs / 1000)
      const timeoutMs = header === undefined ? fromParam : fromParam === undefined ? header : Math.min(header, fromParam)
      req.access = { servable: target.servable.name, version: target.servable.version, method: target.method.name }
      const res = await oipInfer(registry, target, parsed.req, {
        protocol: 'rest', ...(timeoutMs === undefined ? {} : { timeoutMs }),
        onCancel: (cancel) => reply.raw.once('close', () => { if (!reply.raw.writableFinished) cancel() }),
      })
      const { body: out, headerLength } = renderInferResponse(res, parsed.out)
      if (headerLength === undefined) return reply.code(200).type('application/json').send(out)
      return reply.code(200).type('application/octet-stream').header('inference-header-content-length', String(headerLength)).send(out)
    } catch (e) {
      return sendError(reply, e)
    }
  }

  /** Model readiness: 200 serving, 503 loading/restarting/failed, 404 unknown. */
  const ready = (p: ModelPath, reply: FastifyReply) => {
    const name = p.model.split('/', 1)[0]!
    const version = p.version === undefined ? 0 : Number(p.version)
    const s = Number.isInteger(version) && version >= 0 ? registry.get(name, version) : undefined
    const failed = registry.failed.get(name)
    if (!s && failed === undefined) return reply.code(404).send({ error: `no model ${p.model}${p.version ? ` version ${p.version}` : ''}` })
    if (s && p.model.includes('/') && !s.servable.methods.some((m) => m.name === p.model.slice(name.length + 1))) return reply.code(404).send({ error: `servable ${name} has no method ${p.model.slice(name.length + 1)}` })
    const ok = s?.ready === true
    return reply.code(ok ? 200 : 503).send({ name: p.model, ready: ok, ...(ok || failed === undefined ? {} : { error: failed }) })
  }
  app.route({ method: ['GET', 'POST', 'PUT', 'DELETE'], url: '/v2/models/*', handler: handle })
}
