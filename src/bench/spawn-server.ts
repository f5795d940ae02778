/**
 * `--servables DIR`: runs `ms-serve start DIR` as a child process on free ports (port 0), reads the
 * two "start success" lines for the addresses, and stops it (SIGTERM, then SIGKILL) afterwards. A
 * child keeps the server off the generator's event loop, as it would be in production.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { ServeError } from '../errors.ts'
import { findPackageRoot } from '../paths.ts'

export interface StartedServer {
  restOrigin: string
  grpcAddress: string
  pid: number
  output(): string
  stop(): Promise<void>
}

/** `extra`: more `start` flags (e.g. `--agents-listen 127.0.0.1:0`). */
export async function startServer(dir: string, opts: { devices?: string | null; isolation?: string | null; timeoutMs?: number; host?: string; env?: NodeJS.ProcessEnv; nodeArgs?: string[]; extra?: string[] } = {}): Promise<StartedServer> {
  const bin = join(findPackageRoot(), 'bin', 'ms-serve.js')
  const host = opts.host ?? '127.0.0.1'
  const args = [...(opts.nodeArgs ?? []), bin, 'start', dir, '--grpc', `${host}:0`, '--rest', `${host}:0`, ...(opts.devices ? ['--devices', opts.devices] : []), ...(opts.isolation ? ['--isolation', opts.isolation] : []), ...(opts.extra ?? [])]
  const proc: ChildProcess = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env })
  let out = ''
  const keep = (d: Buffer) => { out = (out + d.toString()).slice(-64 * 1024) }
  proc.stdout!.on('data', keep)
  proc.stderr!.on('data', keep)
  let exited = false
  const exit = new Promise<void>((r) => proc.once('exit', () => { exited = true; r() }))
  const stop = async () => {
    if (exited) return
    proc.kill('SIGTERM')
    const t = setTimeout(() => proc.kill('SIGKILL'), 10_000)
    await exit
    clearTimeout(t)
  }
  // If the bench dies, the server must not outlive it.
  const onExit = () => { if (!exited) proc.kill('SIGKILL') }
  process.once('exit', onExit)

  const deadline = Date.now() + (opts.timeoutMs ?? 120_000)
  for (;;) {
    const rest = /RESTful server start success, listening on ([^\s"]+)/.exec(out)?.[1]
    const grpc = /gRPC server start success, listening on ([^\s"]+)/.exec(out)?.[1]
    if (rest && grpc) {
      return {
        restOrigin: `http://${rest}`,
        grpcAddress: grpc,
        pid: proc.pid ?? 0,
        output: () => out,
        stop: async () => { await stop(); process.removeListener('exit', onExit) },
      }
    }
    if (exited) {
      process.removeListener('exit', onExit)
      throw new ServeError('CONFIG_INVALID', `the server for ${dir} exited before listening:\n${indent(out)}\nFix the servable (try: npx ms-serve start ${dir}) and run the bench again`)
    }
    if (Date.now() > deadline) {
      await stop()
      process.removeListener('exit', onExit)
      throw new ServeError('TIMEOUT', `the server for ${dir} did not start in ${Math.round((opts.timeoutMs ?? 120_000) / 1000)} s:\n${indent(out)}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

function indent(text: string): string {
  return text.trim().split('\n').slice(-20).map((l) => `  | ${l}`).join('\n')
}
