/**
 * `ms-serve bench`, end to end: find or start the server, resolve servable/method and inputs, run
 * each load level (warm-up, windows until stable), read the server's /stats around each, run the
 * raw baseline, and assemble the report. Rendering and writing files is the CLI's job.
 */
import { availableParallelism, cpus, loadavg, totalmem } from 'node:os'
import { readFileSync } from 'node:fs'
import { ServeError } from '../errors.ts'
import { loadServable, scanServables } from '../config/scan.ts'
import type { ValidMethod, ValidServable } from '../config/validate.ts'
import type { Value } from '../tensor.ts'
import { loadOrt, rawOrtBaseline } from './baseline.ts'
import { plainDecodeBaseline } from './llm-baseline.ts'
import { cpuBetween, cpuSnapshot, type CpuSnapshot } from './cpu.ts'
import { generateTarget } from './generate-target.ts'
import { grpcPredictTarget } from './grpc-target.ts'
import { generateInstances, groupRequests, instancesFromFile, KNOWN_SERVABLE_INPUTS, restBody, specsFromServable, type OrtInputMeta } from './inputs.ts'
import { runLevel, type LevelPlan } from './load.ts'
import type { Progress } from './progress.ts'
import { mergeWindows } from './recorder.ts'
import { restPredictTarget } from './rest-target.ts'
import { diffStats, fetchStats, findServable, readStats, type ServableEntry } from './server-stats.ts'
import { startServer, type StartedServer } from './spawn-server.ts'
import type { Target } from './target.ts'
import type { BenchReport, LevelResult, MachineInfo, RawBaselineResult, ValidBenchOptions } from './types.ts'

const DEFAULT_PROMPT = 'Write a short story about a lighthouse keeper who finds a message in a bottle. The story should have a clear beginning, a surprising middle and a quiet ending, and it should mention the sea, the wind and an old radio.'
/** Distinct request bodies cycled through: enough to defeat trivial caching, few enough to prebuild. */
const NUM_DISTINCT_REQUESTS = 8

const invalid = (msg: string): never => { throw new ServeError('INVALID_REQUEST', msg) }

export function machineInfo(): MachineInfo {
  return { cpus: availableParallelism(), cpuModel: cpus()[0]?.model.trim() ?? 'unknown', node: process.version, platform: `${process.platform}-${process.arch}`, totalMemGiB: Math.round(totalmem() / 2 ** 30), loadAvg1: Math.round(loadavg()[0]! * 100) / 100 }
}

/** Compiles and validates one servable from a local directory (no replica is started). */
async function loadLocalServable(dir: string, name: string, version: number): Promise<ValidServable> {
  const all = scanServables(dir)
  const found = all.find((s) => s.name === name) ?? invalid(`servable "${name}" is not in ${dir}; it has: ${all.map((s) => s.name).join(', ')}. Pass --servable with one of those`)
  return (await loadServable(found, version ? [version] : undefined))[0]!
}

async function modelInputReader(servable: ValidServable): Promise<(i: number) => Promise<OrtInputMeta[]>> {
  const ort = await loadOrt()
  const cache = new Map<number, OrtInputMeta[]>()
  return async (i) => {
    if (!cache.has(i)) {
      const s = await ort.InferenceSession.create(servable.models[i]!.path, { graphOptimizationLevel: 'disabled' })
      cache.set(i, s.inputMetadata.map((m) => ({ name: m.name, type: m.isTensor ? m.type : 'non-tensor', shape: m.isTensor ? m.shape : [] })))
      await s.release()
    }
    return cache.get(i)!
  }
}

function readPrompts(path: string): string[] {
  let j: unknown
  try { j = JSON.parse(readFileSync(path, 'utf8')) } catch (e) { return invalid(`--input-file ${path}: ${(e as Error).message}. For --generate it holds a JSON list of prompts, e.g. ["Hello", "Tell me a joke"]`) }
  const list = Array.isArray(j) ? j : (j as { prompts?: unknown[] })?.prompts
  const prompts = (list ?? []).map((p) => (typeof p === 'string' ? p : (p as { prompt?: string })?.prompt)).filter((p): p is string => typeof p === 'string' && p.length > 0)
  if (prompts.length === 0) invalid(`--input-file ${path} has no prompts. For --generate it holds a JSON list of prompts, e.g. ["Hello", "Tell me a joke"]`)
  return prompts
}

function pickName(kind: 'servable' | 'method', given: string | null, available: string[], where: string): string {
  if (given) {
    if (available.length && !available.includes(given)) invalid(`${kind} "${given}" is not served by ${where}; available: ${available.join(', ')}. Pass --${kind} with one of those`)
    return given
  }
  if (available.length === 1) return available[0]!
  return invalid(available.length ? `pass --${kind}; ${where} has: ${available.join(', ')}` : `pass --${kind} NAME (${where} did not list its ${kind}s)`)
}

