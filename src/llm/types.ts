/**
 * In-process API types of the LLM engine. Protocol layers (TGI, OpenAI, MindSpore routes)
 * map their wire fields onto `GenerateRequest` and render `GenerateEvent`s.
 */
import type { ErrorCode } from '../errors.ts'
import type { SamplingParams } from './sampler.ts'

/** Generation parameters (TGI's `parameters`, camelCased). All optional. */
export interface GenerateParameters {
  /** Default: maxTotalTokens - input length. */
  maxNewTokens?: number
  temperature?: number
  topK?: number
  topP?: number
  /** Locally typical sampling mass, 0 < typicalP < 1 (TGI `typical_p`); implies sampling. */
  typicalP?: number
  repetitionPenalty?: number
  frequencyPenalty?: number
  /** false (default) -> greedy unless temperature/topK/topP/typicalP ask for sampling (as TGI). */
  doSample?: boolean
  seed?: number | bigint
  /** Stop sequences; generation ends when the output text contains one. */
  stop?: string[]
  /** Keep only the last N prompt tokens. */
  truncate?: number
  /** Do not stop at EOS (benchmarks). */
  ignoreEos?: boolean
  /** TGI `top_n_tokens`: each token event carries this many alternatives (0..maxTopNTokens; 0 = none). */
  topNTokens?: number
}

/** One generation request. Either `inputs` (text) or `inputIds` (pre-tokenized). */
export interface GenerateRequest {
  /** Unique among in-flight requests; generated when absent. */
  id?: string
  inputs?: string
  inputIds?: readonly number[]
  /** Add BOS etc. when tokenizing `inputs` (default true; chat templates usually include BOS). */
  addSpecialTokens?: boolean
  parameters?: GenerateParameters
}

/** Why generation ended (TGI names). */
export type FinishReason = 'length' | 'eos_token' | 'stop_sequence'

/**
 * One alternative for a generated position (TGI's Token): `text` is the token decoded on its own
 * (special tokens included), `logprob` under the same distribution as TokenEvent.logprob.
 */
export interface TopToken {
  id: number
  text: string
  logprob: number
  special: boolean
}

/** One generated token. `text` is "" while a UTF-8 sequence is incomplete. */
export interface TokenEvent {
  type: 'token'
  requestId: string
  /** 1-based index of the token in the output (TGI stream `index`). */
  index: number
  id: number
  text: string
  special: boolean
  logprob: number
  /** The request's `topNTokens` most likely tokens for this position, most likely first; only when asked for. */
  topTokens?: TopToken[]
  /**
   * True on the request's final token (its done event follows). Relays whose last stream event
   * must carry the final text hold only this token, so every earlier one, the first included,
   * is written as soon as it is sampled (not one step later).
   */
  last?: boolean
}

/** Per-request timings in milliseconds. */
export interface RequestTimings {
  queueMs: number
  /** Submit -> first token event. */
  firstTokenMs: number
  totalMs: number
}

/** Final event of a successful request. */
export interface DoneEvent {
  type: 'done'
  requestId: string
  finishReason: FinishReason
  /** Decoded output without special tokens (includes a matched stop sequence, as TGI). */
  generatedText: string
  generatedTokens: number
  inputTokens: number
  /** The seed used when sampling, else null. */
  seed: number | null
  /** The stop sequence that ended generation, when finishReason is 'stop_sequence'. */
  stopSequence?: string
  timings: RequestTimings
}

/** Final event of a failed or cancelled request. */
export interface ErrorEvent {
  type: 'error'
  requestId: string
  code: ErrorCode
  message: string
}

/** Everything `onEvent` receives: tokens, then exactly one done or error. */
export type GenerateEvent = TokenEvent | DoneEvent | ErrorEvent

/** A request after validation (TGI's ValidGenerateRequest). */
export interface ValidGenerateRequest {
  id: string
  inputIds: number[]
  maxNewTokens: number
  sampling: SamplingParams
  seed: number
  /** Whether `seed` matters (sampling); reported as null otherwise. */
  seeded: boolean
  stop: string[]
  ignoreEos: boolean
  /** Alternatives per token event (0 = none). */
  topNTokens: number
}

/** Limits validation checks against (also reported by /info). */
export interface ValidationLimits {
  maxInputTokens: number
  maxTotalTokens: number
  maxStopSequences: number
  /** Upper bound for `top_n_tokens` (TGI's max_top_n_tokens, default 5). */
  maxTopNTokens: number
}
