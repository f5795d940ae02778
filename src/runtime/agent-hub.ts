/**
 * The master's side of remote replicas (issue 13): agents (`ms-serve agent`) connect to the
 * `--agents-listen` address with one `msserve.v1.Agents/Connect` stream (proto/ms_serve_agent.proto)
 * and say which devices they have. Each (agent, device) becomes a replica of every servable, whose
 * Transport (transport.ts) is a channel multiplexed on that stream: the replica messages of
 * messages.ts, v8-serialized, so Replica, ReplicaPool and the batching loop treat remote replicas
 * like local ones (heartbeats, watchdog, restarts). When an agent's stream ends, every replica on
 * it exits ("agent X lost"): its in-flight work fails, the pool restarts it, and the restart waits
 * for the agent to come back under the same name. Agents fetch the servable's files over the same
 * stream (`file_request` -> `file_chunk`s, agent-files.ts): only files listed in an init message
 * sent to that agent are served. A pipeline stage placed on an agent (`--devices 0,NAME:ID`) is a
 * channel of the same kind whose frames carry a stage worker's messages (openStage).
 */
import { once } from 'node:events'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serialize, deserialize } from 'node:v8'
import * as grpc from '@grpc/grpc-js'
import { ServeError } from '../errors.ts'
import type { EventLog } from '../log.ts'
import type { ParentMessage, ReplicaMessage } from './messages.ts'
import type { StageLink, StageLinkEvents, StageLinkOpener, Transport, TransportEvents, TransportFactory } from './transport.ts'
import { loadServiceDefinition } from '../protocol/grpc/ms-service.ts'
import { externalDataFiles, fileSha256Async, serveFile, servableChecksums, type FileChunk } from './agent-files.ts'
import { externalDataFolderOf, externalDataPaths } from '../models/external-data.ts'

export const AGENTS_SERVICE = 'msserve.v1.Agents'

/** Stage bytes above this go to the agent as a fetched file, not inside the open message. */
const INLINE_STAGE_BYTES = 64 * 1024 * 1024

export function loadAgentsDefinition(): grpc.ServiceDefinition {
  return loadServiceDefinition('ms_serve_agent.proto', AGENTS_SERVICE)
}

export interface AgentHello { name: string; devices: number[]; cores: number; version: string; device_type: string; host: string }
interface Frame { replica: number; message?: Buffer; exit?: string; start_error?: string; shutdown?: boolean; kill?: boolean }
interface AgentToMaster { hello?: AgentHello | null; frame?: Frame | null; file_request?: { request: number; path: string } | null }

type Stream = grpc.ServerDuplexStream<AgentToMaster, unknown>

/**
 * One agent as the master knows it; `stream` is null while it is away. `placed`: the server's
 * `--devices` names it (NAME:ID), so it serves what is placed there, not a whole replica per device.
 */
export interface AgentInfo { name: string; devices: number[]; cores: number; deviceType: string; host: string; connected: boolean; placed: boolean }

interface Agent extends AgentInfo {
  stream: Stream | null
  /** Open channels on this agent by replica id. */
  channels: Map<number, TransportEvents>
  /** Channels waiting for the agent to (re)connect. */
  waiting: Array<() => void>
  /** Files listed in the init messages sent to this agent: the only ones it may fetch. */
  files: Set<string>
}

export class AgentHub {
  private readonly agents = new Map<string, Agent>()
  private nextId = 1
  /** An agent joined for the first time (the server adds its replicas to every servable). */
  onJoin: (a: AgentInfo) => void = () => {}

  /**
   * `inlineStageBytes`: a stage given as bytes up to this size travels in its open message; a
   * bigger one is written to a file (under the OS temp dir, named by its sha256) that the agent
   * fetches in chunks like a model file, so no message nears gRPC's size limit.
   */
  constructor(private readonly log: EventLog, private readonly inlineStageBytes = INLINE_STAGE_BYTES) {}

  list(): AgentInfo[] {
    return [...this.agents.values()].map(({ name, devices, cores, deviceType, host, stream, placed }) => ({ name, devices, cores, deviceType, host, connected: stream !== null, placed }))
  }

  addTo(server: grpc.Server): void {
    server.addService(loadAgentsDefinition(), { Connect: (call: Stream) => this.connect(call) })
  }

  private connect(call: Stream): void {
    let agent: Agent | null = null
    call.on('data', (m: AgentToMaster) => {
      if (m.hello) {
        if (agent) return
        agent = this.hello(call, m.hello)
        return
      }
      if (m.frame && agent) this.frame(agent, m.frame)
      if (m.file_request && agent) void this.serve(agent, call, m.file_request)
    })
    const gone = (why: string) => {
      if (!agent || agent.stream !== call) return
      this.lost(agent, why)
    }
    call.on('end', () => { gone('its stream ended'); call.end() })
    call.on('error', (e) => gone((e as Error).message))
    call.on('cancelled', () => gone('its stream was cancelled'))
  }

