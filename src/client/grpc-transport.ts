/**
 * The client over gRPC (one grpc-js channel, 512 MiB message limits as MindSpore's client):
 * MindSpore's MSService.Predict, msserve.v1.MsServe Generate (server streaming) and ServerInfo,
 * and grpc.health.v1.Health/Check. Requests are built like MindSpore's Python client builds them
 * (protocol/grpc/ms-codec.ts) and replies read with its rules.
 */
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { protoPath as healthProtoPath } from 'grpc-health-check'
import type { ServablesDescription } from '../runtime/describe.ts'
import { decodeReply, encodeRequest, type WirePredictReply, type WirePredictRequest } from '../protocol/grpc/ms-codec.ts'
import { loadMsServiceDefinition, MS_PROTO_LOADER_OPTIONS, protoDir } from '../protocol/grpc/ms-service.ts'
import { ClientError, codeOfMsStatus, grpcClientError } from './errors.ts'
import { describeServerInfo, type WireServerInfo } from './describe.ts'
import { grpcGenerateFields } from './params.ts'
import type {
  CallOptions, ClientOptions, GenerateEvent, GenerateOptions, GenerateParams, Health, Instance, InstanceResult, PredictOptions, Prompt,
  TokenEvent,
} from './types.ts'

const PREDICT_PATH = '/mindspore.serving.proto.MSService/Predict'
const GENERATE_PATH = '/msserve.v1.MsServe/Generate'
const SERVER_INFO_PATH = '/msserve.v1.MsServe/ServerInfo'
const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check'
const HEALTH_SERVING = 1

type Serialize = (v: unknown) => Buffer
type Deserialize = (b: Buffer) => unknown
interface Codec { serialize: Serialize; deserialize: Deserialize }

let msServe: Record<'Generate' | 'ServerInfo', Codec> | undefined
let health: Codec | undefined

const codecOf = (def: grpc.MethodDefinition<unknown, unknown>): Codec => ({ serialize: def.requestSerialize as Serialize, deserialize: def.responseDeserialize as Deserialize })

/** msserve.v1.MsServe, decoded with defaults (absent fields read as '', 0, false, []). */
function msServeCodecs(): Record<'Generate' | 'ServerInfo', Codec> {
  if (msServe) return msServe
  const pkg = protoLoader.loadSync('ms_serve.proto', { ...MS_PROTO_LOADER_OPTIONS, includeDirs: [protoDir()] })
  const svc = pkg['msserve.v1.MsServe'] as unknown as grpc.ServiceDefinition
  msServe = { Generate: codecOf(svc['Generate']!), ServerInfo: codecOf(svc['ServerInfo']!) }
  return msServe
}

function healthCodec(): Codec {
  if (health) return health
  const pkg = protoLoader.loadSync(healthProtoPath, { keepCase: true, enums: Number, defaults: true })
  health = codecOf((pkg['grpc.health.v1.Health'] as unknown as grpc.ServiceDefinition)['Check']!)
  return health
}

const cancelledByCaller = () => new ClientError('request cancelled by the caller', { code: 'CANCELLED', transport: 'grpc', grpcCode: grpc.status.CANCELLED })

/**
 * A PredictReply -> one result per instance, by the Python client's rules; a whole-request error
 * (one ErrorMsg) is thrown as a ClientError with its MindSpore status.
 */
export function predictResults(reply: WirePredictReply): InstanceResult[] {
  let outcome
  try {
    outcome = decodeReply(reply)
  } catch (e) {
    throw new ClientError(`unreadable reply: ${(e as Error).message}`, { code: 'BAD_REPLY', transport: 'grpc', grpcCode: grpc.status.OK })
  }
  if ('error' in outcome) {
    const { msStatus, message } = outcome.error
    throw new ClientError(message || 'Predict failed', { code: codeOfMsStatus(msStatus), transport: 'grpc', grpcCode: grpc.status.OK, msStatus })
  }
  return outcome.instances.map((r): InstanceResult => ('error' in r ? { error: r.error.message, msStatus: r.error.msStatus } : { outputs: r.outputs }))
}

export class GrpcTransport {
  readonly address: string
  private readonly client: grpc.Client
  private readonly metadata: grpc.Metadata
  private readonly timeoutMs: number | undefined
  private readonly predictCodec: { serialize: (r: WirePredictRequest) => Buffer; deserialize: (b: Buffer) => WirePredictReply }

  constructor(address: string, o: ClientOptions) {
    if (!/^[^\s/]+:\d+$/.test(address) && !address.startsWith('unix:')) {
      throw new ClientError(`grpc must be HOST:PORT, e.g. 127.0.0.1:5500 (got "${address}")`, { code: 'INVALID_REQUEST', transport: 'grpc' })
    }
    this.address = address
    const t = o.tls
    const buf = (p: string | Uint8Array | undefined) => (p === undefined ? null : Buffer.from(p))
    const creds = t ? grpc.credentials.createSsl(buf(t.ca), buf(t.key), buf(t.cert)) : grpc.credentials.createInsecure()
    const limit = 512 * 1024 * 1024
    this.client = new grpc.Client(address, creds, { 'grpc.max_send_message_length': limit, 'grpc.max_receive_message_length': limit })
    this.metadata = new grpc.Metadata()
    for (const [k, v] of Object.entries(o.headers ?? {})) this.metadata.set(k.toLowerCase(), v)
    if (o.apiKey !== undefined) this.metadata.set('authorization', `Bearer ${o.apiKey}`)
    this.timeoutMs = o.timeoutMs
    const def = loadMsServiceDefinition()['Predict']!
    this.predictCodec = { serialize: def.requestSerialize as (r: WirePredictRequest) => Buffer, deserialize: def.responseDeserialize as (b: Buffer) => WirePredictReply }
  }

