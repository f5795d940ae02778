/**
 * Per-request generation state: sampler state (seeded RNG, token counts), incremental
 * detokenization, and stop criteria (EOS, stop sequences, max_new_tokens). No model access:
 * the engine hands it a logits row and forwards the returned events.
 */
import { countToken, createRng, sampleToken } from './sampler.ts'
import type { LogitStats, Rng, TokenCounts } from './sampler.ts'
import { DetokenizeStream } from './tokenizer.ts'
import type { LlmTokenizer } from './tokenizer.ts'
import type { DoneEvent, FinishReason, GenerateEvent, TokenEvent, ValidGenerate } from './types.ts'

/** One request from submit to its final event. */
export class Sequence {
  readonly generated: number[] = []
  /** Output text so far (special tokens skipped). */
  text = ''
  /** Row in the running batch, or -1 while queued / after leaving. */
  row = -1
  /** Last sampled token (the next decode step's input). */
  lastToken = -1
  finished = false
  readonly submittedAt: number
  firstTokenAt = 0
  prefillAt = 0
  private readonly rng: Rng
  private readonly counts: TokenCounts = new Map()
  private readonly detok: DetokenizeStream
  private readonly maxStopLen: number

  /** `seed`: the request's own, or one the engine drew for it. */
  constructor(readonly id: string, readonly req: ValidGenerate, private readonly seed: number, private readonly tok: LlmTokenizer, readonly onEvent: (ev: GenerateEvent) => void, now: number) {
    this.submittedAt = now
    this.rng = createRng(seed)
    for (const id of req.inputIds) countToken(this.counts, id)
    this.detok = new DetokenizeStream(tok, req.inputIds)
    this.maxStopLen = req.stop.reduce((m, s) => Math.max(m, s.length), 0)
  }

  /** Prompt + max_new_tokens: the tokens this request reserves in the scheduler's budget. */
  get reservedTokens(): number { return this.req.inputIds.length + this.req.maxNewTokens }

  /**
   * Samples from one logits row, emits the token event and, if a stop criterion hit, the done
   * event. Returns true when the sequence finished. `scratch` is a reusable vocab-sized buffer;
   * `stats`, the graph's statistics of this row at the request's temperature, when there are any.
   */
  step(logits: Float32Array, now: number, scratch: Float32Array, stats?: LogitStats): boolean {
    const { id, logprob, top } = sampleToken(logits, this.req.sampling, this.counts, this.rng, scratch, this.req.topNTokens, stats)
    countToken(this.counts, id)
    this.generated.push(id)
    this.lastToken = id
    if (this.firstTokenAt === 0) this.firstTokenAt = now
    const special = this.tok.isSpecial(id)
    const isEos = !this.req.ignoreEos && this.tok.eosTokenIds.includes(id)
    let finish: FinishReason | null = isEos ? 'eos_token' : null
    const atLimit = this.generated.length >= this.req.maxNewTokens
    let text: string
    let stopSequence: string | undefined
    if (special) {
      text = this.tok.tokenText(id)
    } else {
      text = this.detok.push(id, atLimit)
      if (text && this.maxStopLen > 0) {
        const from = Math.max(0, this.text.length - this.maxStopLen + 1)
        this.text += text
        for (const s of this.req.stop) {
          if (this.text.indexOf(s, from) >= 0) { stopSequence = s; finish = 'stop_sequence'; break }
        }
      } else {
        this.text += text
      }
    }
    if (finish === null && atLimit) finish = 'length'
    const ev: TokenEvent = { type: 'token', requestId: this.id, index: this.generated.length, id, text, special, logprob, last: finish !== null }
    if (top) {
      // Each alternative decoded on its own, special tokens kept (TGI: batch_decode of the ids).
      ev.topTokens = top.map((c) => ({ id: c.id, text: this.tok.decode([c.id], false), logprob: c.logprob, special: this.tok.isSpecial(c.id) }))
    }
    this.emit(ev)
    if (finish !== null) this.finish(finish, now, stopSequence)
    return finish !== null
  }

  private finish(reason: FinishReason, now: number, stopSequence?: string): void {
    this.finished = true
    const ev: DoneEvent = {
      type: 'done',
      requestId: this.id,
      finishReason: reason,
      generatedText: this.tok.decode(this.generated, true),
      generatedTokens: this.generated.length,
      inputTokens: this.req.inputIds.length,
      seed: this.req.seeded ? this.seed : null,
      timings: { queueMs: this.prefillAt - this.submittedAt, firstTokenMs: this.firstTokenAt - this.submittedAt, totalMs: now - this.submittedAt },
    }
    if (stopSequence !== undefined) ev.stopSequence = stopSequence
    this.emit(ev)
  }

  /** Ends the request with an error event (cancel, generation failure). */
  fail(code: 'CANCELLED' | 'INFERENCE_FAILED' | 'INTERNAL', message: string): void {
    if (this.finished) return
    this.finished = true
    this.emit({ type: 'error', requestId: this.id, code, message })
  }

  // A throwing consumer must not take the other requests of the batch down with it.
  private emit(ev: GenerateEvent): void {
    try { this.onEvent(ev) } catch { /* ignored by design */ }
  }
}
