/**
 * Pure continuous-batching policy in the shape of TGI's router (llm-serving.md §2.2-2.3):
 * a FIFO queue, `nextBatch` under prefill/total token budgets (strict FIFO: the first entry
 * that does not fit stops the scan), and `planStep`, which decides between prefilling queued
 * requests and decoding the running batch, using the waiting-served ratio, max waiting tokens
 * and the limit on back-to-back prefills. No timers, no model: the engine loop applies the
 * returned plan.
 */

/** Router limits (validated by the engine at load). */
export interface SchedulerConfig {
  /** Padded prefill cost limit for one prefill batch: rows x longest prompt. */
  maxBatchPrefillTokens: number
  /** Limit on the tokens a running batch may grow to (Σ prompt + max_new_tokens). */
  maxBatchTotalTokens: number
  /** Rows in the running batch (KV cache slots). */
  maxBatchSize: number
  /** After this many decode steps without a prefill, waiting requests may join regardless of the ratio. */
  maxWaitingTokens: number
  /** A prefill is only worth pausing decode for if it adds >= ratio x running size requests. */
  waitingServedRatio: number
  /**
   * Prefill steps that may run back to back while a batch is running before one decode step
   * must run (0 = no limit: prefill while anything fits). 1 is TGI's loop: at most one prefill
   * batch per decode step. Without a limit, requests that arrive together are all prefilled
   * before the running batch decodes again, then decode in lockstep, finish on the same step
   * and (in a closed loop) come back together: the clump never dissolves and each of its
   * requests waits for all the prefills ahead of it.
   */
  maxConsecutivePrefills: number
}

/** A validated request waiting for prefill. */
export interface QueueEntry {
  id: string
  inputLength: number
  maxNewTokens: number
  enqueuedAt: number
}

/** What the scheduler reads; the engine owns and mutates it. */
export interface SchedulerState {
  queue: readonly QueueEntry[]
  /** Requests in the running batch and their reserved tokens (Σ input + max_new). */
  running: { size: number; maxTokens: number }
  /** Decode steps since the last prefill (TGI's waiting_tokens). */
  waitingTokens: number
  /** Prefill steps since the last decode step. */
  prefillsSinceDecode: number
}

/** A batch taken from the front of the queue. */
export interface NextBatch {
  /** Number of entries taken from the queue front. */
  count: number
  /** Padded prefill cost: count x longest prompt. */
  prefillTokens: number
  /** Σ max_new_tokens of the taken entries. */
  decodeTokens: number
  /** The scan stopped at a budget or at maxSize, not at the end of the queue: no more could join now. */
  limited: boolean
}

/** One loop iteration: prefill `count` queue-front entries, decode the running batch, or idle. */
export type StepPlan =
  | { kind: 'prefill'; batch: NextBatch; queueTimesMs: number[] }
  | { kind: 'decode' }
  | { kind: 'idle' }

/**
 * TGI `next_batch`: take entries from the front while the padded prefill cost stays within
 * `prefillBudget` and prefill + decode cost within `tokenBudget`. Returns null if fewer than
 * `minSize` (at least 1) entries fit.
 */
export function nextBatch(queue: readonly QueueEntry[], minSize: number, maxSize: number, prefillBudget: number, tokenBudget: number): NextBatch | null {
  if (queue.length === 0 || maxSize <= 0 || queue.length < minSize) return null
  let count = 0
  let longest = 0
  let decodeTokens = 0
  let limited = false
  for (const e of queue) {
    if (count >= maxSize) { limited = true; break }
    const nextLongest = Math.max(longest, e.inputLength)
    const prefill = (count + 1) * nextLongest
    const decode = decodeTokens + e.maxNewTokens
    if (prefill > prefillBudget || prefill + decode > tokenBudget) { limited = true; break } // strict FIFO: no skipping
    count++
    longest = nextLongest
    decodeTokens = decode
  }
  if (count === 0 || count < minSize) return null
  return { count, prefillTokens: count * longest, decodeTokens, limited }
}

/** Decides the next step (TGI batching loop). `now` only feeds the queue-time report. */
export function planStep(state: SchedulerState, cfg: SchedulerConfig, now: number): StepPlan {
  const { running } = state
  let batch: NextBatch | null
  if (running.size === 0) {
    batch = nextBatch(state.queue, 1, cfg.maxBatchSize, cfg.maxBatchPrefillTokens, cfg.maxBatchTotalTokens)
  } else if (cfg.maxConsecutivePrefills > 0 && state.prefillsSinceDecode >= cfg.maxConsecutivePrefills) {
    batch = null // the running rows get their decode step first
  } else {
    const free = cfg.maxBatchSize - running.size
    // Clamped to the free rows (TGI does not clamp, so a nearly full batch would wait for
    // max_waiting_tokens even when enough requests are queued to fill it).
    const ratioMin = state.waitingTokens >= cfg.maxWaitingTokens ? 1 : Math.max(1, Math.floor(running.size * cfg.waitingServedRatio))
    // The ratio asks to wait until a prefill is worth pausing decode for. When the budgets already
    // stop the batch below that size, waiting cannot make it bigger, only later: prefill now
    // (TGI would wait for max_waiting_tokens steps here, which starves TTFT with small budgets).
    const b = nextBatch(state.queue, 1, free, cfg.maxBatchPrefillTokens, cfg.maxBatchTotalTokens - running.maxTokens)
    batch = b && (b.count >= Math.min(ratioMin, Math.max(1, free)) || b.limited) ? b : null
  }
  if (batch) {
    const queueTimesMs = state.queue.slice(0, batch.count).map((e) => now - e.enqueuedAt)
    return { kind: 'prefill', batch, queueTimesMs }
  }
  return running.size > 0 ? { kind: 'decode' } : { kind: 'idle' }
}
