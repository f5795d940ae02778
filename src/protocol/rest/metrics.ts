/** Prometheus text from the runtime's snapshot (Triton-like meanings for predict, TGI's for LLMs, `msserve_` prefix). */
import type { ServerSnapshot } from '../../runtime/snapshot.ts'

export function renderPrometheus(snap: ServerSnapshot): string {
  const lines: string[] = []
  const metric = (name: string, type: string, help: string) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
  const all = snap.servables
  metric('msserve_inference_count', 'counter', 'Instances run through a model (a batch of 8 counts 8)')
  for (const s of all) for (const m of s.models) lines.push(`msserve_inference_count{servable="${s.name}",version="${s.version}",model="${m.name}"} ${m.inferences}`)
  metric('msserve_inference_exec_count', 'counter', 'Model executions (batches); inference_count / exec_count = average batch size')
  for (const s of all) for (const m of s.models) lines.push(`msserve_inference_exec_count{servable="${s.name}",version="${s.version}",model="${m.name}"} ${m.executions}`)
  metric('msserve_compute_duration_ms', 'counter', 'Cumulative model execution time')
  for (const s of all) for (const m of s.models) lines.push(`msserve_compute_duration_ms{servable="${s.name}",version="${s.version}",model="${m.name}"} ${m.computeMs.toFixed(3)}`)
  metric('msserve_request_count', 'counter', 'Predict requests per method')
  for (const s of all) for (const [k, v] of Object.entries(s.methods)) lines.push(`msserve_request_count{servable="${s.name}",version="${s.version}",method="${k}"} ${v.requests}`)
  metric('msserve_request_failure_count', 'counter', 'Predict requests with at least one failed instance')
  for (const s of all) for (const [k, v] of Object.entries(s.methods)) lines.push(`msserve_request_failure_count{servable="${s.name}",version="${s.version}",method="${k}"} ${v.errors}`)
  metric('msserve_queue_duration_ms', 'counter', 'Cumulative time instances waited in the batching queue')
  for (const s of all) for (const [k, v] of Object.entries(s.methods)) lines.push(`msserve_queue_duration_ms{servable="${s.name}",version="${s.version}",method="${k}"} ${v.queueMs.toFixed(3)}`)
  metric('msserve_replica_ready', 'gauge', '1 when the replica is loaded and serving')
  for (const s of all) for (const r of s.replicas) lines.push(`msserve_replica_ready{servable="${s.name}",version="${s.version}",device="${r.device}"} ${r.state === 'ready' ? 1 : 0}`)
  return lines.join('\n') + '\n' + renderLlmPrometheus(snap)
}

/** LLM engine gauges and counters (TGI meanings, msserve_llm_ prefix), one sample per replica. */
function renderLlmPrometheus(snap: ServerSnapshot): string {
  const rows = snap.llms.flatMap((l) => l.replicas.map((r) => ({ labels: `servable="${l.name}",version="${l.version}",device="${r.device}"`, e: r.engine, active: r.active })))
  if (rows.length === 0) return ''
  const lines: string[] = []
  const series = (name: string, type: string, help: string, get: (x: (typeof rows)[number]) => number | string | undefined) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    for (const x of rows) lines.push(`${name}{${x.labels}} ${Number(get(x) ?? 0)}`)
  }
  series('msserve_llm_requests_active', 'gauge', 'Requests queued or generating on the replica', (x) => x.active)
  series('msserve_llm_queue_size', 'gauge', 'Requests waiting for prefill', (x) => x.e.queued)
  series('msserve_llm_batch_current_size', 'gauge', 'Requests in the running batch', (x) => x.e.running)
  series('msserve_llm_generated_tokens_total', 'counter', 'Tokens generated', (x) => x.e.generatedTokens)
  series('msserve_llm_batch_inference_count', 'counter', 'Prefill steps', (x) => x.e.numPrefills)
  series('msserve_llm_decode_steps_total', 'counter', 'Decode steps', (x) => x.e.numDecodes)
  series('msserve_llm_prefill_duration_ms_total', 'counter', 'Time spent in prefill steps', (x) => x.e.prefillMs)
  series('msserve_llm_decode_duration_ms_total', 'counter', 'Time spent in decode steps', (x) => x.e.decodeMs)
  series('msserve_llm_kv_cache_bytes', 'gauge', 'Bytes held by the slot KV cache', (x) => x.e.kvBytes)
  return lines.join('\n') + '\n'
}
