/** Adapts the registry's predict to the result shape both MindSpore codecs render. */
import { toServeError } from '../errors.ts'
import type { ServableRegistry, PredictCall } from '../runtime/registry.ts'
import type { InstanceOutcome } from '../runtime/live-servable.ts'
import type { ServeError } from '../errors.ts'
import type { Value } from '../tensor.ts'

export type PredictResult =
  | { instances: Array<{ outputs: Record<string, Value> } | { error: { code: string; message: string; msStatus: number } }> }
  | { error: { code: string; message: string; msStatus: number } }

function errShape(e: ServeError) {
  return { code: e.code, message: e.message, msStatus: e.msStatus }
}

export function toPredictResult(out: InstanceOutcome[]): PredictResult {
  return { instances: out.map((o) => ('error' in o ? { error: errShape(o.error) } : o)) }
}

/** A handler for protocol layers: never throws, whole-request errors become `{ error }`. */
export function predictForProtocol(registry: ServableRegistry): (call: PredictCall) => Promise<PredictResult> {
  return async (call) => {
    try {
      return toPredictResult(await registry.predict(call))
    } catch (e) {
      return { error: errShape(toServeError(e)) }
    }
  }
}
