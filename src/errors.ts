/**
 * One error type for the whole server. Each code has one row in ERROR_CODES with every wire form's
 * status: MindSpore REST (`http`), gRPC, MindSpore `ErrorMsg.error_code` (`ms`), TGI and OpenAI.
 * Only protocol/ turns errors into wire forms (protocol/error-render.ts, from this table) and only
 * cli/ turns them into exit codes. Errors cross process boundaries as `{ code, message }`.
 */
import { status as GrpcStatus } from '@grpc/grpc-js'

/** MindSpore Serving status codes carried in ErrorMsg.error_code. */
export const MS_STATUS = { SUCCESS: 0, FAILED: 1, INVALID_INPUTS: 2, SYSTEM_ERROR: 3, WORKER_UNAVAILABLE: 4, SERVABLE_UNAVAILABLE: 5 } as const

/** TGI's status and `error_type` for a code; `prefix` starts the message (TGI's "Input validation error: "). */
export interface TgiErrorColumn { status: number; type: string; prefix?: string }

/** OpenAI's status, error `type` and error `code` (null when absent) for a code. */
export interface OpenAiErrorColumn { status: number; type: 'invalid_request_error' | 'server_error' | 'server_overloaded'; code?: string }

export interface ErrorRow {
  /** MindSpore REST routes (`/model/...`), unless --rest-always-200. */
  http: number
  grpc: GrpcStatus
  ms: number
  tgi: TgiErrorColumn
  /** OpenAI routes (`/v1/...`): TGI's statuses (its OpenAI routes share them) with OpenAI's error types. */
  openai: OpenAiErrorColumn
}

const VALIDATION_PREFIX = 'Input validation error: '

/*
 * TGI statuses follow llm-serving.md §1.7 (422 validation, 424 generation, 429 overloaded, 500
 * incomplete_generation); codes TGI has no class for keep its 500 catch-all, except those that
 * reach the LLM routes only through the REST error handler (413, 405), which keep their status.
 */
