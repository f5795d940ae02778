/**
 * Per-servable serving limits, resolved once per loaded version. Precedence, lowest first:
 * DEFAULT_POLICY < server-wide (server YAML, then command-line flags) < the servable's own
 * `defineServable(..., options)` < the server YAML's `servables.<name>.*`. A request may ask for a
 * shorter timeout, never a longer one. Runtime code reads the result, never re-checks it.
 */
import { HEARTBEAT_MS } from './messages.ts'

export interface ServingPolicy {
  /** Longest a request may take from arrival to answer; 0 = no limit. A request may ask for less. */
  timeoutMs: number
  /** Most instances in one predict request (checked while the body is parsed). */
  maxInstancesPerRequest: number
  /** A replica silent for this long (no heartbeat, no reply) is hung: killed and restarted. 0 = off. */
  watchdogMs: number
}

export const DEFAULT_POLICY: Readonly<ServingPolicy> = Object.freeze({
  timeoutMs: 0,
  maxInstancesPerRequest: 10_000,
  watchdogMs: 4_000,
})

/** setTimeout's longest delay (2^31 - 1 ms, ~24.8 days): a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1
/** A watchdog shorter than a few heartbeats would kill healthy replicas between two beats. */
export const MIN_WATCHDOG_MS = 4 * HEARTBEAT_MS

/** The values an integer setting accepts: min..max, and also 0 when `zeroMeans` says what 0 does. */
export interface IntRange { min: number; max: number; zeroMeans?: string; expected: string }

export function intRange(min: number, max: number, zeroMeans?: string): IntRange {
  const span = max === Infinity ? `an integer >= ${min}` : `an integer in ${min}..${max}`
  return Object.freeze({ min, max, ...(zeroMeans ? { zeroMeans } : {}), expected: zeroMeans ? `0 (${zeroMeans}) or ${span}` : span })
}

export function inRange(r: IntRange, v: unknown): v is number {
  if (typeof v !== 'number' || !Number.isInteger(v)) return false
  return (v >= r.min && v <= r.max) || (v === 0 && r.zeroMeans !== undefined)
}

/** One range per policy field, shared by the flags, the server YAML and defineServable's options. */
export const POLICY_RANGES: Readonly<Record<keyof ServingPolicy, IntRange>> = Object.freeze({
  timeoutMs: intRange(1, MAX_TIMER_MS, 'no limit'),
  maxInstancesPerRequest: intRange(1, Infinity),
  watchdogMs: intRange(MIN_WATCHDOG_MS, MAX_TIMER_MS, 'off'),
})

/**
 * The policy of servable `name`: `server` (server-wide), then `declared` (its servable_config.ts),
 * then `of[name]` (the server YAML's per-servable entry).
 */
export function policyFor(
  name: string,
  server: Partial<ServingPolicy> = {},
  of: Record<string, Partial<ServingPolicy>> = {},
  declared: Partial<ServingPolicy> = {},
): ServingPolicy {
  return Object.freeze({ ...DEFAULT_POLICY, ...server, ...declared, ...of[name] })
}

/** The timeout one request gets: its own ask, capped by the servable's limit (0 = none). */
export function requestTimeoutMs(policy: ServingPolicy, askedMs: number | undefined): number {
  if (askedMs === undefined || askedMs <= 0) return policy.timeoutMs
  return policy.timeoutMs > 0 ? Math.min(askedMs, policy.timeoutMs) : askedMs
}

/**
 * The instance-count limits the body parser needs: server-wide, and each servable's override.
 * `byName` is filled further as servables load (their servable_config.ts may set their own).
 */
export function instanceLimits(server: Partial<ServingPolicy> = {}, of: Record<string, Partial<ServingPolicy>> = {}): { fallback: number; byName: Record<string, number> } {
  // No prototype: a servable named `__proto__` is a key like any other.
  const byName: Record<string, number> = Object.create(null)
  for (const [name, p] of Object.entries(of)) if (p.maxInstancesPerRequest !== undefined) byName[name] = p.maxInstancesPerRequest
  return { fallback: server.maxInstancesPerRequest ?? DEFAULT_POLICY.maxInstancesPerRequest, byName }
}
