/**
 * Shapes shared by the benchmark tool: validated options, per-level results and the report that
 * `--json` writes (its field names are the contract for machines reading it).
 */

export type Protocol = 'rest' | 'grpc'
export type GenerateRoute = 'tgi' | 'openai'

/** SLOs for goodput, in ms; a request counts when it meets every one that is set (vLLM's rule). */
export interface GoodputSlo { ttftMs?: number; tpotMs?: number; e2elMs?: number }

/** Options after parsing; everything the runner needs and nothing it has to re-check. */
export interface ValidBenchOptions {
  /** Servable directory: started by the bench unless `url`/`grpc` point at a running server. */
  servablesDir: string | null
  url: string | null
  grpc: string | null
  /** A bare `--grpc` with `--servables`: use the started server's gRPC listener. */
  grpcOnStarted: boolean
  servable: string | null
  method: string | null
  version: number
  generate: boolean
  route: GenerateRoute
  /** Closed loop: one level per entry. Open loop: a single cap on in-flight requests. */
  concurrency: number[]
  /** Open loop request rates (req/s); empty = closed loop. */
  rates: number[]
  durationMs: number
  warmupMs: number
  windowMs: number
  /** Max spread of the last 3 windows around their mean, percent; 0 = always run the full duration. */
  stabilityPct: number
  instancesPerRequest: number
  inputFile: string | null
  imageSize: number
  timeoutMs: number
  jsonOut: string | null
  htmlOut: string | null
  baseline: 'raw' | null
  devices: string | null
  /** `ms-serve start --isolation` for the server started with --servables. */
  isolation: string | null
  /** Main process of a server on this machine that the bench did not start, for CPU accounting. */
  serverPid: number | null
  progress: boolean
  maxNewTokens: number
  prompt: string | null
  goodput: GoodputSlo | null
  /** Per batch size in the raw baseline. */
  baselineMs: number
}

/** Latency summary in ms, from an HDR histogram. */
export interface LatencySummary {
  count: number
  mean: number
  stdev: number
  min: number
  p50: number
  p90: number
  p95: number
  p99: number
  max: number
}

export interface ErrorCount { count: number; sample: string }

export interface WindowSummary { durationMs: number; requests: number; errors: number; throughput: number; meanLatencyMs: number }

/** Server-side view of one level: differences of `/stats` counters before and after it. */
export interface ServerBreakdown {
  requests: number
  instances: number
  /** Batches the batcher dispatched (groups sent to replicas). */
  dispatches: number
  executions: number
  inferences: number
  padded: number
  avgBatchSize: number
  avgQueueMs: number
  /** Model execution time per execution (one batch). */
  computeMsPerExecution: number
  /** Model execution time per instance: what a batch of B costs each of its items. */
  computeMsPerItem: number
  /** Executed batch size -> number of executions (over the method's models). */
  batchSizes: Record<string, number>
  replicas: number
  intraOpThreads: number | null
}

export interface CpuShare { cores: number; msPerRequest: number }

/**
 * CPU use during a level's measurement: the generator, the server's main process, its replicas,
 * and everything else on the machine (`other`: noisy neighbours; large values spoil the numbers).
 */
export interface CpuBreakdown { client: CpuShare; server: CpuShare | null; replicas: CpuShare | null; other: CpuShare | null }

export interface GenerateSummary {
  ttftMs: LatencySummary
  tpotMs: LatencySummary
  itlMs: LatencySummary
  e2elMs: LatencySummary
  outputTokens: number
  outputTokensPerSec: number
  /** Requests meeting every SLO per second; null without --goodput. */
  goodputReqPerSec: number | null
  goodputRequests: number | null
}

export interface LevelResult {
  /** `c=16` or `rate=200`. */
  label: string
  concurrency: number | null
  rate: number | null
  durationMs: number
  requests: number
  items: number
  reqPerSec: number
  itemsPerSec: number
  latencyMs: LatencySummary
  errors: Record<string, ErrorCount>
  numErrors: number
  stable: boolean
  windows: WindowSummary[]
  server: ServerBreakdown | null
  /** Over the whole measurement (all windows), as the server counters are. */
  cpu: CpuBreakdown | null
  generate: GenerateSummary | null
  /** ms-serve items/s over the raw baseline's best, when `--baseline raw` ran. */
  ratioToRaw: number | null
}

/** `cpuMsPerItem`: CPU of the bench process (ORT's threads included) per item while that batch size ran. */
export interface RawBaselineRow { batch: number; runs: number; msPerRun: number; itemsPerSec: number; cpuMsPerItem?: number }

export interface RawBaselineResult {
  kind: 'raw-ort' | 'raw-decode'
  /** Model files run, in method order. */
  models: string[]
  intraOpThreads: number
  rows: RawBaselineRow[]
  best: RawBaselineRow | null
  note: string
}

/** `loadAvg1`: the 1-minute load average when the run started (other processes compete for the cores). */
export interface MachineInfo { cpus: number; cpuModel: string; node: string; platform: string; totalMemGiB: number; loadAvg1: number }

export interface BenchReport {
  tool: 'ms-serve bench'
  schemaVersion: 1
  startedAt: string
  machine: MachineInfo
  target: {
    protocol: Protocol | 'generate'
    address: string
    statsUrl: string | null
    servable: string
    method: string | null
    version: number
    route: GenerateRoute | null
    startedServer: boolean
    /** The server's replicas as /stats lists them (device and isolation), when it has /stats. */
    replicas: Array<{ device: string; isolation: string }> | null
  }
  load: {
    mode: 'closed' | 'open'
    durationMs: number
    warmupMs: number
    windowMs: number
    stabilityPct: number
    instancesPerRequest: number
    inputs: string
  }
  levels: LevelResult[]
  baseline: RawBaselineResult | null
  notes: string[]
}
