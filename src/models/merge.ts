/**
 * Joins pipeline stage files (as `ms-serve split` writes them, or a user's own) back into one
 * graph: the inverse of split.ts. The LLM engine uses it for a decoder given as stage files
 * (`declareLlm({ stages: ['stage1.onnx', 'stage2.onnx'] })`): the joined graph gets the same KV
 * rewrite as a whole decoder and is split again at layer boundaries, so pre-split files and a
 * whole file serve the same way.
 *
 * The stages must chain: every input of a stage is a graph input (the decoder's input_ids, masks,
 * positions, its layers' past) or an output of an earlier stage of the same element type, every
 * stage but the last feeds a later one, and no tensor is made by two stages. Initializers shared
 * by stages (split.ts copies them into each) are kept once; external-data references stay as they
 * are (relative to the stage files' folder, which must be the same for all).
 */
import type { onnx as O } from 'onnx-proto'
import { onnx } from './onnx-builder.ts'
import { ServeError } from '../errors.ts'

export interface StageFile { name: string; bytes: Uint8Array }

const elemType = (vi: O.IValueInfoProto): number => Number(vi.type?.tensorType?.elemType ?? 0)

export function mergeStages(stages: readonly StageFile[]): Uint8Array {
  if (stages.length < 2) throw new ServeError('CONFIG_INVALID', `stage files: need at least 2 to join (got ${stages.length})`)
  const models = stages.map((s) => {
    try { return onnx.ModelProto.decode(s.bytes) } catch (e) {
      throw new ServeError('CONFIG_INVALID', `stage file ${s.name} is not an ONNX model: ${(e as Error).message}`)
    }
  })
  const made = new Map<string, { stage: number; vi?: O.IValueInfoProto }>()
  const inputs: O.IValueInfoProto[] = []
  const inputNames = new Set<string>()
  const nodes: O.INodeProto[] = []
  const inits = new Map<string, O.ITensorProto>()
  const valueInfo = new Map<string, O.IValueInfoProto>()
  const opsets = new Map<string, number>()
  const fed = stages.map(() => false)
  let irVersion = 0
  models.forEach((m, k) => {
    const g = m.graph
    const file = stages[k]!.name
    if (!g) throw new ServeError('CONFIG_INVALID', `stage file ${file} has no graph`)
    irVersion = Math.max(irVersion, Number(m.irVersion ?? 0))
    for (const o of m.opsetImport ?? []) opsets.set(o.domain ?? '', Math.max(opsets.get(o.domain ?? '') ?? 0, Number(o.version ?? 0)))
    const local = new Set([...(g.initializer ?? []).map((t) => t.name ?? ''), ...(g.node ?? []).flatMap((n) => n.output ?? [])])
    for (const i of g.input ?? []) {
      const name = i.name ?? ''
      if (local.has(name)) continue
      const src = made.get(name)
      if (src) {
        if (src.vi && elemType(src.vi) && elemType(i) && elemType(src.vi) !== elemType(i)) {
          throw new ServeError('CONFIG_INVALID', `stage files do not chain: ${file} reads ${name} as element type ${elemType(i)} but ${stages[src.stage]!.name} makes it as ${elemType(src.vi)}`)
        }
        fed[src.stage] = true
        continue
      }
      if (!inputNames.has(name)) { inputNames.add(name); inputs.push(i) }
    }
    for (const t of g.initializer ?? []) {
      const name = t.name ?? ''
      const had = inits.get(name)
      if (had && (had.dims ?? []).join(',') !== (t.dims ?? []).join(',')) {
        throw new ServeError('CONFIG_INVALID', `stage files do not chain: initializer ${name} has shape [${(t.dims ?? []).join(', ')}] in ${file} and [${(had.dims ?? []).join(', ')}] in an earlier stage`)
      }
      if (!had) inits.set(name, t)
    }
    for (const n of g.node ?? []) {
      for (const o of n.output ?? []) {
        if (!o) continue
        const prev = made.get(o)
        if (prev && prev.stage !== k) throw new ServeError('CONFIG_INVALID', `stage files do not chain: ${o} is made by both ${stages[prev.stage]!.name} and ${file}`)
        made.set(o, { stage: k })
      }
      nodes.push(n)
    }
    for (const o of g.output ?? []) {
      const e = made.get(o.name ?? '')
      if (e) e.vi = o
      else if (!inputNames.has(o.name ?? '') && !inits.has(o.name ?? '')) throw new ServeError('CONFIG_INVALID', `stage file ${file}: output ${o.name} is made by no node`)
    }
    for (const v of g.valueInfo ?? []) if (!valueInfo.has(v.name ?? '')) valueInfo.set(v.name ?? '', v)
  })
  const unfed = fed.slice(0, -1).findIndex((f) => !f)
  if (unfed >= 0) throw new ServeError('CONFIG_INVALID', `stage files do not chain: ${stages[unfed]!.name} feeds no later stage (are they in order? ${stages.map((s) => s.name).join(', ')})`)
  // Outputs: what the stages output that no later stage reads (the decoder's logits and presents).
  const read = new Set(models.flatMap((m) => (m.graph?.input ?? []).map((i) => i.name ?? '')))
  const outputs = models.flatMap((m) => (m.graph?.output ?? []).filter((o) => !read.has(o.name ?? '')))
  const graph = onnx.GraphProto.create({
    name: models[0]!.graph?.name || 'joined',
    node: nodes as O.NodeProto[],
    initializer: [...inits.values()] as O.TensorProto[],
    input: inputs as O.ValueInfoProto[],
    output: outputs as O.ValueInfoProto[],
    valueInfo: [...valueInfo.values()].filter((v) => !inputNames.has(v.name ?? '')) as O.ValueInfoProto[],
  })
  const model = onnx.ModelProto.create({
    irVersion,
    producerName: models[0]!.producerName ?? '',
    opsetImport: [...opsets].map(([domain, version]) => onnx.OperatorSetIdProto.create({ domain, version })),
    graph,
  })
  return onnx.ModelProto.encode(model).finish()
}