export const ERROR_CODES = {
  INVALID_REQUEST: {
    http: 400, grpc: GrpcStatus.INVALID_ARGUMENT, ms: MS_STATUS.INVALID_INPUTS,
    tgi: { status: 422, type: 'validation', prefix: VALIDATION_PREFIX }, openai: { status: 422, type: 'invalid_request_error' },
  },
  PAYLOAD_TOO_LARGE: {
    http: 413, grpc: GrpcStatus.RESOURCE_EXHAUSTED, ms: MS_STATUS.INVALID_INPUTS,
    tgi: { status: 413, type: 'payload_too_large' }, openai: { status: 413, type: 'invalid_request_error' },
  },
  METHOD_NOT_ALLOWED: {
    http: 405, grpc: GrpcStatus.UNIMPLEMENTED, ms: MS_STATUS.INVALID_INPUTS,
    tgi: { status: 405, type: 'method_not_allowed' }, openai: { status: 405, type: 'invalid_request_error' },
  },
  /** No API key, or not one of the server's (--api-key). */
  UNAUTHENTICATED: {
    http: 401, grpc: GrpcStatus.UNAUTHENTICATED, ms: MS_STATUS.FAILED,
    tgi: { status: 401, type: 'authentication' }, openai: { status: 401, type: 'invalid_request_error', code: 'invalid_api_key' },
  },
  SERVABLE_NOT_FOUND: {
    http: 404, grpc: GrpcStatus.NOT_FOUND, ms: MS_STATUS.INVALID_INPUTS,
    tgi: { status: 404, type: 'not_found' }, openai: { status: 404, type: 'invalid_request_error', code: 'model_not_found' },
  },
  VALIDATION: {
    http: 422, grpc: GrpcStatus.INVALID_ARGUMENT, ms: MS_STATUS.INVALID_INPUTS,
    tgi: { status: 422, type: 'validation', prefix: VALIDATION_PREFIX }, openai: { status: 422, type: 'invalid_request_error' },
  },
  QUEUE_FULL: {
    http: 429, grpc: GrpcStatus.RESOURCE_EXHAUSTED, ms: MS_STATUS.FAILED,
    tgi: { status: 429, type: 'overloaded' }, openai: { status: 429, type: 'server_overloaded' },
  },
  SERVABLE_NOT_READY: {
    http: 503, grpc: GrpcStatus.UNAVAILABLE, ms: MS_STATUS.SERVABLE_UNAVAILABLE,
    tgi: { status: 503, type: 'unhealthy' }, openai: { status: 503, type: 'server_error' },
  },
  REPLICA_CRASHED: {
    http: 503, grpc: GrpcStatus.UNAVAILABLE, ms: MS_STATUS.WORKER_UNAVAILABLE,
    tgi: { status: 424, type: 'generation' }, openai: { status: 424, type: 'server_error' },
  },
  TIMEOUT: {
    http: 504, grpc: GrpcStatus.DEADLINE_EXCEEDED, ms: MS_STATUS.FAILED,
    tgi: { status: 500, type: 'incomplete_generation' }, openai: { status: 500, type: 'server_error' },
  },
  CANCELLED: {
    http: 499, grpc: GrpcStatus.CANCELLED, ms: MS_STATUS.FAILED,
    tgi: { status: 499, type: 'cancelled' }, openai: { status: 499, type: 'invalid_request_error' },
  },
  STAGE_FAILED: {
    http: 500, grpc: GrpcStatus.INTERNAL, ms: MS_STATUS.FAILED,
    tgi: { status: 500, type: 'incomplete_generation' }, openai: { status: 500, type: 'server_error' },
  },
  INFERENCE_FAILED: {
    http: 500, grpc: GrpcStatus.INTERNAL, ms: MS_STATUS.FAILED,
    tgi: { status: 424, type: 'generation' }, openai: { status: 424, type: 'server_error' },
  },
  INTERNAL: {
    http: 500, grpc: GrpcStatus.INTERNAL, ms: MS_STATUS.SYSTEM_ERROR,
    tgi: { status: 500, type: 'incomplete_generation' }, openai: { status: 500, type: 'server_error' },
  },
  CONFIG_INVALID: {
    http: 500, grpc: GrpcStatus.INTERNAL, ms: MS_STATUS.SYSTEM_ERROR,
    tgi: { status: 500, type: 'incomplete_generation' }, openai: { status: 500, type: 'server_error' },
  },
} as const satisfies Record<string, ErrorRow>

export type ErrorCode = keyof typeof ERROR_CODES

/** The row of `code`; a code from outside the table (a foreign error) gets INTERNAL's row. */
export function errorRow(code: string): ErrorRow {
  return (Object.hasOwn(ERROR_CODES, code) ? ERROR_CODES[code as ErrorCode] : ERROR_CODES.INTERNAL) as ErrorRow
}

export interface SerializedError { code: ErrorCode; message: string; details?: unknown }

/**
 * What runtime/ knows about an error, as data: runtime raises a code, a plain message (for logs and
 * route families without a text of their own) and these facts as `details`; protocol/texts.ts words
 * them in each family's texts (MindSpore's byte-exact ones, TGI's). Runtime never writes those texts.
 */
export type ErrorFacts =
  /** No such servable (version), or none of its replicas serves now. `version` 0 = the newest. */
  | { reason: 'servable_unavailable'; servable: string; method: string; version: number }
  | { reason: 'method_unavailable'; servable: string; method: string }
  | { reason: 'no_instances'; servable: string; method: string }
  | { reason: 'input_missing'; servable: string; method: string; input: string }
  /** A predict queue cannot take the request's instances. */
  | { reason: 'queue_full'; servable: string; method: string; limit: number }
  /** Every LLM engine of the servable runs its most concurrent requests. */
  | { reason: 'llm_overloaded'; limit: number }

/** The facts an error carries, if runtime attached any. */
export function factsOf(e: { details?: unknown }): ErrorFacts | undefined {
  const d = e.details as { reason?: unknown } | undefined
  return d !== null && typeof d === 'object' && typeof d.reason === 'string' ? (d as ErrorFacts) : undefined
}

/** A ServeError carrying `facts` (see ErrorFacts). */
export function factError(code: ErrorCode, message: string, facts: ErrorFacts): ServeError {
  return new ServeError(code, message, { details: facts })
}

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
