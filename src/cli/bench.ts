/** `ms-serve bench`: flags -> ValidBenchOptions -> runBench() -> table on stdout, --json, --html. */
import { Command, Option } from 'commander'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { isServeError, ServeError } from '../errors.ts'
import { defaultWindowMs, parseDurationMs, parseGoodput, parseGrpcAddress, parseIntList, parseRateList, parseUrl } from '../bench/parse.ts'
import type { ValidBenchOptions } from '../bench/types.ts'
import { ISOLATION_SETTINGS } from '../runtime/devices.ts'

type Flags = Record<string, string | boolean | undefined>

const bad = (msg: string): never => { throw new ServeError('INVALID_REQUEST', msg) }

function intFlag(flag: string, v: string | undefined, min: number, fallback: number): number {
  if (v === undefined) return fallback
  if (!/^\d+$/.test(v) || Number(v) < min) bad(`${flag} must be an integer >= ${min} (got "${v}")`)
  return Number(v)
}

/** Validates flag combinations once; the runner trusts the result. */
export function toBenchOptions(f: Flags, concurrencyGiven: boolean): ValidBenchOptions {
  const str = (k: string) => (typeof f[k] === 'string' ? (f[k] as string) : undefined)
  const rates = str('rate') ? parseRateList('--rate', str('rate')!) : []
  let concurrency = parseIntList('--concurrency', str('concurrency') ?? '1,4,16')
  if (rates.length) {
    if (concurrencyGiven && concurrency.length > 1) bad('with --rate, --concurrency is the cap on requests in flight: give one number, e.g. --rate 100 --concurrency 256')
    if (!concurrencyGiven) concurrency = [256]
  }
  const durationMs = parseDurationMs('--duration', str('duration') ?? '20s')
  if (durationMs < 100) bad('--duration must be at least 100ms, e.g. --duration 20s')
  const stability = Number(str('stability') ?? '10')
  if (!Number.isFinite(stability) || stability < 0) bad(`--stability must be a percentage >= 0 (0 = always run the full --duration); got "${str('stability')}"`)
  const grpcFlag = f['grpc']
  const route = str('route') ?? 'tgi'
  return {
    servablesDir: str('servables') ?? null,
    url: str('url') ? parseUrl(str('url')!) : null,
    grpc: typeof grpcFlag === 'string' ? parseGrpcAddress(grpcFlag) : null,
    grpcOnStarted: grpcFlag === true,
    servable: str('servable') ?? null,
    method: str('method') ?? null,
    version: intFlag('--version', str('version'), 0, 0),
    generate: f['generate'] === true,
    route: route as ValidBenchOptions['route'],
    concurrency,
    rates,
    durationMs,
    warmupMs: parseDurationMs('--warmup', str('warmup') ?? '2s'),
    windowMs: str('window') ? parseDurationMs('--window', str('window')!) : defaultWindowMs(durationMs),
    stabilityPct: stability,
    instancesPerRequest: intFlag('--instances-per-request', str('instancesPerRequest'), 1, 1),
    inputFile: str('inputFile') ?? null,
    imageSize: intFlag('--image-size', str('imageSize'), 8, 224),
    timeoutMs: parseDurationMs('--timeout', str('timeout') ?? '30s'),
    jsonOut: str('json') ?? null,
    htmlOut: str('html') ?? null,
    baseline: str('baseline') === 'raw' ? 'raw' : null,
    devices: str('devices') ?? null,
    isolation: str('isolation') ?? null,
    serverPid: str('serverPid') ? intFlag('--server-pid', str('serverPid'), 1, 0) : null,
    progress: f['progress'] !== false,
    maxNewTokens: intFlag('--max-new-tokens', str('maxNewTokens'), 1, 64),
    prompt: str('prompt') ?? null,
    goodput: str('goodput') ? parseGoodput(str('goodput')!) : null,
    baselineMs: parseDurationMs('--baseline-time', str('baselineTime') ?? '1s'),
  }
}

function writeOut(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(path, text)
  process.stderr.write(`ms-serve bench: wrote ${path}\n`)
}

function fail(e: unknown): never {
  if (isServeError(e)) {
    process.stderr.write(`ms-serve bench: ${e.message}\n`)
    process.exit(e.code === 'INVALID_REQUEST' || e.code === 'CONFIG_INVALID' ? 2 : 1)
  }
  process.stderr.write(`ms-serve bench: unexpected error: ${(e as Error).stack ?? e}\n`)
  process.exit(1)
}

