/**
 * The master's side of remote replicas (issue 13): agents (`ms-serve agent`) connect to the
 * `--agents-listen` address with one `msserve.v1.Agents/Connect` stream (proto/ms_serve_agent.proto)
 * and say which devices they have. Each (agent, device) becomes a replica of every servable, whose
 * Transport (transport.ts) is a channel multiplexed on that stream: the replica messages of
 * messages.ts, v8-serialized, so Replica, ReplicaPool and the batching loop treat remote replicas
 * like local ones (heartbeats, watchdog, restarts). When an agent's stream ends, every replica on
 * it exits ("agent X lost"): its in-flight work fails, the pool restarts it, and the restart waits
 * for the agent to come back under the same name.
 */
import { createHash } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { serialize, deserialize } from 'node:v8'
import type { ValidServable } from '../config/validate.ts'
import * as grpc from '@grpc/grpc-js'
import { ServeError } from '../errors.ts'
import type { EventLog } from '../log.ts'
import type { ParentMessage, ReplicaMessage } from './messages.ts'
import type { Transport, TransportEvents, TransportFactory } from './transport.ts'
import { loadServiceDefinition } from '../protocol/grpc/ms-service.ts'

export const AGENTS_SERVICE = 'msserve.v1.Agents'

export function loadAgentsDefinition(): grpc.ServiceDefinition {
  return loadServiceDefinition('ms_serve_agent.proto', AGENTS_SERVICE)
}

export interface AgentHello { name: string; devices: number[]; cores: number; version: string; device_type: string; host: string }
interface Frame { replica: number; message?: Buffer; exit?: string; start_error?: string; shutdown?: boolean; kill?: boolean }
interface AgentToMaster { hello?: AgentHello | null; frame?: Frame | null }

type Stream = grpc.ServerDuplexStream<AgentToMaster, unknown>

/** One agent as the master knows it; `stream` is null while it is away. */
export interface AgentInfo { name: string; devices: number[]; cores: number; deviceType: string; host: string; connected: boolean }

interface Agent extends AgentInfo {
  stream: Stream | null
  /** Open channels on this agent by replica id. */
  channels: Map<number, TransportEvents>
  /** Channels waiting for the agent to (re)connect. */
  waiting: Array<() => void>
}

export class AgentHub {
  private readonly agents = new Map<string, Agent>()
  private nextId = 1
  /** An agent joined for the first time (the server adds its replicas to every servable). */
  onJoin: (a: AgentInfo) => void = () => {}

  constructor(private readonly log: EventLog) {}

  list(): AgentInfo[] {
    return [...this.agents.values()].map(({ name, devices, cores, deviceType, host, stream }) => ({ name, devices, cores, deviceType, host, connected: stream !== null }))
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
    const agent: Agent = known ?? { name: h.name, devices, cores: Number(h.cores) || 1, deviceType: h.device_type || 'cpu', host: h.host ?? '', connected: true, stream: null, channels: new Map(), waiting: [] }
    if (known && known.devices.join(',') !== devices.join(',')) {
      this.log(`ms-serve: agent ${h.name} rejoined with devices ${devices.join(',')} (was ${known.devices.join(',')}); its replicas keep the devices it had`, { event: 'agent_devices_changed', severity: 'warn', agent: h.name })
    }
    agent.stream = call
    agent.connected = true
    this.agents.set(h.name, agent)
    call.write({ welcome: { master_version: h.version } })
    this.log(`ms-serve: agent ${h.name} ${known ? 'rejoined' : 'joined'} from ${call.getPeer()} with devices ${agent.deviceType}:${agent.devices.join(',')}`, { event: known ? 'agent_rejoined' : 'agent_joined', agent: h.name, devices: agent.devices, peer: call.getPeer() })
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
      const agent = this.agents.get(agentName)
      if (!agent) throw new ServeError('INTERNAL', `no agent ${agentName}`)
      while (!agent.stream) await new Promise<void>((r) => agent.waiting.push(r))
      const stream = agent.stream
      const id = this.nextId++
      agent.channels.set(id, events)
      stream.write({ open: { replica: id, label } })
      const send = (frame: Omit<Frame, 'replica'>) => { if (agent.stream === stream) stream.write({ frame: { replica: id, ...frame } }) }
      const t: Transport = {
        pid: 0,
        sharesThread: false,
        // The init message carries the checksums of the files the replica will read, so the agent
        // refuses to serve a servable whose files differ on its host.
        send: (msg: ParentMessage) => send({ message: serialize(msg.type === 'init' ? { ...msg, checksums: servableChecksums(msg.servable) } : msg) }),
        shutdown: () => send({ shutdown: true }),
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

  /** Ends every agent stream (server shutdown). */
  close(): void {
    for (const a of this.agents.values()) { a.stream?.end(); a.stream = null }
  }
}

/**
 * The files a replica of `s` reads: its servable_config.ts (the agent compiles it itself, against
 * its own install) and every model (stage) file.
 */
export function servableFiles(s: ValidServable): string[] {
  return [s.configFile, ...s.models.flatMap((m) => (m.stages ? m.stages.map((x) => x.path) : [m.path])), ...(s.llm ? [s.llm.path] : [])]
}

const digests = new Map<string, { mtimeMs: number; size: number; sha256: string }>()

/** sha256 of a file, cached by path, size and modification time (model files are read once per change). */
export function fileSha256(path: string): string {
  const st = statSync(path)
  const hit = digests.get(path)
  if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit.sha256
  const sha256 = createHash('sha256').update(readFileSync(path)).digest('hex')
  digests.set(path, { mtimeMs: st.mtimeMs, size: st.size, sha256 })
  return sha256
}

function servableChecksums(s: ValidServable): Record<string, string> {
  const out: Record<string, string> = {}
  for (const f of servableFiles(s)) { try { out[f] = fileSha256(f) } catch { /* the replica's load reports a missing file */ } }
  return out
}
