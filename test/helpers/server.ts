/** Starts the real CLI (`bin/ms-serve.js start ...`) on free ports and stops it after the test. */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = join(fileURLToPath(import.meta.url), '..', '..', '..')
export const BIN = join(ROOT, 'bin', 'ms-serve.js')

export interface StartedServer {
  proc: ChildProcess
  rest: string
  grpc: string
  output: () => string
  stop: () => Promise<void>
}

/** Runs `ms-serve start DIR` and resolves once both success lines show the bound ports. */
export async function startServer(dir: string, extra: string[] = [], timeoutMs = 60_000): Promise<StartedServer> {
  // MS_SERVE_TEST_ISOLATION=thread|inline reruns a suite with replicas off the process boundary.
  const iso = process.env.MS_SERVE_TEST_ISOLATION && !extra.includes('--isolation') ? ['--isolation', process.env.MS_SERVE_TEST_ISOLATION] : []
  const proc = spawn(process.execPath, [BIN, 'start', dir, '--grpc', '127.0.0.1:0', '--rest', '127.0.0.1:0', ...iso, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout!.on('data', (d) => { out += d })
  proc.stderr!.on('data', (d) => { out += d })
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return
    proc.kill('SIGTERM')
    const t = setTimeout(() => proc.kill('SIGKILL'), 10_000)
    await once(proc, 'exit')
    clearTimeout(t)
  }
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const rest = /RESTful server start success, listening on ([^\s"]+)/.exec(out)?.[1]
    const grpc = /gRPC server start success, listening on ([^\s"]+)/.exec(out)?.[1]
    if (rest && grpc) return { proc, rest: `http://${rest}`, grpc, output: () => out, stop }
    if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}:\n${out}`)
    if (Date.now() > deadline) { await stop(); throw new Error(`server did not start in ${timeoutMs} ms:\n${out}`) }
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** The server's JSON log lines (other output skipped), e.g. to find one by its `event`. */
export function logEvents(output: string): Array<Record<string, any>> {
  const out: Array<Record<string, any>> = []
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue
    try { out.push(JSON.parse(line)) } catch { /* a line cut by the read */ }
  }
  return out
}

/** Runs the CLI to completion and returns exit code and output. */
export async function runCli(args: string[], cwd = ROOT, timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout!.on('data', (d) => { stdout += d })
  proc.stderr!.on('data', (d) => { stderr += d })
  // A CLI that should have exited but did not (e.g. a server that started) must not outlive the test.
  const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs)
  const [code, signal] = await once(proc, 'exit')
  clearTimeout(t)
  if (signal) throw new Error(`ms-serve ${args.join(' ')} did not exit within ${timeoutMs} ms (killed):\n${stdout}${stderr}`)
  return { code: code as number, stdout, stderr }
}

/** A temp servable dir; `copy` lists servables from ROOT/servables or test fixtures to copy in. */
export function tempServables(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'ms-serve-test-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export function copyInto(src: string, dest: string): void {
  cpSync(src, dest, { recursive: true })
}

export async function postJson(url: string, body: unknown, method = 'POST'): Promise<{ status: number; json: any; text: string; contentType: string | null }> {
  const res = await fetch(url, { method, body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': 'application/json' } })
  const text = await res.text()
  let json: any
  try { json = JSON.parse(text) } catch { json = undefined }
  return { status: res.status, json, text, contentType: res.headers.get('content-type') }
}

/** Starts several servers at once; if any fails, stops the others before rethrowing (no leaked processes). */
export async function startServers(specs: Array<[dir: string, extra?: string[]]>): Promise<StartedServer[]> {
  const settled = await Promise.allSettled(specs.map(([dir, extra]) => startServer(dir, extra)))
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected')
  if (failed) {
    await Promise.all(settled.map((s) => (s.status === 'fulfilled' ? s.value.stop() : undefined)))
    throw failed.reason
  }
  return settled.map((s) => (s as PromiseFulfilledResult<StartedServer>).value)
}

/** One servable's entry of GET /stats (the first version listed under `name`). */
export async function servableStats<T = Record<string, unknown>>(rest: string, name: string): Promise<T> {
  const all = await (await fetch(`${rest}/stats`)).json() as { servables: Array<{ name: string }> }
  const s = all.servables.find((x) => x.name === name)
  if (!s) throw new Error(`no stats for ${name} in ${JSON.stringify(all.servables.map((x) => x.name))}`)
  return s as T
}
