/**
 * `--isolation auto` (the default): where a servable's replicas run, chosen at load from how long
 * its models take. The rule, in order:
 *
 *   LLM servable                                  -> process  (its step loop stays off the listeners;
 *                                                              a worker thread measured no faster)
 *   a device other than cpu                       -> process
 *   models over AUTO_PROBE_MAX_BYTES on disk       -> process  (not microsecond models; not probed)
 *   a model input the probe cannot fill (strings,  -> process
 *     a dim it cannot guess), or a run that fails
 *   probe: each model at its largest batch, zeros in, 2 warm-up + 10 timed runs, the fastest, summed
 *   over the servable's models =: t
 *     t <= INLINE_MAX_MS  (1 ms)                  -> inline   (a batch never holds the listeners
 *                                                              longer than about a millisecond)
 *     t <= THREAD_MAX_MS  (10 ms)                 -> thread   (the process hop, ~0.1-0.2 ms a
 *                                                              request here, is still >= 1-2%)
 *     else                                        -> process  (the hop is noise; a native crash
 *                                                              stays in the replica)
 *
 * The probe runs on the listeners' thread once per servable version, before its replicas start,
 * with the session options a replica would use. TS stages are the user's code and are not timed: a
 * servable whose stages do heavy synchronous work should name its isolation (`--isolation`, or
 * `servables.<name>.isolation` in the server YAML).
 */
import { statSync } from 'node:fs'
import ort from 'onnxruntime-node'
import type { ValidModel, ValidServable } from '../config/validate.ts'
import { DTYPES, type NumericDType } from '../tensor.ts'
import type { DevicePlan, Isolation } from './devices.ts'
import { modelSessionOptions } from './session-options.ts'

export const INLINE_MAX_MS = 1
export const THREAD_MAX_MS = 10
export const AUTO_PROBE_MAX_BYTES = 64 * 2 ** 20

export interface IsolationChoice {
  isolation: Isolation
  /** Why, for the servable_ready log line and /stats. */
  reason: string
  /** The probe's summed run time at the largest batch, when it ran. */
  probeMs?: number
}

/** The fastest of 10 runs (ms) of `model` at its largest batch with zero inputs; null when it cannot be probed. */
async function probeModel(model: ValidModel, device: DevicePlan): Promise<number | null> {
  const session = await ort.InferenceSession.create(model.path, modelSessionOptions(model, device))
  try {
    const batch = model.withBatchDim ? (model.maxBatchSize ?? 32) : 1
    const feeds: Record<string, ort.Tensor> = {}
    for (const [i, m] of session.inputMetadata.entries()) {
      // ORT's type names are our dtype names; strings (and anything else) cannot be zero-filled here.
      if (!m.isTensor) return null
      const dtype = DTYPES[m.type as NumericDType] as (typeof DTYPES)[NumericDType] | undefined
      if (!dtype) return null
      const batched = model.withBatchDim && !model.withoutBatchDimInputs.includes(i)
      const dims: number[] = []
      for (const [k, d] of m.shape.entries()) {
        if (typeof d === 'number' && d >= 0) dims.push(d)
        else if (k === 0 && batched) dims.push(batch)
        else return null // a free dim other than the batch: its size is the request's, unknown here
      }
      if (batched && typeof m.shape[0] === 'number' && m.shape[0] >= 0) dims[0] = m.shape[0] // a fixed batch is the batch
      const n = dims.reduce((a, b) => a * b, 1)
      feeds[m.name] = new ort.Tensor(dtype.ort as 'float32', new dtype.ctor(n) as Float32Array, dims)
    }
    for (let i = 0; i < 2; i++) await session.run(feeds) // warm-up: allocations, kernel choices
    // The fastest of 10: the servable loads while others do, and waiting for the event loop only adds.
    let best = Infinity
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now()
      await session.run(feeds)
      best = Math.min(best, performance.now() - t0)
    }
    return best
  } catch {
    return null
  } finally {
    await session.release()
  }
}

/** Probes run one at a time: servables load together, and two probes would time each other. */
let probing: Promise<unknown> = Promise.resolve()

/** The isolation `auto` gives `servable` on `device` (see the file comment for the rule). */
export function chooseIsolation(servable: ValidServable, device: DevicePlan): Promise<IsolationChoice> {
  const next = probing.then(() => decide(servable, device))
  probing = next.catch(() => undefined)
  return next
}

async function decide(servable: ValidServable, device: DevicePlan): Promise<IsolationChoice> {
  if (servable.llm) return { isolation: 'process', reason: 'an LLM: the engine loop runs off the listeners' }
  if (device.deviceType !== 'cpu') return { isolation: 'process', reason: `device ${device.deviceType}` }
  if (servable.models.some((m) => m.stages)) return { isolation: 'process', reason: 'a model in pipeline stages: its stages run in their own process' }
  let bytes = 0
  for (const m of servable.models) { try { bytes += statSync(m.path).size } catch { /* the replica's load reports it */ } }
  if (bytes > AUTO_PROBE_MAX_BYTES) return { isolation: 'process', reason: `models of ${Math.round(bytes / 2 ** 20)} MiB, not probed` }
  let total = 0
  for (const m of servable.models) {
    let ms: number | null
    try { ms = await probeModel(m, device) } catch { ms = null }
    if (ms === null) return { isolation: 'process', reason: `model ${m.file} could not be timed with zero inputs` }
    total += ms
  }
  return byRunTime(total)
}

/** The probe's part of the rule: inline / thread / process by the run time at the largest batch. */
export function byRunTime(ms: number): IsolationChoice {
  const probeMs = Math.round(ms * 1000) / 1000
  const at = `${probeMs} ms a run at the largest batch`
  if (ms <= INLINE_MAX_MS) return { isolation: 'inline', reason: `${at} (<= ${INLINE_MAX_MS} ms)`, probeMs }
  if (ms <= THREAD_MAX_MS) return { isolation: 'thread', reason: `${at} (<= ${THREAD_MAX_MS} ms)`, probeMs }
  return { isolation: 'process', reason: `${at} (> ${THREAD_MAX_MS} ms)`, probeMs }
}
