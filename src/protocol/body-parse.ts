/**
 * Turns MindSpore request bodies (REST JSON, gRPC PredictRequest bytes) into instances, with the
 * instance-count limit checked while reading. Small bodies are parsed on the listeners' thread;
 * large ones in a worker thread (piscina), so one 95 MB body does not freeze every other client.
 * The worker runs the same pure functions (parseMsBody) and hands typed arrays back by transfer.
 */
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import protobuf from 'protobufjs'
import { Piscina } from 'piscina'
import { ServeError, toServeError, type SerializedError } from '../errors.ts'
import type { Value } from '../tensor.ts'
import { instanceFromWire, type WireInstance } from '../runtime/wire.ts'
import type { instanceLimits } from '../runtime/policy.ts'
import { parseJsonBody } from './rest/ms-json-reader.ts'
import { parseInstances } from './rest/ms-instances.ts'
import { decodeInstances, type WirePredictRequest, type WireServableSpec } from './grpc/ms-codec.ts'

/** Bodies up to this size are parsed inline: below it a worker hop costs more than the parse. */
export const OFFLOAD_BYTES = 128 * 1024

/** Instance-count limits: per servable name, else `fallback` (built by runtime/policy.ts instanceLimits). */
export type InstanceLimits = ReturnType<typeof instanceLimits>

export interface ParseTask {
  kind: 'ms-json' | 'ms-grpc'
  body: Uint8Array
  limits: InstanceLimits
  /** REST: the servable named by the URL (gRPC reads it from the message). */
  servable?: string
}

export interface ParsedBody { instances: Record<string, Value>[]; spec?: WireServableSpec }

/** What the worker sends back: wire instances (typed arrays moved, not copied) or the error. */
export type ParseReply = { instances: WireInstance[]; spec?: WireServableSpec } | { error: SerializedError }

export function limitOf(limits: InstanceLimits, name: string): number {
  return limits.byName[name] ?? limits.fallback
}

export function tooManyInstances(max: number, servable: string): ServeError {
  return new ServeError('INVALID_REQUEST', `request has more than ${max} instances, the limit of servable ${servable}; `
    + `split it into smaller requests or raise max_instances_per_request (server config servables.${servable} or --max-instances-per-request)`)
}

/** gRPC PredictRequest field numbers (proto/ms_service.proto). */
const FIELD_SPEC = 1
const FIELD_INSTANCES = 2

/**
 * Counts the instances of an encoded PredictRequest without decoding them, and finds its
 * servable spec, so an oversized request is refused before any of it is materialised.
 */
function scanPredictRequest(buf: Uint8Array): { specEnd: number; specStart: number; count: number } {
  const r = protobuf.Reader.create(buf)
  let count = 0
  let specStart = -1
  let specEnd = -1
  while (r.pos < r.len) {
    const at = r.pos
    const tag = r.uint32()
    const field = tag >>> 3
    if (field === FIELD_INSTANCES) count++
    r.skipType(tag & 7)
    if (field === FIELD_SPEC) { specStart = at; specEnd = r.pos }
  }
  return { specStart, specEnd, count }
}

type Deserialize = (b: Buffer) => WirePredictRequest

/** Parses one body where it is called (inline or in the worker). Throws ServeError. */
export function parseMsBody(task: ParseTask, deserialize?: Deserialize): ParsedBody {
  const body = Buffer.from(task.body.buffer, task.body.byteOffset, task.body.byteLength)
  if (task.kind === 'ms-json') {
    const name = task.servable ?? ''
    const max = limitOf(task.limits, name)
    const doc = parseJsonBody(body.toString('utf8'), { maxTopArray: max, tooMany: (m) => tooManyInstances(m, name) })
    return { instances: parseInstances(doc) }
  }
  let req: WirePredictRequest
  try {
    const scan = scanPredictRequest(body)
    const spec = scan.specStart < 0 ? undefined : deserialize!(body.subarray(scan.specStart, scan.specEnd)).servable_spec ?? undefined
    const name = spec?.name ?? ''
    const max = limitOf(task.limits, name)
    if (scan.count > max) throw tooManyInstances(max, name)
    req = deserialize!(body)
  } catch (e) {
    if (e instanceof ServeError) throw e
    throw new ServeError('INVALID_REQUEST', `malformed PredictRequest message: ${(e as Error).message}`, { details: { malformed: true } })
  }
  return { instances: decodeInstances(req), ...(req.servable_spec ? { spec: req.servable_spec } : {}) }
}

function workerEntry(): string | null {
  const here = dirname(fileURLToPath(import.meta.url))
  // Bundled: dist/cli/main.js -> dist/protocol/body-parse-main.js; under tsx: src/protocol/.
  for (const p of [join(here, '..', 'protocol', 'body-parse-main.js'), join(here, 'body-parse-main.js'), join(here, '..', '..', 'dist', 'protocol', 'body-parse-main.js')]) {
    if (existsSync(p)) return p
  }
  return null
}

/** Large bodies waiting for the parse worker beyond this are refused (QUEUE_FULL). */
const MAX_QUEUED_BODIES = 32

export class BodyParser {
  private pool: Piscina | null = null
  private readonly entry = workerEntry()

  constructor(private readonly deserialize: Deserialize, private readonly offloadBytes = OFFLOAD_BYTES) {}

  /** Parses inline when small (or when no worker entry is built), else in the worker. */
  async parse(task: ParseTask): Promise<ParsedBody> {
    if (task.body.byteLength < this.offloadBytes || this.entry === null) return parseMsBody(task, this.deserialize)
    const pool = this.pool ??= new Piscina({ filename: this.entry, minThreads: 1, maxThreads: 1, idleTimeout: 30_000, maxQueue: MAX_QUEUED_BODIES })
    let body = task.body
    // Move the bytes to the worker; a view into a shared buffer is copied first.
    if (body.byteOffset !== 0 || body.byteLength !== body.buffer.byteLength) body = body.slice()
    let reply: ParseReply
    try {
      reply = await pool.run({ ...task, body }, { transferList: [body.buffer as ArrayBuffer] }) as ParseReply
    } catch (e) {
      if (/queue is at limit/i.test((e as Error).message)) {
        throw new ServeError('QUEUE_FULL', `Serving Error: more than ${MAX_QUEUED_BODIES} large request bodies are waiting to be parsed; retry later`)
      }
      throw toServeError(e)
    }
    if ('error' in reply) throw toServeError(reply.error)
    return { instances: reply.instances.map(instanceFromWire), ...(reply.spec ? { spec: reply.spec } : {}) }
  }

  async close(): Promise<void> {
    await this.pool?.destroy()
    this.pool = null
  }
}
