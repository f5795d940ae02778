/**
 * The predict handler both MindSpore listeners use: the registry's predict, which validates the
 * request in the listener and answers one PredictOutcome (runtime/predict-outcome.ts) that the
 * REST renderer (rest/ms-render.ts) and the gRPC codec (grpc/ms-codec.ts) both render.
 */
import type { ServableRegistry, PredictCall } from '../runtime/registry.ts'
import type { PredictOutcome } from '../runtime/predict-outcome.ts'

/** A handler for protocol layers; it never rejects, whole-request errors are `{ error }`. */
export function predictForProtocol(registry: ServableRegistry): (call: PredictCall) => Promise<PredictOutcome> {
  return (call) => registry.predict(call)
}
