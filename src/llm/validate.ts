/**
 * Request validation with TGI's rules and messages (llm-serving.md §1.2), run in the listener as
 * TGI's router does: pure, it renders chat messages, tokenizes with the servable's PromptEncoder
 * (loaded once at load, prompt-encoder.ts), checks the token counts against the model's limits
 * and throws ServeError('VALIDATION', msg) on the first failed rule. The messages are TGI's bare
 * ValidationError texts; the TGI route adds "Input validation error: ".
 */
import { ServeError } from '../errors.ts'
import type { ChatTemplate } from './chat-template.ts'
import type { ToolParserName } from './tool-calls.ts'
import type { SamplingParams } from './sampler.ts'
import type { LlmTokenizer } from './tokenizer.ts'
import type { GenerateParameters, GenerateRequest, ValidGenerate, ValidGenerateFields, ValidationLimits } from './types.ts'

/**
 * A chat request's extras for the template (OpenAI `tools`, `add_generation_prompt`); a route passes
 * them on a GenerateRequest with `messages`.
 */
export interface ChatPromptRequest extends GenerateRequest {
  tools?: readonly unknown[]
  /** Default true: the prompt ends where the assistant's reply starts. */
  addGenerationPrompt?: boolean
  /** Further template variables (vLLM's `chat_template_kwargs`, e.g. `enable_thinking`). */
  templateKwargs?: Record<string, unknown>
}

/** What validation needs from a servable's files: its tokenizer and chat template (prompt-encoder.ts loads them). */
export interface PromptEncoder {
  readonly tokenizer: LlmTokenizer
  readonly chatTemplate: ChatTemplate
  /** How tool_choice "auto" reads calls from the output (declareLlm toolParser, else detected from the template). */
  readonly toolParser?: ToolParserName
}

function fail(msg: string): never {
  throw new ServeError('VALIDATION', msg)
}

function checkNumber(name: string, v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`\`${name}\` must be a number`)
  return v
}

function checkInt(name: string, v: unknown): number | undefined {
  const n = checkNumber(name, v)
  if (n !== undefined && !Number.isInteger(n)) fail(`\`${name}\` must be an integer`)
  return n
}

/**
 * Whether a request samples (TGI's rule, as validateGenerate applies it): `do_sample`, or any of
 * `temperature` (other than 1), `top_k`, `top_p`, `typical_p`.
 */
export function impliesSampling(p: GenerateParameters): boolean {
  return p.doSample === true || (p.temperature != null && p.temperature !== 1) || p.topK != null || p.topP != null || p.typicalP != null
}

/**
 * TGI's `best_of` rules (a router-level parameter: the engine runs each sequence as its own
 * request). Returns the number of sequences (1 when absent). Checked in TGI's order: on a stream
 * any best_of > 1 is refused first; then the range, sampling, and no fixed seed.
 */
export function validateBestOf(bestOf: unknown, p: GenerateParameters, maxBestOf: number, stream: boolean): number {
  const n = checkInt('best_of', bestOf)
  if (n === undefined) return 1
  if (stream && n > 1) fail('`best_of` != 1 is not supported when streaming tokens')
  if (n <= 0 || n > maxBestOf) fail(`\`best_of\` must be > 0 and <= ${maxBestOf}. Given: ${n}`)
  if (n > 1 && !impliesSampling(p)) fail('you must use sampling when `best_of` is > 1')
  if (n > 1 && p.seed !== undefined && p.seed !== null) fail('`seed` must not be set when `best_of` > 1')
  return n
}

/**
 * Validates and tokenizes a request into the ValidGenerate the dispatcher and engine take. The
 * parameters are checked first, then the prompt is encoded and its token counts checked, in TGI's
 * order (the first failed rule is the one reported).
 */
