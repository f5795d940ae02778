/**
 * GET /metrics: Prometheus text from the server's prom-client registry (runtime/metrics.ts owns the
 * instruments). Its gauges are set from the runtime's snapshot, so protocol/ never reads replicas.
 */
import type { ServerMetrics } from '../../runtime/metrics.ts'
import type { ServerSnapshot } from '../../runtime/snapshot.ts'

export function renderPrometheus(metrics: ServerMetrics, snap: ServerSnapshot): Promise<string> {
  return metrics.render(snap)
}