export function registerBenchCommand(program: Command): void {
  program
    .command('bench')
    .description('load-test a servable (closed loop at concurrency levels or open loop at a rate), with server-side breakdown and a raw onnxruntime baseline')
    .option('--servables <dir>', 'servable directory: start a server on it (ports chosen freely) and stop it afterwards; with --url/--grpc only read it (inputs, --baseline raw)')
    .option('--url <url>', 'REST address of a running server, e.g. http://127.0.0.1:1500 (also where /stats is read)')
    .option('--grpc [host:port]', 'send predict over gRPC to HOST:PORT; bare --grpc with --servables uses the started server\'s gRPC listener')
    .option('--servable <name>', 'servable to load (default: the only one served)')
    .option('--method <name>', 'method to call (default: the servable\'s only method)')
    .option('--version <n>', 'servable version (0 = newest running)', '0')
    .option('--generate', 'streaming text generation instead of predict (TTFT, TPOT, ITL, E2EL, tokens/s)')
    .addOption(new Option('--route <route>', 'generate route: TGI /generate_stream or OpenAI /v1/completions').choices(['tgi', 'openai']).default('tgi'))
    .option('--concurrency <list>', 'closed loop: concurrent requests per level, e.g. 1,4,16 or 1..64 (powers of two); with --rate: cap on requests in flight', '1,4,16')
    .option('--rate <list>', 'open loop: Poisson arrivals at these requests/s, e.g. 50,100,200')
    .option('--duration <time>', 'longest measurement per level; it ends earlier once 3 windows agree', '20s')
    .option('--warmup <time>', 'load before measuring each level', '2s')
    .option('--window <time>', 'measurement window (default: duration/3, at most 2s)')
    .option('--stability <pct>', 'windows agree when throughput and mean latency are within this percent (0 = run the full duration)', '10')
    .option('--instances-per-request <n>', 'instances in each predict request', '1')
    .option('--input-file <file>', 'request instances as MindSpore REST JSON ({"instances":[...]}); with --generate a JSON list of prompts')
    .option('--image-size <px>', 'side of the generated JPEG for image inputs', '224')
    .option('--timeout <time>', 'per-request timeout', '30s')
    .option('--json <file>', 'write the full report as JSON')
    .option('--html <file>', 'write a self-contained HTML report with plots')
    .addOption(new Option('--baseline <kind>', 'also run the model in-process with onnxruntime-node (same inputs, batch sizes 1..max) and report ms-serve as a ratio of it').choices(['raw']))
    .option('--baseline-time <time>', 'measuring time per batch size in the raw baseline', '1s')
    .option('--devices <ids>', 'device ids for the server started with --servables (ms-serve start --devices)')
    .addOption(new Option('--isolation <where>', 'replica isolation for the server started with --servables (ms-serve start --isolation)').choices([...ISOLATION_SETTINGS]))
    .option('--max-new-tokens <n>', 'generate: tokens per request', '64')
    .option('--prompt <text>', 'generate: the prompt (default: a fixed 45-word prompt)')
    .option('--goodput <slos>', 'generate: SLOs in ms for goodput, e.g. ttft:500,tpot:50 (also e2el)')
    .option('--server-pid <pid>', 'main process id of a server on this machine (started elsewhere) to include in the CPU breakdown')
    .option('--no-progress', 'no progress bar on stderr')
    .action(async (f: Flags, cmd: Command) => {
      try {
        const opts = toBenchOptions(f, cmd.getOptionValueSource('concurrency') === 'cli')
        const { runBench } = await import('../bench/run.ts')
        const { createProgress } = await import('../bench/progress.ts')
        const { renderTextReport } = await import('../bench/report-text.ts')
        const report = await runBench(opts, { progress: createProgress(opts.progress) })
        process.stdout.write(renderTextReport(report))
        if (opts.jsonOut) writeOut(opts.jsonOut, JSON.stringify(report, null, 2) + '\n')
        if (opts.htmlOut) {
          const { renderHtmlReport } = await import('../bench/report-html.ts')
          writeOut(opts.htmlOut, renderHtmlReport(report))
        }
        if (report.levels.length === 0 || report.levels.some((l) => l.requests === 0 && l.numErrors > 0)) {
          process.stderr.write('ms-serve bench: every request of a level failed (see "errors by kind" above); fix the target or inputs and run again\n')
          process.exit(1)
        }
        process.exit(0)
      } catch (e) {
        fail(e)
      }
    })
}
