/**
 * The replica itself, independent of where it runs: holds the ORT sessions of one servable on one
 * device and answers ParentMessages with ReplicaMessages through `send`. replica-main.ts runs it
 * in a child process or a worker thread; replica.ts runs it on the listeners' thread for
 * `isolation: 'inline'`. The transport decides only how messages travel.
 */
import * as ort from 'onnxruntime-node'
import { importCompiled } from '../config/compile.ts'
import { toServeError, ServeError } from '../errors.ts'
import type { ParentMessage, ReplicaMessage } from './messages.ts'
import { ModelRunner } from './model-runner.ts'
import { prepareMethods, runMethod, type PreparedMethod } from './pipeline.ts'
import { errorToWire, instanceAsIs, instanceFromWire, instanceToWire, type WireInstance, type WireResult } from './wire.ts'
import { fail, type ValidModel, type ValidServable } from '../config/validate.ts'
import { StagedSession, inThread } from './staged-session.ts'
import { StageWorker } from './stage-worker.ts'
import type { DevicePlan } from './devices.ts'
import { checkDeviceTypeAvailable, cudaProviderInstalled } from './devices.ts'
import { modelSessionOptions } from './session-options.ts'
import { LlmHost } from './llm-host.ts'
import { StageRelay } from './remote-stage.ts'
import type { StageOpener } from './stage-worker.ts'

export class ReplicaCore {
  private runners: ModelRunner[] = []
  private methods = new Map<string, PreparedMethod>()
  private llmHost: LlmHost | null = null

  private readonly outputToWire: typeof instanceToWire
  /** Stages of this replica's pipeline that run on agents (remote-stage.ts). */
  private readonly relay: StageRelay

  /** `inline`: the parent shares this thread, so results are handed over as they are (no copies). */
  constructor(private readonly send: (msg: ReplicaMessage) => void, inline = false) {
    this.outputToWire = inline ? instanceAsIs : instanceToWire
    this.relay = new StageRelay(send)
  }

  /** Handles one message; `shutdown` is the transport's business and is ignored here. */
  handle(msg: ParentMessage): void {
    if (this.relay.handle(msg)) return
    switch (msg.type) {
      case 'init':
        this.init(msg.servable, msg.device).then(
          () => this.send({ type: 'ready', models: this.runners.map((r) => r.info), ...(this.llmHost ? { llm: this.llmHost.info() } : {}) }),
          (e) => this.send({ type: 'init-error', error: toServeError(e, 'CONFIG_INVALID').toJSON() }),
        )
        break
      case 'run':
        void this.run(msg.id, msg.method, msg.instances)
        break
      case 'generate':
        if (this.llmHost) this.llmHost.generate(msg.id, msg.request, msg.requestId)
        else this.send({ type: 'event', id: msg.id, event: { type: 'error', requestId: '', code: 'SERVABLE_NOT_FOUND', message: 'this servable has no LLM' } })
        break
      case 'cancel':
        this.llmHost?.cancel(msg.id)
        break
      case 'llm-stats':
        this.send({ type: 'llm-stats', id: msg.id, stats: this.llmHost?.stats() ?? {} })
        break
      case 'shutdown':
        break
    }
  }

  /** Releases the sessions (inline replicas; a process or thread just ends). */
  async close(): Promise<void> {
    await Promise.all(this.runners.map((r) => r.release()))
    await this.llmHost?.close()
    this.llmHost = null
    this.runners = []
    this.methods.clear()
  }

  private async init(servable: ValidServable, device: DevicePlan): Promise<void> {
    checkDeviceTypeAvailable(device.deviceType, ort.listSupportedBackends(), cudaProviderInstalled())
    const def = await importCompiled(servable.compiledFile)
    const runners: ModelRunner[] = []
    for (const m of servable.models) {
      let session: ort.InferenceSession | StagedSession
      try {
        session = m.stages ? await loadStages(m, device, (k) => stageOpener(this.relay, servable, device, k)) : await ort.InferenceSession.create(m.path, modelSessionOptions(m, device))
      } catch (e) {
        await Promise.all(runners.map((r) => r.release()))
        if (e instanceof ServeError && e.code === 'CONFIG_INVALID') fail(servable.configFile, m.site, e.message)
        fail(servable.configFile, m.site, `cannot load model ${m.path} on ${device.deviceType}:${device.deviceId}: ${(e as Error).message}`)
      }
      runners.push(new ModelRunner(ort, session, m))
    }
    this.runners = runners
    this.methods = prepareMethods(servable, def, runners)
    if (servable.llm) this.llmHost = await LlmHost.start(servable.llm, device, this.send, (k) => stageOpener(this.relay, servable, device, k))
  }

