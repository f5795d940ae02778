/**
 * Pipeline stages on other hosts, seen from the replica that drives them. A stage placed on an
 * agent (`--devices 0,NAME:ID`, devices.ts pipelinePlans) is a StagePort whose messages go to the
 * replica's parent ('stage-open' / 'stage-send' / 'stage-close'), which opens the stage on the
 * agent (agent-hub.ts openStage) and relays its replies back ('stage-reply' / 'stage-exit'). The
 * agent runs the same worker code as a local stage (stage-main.ts, llm/stage-decoder-main.ts), so
 * StageWorker, StagedSession and the LLM DecoderPipeline do not know where a stage runs.
 * Activations cross the replica's channel and the agent's gRPC stream as v8-serialized messages
 * (typed arrays intact; transfer lists do not apply).
 */
import { EventEmitter } from 'node:events'
import type { ParentMessage, ReplicaMessage } from './messages.ts'
import type { StageEntry, StageOpener, StagePort, StageWorkerData } from './stage-worker.ts'

class RemotePort extends EventEmitter implements StagePort {
  ended = false
  constructor(private readonly relay: StageRelay, readonly link: number) { super() }

  postMessage(msg: unknown): void {
    if (this.ended) return
    // StageWorker.release's message: the stage's exit that follows is expected.
    const last = (msg as { type?: string } | null)?.type === 'release'
    this.relay.send(last ? { type: 'stage-send', link: this.link, message: msg, last } : { type: 'stage-send', link: this.link, message: msg })
  }

  terminate(): void {
    if (this.ended) return
    this.relay.send({ type: 'stage-close', link: this.link })
    this.end('stage closed')
  }

  /** The link ended (closed here, or the agent's stage exited or was lost). */
  end(why: string, failed = false): void {
    if (this.ended) return
    this.ended = true
    this.relay.forget(this.link)
    if (failed && this.listenerCount('error') > 0) this.emit('error', new Error(why))
    this.emit('exit', failed ? 1 : 0)
  }
}

/** The remote stages of one replica, by link id. */
export class StageRelay {
  private readonly ports = new Map<number, RemotePort>()
  private nextLink = 1

  constructor(readonly send: (msg: ReplicaMessage) => void) {}

  /** An opener for StageWorker.start that runs the stage on `agent` (named `label` in its logs). */
  opener(agent: string, label: string): StageOpener {
    return (entry: StageEntry, data: StageWorkerData) => {
      const link = this.nextLink++
      const port = new RemotePort(this, link)
      this.ports.set(link, port)
      this.send({ type: 'stage-open', link, agent, label, entry, data })
      return port
    }
  }

  /** A parent message for a remote stage; false when `msg` is not one. */
  handle(msg: ParentMessage): boolean {
    if (msg.type === 'stage-reply') { this.ports.get(msg.link)?.emit('message', msg.message); return true }
    if (msg.type === 'stage-exit') { this.ports.get(msg.link)?.end(msg.why, true); return true }
    return false
  }

  forget(link: number): void { this.ports.delete(link) }
}
