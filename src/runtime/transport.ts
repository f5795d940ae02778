/**
 * How a replica's messages travel and how it is ended. The Replica handle (replica.ts) speaks the
 * message protocol of messages.ts over a Transport and does not know which kind it has:
 *   process  a child process (default): a native crash or OOM cannot take the listeners down,
 *            and the malloc tuning env applies (big ORT outputs are copied on every run);
 *   thread   a worker thread: no cross-process hop (structured clone through memory, no pipe);
 *   inline   on the listeners' thread: no hop at all. ORT's run() blocks the event loop for the
 *            length of a batch, so this suits models that run in microseconds.
 * A remote kind (a replica on another host) implements the same two interfaces.
 */
import { fork } from 'node:child_process'
import { Worker } from 'node:worker_threads'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { existsSync } from 'node:fs'
import { ServeError } from '../errors.ts'
import type { Isolation } from './devices.ts'
import type { ParentMessage, ReplicaMessage } from './messages.ts'
import type { StageEntry, StageWorkerData } from './stage-worker.ts'

/** glibc malloc settings that keep big ORT outputs off fresh mmaps (see onnxruntime-node notes). */
export const MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '33554432', MALLOC_TRIM_THRESHOLD_: '4294967296' }

/** What a transport reports to its replica handle. */
export interface TransportEvents {
  message(msg: ReplicaMessage): void
  /** The replica ended (after shutdown, a kill or a crash); `why` is for logs and errors. */
  exit(why: string): void
  /** The replica could not be started at all. */
  startError(e: Error): void
}

/** One started replica's channel; a new one is opened for each (re)start. */
export interface Transport {
  /** The OS process the replica runs in (ours for thread and inline). */
  readonly pid: number
  /**
   * Values cross as they are (same thread, nothing cloned): senders need not make compact copies,
   * and a heartbeat watchdog makes no sense (a hung replica would hang us too).
   */
  readonly sharesThread: boolean
  send(msg: ParentMessage): void
  /** Asks the replica to end after its work; `exit` follows. */
  shutdown(): void
  /** Ends it now. */
  kill(): void
}

/** Opens one transport; `label` names the replica in its environment and in logs. */
export type TransportFactory = (label: string, events: TransportEvents) => Transport | Promise<Transport>

function replicaEntry(): string {
  const here = dirname(fileURLToPath(import.meta.url))
  // Bundled: dist/cli/main.js -> dist/runtime/replica-main.js; under tsx: src/runtime/transport.ts.
  for (const p of [join(here, '..', 'runtime', 'replica-main.js'), join(here, 'replica-main.js'), join(here, '..', '..', 'dist', 'runtime', 'replica-main.js')]) {
    if (existsSync(p)) return p
  }
  throw new ServeError('INTERNAL', 'dist/runtime/replica-main.js is missing; run `npm run build`')
}

export const openProcess: TransportFactory = (label, on) => {
  const proc = fork(replicaEntry(), [], {
    serialization: 'advanced',
    env: { ...process.env, ...MALLOC_ENV, MS_SERVE_REPLICA: label },
    execArgv: [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  proc.on('message', on.message)
  proc.on('exit', (code, signal) => on.exit(signal ? `signal ${signal}` : `exit code ${code}`))
  proc.on('error', on.startError)
  return {
    pid: proc.pid ?? 0,
    sharesThread: false,
    send: (msg) => { if (proc.connected) proc.send(msg) },
    shutdown: () => { try { proc.send({ type: 'shutdown' } satisfies ParentMessage) } catch { proc.kill('SIGKILL') } },
    kill: () => { proc.kill('SIGKILL') },
  }
}

export const openThread: TransportFactory = (label, on) => {
  const worker = new Worker(replicaEntry(), { env: { ...process.env, MS_SERVE_REPLICA: label }, execArgv: [] })
  let lastError = ''
  worker.on('message', on.message)
  worker.on('error', (e) => { lastError = e.message })
  worker.on('exit', (code) => on.exit(lastError ? `thread error: ${lastError}` : `thread exit code ${code}`))
  return {
    pid: process.pid,
    sharesThread: false,
    send: (msg) => worker.postMessage(msg),
    shutdown: () => worker.postMessage({ type: 'shutdown' } satisfies ParentMessage),
    kill: () => { void worker.terminate() },
  }
}

export const openInline: TransportFactory = async (_label, on) => {
  // Loaded on first use: a server whose replicas all run in processes never loads ORT itself.
  const { ReplicaCore } = await import('./replica-core.ts')
  let ended = false
  const core = new ReplicaCore((msg) => { if (!ended) on.message(msg) }, true)
  const end = (why: string) => {
    if (ended) return
    ended = true
    void core.close().finally(() => on.exit(why))
  }
  return {
    pid: process.pid,
    sharesThread: true,
    send: (msg) => { if (!ended) core.handle(msg) },
    shutdown: () => end('exit code 0'),
    kill: () => end('killed'),
  }
}

/** The transport of each local isolation kind. */
export function localTransport(isolation: Isolation): TransportFactory {
  return isolation === 'process' ? openProcess : isolation === 'thread' ? openThread : openInline
}

/** One pipeline stage opened on an agent for a replica (agent-hub.ts openStage): its messages go through `send`. */
export interface StageLink {
  send(msg: unknown): void
  /** Ends the stage now (its `exit` does not follow). */
  kill(): void
}

/** What a stage link reports: the stage's replies, and its end (exited, or the agent lost). */
export interface StageLinkEvents { message(msg: unknown): void; exit(why: string): void }

/** Opens a stage (`entry` + worker data, as a local stage worker gets) on an agent; waits while the agent is away. */
export type StageLinkOpener = (agent: string, label: string, spec: { entry: StageEntry; data: StageWorkerData }, events: StageLinkEvents) => Promise<StageLink>
