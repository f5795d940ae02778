/**
 * Pure core of the dynamic batcher for one method: a FIFO of instances plus the rule that decides
 * when a batch closes. The loop (runtime/live-servable.ts) owns timers and replicas and calls
 * `next(now, canDispatch)`.
 *
 * A batch closes when it is full (maxBatchSize), or when maxWaitMs has passed since its oldest
 * instance arrived. With maxWaitMs = 0 a batch is sent as soon as a replica can take it, so
 * batches only grow from the backlog that builds while every replica is busy (Triton's default).
 */

export interface QueuedItem<T> { value: T; enqueuedAt: number }

export type BatchDecision<T> =
  | { kind: 'batch'; items: QueuedItem<T>[] }
  | { kind: 'wait'; ms: number }
  | { kind: 'idle' }

export class BatchQueue<T> {
  private items: QueuedItem<T>[] = []
  private head = 0

  constructor(public maxBatchSize: number, public maxWaitMs: number, public maxQueueSize: number) {}

  get length(): number { return this.items.length - this.head }

  /** Returns false when the queue is full; the caller answers QUEUE_FULL. */
  push(value: T, now: number): boolean {
    if (this.length >= this.maxQueueSize) return false
    this.items.push({ value, enqueuedAt: now })
    return true
  }

  /** Adds several at once, all or nothing. */
  pushAll(values: T[], now: number): boolean {
    if (this.length + values.length > this.maxQueueSize) return false
    for (const v of values) this.items.push({ value: v, enqueuedAt: now })
    return true
  }

  /** Decides what to do now. `canDispatch`: some replica can take a batch right now. */
  next(now: number, canDispatch: boolean): BatchDecision<T> {
    const n = this.length
    if (n === 0) return { kind: 'idle' }
    if (!canDispatch) return { kind: 'idle' }
    const waited = now - this.items[this.head]!.enqueuedAt
    if (n >= this.maxBatchSize || this.maxWaitMs <= 0 || waited >= this.maxWaitMs) {
      const take = Math.min(n, this.maxBatchSize)
      const batch = this.items.slice(this.head, this.head + take)
      this.head += take
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head)
        this.head = 0
      }
      return { kind: 'batch', items: batch }
    }
    return { kind: 'wait', ms: this.maxWaitMs - waited }
  }

  /** Drops the queued items `dead` selects (a timed-out or cancelled request's); returns how many. O(n). */
  remove(dead: (value: T) => boolean): number {
    const before = this.length
    this.items = this.items.slice(this.head).filter((it) => !dead(it.value))
    this.head = 0
    return before - this.length
  }

  /** Removes and returns everything (used when a servable is unloaded). */
  drain(): QueuedItem<T>[] {
    const all = this.items.slice(this.head)
    this.items = []
    this.head = 0
    return all
  }
}