  private hello(call: Stream, h: AgentHello): Agent | null {
    const devices = (h.devices ?? []).map(Number)
    if (!h.name || devices.length === 0) {
      call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'an agent hello needs a name and at least one device id' })
      return null
    }
    const known = this.agents.get(h.name)
    if (known?.stream) {
      call.emit('error', { code: grpc.status.ALREADY_EXISTS, details: `an agent named ${h.name} is already connected; give each agent its own --name` })
      return null
    }
    const agent = known ?? blankAgent(h.name, false)
    // First join (an agent expected by --devices is known, with no devices yet): what it has.
    const rejoin = agent.devices.length > 0
    if (!rejoin) Object.assign(agent, { devices, cores: Number(h.cores) || 1, deviceType: h.device_type || 'cpu', host: h.host ?? '' })
    else if (agent.devices.join(',') !== devices.join(',')) {
      this.log(`ms-serve: agent ${h.name} rejoined with devices ${devices.join(',')} (was ${agent.devices.join(',')}); its replicas keep the devices it had`, { event: 'agent_devices_changed', severity: 'warn', agent: h.name })
    }
    agent.stream = call
    agent.connected = true
    this.agents.set(h.name, agent)
    call.write({ welcome: { master_version: h.version } })
    this.log(`ms-serve: agent ${h.name} ${rejoin ? 'rejoined' : 'joined'} from ${call.getPeer()} with devices ${agent.deviceType}:${agent.devices.join(',')}`, { event: rejoin ? 'agent_rejoined' : 'agent_joined', agent: h.name, devices: agent.devices, peer: call.getPeer() })
    for (const w of agent.waiting.splice(0)) w()
    if (!known) this.onJoin(this.list().find((a) => a.name === h.name)!)
    return agent
  }

  private frame(agent: Agent, f: Frame): void {
    const ch = agent.channels.get(Number(f.replica))
    if (!ch) return
    if (f.exit) { agent.channels.delete(Number(f.replica)); ch.exit(f.exit); return }
    if (f.start_error) { agent.channels.delete(Number(f.replica)); ch.startError(new Error(f.start_error)); return }
    if (f.message && f.message.length) {
      let msg: ReplicaMessage
      try { msg = deserialize(f.message) as ReplicaMessage } catch (e) {
        this.log(`ms-serve: agent ${agent.name} sent a message that does not decode: ${(e as Error).message}`, { event: 'agent_bad_frame', severity: 'error', agent: agent.name })
        return
      }
      ch.message(msg)
    }
  }

  /** Streams one requested file to the agent, waiting on the stream's back-pressure; stops if the stream goes. */
  private async serve(agent: Agent, call: Stream, req: { request: number; path: string }): Promise<void> {
    const started = performance.now()
    let error = ''
    let bytes = 0
    await serveFile(agent.files, Number(req.request), String(req.path ?? ''), async (c: FileChunk) => {
      if (agent.stream !== call) return false
      if (c.error) error = c.error
      bytes += c.data.length
      try {
        if (!call.write({ file_chunk: c })) await Promise.race([once(call, 'drain'), once(call, 'close')])
      } catch { return false }
      return agent.stream === call
    })
    if (error) this.log(`ms-serve: agent ${agent.name} asked for ${req.path}: ${error}`, { event: 'agent_file_refused', severity: 'warn', agent: agent.name, path: req.path, reason: error })
    else this.log(`ms-serve: agent ${agent.name} fetched ${req.path} (${bytes} bytes in ${Math.round(performance.now() - started)} ms)`, { event: 'agent_file_served', agent: agent.name, path: req.path, bytes })
  }

  private lost(agent: Agent, why: string): void {
    agent.stream = null
    agent.connected = false
    const channels = [...agent.channels.values()]
    agent.channels.clear()
    this.log(`ms-serve: agent ${agent.name} lost (${why}); its ${channels.length} replica(s) wait for it to rejoin`, { event: 'agent_lost', severity: 'warn', agent: agent.name, reason: why, replicas: channels.length })
    for (const ch of channels) ch.exit(`agent ${agent.name} lost: ${why}`)
  }

  /** The transport of a replica on `agent`'s device: opening it waits until the agent is connected. */
  transport(agentName: string): TransportFactory {
    return async (label, events) => {
      const { agent, stream } = await this.connected(agentName)
      const id = this.nextId++
      agent.channels.set(id, events)
      stream.write({ open: { replica: id, label } })
      const send = (frame: Omit<Frame, 'replica'>) => { if (agent.stream === stream) stream.write({ frame: { replica: id, ...frame } }) }
      // Messages keep their order behind an init whose checksums are still being computed.
      let queue = Promise.resolve()
      const sendInOrder = (make: () => Promise<Omit<Frame, 'replica'>>) => {
        queue = queue.then(make).then(send, (e: Error) => this.log(`ms-serve: agent ${agentName}: cannot send to replica ${label}: ${e.message}`, { event: 'agent_send_failed', severity: 'error', agent: agentName }))
      }
      const t: Transport = {
        pid: 0,
        sharesThread: false,
        // The init message carries the checksums of the files the replica will read: the agent
        // fetches those it lacks (and may fetch only those), or refuses with --no-fetch-models.
        send: (msg: ParentMessage) => sendInOrder(async () => {
          if (msg.type !== 'init') return { message: serialize(msg) }
          const checksums = await servableChecksums(msg.servable)
          for (const f of Object.keys(checksums)) agent.files.add(f)
          return { message: serialize({ ...msg, checksums }) }
        }),
        shutdown: () => sendInOrder(async () => ({ shutdown: true })),
        kill: () => {
          send({ kill: true })
          // The agent may be unreachable: the channel ends here, whatever it answers; after the
          // current turn, as a local process's exit event comes (the caller finishes first).
          const ch = agent.channels.get(id)
          if (ch) { agent.channels.delete(id); setImmediate(() => ch.exit('killed')) }
        },
      }
      return t
    }
  }

  /** Waits until `agent` is connected; its stream. */
  private async connected(agentName: string): Promise<{ agent: Agent; stream: Stream }> {
    const agent = this.agents.get(agentName)
    if (!agent) throw new ServeError('INTERNAL', `no agent ${agentName}`)
    while (!agent.stream) await new Promise<void>((r) => agent.waiting.push(r))
    return { agent, stream: agent.stream }
  }

  /**
   * Opens one pipeline stage on `agentName` for a replica here (Replica, messages.ts 'stage-open').
   * Waits while the agent is away, including one that has never joined (it is expected by name).
   * The files the stage reads (a model path and its external data) are listed with their sha256,
   * and only those may be fetched; a stage given as bytes travels in the open message itself.
   */
  readonly openStage: StageLinkOpener = async (agentName, label, given, events: StageLinkEvents): Promise<StageLink> => {
    let spec = given
    const checksums: Record<string, string> = {}
    let files: string[]
    const source = spec.data.source
    if ('path' in source) files = [source.path, ...externalDataFiles(source.path)]
    else {
      // A stage given as bytes (an LLM's, split at load): the data files its graph references, in
      // the folder its session options name; a big one goes as a file of its own.
      const folder = externalDataFolderOf(spec.data.options)
      files = folder ? externalDataPaths(source.bytes, folder) : []
      if (source.bytes.byteLength > this.inlineStageBytes) {
        const path = await stageFile(source.bytes)
        spec = { ...spec, data: { ...spec.data, source: { path } } }
        files.unshift(path)
      }
    }
    for (const f of files) {
      try { checksums[f] = await fileSha256Async(f) } catch { /* the stage's load reports a missing file */ }
    }
    const { agent, stream } = await this.connected(agentName)
    const id = this.nextId++
    let ended = false
    agent.channels.set(id, {
      message: (m) => { if (!ended) events.message(m) },
      exit: (why) => { if (!ended) { ended = true; events.exit(why) } },
      startError: (e) => { if (!ended) { ended = true; events.exit(`cannot start: ${e.message}`) } },
    })
    for (const f of Object.keys(checksums)) agent.files.add(f)
    stream.write({ open: { replica: id, label, stage: serialize({ entry: spec.entry, data: spec.data, checksums }) } })
    const send = (frame: Omit<Frame, 'replica'>) => { if (agent.stream === stream && !ended) stream.write({ frame: { replica: id, ...frame } }) }
    return {
      send: (msg) => send({ message: serialize(msg) }),
      kill: () => {
        send({ kill: true })
        ended = true
        agent.channels.delete(id)
      },
    }
  }

  /**
   * An agent the server's `--devices` names before it has joined: known, not connected, so stages
   * and replicas placed on it wait for it (and its first join adds no whole replicas: onJoin is
   * not called for it).
   */
  expect(agentName: string): void {
    if (!this.agents.has(agentName)) this.agents.set(agentName, blankAgent(agentName, true))
  }

  /** Ends every agent stream (server shutdown). */
  close(): void {
    for (const a of this.agents.values()) { a.stream?.end(); a.stream = null }
  }
}

/** An agent known by name only, not connected, with no devices yet. */
function blankAgent(name: string, placed: boolean): Agent {
  return { name, devices: [], cores: 1, deviceType: 'cpu', host: '', connected: false, stream: null, channels: new Map(), waiting: [], files: new Set(), placed }
}

/** Writes stage bytes to `<tmp>/ms-serve-stages/<sha256>.onnx` (once per content); its path. */
async function stageFile(bytes: Uint8Array): Promise<string> {
  const sha = createHash('sha256').update(bytes).digest('hex')
  const dir = join(tmpdir(), 'ms-serve-stages')
  const path = join(dir, `${sha}.onnx`)
  if (existsSync(path)) return path
  await mkdir(dir, { recursive: true })
  const part = `${path}.${process.pid}.part`
  await writeFile(part, bytes)
  await rename(part, path)
  return path
}
