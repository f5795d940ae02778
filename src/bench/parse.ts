/** Pure parsers for bench flags. Messages name the flag, the value and an example that works. */
import { ServeError } from '../errors.ts'
import type { GoodputSlo } from './types.ts'

const bad = (msg: string): never => { throw new ServeError('INVALID_REQUEST', msg) }

/** `20s`, `500ms`, `2m`, `1.5s`; a bare number is seconds. */
export function parseDurationMs(flag: string, text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min)?\s*$/.exec(text)
  if (!m) return bad(`${flag} expects a duration such as 20s, 500ms or 2m (got "${text}")`)
  const n = Number(m[1])
  const unit = m[2] ?? 's'
  return Math.round(unit === 'ms' ? n : unit === 's' ? n * 1000 : n * 60_000)
}

/** A comma list of positive integers, e.g. `1,4,16`; `1..64` expands to powers of two. */
export function parseIntList(flag: string, text: string, min = 1): number[] {
  const out: number[] = []
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const range = /^(\d+)\.\.(\d+)$/.exec(part)
    if (range) {
      const lo = Number(range[1])
      const hi = Number(range[2])
      if (lo < min || hi < lo) bad(`${flag}: range "${part}" must go up from ${min}, e.g. ${flag} 1..64`)
      for (let v = lo; v < hi; v *= 2) out.push(v)
      out.push(hi)
      continue
    }
    if (!/^\d+$/.test(part) || Number(part) < min) bad(`${flag} expects a comma list of integers >= ${min}, e.g. ${flag} 1,4,16 (got "${text}")`)
    out.push(Number(part))
  }
  if (out.length === 0) bad(`${flag} needs at least one value, e.g. ${flag} 1,4,16`)
  return [...new Set(out)]
}

/** A comma list of positive numbers (request rates may be fractional). */
export function parseRateList(flag: string, text: string): number[] {
  const out = text.split(',').map((s) => s.trim()).filter(Boolean).map(Number)
  if (out.length === 0 || out.some((r) => !Number.isFinite(r) || r <= 0)) bad(`${flag} expects requests per second > 0, e.g. ${flag} 50 or ${flag} 50,100,200 (got "${text}")`)
  return out
}

/** `ttft:500,tpot:50` (vLLM's `--goodput` keys; values in ms; commas or spaces between pairs). */
export function parseGoodput(text: string): GoodputSlo {
  const slo: GoodputSlo = {}
  for (const pair of text.split(/[\s,]+/).filter(Boolean)) {
    const m = /^(ttft|tpot|e2el):(\d+(?:\.\d+)?)$/i.exec(pair)
    if (!m) bad(`--goodput expects KEY:MS pairs with keys ttft, tpot, e2el, e.g. --goodput ttft:500,tpot:50 (got "${pair}")`)
    const ms = Number(m![2])
    const key = m![1]!.toLowerCase()
    if (key === 'ttft') slo.ttftMs = ms
    else if (key === 'tpot') slo.tpotMs = ms
    else slo.e2elMs = ms
  }
  if (Object.keys(slo).length === 0) bad('--goodput needs at least one SLO, e.g. --goodput ttft:500,tpot:50')
  return slo
}

/** `http://H:P` (a bare `H:P` gets http://); returns the origin without a trailing slash. */
export function parseUrl(text: string): string {
  const withScheme = /^[a-z]+:\/\//i.test(text) ? text : `http://${text}`
  let u: URL
  try { u = new URL(withScheme) } catch { return bad(`--url expects http://HOST:PORT, e.g. --url http://127.0.0.1:1500 (got "${text}")`) }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') bad(`--url must be http:// or https:// (got "${text}")`)
  return u.origin
}

/** `HOST:PORT` for gRPC. */
export function parseGrpcAddress(text: string): string {
  const m = /^(.+):(\d+)$/.exec(text.trim().replace(/^grpc:\/\//, ''))
  if (!m || Number(m[2]) > 65535) bad(`--grpc expects HOST:PORT, e.g. --grpc 127.0.0.1:5500 (got "${text}")`)
  return `${m![1]}:${m![2]}`
}

/** Measurement window: perf_analyzer uses 5 s; short runs still get 3 windows to compare. */
export function defaultWindowMs(durationMs: number): number {
  return Math.max(100, Math.min(2000, Math.floor(durationMs / 3)))
}
