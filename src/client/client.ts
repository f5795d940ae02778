/**
 * `new Client({ url, grpc, ... })`: one object for every ms-serve call over REST or gRPC. The
 * transports do the work (rest-transport.ts, grpc-transport.ts); this file picks one per call
 * and checks what a transport cannot do (chat is REST only, token-id prompts gRPC only).
 */
import type { ServablesDescription } from '../runtime/describe.ts'
import { ClientError } from './errors.ts'
import { GrpcTransport } from './grpc-transport.ts'
import { RestTransport } from './rest-transport.ts'
import type {
  CallOptions, ChatDelta, ChatMessage, ChatOptions, ChatParams, ChatReply, ClientOptions, GenerateEvent, GenerateOptions, GenerateParams,
  Health, Instance, InstanceResult, PredictOptions, Prompt,
} from './types.ts'

export class Client {
  /** The transport predict, generate, health and servables use. */
  readonly transport: 'rest' | 'grpc'
  private readonly restT: RestTransport | null
  private readonly grpcT: GrpcTransport | null

  constructor(options: ClientOptions) {
    if (!options.url && !options.grpc) {
      throw new ClientError('new Client() needs an address: { url: "http://127.0.0.1:1500" } (REST) or { grpc: "127.0.0.1:5500" }', { code: 'INVALID_REQUEST', transport: 'rest' })
    }
    if (options.transport === 'rest' && !options.url) throw new ClientError('transport "rest" needs url', { code: 'INVALID_REQUEST', transport: 'rest' })
    if (options.transport === 'grpc' && !options.grpc) throw new ClientError('transport "grpc" needs grpc (HOST:PORT)', { code: 'INVALID_REQUEST', transport: 'grpc' })
    if (options.timeoutMs !== undefined && !(Number.isInteger(options.timeoutMs) && options.timeoutMs > 0)) {
      throw new ClientError(`timeoutMs must be a positive integer of milliseconds (got ${options.timeoutMs})`, { code: 'INVALID_REQUEST', transport: options.url ? 'rest' : 'grpc' })
    }
    this.restT = options.url ? new RestTransport(options.url, options) : null
    this.grpcT = options.grpc ? new GrpcTransport(options.grpc, options) : null
    this.transport = options.transport ?? (this.restT ? 'rest' : 'grpc')
  }

  private get active(): RestTransport | GrpcTransport {
    return (this.transport === 'rest' ? this.restT : this.grpcT)!
  }

  /** The REST transport (raw `postRaw` calls); null without a `url`. */
  get restTransport(): RestTransport | null {
    return this.restT
  }

  /** The gRPC transport (raw `predictWire` calls); null without a `grpc` address. */
  get grpcTransport(): GrpcTransport | null {
    return this.grpcT
  }

  /**
   * MindSpore predict: one result per instance, in order; a failed instance is `{ error }` beside
   * the others' `{ outputs }` (MindSpore's Python client). A whole-request error (unknown
   * servable or method, a missing input, every instance failing alike, transport failures) throws
   * a ClientError.
   */
  predict(servable: string, method: string, instances: Instance | readonly Instance[], options?: PredictOptions): Promise<InstanceResult[]> {
    return this.active.predict(servable, method, instances, options)
  }

  /**
   * Streams a generation: one `{ type: 'token' }` event per token as it is sampled, then one
   * `{ type: 'done' }` with the whole text. Breaking out of the loop or aborting `signal` cancels
   * the request on the server. Errors (before or during the stream) are thrown as ClientErrors.
   */
  generate(prompt: Prompt, params?: GenerateParams, options?: GenerateOptions): AsyncIterable<GenerateEvent> {
    return this.active.generate(prompt, params, options)
  }

  /** OpenAI chat completions (REST only): the whole answer, or with `stream: true` its deltas. */
  chat(messages: readonly ChatMessage[], params: ChatParams | undefined, options: ChatOptions & { stream: true }): AsyncIterable<ChatDelta>
  chat(messages: readonly ChatMessage[], params?: ChatParams, options?: ChatOptions & { stream?: false }): Promise<ChatReply>
  chat(messages: readonly ChatMessage[], params?: ChatParams, options: ChatOptions = {}): Promise<ChatReply> | AsyncIterable<ChatDelta> {
    if (!this.restT) {
      const e = new ClientError('chat needs the REST address: it is OpenAI\'s /v1/chat/completions, which has no gRPC form. Pass url, e.g. new Client({ url: "http://127.0.0.1:1500" })', { code: 'UNSUPPORTED', transport: 'grpc' })
      if (options.stream) return { [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(e) }) }
      return Promise.reject(e)
    }
    return options.stream ? this.restT.chatStream(messages, params, options) : this.restT.chat(messages, params, options)
  }

  /** `{ live, ready }`; a server that cannot be reached is `{ live: false, ready: false, error }`. */
  health(options?: CallOptions): Promise<Health> {
    return this.active.health(options)
  }

  /** What each servable offers: versions, methods with their tensors, replicas (GET /servables, gRPC ServerInfo). */
  servables(options?: CallOptions): Promise<ServablesDescription> {
    return this.active.servables(options)
  }

  /** Closes the connections; calls in flight fail. */
  async close(): Promise<void> {
    this.grpcT?.close()
    await this.restT?.close()
  }
}
