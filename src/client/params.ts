/**
 * Parameter names on the wire. The client takes camelCase; TGI's `parameters`, the MindSpore-style
 * instance, msserve.v1 GenerateRequest and OpenAI bodies all use snake_case, so one mapping serves all.
 */
import { ClientError } from './errors.ts'
import type { GenerateParams } from './types.ts'

/** `maxNewTokens` -> `max_new_tokens`. */
export function snakeCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
}

/** The object's defined keys in snake_case, values as they are (nested objects untouched). */
export function snakeKeys(params: object | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  if (!params) return out
  for (const [k, v] of Object.entries(params)) if (v !== undefined) out[snakeCase(k)] = v
  return out
}

/** The GenerateParams keys msserve.v1 GenerateRequest has a field for. */
const GRPC_GENERATE_FIELDS = new Set<keyof GenerateParams>([
  'maxNewTokens', 'temperature', 'topK', 'topP', 'typicalP', 'repetitionPenalty', 'doSample', 'seed', 'stop', 'topNTokens',
])

/** GenerateRequest sampling fields; a parameter the proto has no field for is refused (it would be dropped silently). */
export function grpcGenerateFields(params: GenerateParams | undefined): Record<string, unknown> {
  for (const [k, v] of Object.entries(params ?? {})) {
    if (v !== undefined && !GRPC_GENERATE_FIELDS.has(k as keyof GenerateParams)) {
      throw new ClientError(`generate parameter ${k} is not in msserve.v1 GenerateRequest: use the REST transport (url) for it`, { code: 'UNSUPPORTED', transport: 'grpc' })
    }
  }
  return snakeKeys(params)
}

/** An OpenAI chat body's parameters (camelCase keys in snake_case). */
export function chatFields(params: object | undefined): Record<string, unknown> {
  return snakeKeys(params)
}
