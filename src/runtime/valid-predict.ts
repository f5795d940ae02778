/**
 * A predict request is checked once, in the listener, against its servable's signature, and comes
 * out as a ValidPredict; the batching loop (LiveServable.predict) accepts only its ValidInstances.
 * Whole-request faults throw ServeError with MindSpore's texts (method unknown, no instances, an
 * input missing). A direct model input of the wrong dtype or shape refuses just its instance, with
 * the replica's own text (input-check.ts), as MindSpore reports it per instance. The instance-count
 * limit is enforced earlier, while the body is read (protocol/body-parse.ts).
 *
 * The per-method tables are built once per loaded servable version, from the models its first
 * ready replica reported; a request then costs a few property reads per checked input.
 */
import { factError, ServeError } from '../errors.ts'
import type { ValidMethod, ValidServable } from '../config/validate.ts'
import type { Value } from '../tensor.ts'
import type { ModelInfo } from './messages.ts'
import { checkModelInput, inputSpecs, type InputSpec } from './input-check.ts'
import type { InstanceOutcome } from './predict-outcome.ts'

declare const VALID: unique symbol

/** Instances that passed validatePredict for their method; nothing else makes one. */
export type ValidInstances = readonly Record<string, Value>[] & { readonly [VALID]: true }

/** A predict request checked against its servable's signature. */
export interface ValidPredict {
  readonly method: ValidMethod
  /** The instances to run, in request order: the request's own array when none was refused. */
  readonly instances: ValidInstances
  /**
   * null when every instance passed. Else one entry per request instance: the error that refused
   * it, or undefined for an instance that is in `instances`.
   */
  readonly refused: readonly (ServeError | undefined)[] | null
}

/** A method input fed as it is to model input `input` (the arg index of its model stage). */
interface DirectFeed { readonly name: string; readonly input: number; readonly spec: InputSpec }

interface MethodSignature { readonly method: ValidMethod; readonly feeds: readonly DirectFeed[] }

/** What validatePredict checks a servable version's requests against (built by predictSignature). */
export interface PredictSignature {
  readonly servable: string
  readonly methods: ReadonlyMap<string, MethodSignature>
}

/**
 * The checker tables of one servable version: per method its inputs and the direct feeds, with the
 * input specs of `models` (ModelInfo by model index, as a ready replica reports them).
 */
export function predictSignature(servable: ValidServable, models: readonly ModelInfo[]): PredictSignature {
  const methods = new Map<string, MethodSignature>()
  for (const m of servable.methods) methods.set(m.name, { method: m, feeds: directFeeds(servable, m, models) })
  return { servable: servable.name, methods }
}

/**
 * The method inputs the replica would check first, in its order: the args of the leading model
 * stages, up to the first arg that is not a method input or the first function stage. Past that
 * point an instance may fail first in the replica with another text (a stage's, or a check of a
 * stage output), so those inputs are left to the replica's checks.
 */
function directFeeds(servable: ValidServable, m: ValidMethod, models: readonly ModelInfo[]): DirectFeed[] {
  const names = new Map<number, string>()
  m.inputRefs.forEach((ref, i) => names.set(ref, m.inputs[i]!))
  const feeds: DirectFeed[] = []
  for (const st of m.stages) {
    const info = st.kind === 'model' ? models[st.model!] : undefined
    if (info === undefined) return feeds
    const specs = inputSpecs(servable.models[st.model!]!, info.inputs)
    for (let j = 0; j < st.args.length; j++) {
      const name = names.get(st.args[j]!)
      if (name === undefined || j >= specs.length) return feeds
      feeds.push({ name, input: j, spec: specs[j]! })
    }
  }
  return feeds
}

/**
 * Checks a request for method `method` of the servable `sig` describes. Throws ServeError for a
 * whole-request fault; refuses single instances whose direct model inputs do not fit (`refused`).
 */
export function validatePredict(
  sig: PredictSignature,
  method: string,
  instances: readonly Record<string, Value>[],
): ValidPredict {
  const ms = sig.methods.get(method)
  const servable = sig.servable
  if (ms === undefined) {
    throw factError('SERVABLE_NOT_FOUND', `servable ${servable} has no method ${method}`, { reason: 'method_unavailable', servable, method })
  }
  const n = instances.length
  if (n === 0) {
    throw factError('INVALID_REQUEST', `a request to servable ${servable} method ${method} has no instances`, { reason: 'no_instances', servable, method })
  }
  const inputs = ms.method.inputs
  for (let i = 0; i < n; i++) {
    const inst = instances[i]!
    for (let k = 0; k < inputs.length; k++) {
      const name = inputs[k]!
      if (inst[name] !== undefined) continue
      throw factError('INVALID_REQUEST', `an instance lacks input ${name} of servable ${servable} method ${method}`, { reason: 'input_missing', servable, method, input: name })
    }
  }
  const feeds = ms.feeds
  let refused: (ServeError | undefined)[] | null = null
  if (feeds.length > 0) {
    for (let i = 0; i < n; i++) {
      const inst = instances[i]!
      for (let f = 0; f < feeds.length; f++) {
        const feed = feeds[f]!
        const bad = checkModelInput(feed.input, feed.spec, inst[feed.name]!)
        if (bad === null) continue
        ;(refused ??= new Array<ServeError | undefined>(n).fill(undefined))[i] = new ServeError('INVALID_REQUEST', bad)
        break
      }
    }
  }
  if (refused === null) return { method: ms.method, instances: instances as ValidInstances, refused: null }
  const kept = refused
  const run: readonly Record<string, Value>[] = instances.filter((_, i) => kept[i] === undefined)
  return { method: ms.method, instances: run as ValidInstances, refused }
}

/** The request's outcomes in order: the refused instances' errors among the outcomes of those that ran. */
export function withRefused(valid: ValidPredict, ran: InstanceOutcome[]): InstanceOutcome[] {
  const refused = valid.refused
  if (refused === null) return ran
  const out = new Array<InstanceOutcome>(refused.length)
  let next = 0
  for (let i = 0; i < refused.length; i++) {
    const e = refused[i]
    out[i] = e === undefined ? ran[next++]! : { error: e }
  }
  return out
}
