/**
 * The server's Prometheus instruments (prom-client), one Registry per server: tests start several
 * servers in one process, so nothing goes to prom-client's global registry. Counters and histograms
 * are updated where things happen (registry.ts predict, live-servable.ts batches, replica-pool.ts
 * restarts, llm-dispatch.ts event streams); gauges and the engines' own counters are set from one
 * ServerSnapshot (snapshot.ts, with its bounded wait on replicas) just before each scrape.
 * Meanings: Triton's for predict, TGI's (llm-serving.md §1.8) for LLMs; seconds and bytes.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { ServerSnapshot } from './snapshot.ts'

/** Request latencies, CPU (sub-millisecond adds) to GPU-backed LLM requests (a minute). */
export const REQUEST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
/** Per-token times: from 1 ms (GPU decode) to seconds (a long CPU prefill before the first token). */
export const TOKEN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
/** Executed batch sizes. */
export const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
/** Token counts (prompt length, generated tokens). */
export const TOKEN_COUNT_BUCKETS = [1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]

export type Protocol = 'rest' | 'grpc'

type SV = 'servable' | 'version'

export class ServerMetrics {
  readonly registry = new Registry()

  // Predict (Triton-like).
  readonly requests = new Counter<SV | 'method' | 'protocol' | 'outcome'>({ name: 'msserve_requests_total', help: 'Predict requests answered, by outcome (success, partial: some instances failed, else the error code)', labelNames: ['servable', 'version', 'method', 'protocol', 'outcome'], registers: [this.registry] })
  readonly requestDuration = new Histogram<SV | 'method' | 'protocol'>({ name: 'msserve_request_duration_seconds', help: 'Predict request time in the server, from validation to the answer', labelNames: ['servable', 'version', 'method', 'protocol'], buckets: REQUEST_BUCKETS, registers: [this.registry] })
  readonly queueDuration = new Histogram<SV | 'method'>({ name: 'msserve_queue_duration_seconds', help: 'Time each instance waited in the batching queue', labelNames: ['servable', 'version', 'method'], buckets: REQUEST_BUCKETS, registers: [this.registry] })
  readonly computeDuration = new Histogram<SV | 'model'>({ name: 'msserve_compute_duration_seconds', help: 'Model execution time of each executed batch', labelNames: ['servable', 'version', 'model'], buckets: REQUEST_BUCKETS, registers: [this.registry] })
  readonly batchSize = new Histogram<SV | 'model'>({ name: 'msserve_batch_size', help: 'Instances in each executed model batch (padding excluded)', labelNames: ['servable', 'version', 'model'], buckets: BATCH_BUCKETS, registers: [this.registry] })
  readonly replicaRestarts = new Counter<SV>({ name: 'msserve_replica_restarts_total', help: 'Replica exits followed by a restart', labelNames: ['servable', 'version'], registers: [this.registry] })
  readonly queueDepth = new Gauge<SV | 'method'>({ name: 'msserve_queue_depth', help: 'Instances waiting in the batching queue', labelNames: ['servable', 'version', 'method'], registers: [this.registry] })
  readonly replicasReady = new Gauge<SV>({ name: 'msserve_replicas_ready', help: 'Replicas loaded and serving', labelNames: ['servable', 'version'], registers: [this.registry] })

