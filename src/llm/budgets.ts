/**
 * The LLM engine's token budgets and their defaults (TGI's). Pure and free of onnxruntime, so
 * config validation resolves the same defaults the engine will use and checks them at load, before
 * any replica starts; LlmEngine.load then takes them as given.
 */

export interface LlmBudgets {
  /** KV cache rows = max running batch size. */
  maxBatchSize: number
  /** Prompt + generated tokens per request; sizes the KV slots. */
  maxTotalTokens: number
  maxInputTokens: number
  /** Tokens one prefill may process. */
  maxBatchPrefillTokens: number
  /** Tokens the running batch may hold. */
  maxBatchTotalTokens: number
}

/** Fills in the defaults: 16 rows, 1024 total, input = total - 1, prefill = input + 50, batch total = rows x total. */
export function resolveLlmBudgets(o: Partial<LlmBudgets>): LlmBudgets {
  const maxTotalTokens = o.maxTotalTokens ?? 1024
  const maxInputTokens = o.maxInputTokens ?? maxTotalTokens - 1
  const maxBatchSize = o.maxBatchSize ?? 16
  return {
    maxBatchSize,
    maxTotalTokens,
    maxInputTokens,
    maxBatchPrefillTokens: o.maxBatchPrefillTokens ?? maxInputTokens + 50,
    maxBatchTotalTokens: o.maxBatchTotalTokens ?? maxBatchSize * maxTotalTokens,
  }
}
