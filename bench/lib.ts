/**
 * Helpers shared by the bench/ scripts: build once, run `ms-serve bench` as its own process (the
 * load generator never shares an event loop with a server), collect its JSON report, and write
 * results under bench/results/ (gitignored).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { BenchReport, LevelResult } from '../src/bench/types.ts'
import { machineInfo } from '../src/bench/run.ts'
import { machineCpuMs } from '../src/bench/cpu.ts'
import { DECODER_CONFIGS, writeDecoder } from '../src/models/decoder.ts'
import { writeSyntheticTokenizer } from '../src/models/synthetic-tokenizer.ts'

export const ROOT = join(fileURLToPath(import.meta.url), '..', '..')
export const BIN = join(ROOT, 'bin', 'ms-serve.js')
export const RESULTS = join(ROOT, 'bench', 'results')

export function build(): void {
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'build.mjs'), '--quiet'], { stdio: 'inherit' })
}

export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Runs `ms-serve bench ARGS --json tmp` and returns its report; stderr (progress) passes through. */
export async function runBenchCli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<BenchReport> {
  const { dir, remove } = tempDir('ms-serve-bench-')
  const json = join(dir, 'report.json')
  try {
    const proc = spawn(process.execPath, [BIN, 'bench', ...args, '--json', json, '--no-progress'], { stdio: ['ignore', 'pipe', 'inherit'], env })
    let out = ''
    proc.stdout!.on('data', (d) => { out += d })
    const code = await new Promise<number>((r) => proc.on('exit', (c) => r(c ?? 1)))
    if (code !== 0) throw new Error(`ms-serve bench ${args.join(' ')} exited with ${code}:\n${out}`)
    process.stderr.write(out.split('\n').filter((l) => /^(level|c=|rate=|-----)/.test(l)).map((l) => `    ${l}`).join('\n') + '\n')
    return JSON.parse(readFileSync(json, 'utf8')) as BenchReport
  } finally {
    remove()
  }
}

/** Most CPU that processes outside the run used during any level (cores), or 0 when unknown. */
export function foreignCores(r: BenchReport): number {
  return Math.max(0, ...r.levels.map((l) => l.cpu?.other?.cores ?? 0))
}

/**
 * Other sessions share these cores. Waits for a quiet machine, runs, and when some other process
 * used more than `maxOther` cores during a level, runs again (up to `tries`), keeping the cleanest.
 * `maxOther` 0 disables the check (for targets with helper processes the bench cannot see).
 */
export async function runBenchClean(args: string[], o: { quietIdle: number; maxOther: number; tries?: number }): Promise<BenchReport> {
  let best: BenchReport | null = null
  for (let i = 0; i < (o.tries ?? 3); i++) {
    if (o.quietIdle > 0) await waitQuiet(o.quietIdle)
    const r = await runBenchCli(args)
    if (!best || foreignCores(r) < foreignCores(best)) best = r
    if (o.maxOther <= 0 || foreignCores(r) <= o.maxOther) break
    process.stderr.write(`    other processes used ${foreignCores(r).toFixed(2)} cores during this run: running it again\n`)
  }
  return best!
}

/** Parses `--name value` flags with defaults. */
export function flags<T extends Record<string, string>>(defaults: T): T {
  const out: Record<string, string> = { ...defaults }
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([\w-]+)$/.exec(argv[i]!)
    if (!m || !(m[1]! in defaults)) throw new Error(`unknown flag ${argv[i]}; flags: ${Object.keys(defaults).map((k) => `--${k} (${defaults[k]})`).join(', ')}`)
    out[m[1]!] = argv[++i] ?? ''
  }
  return out as T
}

export function level(r: BenchReport, label: string): LevelResult {
  const l = r.levels.find((x) => x.label === label)
  if (!l) throw new Error(`no level ${label} in report`)
  return l
}