  // LLM (TGI's meanings).
  readonly llmRequests = new Counter<SV | 'outcome'>({ name: 'msserve_llm_requests_total', help: 'LLM requests finished, by outcome (success, else the error code)', labelNames: ['servable', 'version', 'outcome'], registers: [this.registry] })
  readonly llmRequestDuration = new Histogram<SV>({ name: 'msserve_llm_request_duration_seconds', help: 'LLM request time from submit to its last event', labelNames: ['servable', 'version'], buckets: REQUEST_BUCKETS, registers: [this.registry] })
  readonly llmQueueDuration = new Histogram<SV>({ name: 'msserve_llm_request_queue_duration_seconds', help: 'Time an LLM request waited for its prefill (engine timing)', labelNames: ['servable', 'version'], buckets: REQUEST_BUCKETS, registers: [this.registry] })
  readonly llmTimeToFirstToken = new Histogram<SV>({ name: 'msserve_llm_time_to_first_token_seconds', help: 'Submit to first token event', labelNames: ['servable', 'version'], buckets: TOKEN_BUCKETS, registers: [this.registry] })
  readonly llmTimePerOutputToken = new Histogram<SV>({ name: 'msserve_llm_time_per_output_token_seconds', help: 'Time between consecutive token events of a request (inter-token latency)', labelNames: ['servable', 'version'], buckets: TOKEN_BUCKETS, registers: [this.registry] })
  readonly llmInputLength = new Histogram<SV>({ name: 'msserve_llm_request_input_length', help: 'Prompt tokens of each finished request', labelNames: ['servable', 'version'], buckets: TOKEN_COUNT_BUCKETS, registers: [this.registry] })
  readonly llmGeneratedTokens = new Histogram<SV>({ name: 'msserve_llm_request_generated_tokens', help: 'Tokens generated by each finished request', labelNames: ['servable', 'version'], buckets: TOKEN_COUNT_BUCKETS, registers: [this.registry] })

  // LLM engine gauges and counters, per replica, from the snapshot's engine counters.
  private readonly engineGauges = {
    queued: new Gauge<SV | 'device'>({ name: 'msserve_llm_queue_size', help: 'Requests waiting for prefill in the engine', labelNames: ['servable', 'version', 'device'], registers: [this.registry] }),
    running: new Gauge<SV | 'device'>({ name: 'msserve_llm_batch_current_size', help: 'Requests in the running batch', labelNames: ['servable', 'version', 'device'], registers: [this.registry] }),
    kvBytes: new Gauge<SV | 'device'>({ name: 'msserve_llm_kv_cache_bytes', help: 'Bytes held by the KV cache', labelNames: ['servable', 'version', 'device'], registers: [this.registry] }),
  }
  private readonly activeStreams = new Gauge<SV | 'device'>({ name: 'msserve_llm_requests_active', help: 'Requests queued or generating on the replica', labelNames: ['servable', 'version', 'device'], registers: [this.registry] })
  /** Monotone engine counters (reset when a replica restarts, which Prometheus' rate() handles). */
  private readonly engineCounters = {
    generatedTokens: new Counter<SV | 'device'>({ name: 'msserve_llm_generated_tokens_total', help: 'Tokens generated by the engine', labelNames: ['servable', 'version', 'device'], registers: [this.registry] }),
    numPrefills: new Counter<SV | 'device'>({ name: 'msserve_llm_prefill_steps_total', help: 'Prefill steps run by the engine', labelNames: ['servable', 'version', 'device'], registers: [this.registry] }),
    numDecodes: new Counter<SV | 'device'>({ name: 'msserve_llm_decode_steps_total', help: 'Decode steps run by the engine', labelNames: ['servable', 'version', 'device'], registers: [this.registry] }),
  }
  private readonly engineSeconds = {
    prefillMs: new Counter<SV | 'device'>({ name: 'msserve_llm_prefill_duration_seconds_total', help: 'Time spent in prefill steps', labelNames: ['servable', 'version', 'device'], registers: [this.registry] }),
    decodeMs: new Counter<SV | 'device'>({ name: 'msserve_llm_decode_duration_seconds_total', help: 'Time spent in decode steps', labelNames: ['servable', 'version', 'device'], registers: [this.registry] }),
  }

  /** Engine step durations, bucketed in the replica (llm-host.ts StepBuckets), per replica. */
  private readonly stepHistograms = {
    prefill: new ReportedHistogram(this.registry, 'msserve_llm_prefill_step_duration_seconds', 'Duration of each prefill step of the engine (TGI tgi_batch_inference_duration{method="prefill"})'),
    decode: new ReportedHistogram(this.registry, 'msserve_llm_decode_step_duration_seconds', 'Duration of each decode step of the engine (TGI tgi_batch_inference_duration{method="decode"})'),
  }