export function validateGenerate(req: GenerateRequest, encoder: PromptEncoder, limits: ValidationLimits): ValidGenerate {
  const p = req.parameters ?? {}
  const temperature = checkNumber('temperature', p.temperature)
  if (temperature !== undefined && temperature <= 0) fail('`temperature` must be strictly positive')
  const repetitionPenalty = checkNumber('repetition_penalty', p.repetitionPenalty)
  if (repetitionPenalty !== undefined && repetitionPenalty <= 0) fail('`repetition_penalty` must be strictly positive')
  const frequencyPenalty = checkNumber('frequency_penalty', p.frequencyPenalty)
  if (frequencyPenalty !== undefined && (frequencyPenalty < -2 || frequencyPenalty > 2)) fail('`frequency_penalty` must be >= -2.0 and <= 2.0')
  const topP = checkNumber('top_p', p.topP)
  if (topP !== undefined && (topP <= 0 || topP >= 1)) fail('`top_p` must be > 0.0 and < 1.0')
  const typicalP = checkNumber('typical_p', p.typicalP)
  if (typicalP !== undefined && (typicalP <= 0 || typicalP >= 1)) fail('`typical_p` must be > 0.0 and < 1.0')
  const topK = checkInt('top_k', p.topK)
  if (topK !== undefined && topK <= 0) fail('`top_k` must be strictly positive')
  const topNTokens = checkInt('top_n_tokens', p.topNTokens) ?? 0
  // TGI's field is a u32, so a negative value fails deserialization there; the range text covers it.
  if (topNTokens < 0 || topNTokens > limits.maxTopNTokens) fail(`\`top_n_tokens\` must be >= 0 and <= ${limits.maxTopNTokens}. Given: ${topNTokens}`)
  const stop = p.stop ?? []
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string')) fail('`stop` must be a list of strings')
  if (stop.length > limits.maxStopSequences) fail(`\`stop\` supports up to ${limits.maxStopSequences} stop sequences. Given: ${stop.length}`)
  if (stop.some((s) => s.length === 0)) fail('`stop` sequences cannot be empty')
  const truncate = checkInt('truncate', p.truncate)
  if (truncate !== undefined && (truncate <= 0 || truncate > limits.maxInputTokens)) {
    fail(`\`truncate\` must be strictly positive and less than ${limits.maxInputTokens}. Given: ${truncate}`)
  }
  let seed: number | null = null
  if (p.seed !== undefined && p.seed !== null) {
    const s = typeof p.seed === 'bigint' ? p.seed : Number.isInteger(p.seed) && p.seed >= 0 ? BigInt(p.seed) : fail('`seed` must be a non-negative integer')
    seed = Number(BigInt.asUintN(53, s))
  }

  const grammar = p.grammar ?? undefined
  if (grammar !== undefined) {
    const g = grammar as { type?: unknown; schema?: unknown }
    if (!(g.type === 'json' || (g.type === 'json_schema' && typeof g.schema === 'string'))) fail('`grammar` must be {type:"json"} or {type:"json_schema", schema}')
    if (p.ignoreEos === true) fail('`grammar` cannot be combined with `ignore_eos`')
  }

  let inputIds = encodePrompt(req, encoder)
  if (inputIds.length === 0) fail('`inputs` cannot be empty')
  if (truncate !== undefined && inputIds.length > truncate) inputIds = inputIds.slice(inputIds.length - truncate)
  const n = inputIds.length
  if (n > limits.maxInputTokens) fail(`\`inputs\` must have less than ${limits.maxInputTokens} tokens. Given: ${n}`)

  let maxNewTokens = checkInt('max_new_tokens', p.maxNewTokens)
  if (maxNewTokens !== undefined && maxNewTokens <= 0) fail('`max_new_tokens` must be strictly positive')
  maxNewTokens ??= Math.max(1, limits.maxTotalTokens - n)
  if (n + maxNewTokens > limits.maxTotalTokens) {
    fail(`\`inputs\` tokens + \`max_new_tokens\` must be <= ${limits.maxTotalTokens}. Given: ${n} \`inputs\` tokens and ${maxNewTokens} \`max_new_tokens\``)
  }

  const doSample = impliesSampling(p)
  const sampling: SamplingParams = {
    doSample,
    temperature: temperature ?? 1,
    topK: topK ?? 0,
    topP: topP ?? 1,
    typicalP: typicalP ?? 1,
    repetitionPenalty: repetitionPenalty ?? 1,
    frequencyPenalty: frequencyPenalty ?? 0,
  }
  const valid: ValidGenerateFields = { inputIds, maxNewTokens, sampling, seed, seeded: doSample, stop: [...stop], ignoreEos: p.ignoreEos === true, topNTokens, ...(grammar ? { grammar: grammar.type === 'json' ? { type: 'json' as const } : { type: 'json_schema' as const, schema: grammar.schema } } : {}) }
  return valid as ValidGenerate
}

/** The prompt's token ids: given ids as they are, text tokenized, chat messages rendered then tokenized. */
function encodePrompt(req: GenerateRequest, { tokenizer, chatTemplate }: PromptEncoder): number[] {
  if (req.inputIds !== undefined) {
    if (!Array.isArray(req.inputIds) || req.inputIds.some((x) => !Number.isInteger(x) || x < 0 || x >= tokenizer.vocabSize)) {
      fail(`\`inputs\` token ids must be integers >= 0 and < ${tokenizer.vocabSize}`)
    }
    return [...req.inputIds]
  }
  // The template writes BOS (and any other special token) where the model wants it, so the
  // rendered text is encoded without adding any: transformers' apply_chat_template(tokenize=True)
  // encodes with add_special_tokens=False.
  if (req.messages !== undefined) {
    const { tools, addGenerationPrompt, templateKwargs } = req as ChatPromptRequest
    const extra = { ...templateKwargs, ...(tools === undefined ? {} : { tools }) }
    return tokenizer.encode(chatTemplate.render(req.messages, addGenerationPrompt ?? true, extra), false)
  }
  if (typeof req.inputs !== 'string' || req.inputs.length === 0) fail('`inputs` cannot be empty')
  return tokenizer.encode(req.inputs, req.addSpecialTokens ?? true)
}
