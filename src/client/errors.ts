/**
 * The one error the client throws. A whole-request failure (MindSpore's single ErrorMsg, an HTTP
 * error status, a gRPC status) and every transport failure become a ClientError; per-instance
 * predict errors are results, not exceptions (MindSpore's Python client, spec §5.1).
 *
 * `code` is one vocabulary over both transports: the server's error code (errors.ts) read back
 * from the HTTP status, the gRPC status or MindSpore's ErrorMsg status, plus what only a client
 * sees (UNREACHABLE, UNSUPPORTED, BAD_REPLY). MindSpore's Predict reply carries only five statuses,
 * so over gRPC Predict `code` is as precise as those allow; `msStatus` keeps the raw one.
 */
import { status as GrpcStatus } from '@grpc/grpc-js'
import { MS_STATUS, type ErrorCode } from '../errors.ts'

export type ClientErrorCode =
  | ErrorCode
  /** No connection: refused, host not found, TLS handshake failed, reset before an answer. */
  | 'UNREACHABLE'
  /** The server has no such route or RPC (an older ms-serve, MindSpore Serving itself), or the transport cannot do it. */
  | 'UNSUPPORTED'
  /** The server answered something this client cannot read. */
  | 'BAD_REPLY'
  /** An error status the client has no name for (e.g. `--rest-always-200` answers every error with 200). */
  | 'UNKNOWN'

export interface ClientErrorInit {
  code: ClientErrorCode
  transport: 'rest' | 'grpc'
  httpStatus?: number
  grpcCode?: number
  msStatus?: number
  cause?: unknown
}

export class ClientError extends Error {
  readonly code: ClientErrorCode
  readonly transport: 'rest' | 'grpc'
  /** REST: the answer's HTTP status. */
  declare readonly httpStatus?: number
  /** gRPC: the call's status code (grpc-js `status`); 0 (OK) when the error came in a Predict reply. */
  declare readonly grpcCode?: number
  /** gRPC Predict: MindSpore's ErrorMsg.error_code (1 FAILED, 2 INVALID_INPUTS, 3 SYSTEM_ERROR, ...). */
  declare readonly msStatus?: number

  constructor(message: string, init: ClientErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause })
    this.name = 'ClientError'
    this.code = init.code
    this.transport = init.transport
    if (init.httpStatus !== undefined) this.httpStatus = init.httpStatus
    if (init.grpcCode !== undefined) this.grpcCode = init.grpcCode
    if (init.msStatus !== undefined) this.msStatus = init.msStatus
  }
}

/** Matches on `name`, not `instanceof` (the error may come from another copy of the module). */
export function isClientError(e: unknown): e is ClientError {
  return e instanceof Error && e.name === 'ClientError' && typeof (e as { code?: unknown }).code === 'string'
}

// The server's HTTP statuses (errors.ts `http`, and the `tgi`/`openai` columns where they differ).
const BY_HTTP: Record<number, ErrorCode> = {
  400: 'INVALID_REQUEST', 401: 'UNAUTHENTICATED', 404: 'SERVABLE_NOT_FOUND', 405: 'METHOD_NOT_ALLOWED', 408: 'TIMEOUT',
  413: 'PAYLOAD_TOO_LARGE', 422: 'VALIDATION', 424: 'INFERENCE_FAILED', 429: 'QUEUE_FULL', 499: 'CANCELLED',
  500: 'INTERNAL', 503: 'SERVABLE_NOT_READY', 504: 'TIMEOUT',
}

export function codeOfHttp(status: number): ClientErrorCode {
  return BY_HTTP[status] ?? 'UNKNOWN'
}

const BY_MS: Record<number, ErrorCode> = {
  [MS_STATUS.FAILED]: 'INFERENCE_FAILED',
  [MS_STATUS.INVALID_INPUTS]: 'INVALID_REQUEST',
  [MS_STATUS.SYSTEM_ERROR]: 'INTERNAL',
  [MS_STATUS.WORKER_UNAVAILABLE]: 'REPLICA_CRASHED',
  [MS_STATUS.SERVABLE_UNAVAILABLE]: 'SERVABLE_NOT_READY',
}

export function codeOfMsStatus(msStatus: number): ClientErrorCode {
  return BY_MS[msStatus] ?? 'UNKNOWN'
}

