/**
 * The wire forms of an error, one small function per route family. Statuses and types come only
 * from the ERROR_CODES table (errors.ts); these functions shape bodies and nothing else.
 */
import { errorRow } from '../errors.ts'
import { renderError } from './rest/ms-render.ts'
import { msText, tgiText } from './texts.ts'

/**
 * What a renderer needs. A code from outside the table (a foreign error) renders as INTERNAL;
 * `details` may carry runtime's facts, which each family words in its own texts (texts.ts).
 */
export interface ErrorLike { code: string; message: string; details?: unknown }

/** MindSpore REST: `{"error_msg":"..."}` byte for byte; with --rest-always-200 every answer is 200, as MindSpore's. */
export function msRestError(e: ErrorLike, always200 = false): { status: number; body: string } {
  return { status: always200 ? 200 : errorRow(e.code).http, body: renderError(msText(e)) }
}

export interface TgiErrorBody { error: string; error_type: string }

/**
 * TGI prefixes validation texts ("Input validation error: ..."); its JSON deserialization
 * failures ("Failed to deserialize ...") come bare, and a text already prefixed is kept.
 */
function tgiMessage(message: string, prefix: string | undefined): string {
  return prefix && !message.startsWith(prefix) && !message.startsWith('Failed to') ? prefix + message : message
}

/** TGI: `{"error": "...", "error_type": "..."}` (llm-serving.md §1.7); also the body of a TGI stream's error event. */
export function tgiError(e: ErrorLike): { status: number; body: TgiErrorBody } {
  const { status, type, prefix } = errorRow(e.code).tgi
  return { status, body: { error: tgiMessage(tgiText(e), prefix), error_type: type } }
}

export interface OpenAiErrorBody { error: { message: string; type: string; param: null; code: string | null } }

/** OpenAI: `{"error": {message, type, param, code}}`; the messages are TGI's texts, as TGI's OpenAI routes send. */
export function openAiError(e: ErrorLike): { status: number; body: OpenAiErrorBody } {
  const { openai, tgi } = errorRow(e.code)
  return { status: openai.status, body: { error: { message: tgiMessage(tgiText(e), tgi.prefix), type: openai.type, param: null, code: openai.code ?? null } } }
}

/** A gRPC status error for grpc-js, which sends `details` as the status message. */
export function grpcError(e: ErrorLike): Error & { code: number; details: string } {
  const text = tgiText(e)
  return Object.assign(new Error(text), { code: errorRow(e.code).grpc, details: text })
}

/**
 * Open Inference Protocol: `{"error": "..."}` (model-servers.md §2.5) with the table's HTTP status,
 * except that request validation is the protocol's 400 (the table's 422 is TGI's).
 */
export function oipError(e: ErrorLike): { status: number; body: { error: string } } {
  const status = e.code === 'VALIDATION' ? 400 : errorRow(e.code).http
  return { status, body: { error: tgiText(e) } }
}
