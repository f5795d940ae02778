/**
 * Runs a method's stages for a group of instances inside a replica. Each instance keeps its own
 * value table (placeholder id -> value); an instance that fails leaves the group with its error,
 * the others go on (MindSpore's per-instance errors).
 */
import { ServeError } from '../errors.ts'
import type { BatchStageFn, InstanceStageFn, ServableDefinition } from '../config/define.ts'
import { fail, type ValidMethod, type ValidServable } from '../config/validate.ts'
import { Tensor, type Value } from '../tensor.ts'
import { isInvalidInputError } from '../stage-errors.ts'
import type { ModelRunner } from './model-runner.ts'

type StageFn = InstanceStageFn | BatchStageFn

export interface PreparedMethod {
  method: ValidMethod
  fns: Array<StageFn | undefined>
  /** Instances per call of a batched function stage with batchSize 0. */
  groupSize: number
}

/** Pairs each validated method with its stage functions from the re-imported config. */
export function prepareMethods(servable: ValidServable, def: ServableDefinition, runners: ModelRunner[]): Map<string, PreparedMethod> {
  const out = new Map<string, PreparedMethod>()
  for (const m of servable.methods) {
    const decl = def.methods.find((d) => d.name === m.name)
    if (!decl || decl.stages.length !== m.stages.length) throw new ServeError('CONFIG_INVALID', `${servable.configFile}: method "${m.name}" changed between loads; the config must register the same methods every time it is imported`)
    const sizes = m.models.map((i) => runners[i]!.info.maxBatchSize)
    m.stages.forEach((st, k) => {
      if (st.kind !== 'model') return
      const r = runners[st.model!]!
      const where = `method "${m.name}" stage ${k + 1} (model ${r.model.file})`
      if (st.args.length !== r.numInputs) fail(servable.configFile, st.site, `${where} passes ${st.args.length} argument(s) but the model has ${r.numInputs} input(s): [${r.info.inputs.map((x) => x.name).join(', ')}]. Pass one placeholder per model input, in order`)
      if (st.outputs.length !== r.numOutputs) fail(servable.configFile, st.site, `${where} takes ${st.outputs.length} output(s) but the model has ${r.numOutputs}: [${r.info.outputs.map((x) => x.name).join(', ')}]. Use addStage(model, args, { outputs: ${r.numOutputs} })`)
    })
    out.set(m.name, { method: m, fns: decl.stages.map((s) => s.fn), groupSize: sizes.length ? Math.min(...sizes) : 32 })
  }
  return out
}

function stageError(tag: string, method: string, k: number, e: unknown): ServeError {
  const msg = e instanceof Error ? e.message : String(e)
  // The stage says the client sent a bad value: 400 / INVALID_ARGUMENT, MindSpore's text otherwise unchanged.
  return new ServeError(isInvalidInputError(e) ? 'INVALID_REQUEST' : 'STAGE_FAILED', `Call ${tag} Failed, method: '${method}', stage index(begin with 1): ${k}, error msg: ${msg}`)
}

function asOutputs(v: unknown, n: number, tag: string): Value[] {
  const out = n === 1 ? [Array.isArray(v) && v.length === 1 ? v[0] : v] : v
  if (!Array.isArray(out) || out.length !== n) throw new Error(`stage ${tag} must return ${n} values (got ${Array.isArray(v) ? v.length : typeof v})`)
  // Checked here so a bad value fails this stage with its name, not later as an IPC or model error.
  out.forEach((x, i) => {
    if (!(x instanceof Tensor) && typeof x !== 'string' && !(x instanceof Uint8Array)) {
      throw new Error(`stage ${tag} returned ${x === null ? 'null' : Array.isArray(x) ? 'an array' : typeof x} for output ${i}; return a Tensor (e.g. tensor('float32', [], [x])), a string or a Uint8Array`)
    }
  })
  return out as Value[]
}

/** Runs `pm` for `instances`; returns per instance the outputs (by name) or the error. */
export async function runMethod(pm: PreparedMethod, runners: ModelRunner[], instances: Record<string, Value>[]): Promise<Array<Record<string, Value> | ServeError>> {
  const m = pm.method
  const tables = instances.map((inst) => {
    const t = new Map<number, Value>()
    m.inputs.forEach((name, i) => t.set(m.inputRefs[i]!, inst[name]!))
    return t
  })
  const errors: Array<ServeError | null> = instances.map(() => null)
  for (let k = 0; k < m.stages.length; k++) {
    const st = m.stages[k]!
    const live = tables.map((_, i) => i).filter((i) => errors[i] === null)
    if (live.length === 0) break
    if (st.kind === 'model') {
      const runner = runners[st.model!]!
      const rows: Value[][] = []
      const who: number[] = []
      for (const i of live) {
        const row = st.args.map((id) => tables[i]!.get(id)!)
        // Request inputs of the leading model stages were checked in the listener already
        // (valid-predict.ts, same texts); this check is the only one for what user stages produce.
        const bad = row.map((v, j) => runner.checkRow(j, v)).find((x) => x !== null)
        if (bad) errors[i] = new ServeError('INVALID_REQUEST', bad)
        else { rows.push(row); who.push(i) }
      }
      if (rows.length === 0) continue
      const res = await runner.submit(rows)
      res.forEach((r, j) => {
        const i = who[j]!
        if (r instanceof ServeError) errors[i] = r
        else st.outputs.forEach((id, o) => tables[i]!.set(id, r[o]!))
      })
      continue
    }
    const fn = pm.fns[k]!
    if (st.batchSize === undefined) {
      await Promise.all(live.map(async (i) => {
        try {
          const v = await (fn as InstanceStageFn)(...st.args.map((id) => tables[i]!.get(id)!))
          asOutputs(v, st.outputs.length, st.tag).forEach((val, o) => tables[i]!.set(st.outputs[o]!, val))
        } catch (e) {
          errors[i] = stageError(st.tag, m.name, k + 1, e)
        }
      }))
      continue
    }
    const size = st.batchSize === 0 ? pm.groupSize : st.batchSize
    for (let off = 0; off < live.length; off += size) {
      const chunk = live.slice(off, off + size)
      try {
        const res = await (fn as BatchStageFn)(chunk.map((i) => st.args.map((id) => tables[i]!.get(id)!)))
        if (!Array.isArray(res) || res.length !== chunk.length) throw new Error(`batched stage ${st.tag} must return one result per instance (${chunk.length}), got ${Array.isArray(res) ? res.length : typeof res}`)
        chunk.forEach((i, j) => asOutputs(res[j], st.outputs.length, st.tag).forEach((val, o) => tables[i]!.set(st.outputs[o]!, val)))
      } catch (e) {
        for (const i of chunk) errors[i] = stageError(st.tag, m.name, k + 1, e)
      }
    }
  }
  return tables.map((t, i) => {
    if (errors[i]) return errors[i]!
    const out: Record<string, Value> = {}
    m.outputs.forEach((name, o) => { out[name] = t.get(m.outputRefs[o]!)! })
    return out
  })
}

