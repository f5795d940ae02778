/**
 * One error type for the whole server. Each code has one row in ERROR_CODES with its HTTP status,
 * gRPC status and MindSpore `ErrorMsg.error_code`; only protocol/ turns errors into wire forms and
 * only cli/ turns them into exit codes. Errors cross process boundaries as `{ code, message }`.
 */
import { status as GrpcStatus } from '@grpc/grpc-js'

/** MindSpore Serving status codes carried in ErrorMsg.error_code. */
export const MS_STATUS = { SUCCESS: 0, FAILED: 1, INVALID_INPUTS: 2, SYSTEM_ERROR: 3, WORKER_UNAVAILABLE: 4, SERVABLE_UNAVAILABLE: 5 } as const

export const ERROR_CODES = {
  INVALID_REQUEST: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT, ms: MS_STATUS.INVALID_INPUTS },
  PAYLOAD_TOO_LARGE: { http: 413, grpc: GrpcStatus.RESOURCE_EXHAUSTED, ms: MS_STATUS.INVALID_INPUTS },
  METHOD_NOT_ALLOWED: { http: 405, grpc: GrpcStatus.UNIMPLEMENTED, ms: MS_STATUS.INVALID_INPUTS },
  SERVABLE_NOT_FOUND: { http: 404, grpc: GrpcStatus.NOT_FOUND, ms: MS_STATUS.INVALID_INPUTS },
  VALIDATION: { http: 422, grpc: GrpcStatus.INVALID_ARGUMENT, ms: MS_STATUS.INVALID_INPUTS },
  QUEUE_FULL: { http: 429, grpc: GrpcStatus.RESOURCE_EXHAUSTED, ms: MS_STATUS.FAILED },
  SERVABLE_NOT_READY: { http: 503, grpc: GrpcStatus.UNAVAILABLE, ms: MS_STATUS.SERVABLE_UNAVAILABLE },
  REPLICA_CRASHED: { http: 503, grpc: GrpcStatus.UNAVAILABLE, ms: MS_STATUS.WORKER_UNAVAILABLE },
  TIMEOUT: { http: 504, grpc: GrpcStatus.DEADLINE_EXCEEDED, ms: MS_STATUS.FAILED },
  CANCELLED: { http: 499, grpc: GrpcStatus.CANCELLED, ms: MS_STATUS.FAILED },
  STAGE_FAILED: { http: 500, grpc: GrpcStatus.INTERNAL, ms: MS_STATUS.FAILED },
  INFERENCE_FAILED: { http: 500, grpc: GrpcStatus.INTERNAL, ms: MS_STATUS.FAILED },
  INTERNAL: { http: 500, grpc: GrpcStatus.INTERNAL, ms: MS_STATUS.SYSTEM_ERROR },
  CONFIG_INVALID: { http: 500, grpc: GrpcStatus.INTERNAL, ms: MS_STATUS.SYSTEM_ERROR },
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export interface SerializedError { code: ErrorCode; message: string; details?: unknown }

export class ServeError extends Error {
  readonly code: ErrorCode
  readonly details?: unknown
  constructor(code: ErrorCode, message: string, options: { details?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'ServeError'
    this.code = code
    this.details = options.details
  }
  get httpStatus(): number { return ERROR_CODES[this.code].http }
  get grpcStatus(): number { return ERROR_CODES[this.code].grpc }
  get msStatus(): number { return ERROR_CODES[this.code].ms }
  toJSON(): SerializedError { return { code: this.code, message: this.message, ...(this.details === undefined ? {} : { details: this.details }) } }
}

/** Matches on `code`, not `instanceof`: errors are rebuilt after crossing a process boundary. */
export function isServeError(e: unknown): e is ServeError {
  return typeof e === 'object' && e !== null && typeof (e as ServeError).code === 'string' && (e as ServeError).code in ERROR_CODES && e instanceof Error
}

/** Turns anything thrown into a ServeError (unknown errors become INTERNAL with their message). */
export function toServeError(e: unknown, fallback: ErrorCode = 'INTERNAL'): ServeError {
  if (isServeError(e)) return e
  if (typeof e === 'object' && e !== null && 'code' in e && 'message' in e && (e as SerializedError).code in ERROR_CODES) {
    const s = e as SerializedError
    return new ServeError(s.code, s.message, { details: s.details })
  }
  return new ServeError(fallback, e instanceof Error ? e.message : String(e), { cause: e })
}
