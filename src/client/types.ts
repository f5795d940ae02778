/** The client's public types (ms-serve/client). */
import type { Value } from '../tensor.ts'

/** PEM text or bytes. */
export type Pem = string | Uint8Array

export interface ClientOptions {
  /** REST address, `http://HOST:PORT` or `https://HOST:PORT` (a path after it is kept as a prefix). */
  url?: string
  /** gRPC address, `HOST:PORT`. */
  grpc?: string
  /** With both `url` and `grpc`: which one predict, generate, health and servables use (default rest). */
  transport?: 'rest' | 'grpc'
  /** Sent as `Authorization: Bearer <apiKey>` (gRPC metadata `authorization`). */
  apiKey?: string
  /**
   * TLS material: `ca` trusts a private CA (default: the system's roots), `cert` + `key` are a client
   * certificate for mutual TLS. With `tls` the gRPC channel is TLS; REST is TLS when `url` is https://.
   */
  tls?: { ca?: Pem; cert?: Pem; key?: Pem }
  /** Default time limit of every call, in ms (REST: also sent as x-request-timeout-ms; gRPC: the deadline). */
  timeoutMs?: number
  /** Extra headers on every REST request and metadata on every gRPC call (e.g. x-request-id). */
  headers?: Record<string, string>
  /** REST: most open connections (default: no limit, one per concurrent request). */
  connections?: number
}

export interface CallOptions {
  signal?: AbortSignal
  /** Overrides the client's `timeoutMs` for this call. */
  timeoutMs?: number
}

export interface PredictOptions extends CallOptions {
  /** Servable version; 0 or absent = the newest running. */
  version?: number
}

/** One input instance: input name -> tensor, string or bytes. */
export type Instance = Record<string, Value>

/**
 * One request instance's result: its outputs, or its error (MindSpore's `{"error": msg}`; over gRPC
 * also MindSpore's status). Check `r.error !== undefined` (or `r.outputs`) to tell them apart.
 */
export type InstanceResult =
  | { outputs: Record<string, Value>; error?: undefined; msStatus?: undefined }
  | { error: string; msStatus?: number; outputs?: undefined }

/**
 * Sampling parameters (TGI's, camelCase). Over gRPC only the fields of msserve.v1 GenerateRequest
 * exist: frequencyPenalty, truncate, ignoreEos and returnFullText need REST.
 */
export interface GenerateParams {
  maxNewTokens?: number
  temperature?: number
  topK?: number
  topP?: number
  typicalP?: number
  repetitionPenalty?: number
  frequencyPenalty?: number
  doSample?: boolean
  seed?: number
  stop?: string[]
  /** Alternatives per token in each event's `topTokens` (not on the MindSpore-style route). */
  topNTokens?: number
  truncate?: number
  ignoreEos?: boolean
  returnFullText?: boolean
}

export interface GenerateOptions extends CallOptions {
  /** LLM servable (default: the server's default LLM). */
  servable?: string
  version?: number
}

/** A prompt: text, or token ids used as they are (gRPC only). */
export type Prompt = string | { inputIds: number[] }

export interface TopToken { id: number; text: string; logprob: number; special: boolean }

/** One generated token, as soon as the server samples it. `index` is its 0-based position. */
export interface TokenEvent {
  type: 'token'
  index: number
  id: number
  /** Text this token adds (may be empty mid-character). */
  text: string
  /** Log-probability (after penalties and temperature). */
  logprob: number
  topTokens?: TopToken[]
}

/** The last event of a generation. */
export interface GenerateDoneEvent {
  type: 'done'
  generatedText: string
  /** `length`, `eos_token` or `stop_sequence`. */
  finishReason: string
  generatedTokens: number
}

export type GenerateEvent = TokenEvent | GenerateDoneEvent

/** An OpenAI chat message (content a string, null, or text parts; tool calls as OpenAI sends them). */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {})
  content: string | null | Array<{ type: 'text'; text: string }>
  name?: string
  tool_calls?: ToolCall[]
  tool_call_id?: string
}

export interface ToolCall { id: string; type: 'function'; function: { name: string; arguments: string } }

/**
 * OpenAI chat parameters in camelCase (`maxTokens` is sent as `max_tokens`); any other key is sent
 * with its name in snake_case and its value as it is (`responseFormat`, `toolChoice`, `chatTemplateKwargs`).
 */
export interface ChatParams {
  maxTokens?: number
  temperature?: number
  topP?: number
  seed?: number
  stop?: string | string[]
  frequencyPenalty?: number
  presencePenalty?: number
  logprobs?: boolean
  topLogprobs?: number
  tools?: unknown[]
  toolChoice?: unknown
  responseFormat?: unknown
  [key: string]: unknown
}

export interface ChatOptions extends CallOptions {
  /** The OpenAI `model`: an LLM servable name or model id (default: the server's default LLM). */
  servable?: string
  stream?: boolean
}

export interface Usage { promptTokens: number; completionTokens: number; totalTokens: number }

/** A whole chat answer: the assistant message, why it ended and the token counts. */
export interface ChatReply {
  role: 'assistant'
  content: string | null
  toolCalls?: ToolCall[]
  /** `stop`, `length` or `tool_calls`. */
  finishReason: string
  usage?: Usage
}

/** One streamed chunk: new content and tool-call pieces; the last ones carry finishReason and usage. */
export interface ChatDelta {
  content?: string
  /** OpenAI's tool-call deltas: `{ index, id?, type?, function: { name?, arguments? } }`. */
  toolCalls?: unknown[]
  finishReason?: string
  usage?: Usage
}

/** `live`: the server answered; `ready`: every servable serves (readiness probe). */
export interface Health { live: boolean; ready: boolean; error?: string }
