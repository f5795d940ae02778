/**
 * `ms-serve agent`: connects to a master's `--agents-listen` address (agent-hub.ts), says which
 * devices it has, and runs the replicas the master opens as local child processes (the same
 * replica-main.js as `--isolation process`), relaying their messages both ways. The servable's
 * files (listed with their sha256 in each init message) are fetched from the master into the
 * cache dir, or found there already (agent-cache.ts), and the replica loads those copies; with
 * `fetchModels: false` they are read at the master's paths (a shared or identical filesystem) and
 * must have the master's checksums. Pipeline stages the master places here (`--devices 0,NAME:ID`)
 * run as stage worker threads of this process (the stage code a local replica runs), their files
 * fetched the same way, their messages relayed as frames. A lost master link
 * ends every replica and stage here (the master fails their work and restarts them when the agent is back);
 * the agent reconnects with back-off and joins again under the same name.
 */
import { availableParallelism, hostname } from 'node:os'
import { serialize, deserialize } from 'node:v8'
import * as grpc from '@grpc/grpc-js'
import type { EventLog } from '../log.ts'
import type { ParentMessage } from './messages.ts'
import { openProcess, type Transport } from './transport.ts'
import { loadAgentsDefinition } from './agent-hub.ts'
import { fileSha256Async, type FileChunk } from './agent-files.ts'
import { cachedPath, defaultCacheDir, FileFetcher, masterCacheDir, servableInCache } from './agent-cache.ts'
import { stageThread, type StageEntry, type StageWorkerData } from './stage-worker.ts'
import { externalDataFolderOf, externalDataFolderOption } from '../models/external-data.ts'
import type { Worker } from 'node:worker_threads'
import { compileServableConfig } from '../config/compile.ts'
import { VERSION } from '../version.ts'

export interface AgentOptions {
  master: string
  devices: number[]
  name?: string
  deviceType?: 'cpu' | 'cuda'
  credentials?: grpc.ChannelCredentials
  apiKey?: string
  log: EventLog
  /** Where fetched servable files are kept (default defaultCacheDir()). */
  cacheDir?: string
  /** false: read the files at the master's paths (they must have its checksums), fetch nothing. */
  fetchModels?: boolean
}

interface Frame { replica: number; message?: Buffer; shutdown?: boolean; kill?: boolean }
interface MasterToAgent { welcome?: { master_version: string } | null; open?: { replica: number; label: string; stage?: Buffer } | null; frame?: Frame | null; file_chunk?: FileChunk | null }

/** A stage running here: its worker once started (null if it could not start); `ended` once the master closed it. */
interface StageHere { worker: Promise<Worker | null>; ended: boolean }

/** A pipeline stage the master placed here (agent-hub.ts openStage). */
interface StageSpec { entry: StageEntry; data: StageWorkerData; checksums: Record<string, string> }

export interface RunningAgent {
  /** Resolves once the first connection is welcomed. */
  joined: Promise<void>
  close(): Promise<void>
}

const RECONNECT_MAX_MS = 5000

