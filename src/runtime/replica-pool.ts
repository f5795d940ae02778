/**
 * The replicas of one servable version: start, least-busy pick, restart with back-off after an
 * exit, and the busy/idle edge its servable's drain waits on. It never knows the transports its
 * replicas use, so a remote kind plugs in without changes here. No timers run while nothing fails.
 */
import type { EventLog } from '../log.ts'
import type { Replica } from './replica.ts'

/** A replica may hold this many groups at once: 2 lets the next batch cross the IPC pipe while one runs. */
export const MAX_INFLIGHT_GROUPS = 2

/** Delay before restart attempt `failures` (1-based) of one replica: 0.5 s doubling, at most 30 s. */
export function restartDelayMs(failures: number): number {
  return Math.min(30_000, 500 * 2 ** Math.min(6, failures - 1))
}

export interface PoolEvents {
  /** A replica became able to take work (it restarted) or finished some: the owner pumps its queues. */
  available(): void
  /** The last group or stream of some replica finished: the owner checks whether it is idle. */
  idle(): void
  /** Every replica is down (the last one just exited): the owner fails its queued work. */
  allDown(why: string): void
  /** A replica exited and will be restarted (the restart counter). */
  restarting?(): void
  /** Operator-facing lines (restarts, failed restarts). */
  log: EventLog
}

export class ReplicaPool {
  private stopped = false
  /** Next replica to try first: ties rotate so idle replicas share sequential load. */
  private rr = 0
  private crashStreak = new Map<Replica, number>()
  restarts = 0

  private readonly list: Replica[]
  constructor(replicas: readonly Replica[], private readonly on: PoolEvents, private readonly delayMs: (failures: number) => number = restartDelayMs) {
    this.list = [...replicas]
  }

  get replicas(): readonly Replica[] { return this.list }

  /**
   * Adds a replica to a running pool (a remote agent's device): it takes work once started. A
   * start that fails is retried with the restart back-off, as an exit would be.
   */
  async add(r: Replica): Promise<void> {
    if (this.stopped) return
    this.list.push(r)
    r.onExit = (rep, why) => this.onExit(rep, why)
    r.onIdle = () => this.on.idle()
    try {
      await r.start()
      this.on.available()
    } catch (e) {
      this.on.log(`ms-serve: replica ${r.label} could not start: ${(e as Error).message}`, { event: 'replica_restart_failed', severity: 'error', replica: r.label, error: (e as Error).message })
      throw e
    }
  }

  get ready(): boolean { return this.replicas.some((r) => r.state === 'ready') }

  /** Starts every replica; rejects with the first load error. Restarts apply only once all have started. */
  async start(): Promise<void> {
    await Promise.all(this.replicas.map((r) => r.start()))
    for (const r of this.replicas) {
      r.onExit = (rep, why) => this.onExit(rep, why)
      r.onIdle = () => this.on.idle()
    }
  }

  /** Least-busy ready replica with room for one more group, or null. */
  pick(): Replica | null {
    let best: Replica | null = null
    const n = this.replicas.length
    for (let k = 0; k < n; k++) {
      const r = this.replicas[(this.rr + k) % n]!
      if (r.state !== 'ready' || r.inflightGroups >= r.maxInflightGroups) continue
      if (!best || r.inflightInstances < best.inflightInstances) best = r
    }
    return best
  }

  /** Records that a group really went to `r`: the next pick starts after it. */
  dispatched(r: Replica): void {
    this.rr = (this.replicas.indexOf(r) + 1) % this.replicas.length
  }

  /** Some replica holds a group or an LLM stream. */
  busy(): boolean {
    return this.replicas.some((r) => r.inflightGroups > 0 || r.activeStreams > 0)
  }

  private onExit(r: Replica, why: string): void {
    if (this.stopped) return
    this.restarts++
    this.on.restarting?.()
    // Back off per replica while restarts keep failing; a successful restart resets it, so a replica
    // that crashes once a day is not left waiting 30 s because of crashes long ago.
    const failures = (this.crashStreak.get(r) ?? 0) + 1
    this.crashStreak.set(r, failures)
    const delay = this.delayMs(failures)
    this.on.log(`ms-serve: replica ${r.label} exited (${why}); restarting in ${delay} ms`, { event: 'replica_exit', severity: 'warn', replica: r.label, reason: why, restart_in_ms: delay, restarts: this.restarts })
    if (!this.ready) this.on.allDown(why)
    setTimeout(() => {
      if (this.stopped) return
      r.start().then(
        () => { this.crashStreak.delete(r); this.on.available() },
        (e) => this.on.log(`ms-serve: restart of ${r.label} failed: ${(e as Error).message}`, { event: 'replica_restart_failed', severity: 'error', replica: r.label, error: (e as Error).message }),
      )
    }, delay).unref()
  }

  /** Ends every replica now: no draining, no restarts. */
  kill(): void {
    this.stopped = true
    for (const r of this.replicas) r.kill()
  }

  /** Stops every replica after its in-flight work (unless `force`); no restarts after this. */
  async stop(force = false): Promise<void> {
    this.stopped = true
    await Promise.all(this.replicas.map((r) => r.stop(force)))
  }
}
