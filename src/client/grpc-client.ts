/**
 * A lean Node client for the MindSpore Serving compatible Predict RPC (used by tests and the
 * benchmark tool). Requests are built like MindSpore's Python client builds them; replies are read
 * with its rules and returned in the same shape the server-side handler produces.
 */
import * as grpc from '@grpc/grpc-js'
import { decodeReply, encodeRequest, type MsReplyError, type WirePredictReply, type WirePredictRequest } from '../protocol/grpc/ms-codec.ts'
import type { PredictOutcome } from '../runtime/predict-outcome.ts'
import { loadMsServiceDefinition, MS_PREDICT_PATH } from '../protocol/grpc/ms-service.ts'
import type { Value } from '../tensor.ts'

export interface MsGrpcClientOptions {
  /** Send/receive limit in MiB (MindSpore's client uses 512). */
  maxMessageMb?: number
  /** Defaults to an insecure channel; grpc.credentials.createSsl(ca, key, cert) for TLS / mutual TLS. */
  credentials?: grpc.ChannelCredentials
  /** Sent as `authorization: Bearer <apiKey>` on every call (a server started with --api-key). */
  apiKey?: string
  /** Further metadata on every call (e.g. x-request-id). */
  metadata?: Record<string, string>
}

export interface MsPredictOptions {
  /** Deadline in milliseconds from now. */
  timeoutMs?: number
}

export class MsGrpcClient {
  private readonly client: grpc.Client
  private readonly serialize: (req: WirePredictRequest) => Buffer
  private readonly deserialize: (buf: Buffer) => WirePredictReply
  private readonly metadata: grpc.Metadata

  constructor(address: string, options: MsGrpcClientOptions = {}) {
    const bytes = (options.maxMessageMb ?? 512) * 1024 * 1024
    this.client = new grpc.Client(address, options.credentials ?? grpc.credentials.createInsecure(), {
      'grpc.max_send_message_length': bytes,
      'grpc.max_receive_message_length': bytes,
    })
    this.metadata = new grpc.Metadata()
    if (options.apiKey !== undefined) this.metadata.set('authorization', `Bearer ${options.apiKey}`)
    for (const [k, v] of Object.entries(options.metadata ?? {})) this.metadata.set(k, v)
    const predict = loadMsServiceDefinition()['Predict']!
    this.serialize = predict.requestSerialize as (req: WirePredictRequest) => Buffer
    this.deserialize = predict.responseDeserialize as (buf: Buffer) => WirePredictReply
  }

  /**
   * Calls Predict. Application errors come back as `{ error }` (whole request) or per-instance
   * `{ error }` entries with `msStatus` set; transport failures reject with a grpc ServiceError.
   */
  predict(
    name: string,
    method: string,
    instances: Record<string, Value> | Record<string, Value>[],
    version = 0,
    options: MsPredictOptions = {},
  ): Promise<PredictOutcome<MsReplyError>> {
    const list = Array.isArray(instances) ? instances : [instances]
    const request = encodeRequest(name, method, version, list)
    return this.predictWire(request, options).then(decodeReply)
  }

  /** Sends an already-built wire request and returns the raw wire reply (for tests of odd inputs). */
  predictWire(request: WirePredictRequest, options: MsPredictOptions = {}): Promise<WirePredictReply> {
    const callOptions: grpc.CallOptions = options.timeoutMs === undefined ? {} : { deadline: Date.now() + options.timeoutMs }
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(MS_PREDICT_PATH, this.serialize, this.deserialize, request, this.metadata.clone(), callOptions, (err, reply) => {
        if (err) reject(err)
        else resolve(reply!)
      })
    })
  }

  close(): void {
    this.client.close()
  }
}
