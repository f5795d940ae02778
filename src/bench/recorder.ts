/**
 * One measurement window: completed requests, latency histogram, errors by kind and, for streams,
 * the vLLM metrics (§3.5 of llm-serving.md): TTFT, TPOT = (E2EL - TTFT) / (tokens - 1) for requests
 * with more than one token, ITL = every gap between streamed chunks, goodput = requests meeting
 * every SLO given. Windows merge into a level result.
 */
import { LatencyHistogram } from './histogram.ts'
import type { SendOutcome } from './target.ts'
import type { ErrorCount, GenerateSummary, GoodputSlo, WindowSummary } from './types.ts'

export class WindowRecorder {
  end = 0
  requests = 0
  errors = 0
  readonly latency = new LatencyHistogram()
  readonly errorKinds = new Map<string, ErrorCount>()
  readonly ttft = new LatencyHistogram()
  readonly tpot = new LatencyHistogram()
  readonly itl = new LatencyHistogram()
  outputTokens = 0
  good = 0

  constructor(readonly start: number, private readonly slo: GoodputSlo | null) {}

  /** `t0`: when the request was sent (open loop: when it was due); `t1`: when it completed. */
  record(t0: number, t1: number, out: SendOutcome): void {
    if (out.error) {
      this.countError(out.error.kind, out.error.message)
      return
    }
    const e2el = t1 - t0
    this.requests++
    this.latency.record(e2el)
    const s = out.stream
    if (!s) return
    this.outputTokens += s.outputTokens
    const times = s.chunkTimes
    const ttft = times.length ? times[0]! - t0 : e2el
    this.ttft.record(ttft)
    for (let i = 1; i < times.length; i++) this.itl.record(times[i]! - times[i - 1]!)
    const tpot = s.outputTokens > 1 ? (e2el - ttft) / (s.outputTokens - 1) : null
    if (tpot !== null) this.tpot.record(tpot)
    const slo = this.slo
    if (slo && (slo.ttftMs === undefined || ttft <= slo.ttftMs) && (slo.tpotMs === undefined || tpot === null || tpot <= slo.tpotMs) && (slo.e2elMs === undefined || e2el <= slo.e2elMs)) this.good++
  }

  countError(kind: string, message: string): void {
    this.errors++
    const e = this.errorKinds.get(kind)
    if (e) e.count++
    else this.errorKinds.set(kind, { count: 1, sample: message })
  }

  get durationMs(): number { return Math.max(1e-3, this.end - this.start) }

  /** Per-window numbers used for the stability check: req/s (tokens/s for streams) and mean latency (mean ITL for streams). */
  summary(stream: boolean): WindowSummary {
    const secs = this.durationMs / 1000
    const itl = stream && this.itl.count > 0
    return {
      durationMs: this.durationMs,
      requests: this.requests,
      errors: this.errors,
      throughput: (stream ? this.outputTokens : this.requests) / secs,
      meanLatencyMs: itl ? this.itl.meanMs : this.latency.meanMs,
    }
  }
}

/**
 * perf_analyzer's rule: the last 3 windows are stable when each one's throughput and mean latency
 * lie within `pct` percent of the three's average. Windows without completions never are.
 */
export function isStable(windows: readonly WindowSummary[], pct: number): boolean {
  if (pct <= 0 || windows.length < 3) return false
  const last = windows.slice(-3)
  if (last.some((w) => w.requests === 0)) return false
  const within = (xs: number[]) => {
    const avg = xs.reduce((a, b) => a + b, 0) / xs.length
    return avg > 0 && xs.every((x) => Math.abs(x - avg) <= (avg * pct) / 100)
  }
  return within(last.map((w) => w.throughput)) && within(last.map((w) => w.meanLatencyMs))
}

export interface MergedWindows {
  durationMs: number
  requests: number
  errors: number
  latency: LatencyHistogram
  errorKinds: Record<string, ErrorCount>
  generate: GenerateSummary | null
}

/** Sums windows into one result. */
export function mergeWindows(list: readonly WindowRecorder[], stream: boolean, slo: GoodputSlo | null): MergedWindows {
  const durationMs = list.reduce((a, w) => a + w.durationMs, 0)
  const errorKinds: Record<string, ErrorCount> = {}
  for (const w of list) {
    for (const [k, v] of w.errorKinds) {
      const e = errorKinds[k]
      if (e) e.count += v.count
      else errorKinds[k] = { ...v }
    }
  }
  const latency = LatencyHistogram.merge(list.map((w) => w.latency))
  let generate: GenerateSummary | null = null
  if (stream) {
    const secs = durationMs / 1000
    const tokens = list.reduce((a, w) => a + w.outputTokens, 0)
    const good = list.reduce((a, w) => a + w.good, 0)
    generate = {
      ttftMs: LatencyHistogram.merge(list.map((w) => w.ttft)).summary(),
      tpotMs: LatencyHistogram.merge(list.map((w) => w.tpot)).summary(),
      itlMs: LatencyHistogram.merge(list.map((w) => w.itl)).summary(),
      e2elMs: latency.summary(),
      outputTokens: tokens,
      outputTokensPerSec: secs > 0 ? tokens / secs : 0,
      goodputReqPerSec: slo ? (secs > 0 ? good / secs : 0) : null,
      goodputRequests: slo ? good : null,
    }
  }
  return {
    durationMs,
    requests: list.reduce((a, w) => a + w.requests, 0),
    errors: list.reduce((a, w) => a + w.errors, 0),
    latency,
    errorKinds,
    generate,
  }
}
