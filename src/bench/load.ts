/**
 * The load generator for one level. Closed loop: `concurrency` workers, each sending its next
 * request when the previous one completes. Open loop: Poisson arrivals at `rate` req/s, each
 * request timed from when it was due (so a slow server cannot hide its queueing: no coordinated
 * omission), with at most `maxInflight` outstanding.
 *
 *   |-- warm-up --|-- window --|-- window --|-- window --| ... stop when the last 3 agree
 *                 ^ beforeMeasure (stats)               ^ afterMeasure    (or durationMs)
 *
 * Requests still running at the end complete, but are not counted.
 */
import { isStable, WindowRecorder } from './recorder.ts'
import type { SendOutcome, Target } from './target.ts'
import type { GoodputSlo, WindowSummary } from './types.ts'

export interface LevelPlan {
  label: string
  concurrency: number | null
  rate: number | null
  maxInflight: number
}

export interface TickInfo { phase: 'warmup' | 'measure'; elapsedMs: number; totalMs: number; lastWindow: WindowSummary | null; windows: number }

export interface LoadConfig {
  warmupMs: number
  durationMs: number
  windowMs: number
  stabilityPct: number
  stream: boolean
  slo: GoodputSlo | null
  seed?: number
  onTick?: (t: TickInfo) => void
  beforeMeasure?: () => Promise<void>
  afterMeasure?: () => Promise<void>
}

export interface LevelMeasurement {
  windows: WindowRecorder[]
  /** The last 3 windows when stable, else all of them. */
  used: WindowRecorder[]
  stable: boolean
  /** Every request of a window failed (wrong target, or the server died): later levels would fail too. */
  allFailed: boolean
}

/** Exponential inter-arrival gap for a Poisson process at `rate` per second, in ms. */
export function exponentialGapMs(rate: number, u: number): number {
  return (-Math.log(1 - u) / rate) * 1000
}

/** A small seeded PRNG (mulberry32) so that open-loop schedules repeat run to run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const CONNECTION_ERRORS = new Set(['connect_refused', 'connection_reset', 'grpc_UNAVAILABLE'])

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)))

export async function runLevel(target: Target, plan: LevelPlan, cfg: LoadConfig): Promise<LevelMeasurement> {
  let measuring = false
  let stopping = false
  let cur = new WindowRecorder(performance.now(), cfg.slo)
  const record = (t0: number, out: SendOutcome) => {
    if (measuring) cur.record(t0, performance.now(), out)
  }

  /** Resolves once every request the level sent has completed (called after `stopping`). */
  let drain: () => Promise<unknown>
  let timer: NodeJS.Timeout | null = null
  if (plan.concurrency !== null) {
    const workers: Promise<void>[] = []
    for (let i = 0; i < plan.concurrency; i++) {
      workers.push((async () => {
        while (!stopping) {
          const t0 = performance.now()
          const out = await target.send()
          record(t0, out)
          // A refused or reset connection fails in microseconds: do not spin on a server that is gone.
          if (out.error && CONNECTION_ERRORS.has(out.error.kind)) await sleep(20)
        }
      })())
    }
    drain = () => Promise.all(workers)
  } else {
    const rate = plan.rate!
    const rnd = seededRandom(cfg.seed ?? 1)
    let inflight = 0
    let idle: (() => void) | null = null
    let due = performance.now()
    const fire = (at: number) => {
      if (inflight >= plan.maxInflight) {
        if (measuring) cur.countError('client_inflight_cap', `more than ${plan.maxInflight} requests in flight; the server is slower than --rate ${rate} (raise --concurrency to allow more)`)
        return
      }
      inflight++
      void target.send().then((out) => {
        inflight--
        record(at, out)
        if (inflight === 0) idle?.()
      })
    }
    const tick = () => {
      timer = null
      if (stopping) return
      const now = performance.now()
      // Timers fire late under load: send everything that is due, each timed from its due time.
      while (due <= now) {
        fire(due)
        due += exponentialGapMs(rate, rnd())
      }
      timer = setTimeout(tick, due - performance.now())
    }
    tick()
    drain = () => (inflight === 0 ? Promise.resolve() : new Promise<void>((r) => { idle = r }))
  }

  const t0 = performance.now()
  const total = cfg.warmupMs + cfg.durationMs
  const windows: WindowRecorder[] = []
  const summaries: WindowSummary[] = []
  const ticker = cfg.onTick ? setInterval(() => {
    cfg.onTick!({ phase: measuring ? 'measure' : 'warmup', elapsedMs: performance.now() - t0, totalMs: total, lastWindow: summaries.at(-1) ?? null, windows: windows.length })
  }, 200) : null

  let stable = false
  let allFailed = false
  try {
    await sleep(cfg.warmupMs)
    await cfg.beforeMeasure?.()
    const start = performance.now()
    cur = new WindowRecorder(start, cfg.slo)
    measuring = true
    for (;;) {
      await sleep(cfg.windowMs - (performance.now() - cur.start))
      const now = performance.now()
      cur.end = now
      windows.push(cur)
      const s = cur.summary(cfg.stream)
      summaries.push(s)
      cur = new WindowRecorder(now, cfg.slo)
      if (s.requests === 0 && s.errors > 0) { allFailed = true; break }
      if (isStable(summaries, cfg.stabilityPct)) { stable = true; break }
      if (now - start >= cfg.durationMs - 1) break
    }
    measuring = false
    await cfg.afterMeasure?.()
  } finally {
    measuring = false
    stopping = true
    if (timer) clearTimeout(timer)
    if (ticker) clearInterval(ticker)
    await drain()
  }
  return { windows, used: stable ? windows.slice(-3) : windows, stable, allFailed }
}