  private async run(id: number, methodName: string, instances: WireInstance[]): Promise<void> {
    const t0 = performance.now()
    let results: WireResult[]
    const pm = this.methods.get(methodName)
    if (!pm) results = instances.map(() => errorToWire(new ServeError('INTERNAL', `replica has no method ${methodName}`)))
    else {
      try {
        const out = await runMethod(pm, this.runners, instances.map(instanceFromWire))
        results = out.map((r) => (r instanceof ServeError ? errorToWire(r) : { o: this.outputToWire(r) }))
      } catch (e) {
        results = instances.map(() => errorToWire(toServeError(e, 'INFERENCE_FAILED')))
      }
    }
    const runs = this.runners.flatMap((r) => r.stats.splice(0))
    try {
      this.send({ type: 'result', id, results, runs, ms: performance.now() - t0 })
    } catch (e) {
      // A result the channel cannot carry must still answer its request, not leave it waiting.
      const err = errorToWire(new ServeError('INFERENCE_FAILED', `replica could not send the result of ${methodName}: ${(e as Error).message}`))
      this.send({ type: 'result', id, results: instances.map(() => err), runs, ms: performance.now() - t0 })
    }
  }
}

/**
 * Where stage k of this replica's pipeline runs: undefined for a local worker thread, or an opener
 * that runs it on the agent its device names (a device on another agent than the replica's own).
 */
function stageOpener(relay: StageRelay, servable: ValidServable, device: DevicePlan, k: number): StageOpener | undefined {
  const d = device.stageDevices?.[k]
  if (!d?.agent || d.agent === device.agent) return undefined
  return relay.opener(d.agent, `${servable.name}@${servable.version} stage ${k + 1}`)
}

/** Where a stage's device is, for errors: `cpu:0`, or `cpu:0 on agent b`. */
function where(d: DevicePlan): string {
  return `${d.deviceType}:${d.deviceId}${d.agent ? ` on agent ${d.agent}` : ''}`
}

/**
 * A staged model's stages, each in its own worker thread (stage-worker.ts) on the pipeline's k-th
 * device (devices.ts pipelinePlans) or on an agent's (`open`), checked to chain.
 * MS_SERVE_STAGES_INLINE=1 runs them all on this thread instead (they then take turns: the
 * comparison bench/pipeline.ts makes).
 */
async function loadStages(m: ValidModel, device: DevicePlan, open: (k: number) => StageOpener | undefined): Promise<StagedSession> {
  const stages = m.stages!
  if (process.env.MS_SERVE_STAGES_INLINE === '1') return loadStagesInline(m, device)
  const started = await Promise.allSettled(stages.map((st, k) => {
    const d = device.stageDevices?.[k] ?? device
    return StageWorker.start({ path: st.path }, modelSessionOptions(m, d), undefined, open(k)).catch((e: Error) => {
      throw new Error(`cannot load stage ${k + 1} ${st.path} on ${where(d)}: ${e.message}`)
    })
  }))
  const workers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
  try {
    const failed = started.find((r) => r.status === 'rejected')
    if (failed) throw (failed as PromiseRejectedResult).reason
    return new StagedSession(workers, stages.map((s) => s.file))
  } catch (e) {
    await Promise.all(workers.map((w) => w.release()))
    throw e
  }
}

async function loadStagesInline(m: ValidModel, device: DevicePlan): Promise<StagedSession> {
  const sessions: ort.InferenceSession[] = []
  try {
    for (const [k, st] of m.stages!.entries()) {
      const d = device.stageDevices?.[k] ?? device
      try {
        sessions.push(await ort.InferenceSession.create(st.path, modelSessionOptions(m, d)))
      } catch (e) {
        throw new Error(`cannot load stage ${k + 1} ${st.path} on ${where(d)}: ${(e as Error).message}`)
      }
    }
    return new StagedSession(sessions.map(inThread), m.stages!.map((s) => s.file))
  } catch (e) {
    await Promise.all(sessions.map((s) => s.release()))
    throw e
  }
}