  /** Sets the gauges and engine counters from one snapshot (call it right before rendering). */
  update(snap: ServerSnapshot): void {
    this.queueDepth.reset()
    this.replicasReady.reset()
    for (const s of snap.servables) {
      const sv = { servable: s.name, version: String(s.version) }
      this.replicasReady.set(sv, s.replicas.filter((r) => r.state === 'ready').length)
      for (const [method, m] of Object.entries(s.methods)) this.queueDepth.set({ ...sv, method }, m.queued)
    }
    const perReplica = [...Object.values(this.engineGauges), ...Object.values(this.engineCounters), ...Object.values(this.engineSeconds), this.activeStreams]
    for (const m of perReplica) m.reset()
    this.stepHistograms.prefill.clear()
    this.stepHistograms.decode.clear()
    for (const l of snap.llms) {
      for (const r of l.replicas) {
        const labels = { servable: l.name, version: String(l.version), device: r.device }
        this.activeStreams.set(labels, r.active)
        // A replica that did not answer in time reports {}: its series are left out of this scrape.
        if (!('queued' in r.engine)) continue
        for (const [k, g] of Object.entries(this.engineGauges)) g.set(labels, num(r.engine[k]))
        for (const [k, c] of Object.entries(this.engineCounters)) c.inc(labels, num(r.engine[k]))
        for (const [k, c] of Object.entries(this.engineSeconds)) c.inc(labels, num(r.engine[k]) / 1000)
        this.stepHistograms.prefill.add(labels, r.engine, 'prefillStep', num(r.engine['prefillMs']) / 1000)
        this.stepHistograms.decode.add(labels, r.engine, 'decodeStep', num(r.engine['decodeMs']) / 1000)
      }
    }
  }

  private rendering: Promise<unknown> = Promise.resolve()

  /**
   * Prometheus text of everything, gauges set from `snap` first. Scrapes render one at a time: a
   * second scrape's update() must not reset gauges while the first one's text is being collected.
   */
  render(snap: ServerSnapshot): Promise<string> {
    const text = this.rendering.then(() => {
      this.update(snap)
      return this.registry.metrics()
    })
    this.rendering = text.catch(() => undefined)
    return text
  }

  get contentType(): string {
    return this.registry.contentType
  }
}

type Sample = { labels: Record<string, string | number>; value: number; metricName: string }

/**
 * A histogram whose buckets were counted elsewhere (a replica's engine steps, reported through the
 * llm-stats round trip): registered on the registry as a prom-client metric that renders the last
 * reported counts. Cumulative counts per `le`, `_sum` and `_count`, as prom-client's own Histogram.
 */
class ReportedHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private samples: Sample[] = []

  constructor(registry: Registry, readonly name: string, readonly help: string) {
    registry.registerMetric(this as never)
  }

  clear(): void {
    this.samples = []
  }

  /** One replica's buckets from its engine counters (`<prefix>_le_<ms>` keys); none if it reported none. */
  add(labels: Record<string, string>, engine: Record<string, number | string>, prefix: string, sumSeconds: number): void {
    if (!(`${prefix}_le_inf` in engine)) return
    // The replica chose the bounds (llm-host.ts STEP_BUCKETS_MS, in ms): read them from the keys.
    const head = `${prefix}_le_`
    const bounds = Object.keys(engine).filter((k) => k.startsWith(head) && k !== `${head}inf`).map((k) => Number(k.slice(head.length))).filter(Number.isFinite).sort((a, b) => a - b)
    for (const le of bounds) this.samples.push({ labels: { ...labels, le: le / 1000 }, value: num(engine[`${head}${le}`]), metricName: `${this.name}_bucket` })
    const count = num(engine[`${prefix}_le_inf`])
    this.samples.push({ labels: { ...labels, le: '+Inf' }, value: count, metricName: `${this.name}_bucket` })
    this.samples.push({ labels, value: sumSeconds, metricName: `${this.name}_sum` })
    this.samples.push({ labels, value: count, metricName: `${this.name}_count` })
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Sample[] }> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.samples }
  }

  reset(): void {
    this.clear()
  }
}

function num(v: number | string | undefined): number {
  const n = Number(v ?? 0)
  return Number.isFinite(n) && n >= 0 ? n : 0
}
