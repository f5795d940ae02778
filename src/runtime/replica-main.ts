/**
 * Replica process entry: holds the ORT sessions of one servable on one device and runs method
 * pipelines for groups of instances sent by the parent. A separate process (not a worker thread)
 * because ORT's run() blocks its thread, a native crash must not take the listeners down, and the
 * malloc tuning env (see replica-pool.ts) only applies to a freshly started process.
 */
import * as ort from 'onnxruntime-node'
import { importCompiled, relativeSite } from '../config/compile.ts'
import { toServeError, ServeError } from '../errors.ts'
import type { ParentMessage, ReplicaMessage } from './messages.ts'
import { ModelRunner } from './model-runner.ts'
import { prepareMethods, runMethod, type PreparedMethod } from './pipeline.ts'
import { errorToWire, instanceFromWire, instanceToWire, type WireResult } from './wire.ts'
import type { ValidServable } from '../config/validate.ts'
import type { DevicePlan } from './devices.ts'
import { checkDeviceTypeAvailable, cudaProviderInstalled } from './devices.ts'
import { LlmHost } from './llm-host.ts'

process.setSourceMapsEnabled(true)

let runners: ModelRunner[] = []
let methods = new Map<string, PreparedMethod>()
let llmHost: LlmHost | null = null

function send(msg: ReplicaMessage): void {
  process.send!(msg)
}

async function init(servable: ValidServable, device: DevicePlan): Promise<void> {
  checkDeviceTypeAvailable(device.deviceType, ort.listSupportedBackends(), cudaProviderInstalled())
  const def = await importCompiled(servable.compiledFile)
  runners = []
  for (const m of servable.models) {
    let session: ort.InferenceSession
    try {
      session = await ort.InferenceSession.create(m.path, {
        executionProviders: device.executionProviders as ort.InferenceSession.ExecutionProviderConfig[],
        intraOpNumThreads: m.session.intraOpThreads ?? device.intraOpThreads,
        interOpNumThreads: m.session.interOpThreads ?? 1,
        graphOptimizationLevel: m.session.graphOptimizationLevel,
        executionMode: m.session.executionMode,
        // ORT flattens nested keys with '.', so the user's 'session.x.y' keys pass through as written.
        // On CPU, intra-op threads do not spin by default: a spinning replica holds its cores
        // between runs and starves the listener process and the other replicas on the same cores.
        extra: { ...(device.deviceType === 'cpu' ? { 'session.intra_op.allow_spinning': '0' } : {}), ...m.session.extra } as never,
      })
    } catch (e) {
      throw new ServeError('CONFIG_INVALID', `${m.site ? relativeSite(m.site) : servable.configFile}: cannot load model ${m.path} on ${device.deviceType}:${device.deviceId}: ${(e as Error).message}`)
    }
    runners.push(new ModelRunner(ort, session, m))
  }
  methods = prepareMethods(servable, def, runners)
  if (servable.llm) llmHost = await LlmHost.start(servable.llm, device, send)
}

async function run(id: number, methodName: string, wire: ParentMessage & { type: 'run' }): Promise<void> {
  const t0 = performance.now()
  let results: WireResult[]
  const pm = methods.get(methodName)
  if (!pm) results = wire.instances.map(() => errorToWire(new ServeError('INTERNAL', `replica has no method ${methodName}`)))
  else {
    try {
      const out = await runMethod(pm, runners, wire.instances.map(instanceFromWire))
      results = out.map((r) => (r instanceof ServeError ? errorToWire(r) : { o: instanceToWire(r) }))
    } catch (e) {
      results = wire.instances.map(() => errorToWire(toServeError(e, 'INFERENCE_FAILED')))
    }
  }
  const runs = runners.flatMap((r) => r.stats.splice(0))
  send({ type: 'result', id, results, runs, ms: performance.now() - t0 })
}

process.on('message', (msg: ParentMessage) => {
  switch (msg.type) {
    case 'init':
      init(msg.servable, msg.device).then(
        () => send({ type: 'ready', models: runners.map((r) => r.info), pid: process.pid, ...(llmHost ? { llm: llmHost.info() } : {}) }),
        (e) => send({ type: 'init-error', error: toServeError(e, 'CONFIG_INVALID').toJSON() }),
      )
      break
    case 'run':
      void run(msg.id, msg.method, msg)
      break
    case 'generate':
      if (llmHost) llmHost.generate(msg.id, msg.request)
      else send({ type: 'event', id: msg.id, event: { type: 'error', requestId: '', code: 'SERVABLE_NOT_FOUND', message: 'this servable has no LLM' } })
      break
    case 'cancel':
      llmHost?.cancel(msg.id)
      break
    case 'llm-stats':
      send({ type: 'llm-stats', id: msg.id, stats: llmHost?.stats() ?? {} })
      break
    case 'shutdown':
      process.exit(0)
  }
})

// The parent going away must not leave an orphan replica holding memory.
process.on('disconnect', () => process.exit(0))
