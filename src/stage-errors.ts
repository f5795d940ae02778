/**
 * Errors a servable's own stage code may throw. They are matched by `code` (not instanceof): the
 * config is bundled separately from the server, so its copy of this class is not the server's.
 */

/**
 * Thrown by a stage when the request's input is wrong (a string where a tensor is needed, a value
 * out of the range the stage accepts). The request gets 400 / INVALID_ARGUMENT with the message,
 * instead of the 500 an ordinary exception gets.
 */
export class InvalidInputError extends Error {
  readonly code = 'INVALID_REQUEST' as const
  constructor(message: string) {
    super(message)
    this.name = 'InvalidInputError'
  }
}

/** True for an InvalidInputError from any copy of this module. */
export function isInvalidInputError(e: unknown): e is InvalidInputError {
  return e instanceof Error && (e as { code?: unknown }).code === 'INVALID_REQUEST'
}
