/** Agent processes for tests: start `ms-serve agent` against a master, wait for states, stop by PID. */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { BIN } from './server.ts'

export interface StartedAgent { proc: ChildProcess; output: () => string }

/** Starts `ms-serve agent --master MASTER --devices 0 --name NAME --cache-dir DIR [extra]` (its output kept). */
export function spawnAgent(master: string, name: string, cacheDir: string, extra: string[] = []): StartedAgent {
  const proc = spawn(process.execPath, [BIN, 'agent', '--master', master, '--devices', '0', '--name', name, '--cache-dir', cacheDir, ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MS_SERVE_API_KEY: '' } })
  let out = ''
  proc.stdout!.on('data', (d) => { out += d })
  proc.stderr!.on('data', (d) => { out += d })
  return { proc, output: () => out }
}

export async function killByPid(proc: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  process.kill(proc.pid!, signal)
  await once(proc, 'exit')
}

/** Polls `fn` every 100 ms until it gives a value; on timeout fails with `context()` (the servers' output). */
export async function until<T>(what: string, fn: () => Promise<T | undefined>, context: () => string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${context()}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}
