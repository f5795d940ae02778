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
import { parseJsonBody, type JsonLimits } from './rest/ms-json-reader.ts'
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

/** The instance limit of servable `name`; own keys only, so `/model/constructor:x` gets no inherited "limit". */
export function limitOf(limits: InstanceLimits, name: string): number {
  return Object.hasOwn(limits.byName, name) ? limits.byName[name]! : limits.fallback
}

export function tooManyInstances(max: number, servable: string): ServeError {
  return new ServeError('INVALID_REQUEST', `request has more than ${max} instances, the limit of servable ${servable}; `
    + `split it into smaller requests or raise its limit (server config servables.${servable}.max_instances_per_request, `
    + `defineServable option maxInstancesPerRequest, or --max-instances-per-request)`)
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

const NO_BYTES = new Uint8Array(0)

/** Bytes per instance the prefix probe allows for (MindSpore's smallest real instances are ~50). */
const PROBE_BYTES_PER_INSTANCE = 128
const PROBE_MIN_BYTES = 1 << 20

/**
 * Refuses a JSON body far over its instance limit from a prefix, before the whole body becomes a
 * string (a 95 MB body would cost another 95 MB). Probes only bodies 8x over the prefix, so a
 * body within its limit pays at most an eighth more parsing. Sound because the reader is
 * sequential and throws tooMany right after the (limit+1)-th element is complete: a prefix cut
 * just after a `}` or `]` byte (never inside a UTF-8 sequence) holds only complete tokens up to
 * there, so a tooMany in it is the whole body's verdict. Any other outcome decides nothing.
 */
function refuseFromPrefix(bytes: Uint8Array, limits: JsonLimits): void {
  if (!Number.isFinite(limits.maxTopArray)) return
  const probe = PROBE_MIN_BYTES + (limits.maxTopArray + 1) * PROBE_BYTES_PER_INSTANCE
  if (bytes.byteLength < 8 * probe) return
  const cut = Math.max(bytes.lastIndexOf(0x7d, probe), bytes.lastIndexOf(0x5d, probe)) // '}' ']'
  if (cut < 0) return
  const verdict: { tooMany?: Error } = {}
  const tooMany = (m: number) => (verdict.tooMany = limits.tooMany ? limits.tooMany(m) : new Error(`more than ${m}`))
  try {
    parseJsonBody(utf8(bytes.subarray(0, cut + 1)), { maxTopArray: limits.maxTopArray, tooMany })
  } catch {
    // A prefix is no document: only the tooMany verdict counts.
  }
  if (verdict.tooMany) throw verdict.tooMany
}

const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength)

/** The body as text. A function of its own, so no view of the bytes outlives the call. */
function utf8(b: Uint8Array): string {
  return asBuffer(b).toString('utf8')
}

/**
 * Parses one body where it is called (inline or in the worker). Throws ServeError. `owned`: the
 * task is the caller's to give up (the worker's copy); the JSON bytes are dropped from it once
 * decoded, and the text once read, so at most two of bytes, text and tree are held at a time.
 */
export function parseMsBody(task: ParseTask, deserialize?: Deserialize, owned = false): ParsedBody {
  if (task.kind === 'ms-json') {
    const name = task.servable ?? ''
    const limits = { maxTopArray: limitOf(task.limits, name), tooMany: (m: number) => tooManyInstances(m, name) }
    refuseFromPrefix(task.body, limits)
    let text = utf8(task.body)
    if (owned) task.body = NO_BYTES
    const doc = parseJsonBody(text, limits)
    text = ''
    return { instances: parseInstances(doc) }
  }
  const body = asBuffer(task.body)
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
