/** Promises that resolve when some work count reaches zero (event-driven drains, no polling). */
export class IdleWaiters {
  private waiters: Array<() => void> = []

  /** Resolves at the next wake() or after `timeoutMs`, whichever comes first. */
  wait(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(done, timeoutMs)
      function done() { clearTimeout(t); resolve() }
      this.waiters.push(done)
    })
  }

  /** Resolves every pending wait(); the caller decides that the work is done. */
  wake(): void {
    if (this.waiters.length === 0) return
    const ws = this.waiters
    this.waiters = []
    for (const w of ws) w()
  }

  get pending(): boolean { return this.waiters.length > 0 }
}