  private callOptions(o: CallOptions): grpc.CallOptions {
    const ms = o.timeoutMs ?? this.timeoutMs
    return ms !== undefined && ms > 0 ? { deadline: Date.now() + ms } : {}
  }

  /** One unary call; the signal cancels it. Errors are ClientErrors. */
  private unary<Req, Res>(path: string, serialize: (r: Req) => Buffer, deserialize: (b: Buffer) => Res, req: Req, o: CallOptions): Promise<Res> {
    const signal = o.signal
    if (signal?.aborted) return Promise.reject(cancelledByCaller())
    return new Promise((resolve, reject) => {
      const onAbort = () => call.cancel()
      const call = this.client.makeUnaryRequest(path, serialize, deserialize, req, this.metadata.clone(), this.callOptions(o), (err, res) => {
        signal?.removeEventListener('abort', onAbort)
        if (err) reject(signal?.aborted ? cancelledByCaller() : grpcClientError(err, this.address))
        else resolve(res!)
      })
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** Sends an already-built PredictRequest and returns the raw reply (tests of odd wire inputs; prebuilt bench requests). */
  predictWire(request: WirePredictRequest, o: CallOptions = {}): Promise<WirePredictReply> {
    return this.unary(PREDICT_PATH, this.predictCodec.serialize, this.predictCodec.deserialize, request, o)
  }

  async predict(servable: string, method: string, instances: Instance | readonly Instance[], o: PredictOptions = {}): Promise<InstanceResult[]> {
    const list = (Array.isArray(instances) ? instances : [instances]) as Instance[]
    let request: WirePredictRequest
    try {
      request = encodeRequest(servable, method, o.version ?? 0, list)
    } catch (e) {
      throw new ClientError((e as Error).message, { code: 'INVALID_REQUEST', transport: 'grpc' })
    }
    return predictResults(await this.predictWire(request, o))
  }

  async servables(o: CallOptions = {}): Promise<ServablesDescription> {
    const { serialize, deserialize } = msServeCodecs().ServerInfo
    return describeServerInfo(await this.unary(SERVER_INFO_PATH, serialize, deserialize, {}, o) as WireServerInfo)
  }

  /** Health/Check of "" (the whole server: every servable serves, none failed to load). */
  async health(o: CallOptions = {}): Promise<Health> {
    const { serialize, deserialize } = healthCodec()
    try {
      const r = await this.unary(HEALTH_CHECK_PATH, serialize, deserialize, { service: '' }, o) as { status: number }
      return { live: true, ready: r.status === HEALTH_SERVING }
    } catch (e) {
      if ((e as ClientError).code === 'UNREACHABLE') return { live: false, ready: false, error: (e as Error).message }
      throw e
    }
  }

  async *generate(prompt: Prompt, params: GenerateParams | undefined, o: GenerateOptions = {}): AsyncGenerator<GenerateEvent> {
    const request = {
      ...grpcGenerateFields(params),
      ...(o.servable !== undefined ? { servable: o.servable } : {}),
      ...(o.version ? { version_number: o.version } : {}),
      ...(typeof prompt === 'string' ? { prompt } : { prompt_token_ids: prompt.inputIds }),
    }
    const signal = o.signal
    if (signal?.aborted) throw cancelledByCaller()
    const { serialize, deserialize } = msServeCodecs().Generate
    const call = this.client.makeServerStreamRequest(GENERATE_PATH, serialize, deserialize, request, this.metadata.clone(), this.callOptions(o))
    const onAbort = () => call.cancel()
    signal?.addEventListener('abort', onAbort, { once: true })
    let finished = false
    try {
      for await (const raw of call as AsyncIterable<WireGenerateEvent>) {
        const tok = tokenOf(raw)
        if (tok) yield tok
        // Messages grpc-js had already received are not handed out once the caller has aborted.
        if (signal?.aborted) throw cancelledByCaller()
        if (raw.finish_reason) {
          finished = true
          yield { type: 'done', generatedText: raw.generated_text, finishReason: raw.finish_reason, generatedTokens: raw.generated_tokens }
          return
        }
      }
    } catch (e) {
      if (signal?.aborted) throw cancelledByCaller()
      throw grpcClientError(e as grpc.ServiceError, this.address)
    } finally {
      signal?.removeEventListener('abort', onAbort)
      // Breaking out of the loop cancels the call: the server frees the request's slot.
      if (!finished) call.cancel()
    }
    throw new ClientError('the Generate stream ended without its final event', { code: 'BAD_REPLY', transport: 'grpc', grpcCode: grpc.status.OK })
  }

  close(): void {
    this.client.close()
  }
}

interface WireGenerateEvent {
  index: number
  token_id: number
  token_text: string
  generated_text: string
  finish_reason: string
  generated_tokens: number
  logprob: number
  top_tokens: Array<{ id: number; text: string; logprob: number; special: boolean }>
}

/** The event's token; the final event has none of its own when its token_id is -1. */
function tokenOf(e: WireGenerateEvent): TokenEvent | null {
  if (e.token_id === -1) return null
  const t: TokenEvent = { type: 'token', index: e.index, id: Number(e.token_id), text: e.token_text, logprob: e.logprob }
  if (e.top_tokens.length) t.topTokens = e.top_tokens.map((x) => ({ id: Number(x.id), text: x.text, logprob: x.logprob, special: x.special }))
  return t
}