export interface BenchIo { progress: Progress }

export async function runBench(o: ValidBenchOptions, io: BenchIo): Promise<BenchReport> {
  if (!o.servablesDir && !o.url && !o.grpc) invalid('nothing to benchmark: pass --servables DIR (the bench starts a server), or --url http://HOST:PORT / --grpc HOST:PORT for a running one')
  if (o.generate && o.grpc) invalid('--generate streams over REST (TGI or OpenAI route); pass --url http://HOST:PORT instead of --grpc')
  if (o.baseline === 'raw' && !o.generate && !o.servablesDir) invalid('--baseline raw runs the model files in this process: pass --servables DIR as well (with --url/--grpc the bench only reads DIR, it does not start a server)')
  const startedAt = new Date().toISOString()
  const machine = machineInfo()
  const notes: string[] = []
  if (machine.loadAvg1 > machine.cpus / 2) notes.push(`the 1-minute load average was ${machine.loadAvg1} on ${machine.cpus} core(s) when the bench started: other processes were competing for CPU, so treat these numbers with care`)
  let server: StartedServer | null = null
  const targets: Target[] = []
  try {
    let restOrigin = o.url
    let grpcAddress = o.grpc
    if (o.servablesDir && !o.url && !o.grpc) {
      io.progress.log(`starting ms-serve on ${o.servablesDir}${o.devices ? ` (devices ${o.devices})` : ''}${o.isolation ? ` (isolation ${o.isolation})` : ''} ...`)
      server = await startServer(o.servablesDir, { devices: o.devices, isolation: o.isolation })
      restOrigin = server.restOrigin
      grpcAddress = server.grpcAddress
      io.progress.log(`server pid ${server.pid}: REST ${restOrigin}, gRPC ${grpcAddress}`)
    }
    const protocol = o.generate ? 'generate' : o.grpc || o.grpcOnStarted ? 'grpc' : 'rest'
    if (protocol !== 'grpc' && !restOrigin) invalid('REST needs --url http://HOST:PORT')
    let stats: ServableEntry[] | null = null
    if (restOrigin) {
      try {
        stats = await readStats(restOrigin)
      } catch (e) {
        if (!server) invalid(`cannot reach ${restOrigin} (${(e as Error).message}). Start a server (npx ms-serve start DIR --rest ${restOrigin.replace(/^https?:\/\//, '')}), or let the bench start one with --servables DIR`)
      }
    }
    if (!stats) notes.push(restOrigin ? `no /stats at ${restOrigin}: no server-side breakdown` : 'gRPC only: pass --url http://HOST:PORT of the same server for the server-side breakdown from /stats')
    const where = server ? `the started server (${o.servablesDir})` : restOrigin ?? grpcAddress!
    const servableName = pickName('servable', o.servable, [...new Set((stats ?? []).map((s) => s.name))], where)
    const entry = findServable(stats, servableName, o.version)
    let method: string | null = null
    if (!o.generate) method = pickName('method', o.method, Object.keys(entry?.methods ?? {}), `servable ${servableName}`)

    let local: ValidServable | null = null
    let localMethod: ValidMethod | null = null
    if (o.servablesDir && !o.generate) {
      local = await loadLocalServable(o.servablesDir, servableName, o.version)
      localMethod = local.methods.find((m) => m.name === method) ?? invalid(`servable ${servableName} in ${o.servablesDir} has no method "${method}"; it has: ${local.methods.map((m) => m.name).join(', ')}`)
    }

    // Inputs and the target.
    const maxConn = Math.max(...o.concurrency)
    let target: Target
    let inputs = ''
    let instances: Record<string, Value>[] = []
    if (o.generate) {
      const prompts = o.inputFile ? readPrompts(o.inputFile) : [o.prompt ?? DEFAULT_PROMPT]
      inputs = o.inputFile ? `${prompts.length} prompt(s) from ${o.inputFile}` : `${o.prompt ? 'the --prompt text' : 'a built-in 45-word prompt'}, max_new_tokens ${o.maxNewTokens}`
      target = generateTarget({ origin: restOrigin!, route: o.route, servable: servableName, prompts, maxNewTokens: o.maxNewTokens, connections: maxConn, timeoutMs: o.timeoutMs })
    } else {
      if (o.inputFile) {
        instances = instancesFromFile(o.inputFile)
        inputs = `${instances.length} instance(s) from ${o.inputFile}`
      } else {
        const specs = local && localMethod
          ? await specsFromServable(local, localMethod, await modelInputReader(local))
          : KNOWN_SERVABLE_INPUTS[servableName] ?? invalid(`cannot tell the inputs of ${servableName}:${method} from a remote server. Pass --input-file instances.json (MindSpore REST JSON, {"instances":[{...}]}), or --servables DIR so the bench reads the servable's config`)
        instances = await generateInstances(specs, Math.max(NUM_DISTINCT_REQUESTS, o.instancesPerRequest), { imageSize: o.imageSize })
        inputs = `generated from ${local ? 'the declared inputs' : `the built-in recipe for "${servableName}"`}: ${specs.map((s) => (s.kind === 'tensor' ? `${s.name} ${s.dtype}[${s.shape.join(',')}]` : `${s.name} ${s.kind === 'jpeg' ? `JPEG ${o.imageSize}x${o.imageSize}` : 'text'}`)).join(', ')}`
      }
      const requests = groupRequests(instances, o.instancesPerRequest, NUM_DISTINCT_REQUESTS)
      target = protocol === 'grpc'
        ? grpcPredictTarget({ address: grpcAddress!, servable: servableName, method: method!, version: o.version, requests, timeoutMs: o.timeoutMs })
        : restPredictTarget({ origin: restOrigin!, servable: servableName, method: method!, version: o.version, bodies: requests.map(restBody), itemsPerRequest: o.instancesPerRequest, connections: maxConn, timeoutMs: o.timeoutMs })
    }
    targets.push(target)

    // Load levels.
    const plans: LevelPlan[] = o.rates.length
      ? o.rates.map((rate) => ({ label: `rate=${rate}`, concurrency: null, rate, maxInflight: maxConn }))
      : o.concurrency.map((c) => ({ label: `c=${c}`, concurrency: c, rate: null, maxInflight: c }))
    const levels: LevelResult[] = []
    // Process ids are only ours to read when the server runs on this machine.
    const onThisMachine = server !== null || /^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])(:|$)/.test(restOrigin ?? '')
    // Replicas in threads or inline report the server's own pid: count that CPU as the server's.
    const reps = onThisMachine ? (entry?.replicas ?? []) : []
    const serverPid = server?.pid ?? o.serverPid ?? reps.find((r) => r.isolation !== undefined && r.isolation !== 'process')?.pid ?? null
    const replicaPids = reps.map((r) => r.pid).filter((p): p is number => typeof p === 'number' && p > 0 && p !== serverPid)
    const unit = o.generate ? 'tok/s' : 'req/s'
    for (const plan of plans) {
      let before: ServableEntry | null = null
      let after: ServableEntry | null = null
      let cpu0: CpuSnapshot | null = null
      let cpu1: CpuSnapshot | null = null
      io.progress.startLevel(plan.label, o.warmupMs + o.durationMs)
      const m = await runLevel(target, plan, {
        warmupMs: o.warmupMs,
        durationMs: o.durationMs,
        windowMs: o.windowMs,
        stabilityPct: o.stabilityPct,
        stream: o.generate,
        slo: o.goodput,
        onTick: (t) => io.progress.tick(t, unit),
        beforeMeasure: async () => {
          if (restOrigin && stats) before = findServable(await fetchStats(restOrigin), servableName, o.version)
          cpu0 = cpuSnapshot(serverPid, replicaPids)
        },
        afterMeasure: async () => {
          cpu1 = cpuSnapshot(serverPid, replicaPids)
          if (restOrigin && stats) after = findServable(await fetchStats(restOrigin), servableName, o.version)
        },
      })
      const merged = mergeWindows(m.used, o.generate, o.goodput)
      const secs = merged.durationMs / 1000
      const level: LevelResult = {
        label: plan.label,
        concurrency: plan.concurrency,
        rate: plan.rate,
        durationMs: merged.durationMs,
        requests: merged.requests,
        items: merged.requests * target.itemsPerRequest,
        reqPerSec: merged.requests / secs,
        itemsPerSec: (merged.requests * target.itemsPerRequest) / secs,
        latencyMs: merged.latency.summary(),
        errors: merged.errorKinds,
        numErrors: merged.errors,
        stable: m.stable,
        windows: m.windows.map((w) => w.summary(o.generate)),
        server: method ? diffStats(before, after, method) : null,
        cpu: cpu0 && cpu1 ? cpuBetween(cpu0, cpu1, m.windows.reduce((a, w) => a + w.requests, 0)) : null,
        generate: merged.generate,
        ratioToRaw: null,
      }
      levels.push(level)
      const lat = o.generate ? `TTFT p50 ${level.generate!.ttftMs.p50.toFixed(1)} ms, ${level.generate!.outputTokensPerSec.toFixed(1)} tok/s` : `p95 ${level.latencyMs.p95.toFixed(2)} ms`
      io.progress.endLevel(`${plan.label}: ${level.reqPerSec.toFixed(1)} req/s, ${lat}, ${level.numErrors} error(s), ${m.stable ? `stable after ${m.windows.length} windows` : `not stable in ${(o.durationMs / 1000).toFixed(1)} s`}`)
      if (m.allFailed) {
        const [kind, e] = Object.entries(merged.errorKinds)[0] ?? ['error', { sample: '' }]
        notes.push(`every request in a window of ${plan.label} failed (${kind}: ${e.sample}); later levels were skipped. Check --servable/--method/--url, or the inputs (--input-file)`)
        if (server) notes.push(`server output (last lines):\n${server.output().trim().split('\n').slice(-15).join('\n')}`)
        break
      }
    }

    // Raw baseline.
    let baseline: RawBaselineResult | null = null
    if (o.baseline === 'raw' && levels.length) {
      if (o.generate) {
        try {
          if (!o.servablesDir) throw new Error('--baseline raw with --generate needs --servables DIR: the decoder is read from the servable folder')
          const llm = await loadLocalServable(o.servablesDir, servableName, o.version)
          baseline = await plainDecodeBaseline({ servable: llm, batchSizes: o.concurrency, newTokens: o.maxNewTokens, msPerBatch: o.baselineMs, onProgress: (l) => io.progress.log(l) })
        } catch (e) {
          notes.push(`--baseline raw for --generate was skipped: ${(e as Error).message}`)
        }
      } else if (local && localMethod) {
        const threads = entry?.replicas?.map((r) => r.intraOpThreads).find((t): t is number => typeof t === 'number') ?? availableParallelism()
        const served = (entry?.models ?? []) as Array<{ maxBatchSize?: number | null }>
        const maxBatch = served.map((x) => x.maxBatchSize).filter((x): x is number => typeof x === 'number').reduce<number | undefined>((a, b) => (a === undefined ? b : Math.min(a, b)), undefined)
        io.progress.log(`raw onnxruntime baseline (intra-op threads ${threads}, batch sizes up to ${maxBatch ?? 'the model max'}) ...`)
        baseline = await rawOrtBaseline({ servable: local, method: localMethod, instances, intraOpThreads: threads, msPerBatch: o.baselineMs, ...(maxBatch ? { maxBatch } : {}), onProgress: (l) => io.progress.log(l) })
      }
      if (baseline?.best) {
        for (const l of levels) l.ratioToRaw = (o.generate ? l.generate!.outputTokensPerSec : l.itemsPerSec) / baseline.best.itemsPerSec
      }
    }

    notes.push(`the load generator runs on the same ${availableParallelism()} core(s) as the server${server ? ' (started by the bench)' : ''}: both compete for CPU, so absolute numbers are lower than with a separate client machine`)
    const noisy = levels.filter((l) => (l.cpu?.other?.cores ?? 0) > 0.2)
    if (noisy.length) notes.push(`other processes used CPU while measuring (${noisy.map((l) => `${l.label}: ${l.cpu!.other!.cores.toFixed(2)} cores`).join(', ')}): those levels are contaminated; rerun on a quiet machine`)
    if (levels.some((l) => !l.stable) && o.stabilityPct > 0) notes.push(`levels marked stable=no did not settle (3 windows within ${o.stabilityPct}%) within --duration; their numbers average all windows`)
    return {
      tool: 'ms-serve bench',
      schemaVersion: 1,
      startedAt,
      machine,
      target: {
        protocol,
        address: protocol === 'grpc' ? grpcAddress! : restOrigin!,
        statsUrl: stats && restOrigin ? `${restOrigin}/stats` : null,
        servable: servableName,
        method,
        version: o.version,
        route: o.generate ? o.route : null,
        startedServer: server !== null,
        replicas: entry?.replicas ? entry.replicas.map((r) => ({ device: String(r.device ?? '?'), isolation: String(r.isolation ?? 'process') })) : null,
      },
      load: { mode: o.rates.length ? 'open' : 'closed', durationMs: o.durationMs, warmupMs: o.warmupMs, windowMs: o.windowMs, stabilityPct: o.stabilityPct, instancesPerRequest: o.generate ? 1 : o.instancesPerRequest, inputs },
      levels,
      baseline,
      notes,
    }
  } finally {
    io.progress.stop()
    for (const t of targets) await t.close().catch(() => undefined)
    if (server) await server.stop()
  }
}
