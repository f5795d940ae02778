/**
 * The onnxruntime session options of a model replica (declareModel's `session` over the device
 * plan), in one place: the replica itself, `--isolation auto`'s probe and the bench's raw baseline
 * time the same sessions.
 */
import type ort from 'onnxruntime-node'
import type { ValidModel } from '../config/validate.ts'
import type { DevicePlan } from './devices.ts'

export function modelSessionOptions(m: ValidModel, device: Pick<DevicePlan, 'deviceType' | 'intraOpThreads' | 'executionProviders'>): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: device.executionProviders as ort.InferenceSession.ExecutionProviderConfig[],
    intraOpNumThreads: m.session.intraOpThreads ?? device.intraOpThreads,
    interOpNumThreads: m.session.interOpThreads ?? 1,
    graphOptimizationLevel: m.session.graphOptimizationLevel,
    executionMode: m.session.executionMode,
    // ORT flattens nested keys with '.', so the user's 'session.x.y' keys pass through as written.
    // On CPU, intra-op threads do not spin by default: a spinning replica holds its cores
    // between runs and starves the listeners and the other replicas on the same cores.
    extra: { ...(device.deviceType === 'cpu' ? { 'session.intra_op.allow_spinning': '0' } : {}), ...m.session.extra } as never,
  }
}