export function runAgent(o: AgentOptions): RunningAgent {
  const name = o.name ?? `${hostname()}-${process.pid}`
  const def = loadAgentsDefinition()
  const Client = grpc.makeGenericClientConstructor(def as grpc.ServiceDefinition, 'Agents')
  // Keepalive pings notice a master that vanished without closing the connection (a cut link).
  const client = new Client(o.master, o.credentials ?? grpc.credentials.createInsecure(), {
    'grpc.keepalive_time_ms': 2000, 'grpc.keepalive_timeout_ms': 2000, 'grpc.keepalive_permit_without_calls': 1,
    'grpc.max_send_message_length': 512 * 1024 * 1024, 'grpc.max_receive_message_length': 512 * 1024 * 1024,
  }) as unknown as { Connect(md: grpc.Metadata): grpc.ClientDuplexStream<unknown, MasterToAgent>; close(): void }
  let closed = false
  let attempt = 0
  let onJoined!: () => void
  const joined = new Promise<void>((r) => { onJoined = r })
  const replicas = new Map<number, Transport>()
  /** Pipeline stages placed here, by channel id: a worker thread each, or its start in progress. */
  const stages = new Map<number, StageHere>()
  const order = new Map<number, Promise<void>>()
  // Keeps the process alive while it waits to reconnect.
  const keepAlive = setInterval(() => {}, 60_000)
  const fetchModels = o.fetchModels !== false
  const cacheRoot = masterCacheDir(o.cacheDir ?? defaultCacheDir(), o.master)

  const endReplicas = () => {
    for (const t of replicas.values()) t.kill()
    replicas.clear()
    for (const st of stages.values()) endStage(st)
    stages.clear()
  }

  const connect = () => {
    if (closed) return
    const md = new grpc.Metadata()
    if (o.apiKey) md.set('authorization', `Bearer ${o.apiKey}`)
    const call = client.Connect(md)
    let welcomed = false
    const write = (m: unknown) => { try { call.write(m) } catch { /* the stream is ending */ } }
    const fetcher = new FileFetcher({
      root: cacheRoot, agent: name, log: o.log,
      request: (request, path) => write({ file_request: { request, path } }),
      pause: () => call.pause(),
      resume: () => call.resume(),
    })
    /**
     * Starts a stage worker thread for the master (the same code a local stage runs): its files
     * from the cache or fetched (or, with --no-fetch-models, checked at the master's paths), its
     * messages relayed as frames. Resolves with the worker, or null when it could not start.
     */
    const openStageHere = async (id: number, here: StageHere, label: string, spec: StageSpec, files: FileFetcher): Promise<Worker | null> => {
      const fail = (why: string) => { stages.delete(id); write({ frame: { replica: id, start_error: `agent ${name}: ${why}` } }); return null }
      let data = spec.data
      if (Object.keys(spec.checksums).length > 0) {
        if (fetchModels) {
          try { await files.ensure(spec.checksums) } catch (e) { return fail((e as Error).message) }
          if ('path' in data.source) data = { ...data, source: { path: cachedPath(cacheRoot, data.source.path) } }
          // A stage given as bytes reads its external data from the fetched copies' folder.
          const folder = externalDataFolderOf(data.options)
          if (folder) data = { ...data, options: { ...data.options, extra: { ...(data.options.extra as object), ...externalDataFolderOption(cachedPath(cacheRoot, folder)) } } }
        } else {
          const bad = await differingFile(spec.checksums)
          if (bad) return fail(`${bad}. Copy the model to this host at the same path, or start the agent without --no-fetch-models`)
        }
      }
      // The master sizes threads for its own cores; a stage with none set gets this host's share.
      if (!data.options.intraOpNumThreads) data = { ...data, options: { ...data.options, intraOpNumThreads: Math.max(1, Math.floor(availableParallelism() / o.devices.length)) } }
      if (here.ended) return null
      let worker: Worker
      try { worker = stageThread(spec.entry, data) } catch (e) { return fail((e as Error).message) }
      let lastError = ''
      worker.on('message', (msg) => write({ frame: { replica: id, message: serialize(msg) } }))
      worker.on('error', (e) => { lastError = e.message })
      worker.on('exit', (code) => { if (stages.delete(id)) write({ frame: { replica: id, exit: lastError ? `stage worker failed: ${lastError}` : `stage worker exit code ${code}` } }) })
      o.log(`ms-serve agent ${name}: runs ${label} for the master`, { event: 'agent_stage_started', agent: name, stage: label })
      return worker
    }
    call.write({ hello: { name, devices: o.devices, cores: availableParallelism(), version: VERSION, device_type: o.deviceType ?? 'cpu', host: hostname() } })
    call.on('data', (m: MasterToAgent) => {
      if (m.file_chunk) { fetcher.chunk(m.file_chunk); return }
      if (m.welcome) {
        welcomed = true
        attempt = 0
        o.log(`ms-serve agent ${name}: joined master ${o.master} with devices ${o.devices.join(',')}`, { event: 'agent_connected', agent: name, master: o.master })
        onJoined()
        return
      }
      if (m.open?.stage?.length) {
        const id = Number(m.open.replica)
        const here: StageHere = { worker: Promise.resolve(null), ended: false }
        stages.set(id, here)
        here.worker = openStageHere(id, here, m.open.label, deserialize(m.open.stage) as StageSpec, fetcher)
        return
      }
      if (m.open) {
        const id = Number(m.open.replica)
        const open = openProcess(m.open.label, {
          message: (msg) => write({ frame: { replica: id, message: serialize(msg) } }),
          exit: (why) => { replicas.delete(id); order.delete(id); write({ frame: { replica: id, exit: why } }) },
          startError: (e) => { replicas.delete(id); write({ frame: { replica: id, start_error: e.message } }) },
        })
        Promise.resolve(open).then((t) => replicas.set(id, t), (e: Error) => write({ frame: { replica: id, start_error: e.message } }))
        return
      }
      const f = m.frame
      if (!f) return
      const stage = stages.get(Number(f.replica))
      if (stage) {
        if (f.kill || f.shutdown) { stages.delete(Number(f.replica)); endStage(stage) }
        else if (f.message?.length) { const msg = deserialize(f.message); void stage.worker.then((w) => w?.postMessage(msg)) }
        return
      }
      const t = replicas.get(Number(f.replica))
      if (!t) return
      if (f.kill) t.kill()
      else if (f.shutdown) t.shutdown()
      else if (f.message?.length) {
        const id = Number(f.replica)
        const msg = deserialize(f.message) as ParentMessage
        // Messages of one replica keep their order while its init is prepared (a compile).
        const prev = order.get(id) ?? Promise.resolve()
        const next = prev.then(async () => {
          if (msg.type !== 'init') { t.send(msg); return }
          const refused = (why: string) => {
            write({ frame: { replica: id, message: serialize({ type: 'init-error', error: { code: 'CONFIG_INVALID', message: `agent ${name}: ${why}` } }) } })
            t.kill()
          }
          let servable = msg.servable
          if (fetchModels) {
            // The master's files, by sha256, from the cache or fetched into it; the replica loads those.
            try { await fetcher.ensure(msg.checksums ?? {}) } catch (e) { return refused((e as Error).message) }
            servable = servableInCache(msg.servable, cacheRoot)
          } else {
            // The replica would load other files than the master's: refused before it loads anything.
            const bad = msg.checksums ? await differingFile(msg.checksums) : null
            if (bad) return refused(`${bad}. Copy the servable directory to this host at the same path (with --no-fetch-models the agent reads the master's paths), or start the agent without --no-fetch-models to fetch the files from the master`)
          }
          // The master's compiled config pins its own install's paths: compile the same source here.
          try {
            const { compiledFile } = await compileServableConfig(servable.configFile)
            t.send({ ...msg, servable: { ...servable, compiledFile } })
          } catch (e) {
            refused((e as Error).message)
          }
        })
        order.set(id, next.catch(() => undefined))
      }
    })
    let ended = false
    const retry = (why: string) => {
      if (ended) return
      ended = true
      fetcher.lost(`the master link was lost (${why})`)
      endReplicas()
      if (closed) return
      attempt++
      const delay = Math.min(RECONNECT_MAX_MS, 250 * 2 ** Math.min(5, attempt - 1))
      o.log(`ms-serve agent ${name}: ${welcomed ? 'lost the master' : 'cannot join the master'} at ${o.master} (${why}); retrying in ${delay} ms`, { event: 'agent_disconnected', severity: 'warn', agent: name, reason: why, retry_in_ms: delay })
      setTimeout(connect, delay).unref()
    }
    call.on('error', (e: Error & { code?: number }) => {
      // A refusal that retrying cannot fix (a wrong key, a name in use) ends the agent.
      if (e.code === grpc.status.UNAUTHENTICATED || e.code === grpc.status.ALREADY_EXISTS || e.code === grpc.status.INVALID_ARGUMENT) {
        o.log(`ms-serve agent ${name}: the master refused it: ${e.message}`, { event: 'agent_refused', severity: 'error', agent: name })
        ended = true
        closed = true
        fetcher.lost('the master refused the agent')
        endReplicas()
        process.exitCode = 2
        clearInterval(keepAlive)
        client.close()
        return
      }
      retry(e.message)
    })
    call.on('end', () => retry('the master closed the link'))
  }
  connect()
  return {
    joined,
    async close() {
      closed = true
      clearInterval(keepAlive)
      endReplicas()
      client.close()
    },
  }
}

/** Ends a stage running here (or about to start). */
function endStage(st: StageHere): void {
  st.ended = true
  void st.worker.then((w) => w?.terminate())
}

/** The first file whose local copy is missing or differs from the master's checksum, described; else null. */
async function differingFile(checksums: Record<string, string>): Promise<string | null> {
  for (const [path, sha] of Object.entries(checksums)) {
    let mine: string
    try { mine = await fileSha256Async(path) } catch { return `${path} is missing on this host` }
    if (mine !== sha) return `${path} differs from the master's (sha256 ${mine.slice(0, 12)}... here, ${sha.slice(0, 12)}... there)`
  }
  return null
}