/** `wrk` when installed (an independent C client for cross-checks), else null. */
export function wrkPath(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

/** wrk POST of `body` at `connections` for `seconds`; returns req/s and its latency line. */
export function runWrk(url: string, body: string, connections: number, seconds: number): { reqPerSec: number; latency: string } {
  const { dir, remove } = tempDir('ms-serve-wrk-')
  try {
    const lua = join(dir, 'post.lua')
    writeFileSync(lua, `wrk.method = "POST"\nwrk.body = ${JSON.stringify(body)}\nwrk.headers["Content-Type"] = "application/json"\n`)
    const r = spawnSync('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '-s', lua, url], { encoding: 'utf8' })
    const rps = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1]
    const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(r.stdout)?.[1]
    if (!rps || non2xx) throw new Error(`wrk failed: ${r.stdout}\n${r.stderr}`)
    const lat = /Latency Distribution[\s\S]*?50%\s+(\S+)[\s\S]*?99%\s+(\S+)/.exec(r.stdout)
    return { reqPerSec: Number(rps), latency: lat ? `p50 ${lat[1]}, p99 ${lat[2]}` : '' }
  } finally {
    remove()
  }
}

export function h2loadPath(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v h2load'], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

/**
 * h2load (nghttp2-client, a C HTTP/2 client) sending one gRPC unary call body again and again:
 * `frame` is the length-prefixed message, sent as POST to `http://{address}{path}` over one
 * connection with `streams` concurrent streams for `seconds`. h2load cannot read gRPC trailers, so
 * the caller checks the server with a real client before trusting the rate.
 */
export function runH2loadGrpc(address: string, path: string, frame: Uint8Array, streams: number, seconds: number): { reqPerSec: number; latency: string } {
  const { dir, remove } = tempDir('ms-serve-h2load-')
  try {
    const body = join(dir, 'body.bin')
    writeFileSync(body, frame)
    const r = spawnSync('h2load', ['-c', '1', '-m', String(streams), '-D', String(seconds), '-H', 'content-type: application/grpc', '-H', 'te: trailers', '-d', body, `http://${address}${path}`], { encoding: 'utf8' })
    const rps = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(r.stdout)?.[1]
    const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(r.stdout)
    const failed = /requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed/.exec(r.stdout)?.[1]
    if (!rps || !codes || Number(codes[3]) + Number(codes[4]) > 0 || Number(failed) > 0) throw new Error(`h2load failed: ${r.stdout}\n${r.stderr}`)
    const lat = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)/.exec(r.stdout)
    return { reqPerSec: Number(rps), latency: lat ? `min ${lat[1]}, max ${lat[2]}, mean ${lat[3]}` : '' }
  } finally {
    remove()
  }
}

/**
 * Waits until the machine is quiet (other sessions' tests and benchmarks share these cores):
 * at least `idlePct` of CPU idle over 2 s samples, up to `timeoutMs`. Returns the idle share seen.
 */
export async function waitQuiet(idlePct = 90, timeoutMs = 600_000): Promise<number> {
  const deadline = Date.now() + timeoutMs
  let said = false
  for (;;) {
    const a = machineCpuMs()
    await new Promise((r) => setTimeout(r, 2000))
    const b = machineCpuMs()
    const total = a && b ? b.total - a.total : 0
    const idle = total ? (1 - (b!.busy - a!.busy) / total) * 100 : 100
    if (idle >= idlePct || Date.now() > deadline) {
      if (idle < idlePct) process.stderr.write(`machine still busy (${idle.toFixed(0)}% idle); measuring anyway\n`)
      return idle
    }
    if (!said) { process.stderr.write(`waiting for a quiet machine (${idle.toFixed(0)}% idle, want ${idlePct}%) ...\n`); said = true }
  }
}

export function writeResult(name: string, data: unknown): string {
  mkdirSync(RESULTS, { recursive: true })
  const file = join(RESULTS, `${name}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify({ machine: machineInfo(), ...(data as object) }, null, 2) + '\n')
  return file
}

export const fmt = (x: number, digits = 0) => x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
export const pct = (x: number) => `${(x * 100).toFixed(0)}%`

/** The addresses bench/echo-servers.ts prints, and its process (stop it with `proc.kill('SIGTERM')`). */
export interface EchoServers { rest: string; grpc: string; restProcessHop: string; restWorkerHop: string; pid: number; proc: ChildProcess }

/** Starts bench/echo-servers.ts in a process of its own and waits for its addresses. */
export async function startEchoServers(): Promise<EchoServers> {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'echo-servers.ts')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] })
  const addr = await new Promise<Omit<EchoServers, 'proc'>>((resolve, reject) => {
    let out = ''
    proc.stdout!.on('data', (d) => { out += d; const line = out.split('\n').find((l) => l.startsWith('{')); if (line) resolve(JSON.parse(line)) })
    proc.once('exit', (c) => reject(new Error(`echo servers exited with ${c}`)))
  })
  return { ...addr, proc }
}

/** The p-th percentile (0-100) of `xs`, nearest rank. */
export const quantile = (xs: number[], p: number): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! }

/** Where the LLM benches keep their decoders (built once, gitignored). */
export const BENCH_MODELS = join(ROOT, 'bench', '.models')

/**
 * The LLM benches' decoder, built on first use: `small` (25.4M, byte-level) or `smol` (SmolLM2-135M's
 * shape with its synthetic BPE tokenizer files beside it). Returns the model file and the tokenizer
 * files a servable needs next to it.
 */
export async function benchDecoder(model: 'small' | 'smol'): Promise<{ modelFile: string; tokenizerFiles: string[] }> {
  const modelFile = model === 'small' ? join(BENCH_MODELS, 'decoder-small.onnx') : join(BENCH_MODELS, 'decoder-smol', 'model.onnx')
  mkdirSync(dirname(modelFile), { recursive: true })
  if (!existsSync(modelFile)) {
    process.stderr.write(`building the ${model} decoder (once)...\n`)
    if (model === 'smol') await writeSyntheticTokenizer(dirname(modelFile), DECODER_CONFIGS.smol.vocabSize)
    await writeDecoder(modelFile, DECODER_CONFIGS[model])
  }
  return { modelFile, tokenizerFiles: model === 'smol' ? ['tokenizer.json', 'tokenizer_config.json'] : [] }
}

/** A servables folder `bench/.models/servables-<name>` with one `llm` servable on `modelFile` (hard links) and these declareLlm options. */
export function llmServables(name: string, decoder: { modelFile: string; tokenizerFiles: string[] }, options: Record<string, number | boolean | string>): string {
  const dir = join(BENCH_MODELS, `servables-${name}`)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(join(dir, 'llm', '1'), { recursive: true })
  linkSync(decoder.modelFile, join(dir, 'llm', '1', 'model.onnx'))
  for (const f of decoder.tokenizerFiles) linkSync(join(dirname(decoder.modelFile), f), join(dir, 'llm', '1', f))
  writeFileSync(join(dir, 'llm', 'servable_config.ts'), `import { defineServable } from 'ms-serve'
export default defineServable((s) => {
  s.declareLlm(${JSON.stringify({ file: 'model.onnx', ...options })})
})
`)
  return dir
}
