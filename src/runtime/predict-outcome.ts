/**
 * The one result type of a predict, from the registry to both MindSpore codecs (REST ms-render.ts,
 * gRPC ms-codec.ts), and the one place of MindSpore's collapse rule (spec §1.4): when every
 * instance failed with the same error, the whole request fails with it. Renderers never re-apply it.
 * (Replicas answer in the IPC form, wire.ts WireResult; live-servable.ts turns it into these.)
 */
import type { ServeError } from '../errors.ts'
import type { Value } from '../tensor.ts'

/**
 * One request instance's result. The error is a ServeError on the server; the gRPC client, which
 * reads only what the wire carries, fills in `{ msStatus, message }` instead.
 */
export type InstanceOutcome<E = ServeError, T = { outputs: Record<string, Value> }> = T | { error: E }

/** A predict's answer: a whole-request error, or one outcome per request instance, in request order. */
export type PredictOutcome<E = ServeError, T = { outputs: Record<string, Value> }> = { error: E } | { instances: InstanceOutcome<E, T>[] }

/** What the collapse rule compares: the code (it decides every protocol's status) and the text. */
interface Comparable { code: string; message: string }

/**
 * Per-instance outcomes -> the request's outcome: every instance failed with the same code and
 * message -> that error for the whole request (a single failed instance included); else as they are.
 * `T` is the success shape: predict outputs, or a MindSpore `:generate` instance's text.
 */
export function collapseOutcomes<E extends Comparable, T extends object = { outputs: Record<string, Value> }>(outcomes: InstanceOutcome<E, T>[]): PredictOutcome<E, T> {
  const first = outcomes[0]
  if (first === undefined || !('error' in first)) return { instances: outcomes }
  const { code, message } = first.error
  for (let i = 1; i < outcomes.length; i++) {
    const o = outcomes[i]!
    if (!('error' in o) || o.error.code !== code || o.error.message !== message) return { instances: outcomes }
  }
  return { error: first.error }
}
