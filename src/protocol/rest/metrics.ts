/** Prometheus text for the predict path (Triton-like meanings, `msserve_` prefix). */
import type { ServableRegistry } from '../../runtime/registry.ts'

export function renderPrometheus(registry: ServableRegistry): string {
  const lines: string[] = []
  const metric = (name: string, type: string, help: string) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
  const all = registry.all()
  metric('msserve_inference_count', 'counter', 'Instances run through a model (a batch of 8 counts 8)')
  for (const s of all) for (const m of s.modelStats) lines.push(`msserve_inference_count{servable="${s.name}",version="${s.version}",model="${m.name}"} ${m.inferences}`)
  metric('msserve_inference_exec_count', 'counter', 'Model executions (batches); inference_count / exec_count = average batch size')
  for (const s of all) for (const m of s.modelStats) lines.push(`msserve_inference_exec_count{servable="${s.name}",version="${s.version}",model="${m.name}"} ${m.executions}`)
  metric('msserve_compute_duration_ms', 'counter', 'Cumulative model execution time')
  for (const s of all) for (const m of s.modelStats) lines.push(`msserve_compute_duration_ms{servable="${s.name}",version="${s.version}",model="${m.name}"} ${m.computeMs.toFixed(3)}`)
  metric('msserve_request_count', 'counter', 'Predict requests per method')
  for (const s of all) for (const [k, v] of s.methodStats) lines.push(`msserve_request_count{servable="${s.name}",version="${s.version}",method="${k}"} ${v.requests}`)
  metric('msserve_request_failure_count', 'counter', 'Predict requests with at least one failed instance')
  for (const s of all) for (const [k, v] of s.methodStats) lines.push(`msserve_request_failure_count{servable="${s.name}",version="${s.version}",method="${k}"} ${v.errors}`)
  metric('msserve_queue_duration_ms', 'counter', 'Cumulative time instances waited in the batching queue')
  for (const s of all) for (const [k, v] of s.methodStats) lines.push(`msserve_queue_duration_ms{servable="${s.name}",version="${s.version}",method="${k}"} ${v.queueMs.toFixed(3)}`)
  metric('msserve_replica_ready', 'gauge', '1 when the replica is loaded and serving')
  for (const s of all) for (const r of s.replicas) lines.push(`msserve_replica_ready{servable="${s.name}",version="${s.version}",device="${r.device.deviceType}:${r.device.deviceId}"} ${r.state === 'ready' ? 1 : 0}`)
  return lines.join('\n') + '\n'
}
