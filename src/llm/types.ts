/**
 * Types of an LLM request's life: protocol layers (TGI, OpenAI, MindSpore routes, gRPC) map their
 * wire fields onto a `GenerateRequest`; the listener validates and tokenizes it once into a
 * `ValidGenerate` (validate.ts), the only form the dispatcher, the IPC message and the engine
 * take; the engine answers with `GenerateEvent`s, which the protocol layers render.
 */
import type { ErrorCode } from '../errors.ts'
import type { ChatMessage } from './chat-template.ts'
import type { GrammarSpec } from './grammar.ts'
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
  /**
   * Structured output: constrain decoding to JSON or a JSON schema (grammar.ts; routes build it
   * with jsonSchemaSpec and check it with checkGrammar before validating). Not with ignoreEos.
   */
  grammar?: GrammarSpec
}

/**
 * One generation request as a route builds it (protocol-neutral, not yet validated): exactly one
 * of `inputs` (text), `inputIds` (pre-tokenized) or `messages` (rendered by the chat template).
 */
export interface GenerateRequest {
  inputs?: string
  inputIds?: readonly number[]
  messages?: readonly ChatMessage[]
  /** Add BOS etc. when tokenizing `inputs` (default true; ignored for messages: the template writes BOS). */
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
  /** The error's facts (errors.ts ErrorFacts) when the engine attached any. */
  details?: unknown
}

/** Everything `onEvent` receives: tokens, then exactly one done or error. */
export type GenerateEvent = TokenEvent | DoneEvent | ErrorEvent

declare const validGenerate: unique symbol

/**
 * A request after validation and tokenization (TGI's ValidGenerateRequest): everything the engine
 * needs to prefill, sample, detokenize and stop, checked against the model's limits. Only
 * validateGenerate (validate.ts) makes one (the brand has no runtime form, so the value crosses
 * the IPC boundary by structured clone unchanged); the replica trusts it.
 */
export type ValidGenerate = ValidGenerateFields & { readonly [validGenerate]: true }

/** The fields of a ValidGenerate, without its brand (what validateGenerate fills in). */
export interface ValidGenerateFields {
  /** Prompt token ids after `truncate`: 1..maxInputTokens of them. */
  readonly inputIds: readonly number[]
  /** Resolved: prompt + maxNewTokens <= maxTotalTokens. */
  readonly maxNewTokens: number
  readonly sampling: SamplingParams
  /** The client's seed; null: the engine draws one per request (so best_of's sequences differ). */
  readonly seed: number | null
  /** Whether the seed matters (sampling); the done event reports null otherwise. */
  readonly seeded: boolean
  readonly stop: readonly string[]
  readonly ignoreEos: boolean
  /** Alternatives per token event (0 = none). */
  readonly topNTokens: number
  /** Structured output: the engine masks every step's logits to what this grammar allows. */
  readonly grammar?: GrammarSpec
}

/** Limits validation checks against (also reported by /info). */
export interface ValidationLimits {
  maxInputTokens: number
  maxTotalTokens: number
  maxStopSequences: number
  /** Upper bound for `top_n_tokens` (TGI's max_top_n_tokens, default 5). */
  maxTopNTokens: number
}
