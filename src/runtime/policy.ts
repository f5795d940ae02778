/**
 * Per-servable serving limits, resolved once at load from the server config (server-wide values,
 * then `servables.<name>.*` overrides). Runtime code reads them, never re-checks them.
 */

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

/** The policy of servable `name`: its overrides over the server-wide values. */
export function policyFor(name: string, server: Partial<ServingPolicy> = {}, of: Record<string, Partial<ServingPolicy>> = {}): ServingPolicy {
  return Object.freeze({ ...DEFAULT_POLICY, ...server, ...of[name] })
}

/** The timeout one request gets: its own ask, capped by the servable's limit (0 = none). */
export function requestTimeoutMs(policy: ServingPolicy, askedMs: number | undefined): number {
  if (askedMs === undefined || askedMs <= 0) return policy.timeoutMs
  return policy.timeoutMs > 0 ? Math.min(askedMs, policy.timeoutMs) : askedMs
}

/** The instance-count limits the body parser needs: server-wide, and each servable's override. */
export function instanceLimits(server: Partial<ServingPolicy> = {}, of: Record<string, Partial<ServingPolicy>> = {}): { fallback: number; byName: Record<string, number> } {
  const byName: Record<string, number> = {}
  for (const [name, p] of Object.entries(of)) if (p.maxInstancesPerRequest !== undefined) byName[name] = p.maxInstancesPerRequest
  return { fallback: server.maxInstancesPerRequest ?? DEFAULT_POLICY.maxInstancesPerRequest, byName }
}