const BY_GRPC: Partial<Record<GrpcStatus, ClientErrorCode>> = {
  [GrpcStatus.INVALID_ARGUMENT]: 'INVALID_REQUEST',
  [GrpcStatus.NOT_FOUND]: 'SERVABLE_NOT_FOUND',
  [GrpcStatus.RESOURCE_EXHAUSTED]: 'QUEUE_FULL',
  [GrpcStatus.UNAVAILABLE]: 'SERVABLE_NOT_READY',
  [GrpcStatus.DEADLINE_EXCEEDED]: 'TIMEOUT',
  [GrpcStatus.CANCELLED]: 'CANCELLED',
  [GrpcStatus.UNAUTHENTICATED]: 'UNAUTHENTICATED',
  [GrpcStatus.UNIMPLEMENTED]: 'UNSUPPORTED',
  [GrpcStatus.INTERNAL]: 'INTERNAL',
}

/** grpc-js's text when the channel never connected (refused, no such host, TLS handshake failed). */
const NO_CONNECTION_RE = /No connection established|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|Failed to connect|handshake/i

/** The ClientError of a failed gRPC call; `address` names the server in connection failures. */
export function grpcClientError(e: { code?: number; details?: string; message?: string }, address: string): ClientError {
  const code = typeof e.code === 'number' ? e.code : GrpcStatus.UNKNOWN
  const details = e.details || e.message || 'gRPC call failed'
  if (code === GrpcStatus.UNAVAILABLE && NO_CONNECTION_RE.test(details)) {
    return new ClientError(`cannot reach ${address} (gRPC): ${connectionText(details)}`, { code: 'UNREACHABLE', transport: 'grpc', grpcCode: code, cause: e })
  }
  // grpc-js's own size check: "Received message larger than max (N vs. M)".
  const tooLarge = code === GrpcStatus.RESOURCE_EXHAUSTED && /larger than max/.test(details)
  return new ClientError(details, { code: tooLarge ? 'PAYLOAD_TOO_LARGE' : BY_GRPC[code as GrpcStatus] ?? 'UNKNOWN', transport: 'grpc', grpcCode: code, cause: e })
}

/** A short reason from a Node/undici/grpc-js connection error text or code. */
function connectionText(text: string): string {
  if (/ECONNREFUSED/.test(text)) return 'connection refused'
  if (/ENOTFOUND|EAI_AGAIN/.test(text)) return 'host not found'
  if (/ECONNRESET|socket hang up|other side closed/i.test(text)) return 'connection reset'
  return text
}

const NET_CODES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host not found',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connect timeout',
  UND_ERR_CONNECT_TIMEOUT: 'connect timeout',
  UND_ERR_SOCKET: 'connection closed by the server',
  UND_ERR_CLOSED: 'client closed',
  EPROTO: 'protocol error (https:// to a plain HTTP port, or the other way round?)',
}

/** The code of a Node network error (also inside the AggregateError of a dual-stack connect). */
function netCode(e: unknown): string | undefined {
  const x = e as { code?: unknown; errors?: unknown[]; cause?: unknown }
  if (typeof x?.code === 'string') return x.code
  if (Array.isArray(x?.errors) && x.errors.length) return netCode(x.errors[0])
  return x?.cause ? netCode(x.cause) : undefined
}

/**
 * The ClientError of a REST request that got no HTTP answer: cancelled by the caller's signal,
 * timed out by the client, or no connection (`origin` named in the message).
 */
export function restTransportError(e: unknown, origin: string, aborted: { signal?: AbortSignal; timedOut: boolean }): ClientError {
  if (isClientError(e)) return e
  if (aborted.timedOut) return new ClientError(`no answer from ${origin} within the client's timeout`, { code: 'TIMEOUT', transport: 'rest', cause: e })
  if (aborted.signal?.aborted || (e as Error)?.name === 'AbortError') {
    return new ClientError('request cancelled by the caller', { code: 'CANCELLED', transport: 'rest', cause: e })
  }
  const code = netCode(e)
  if (code !== undefined && (NET_CODES[code] !== undefined || /CERT|TLS|SSL|UNABLE_TO/.test(code))) {
    const why = NET_CODES[code] ?? `TLS: ${(e as Error).message} (${code})`
    return new ClientError(`cannot reach ${origin}: ${why}`, { code: 'UNREACHABLE', transport: 'rest', cause: e })
  }
  return new ClientError(`request to ${origin} failed: ${(e as Error)?.message ?? String(e)}`, { code: 'UNKNOWN', transport: 'rest', cause: e })
}
