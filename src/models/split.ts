/**
 * Splits one ONNX model into pipeline stages that chain: stage k's outputs include every tensor a
 * later stage reads from it, stage k+1's inputs are those tensors plus the graph inputs it needs.
 * The split is by node sets, so any graph splits and the chain computes exactly what the whole
 * model does:
 *
 * - at tensor names (`at`): stage k is everything needed to compute boundary k's tensors (their
 *   ancestors) not in an earlier stage; the last stage is the rest;
 * - evenly (`stages: N`): for a decoder with `present.{i}.key/value` outputs (HF optimum's I/O),
 *   at transformer-layer boundaries, so each layer's attention and its `past_key_values.{i}` /
 *   `present.{i}` stay in one stage (which then keeps that layer's KV cache); for other graphs,
 *   at the node position nearest an even share of the nodes where the fewest tensors cross.
 *
 * Crossing tensors get their types and shapes from onnxruntime (a session of the whole model with
 * them as extra outputs: ORT infers untyped outputs' metadata), so no shape inference is needed
 * here. Initializers go to every stage that reads them. Subgraph nodes (If/Loop/Scan) count their
 * outer-scope reads as inputs. Initializers kept in an external data file stay references to it
 * (no weight is read here): a stage decoded in the model's folder (`externalDataFolder`) finds
 * them there, and `ms-serve split` repacks each stage's own into its data file
 * (external-data.ts `repackExternalData`).
 */
import type { onnx as O } from 'onnx-proto'
import { onnx } from './onnx-builder.ts'
import { usesExternalData } from './external-data.ts'
import { ServeError } from '../errors.ts'

export interface SplitOptions {
  /** Cut tensor names, one list per boundary (N-1 lists for N stages). */
  at?: string[][]
  /** Number of stages, split evenly (layers for decoders). */
  stages?: number
  /** The folder an external-data model's `location`s are relative to (its own folder). */
  externalDataFolder?: string
}

export interface SplitStage {
  bytes: Uint8Array
  /** Some of its initializers reference an external data file (of the whole model). */
  externalData: boolean
  inputs: string[]
  outputs: string[]
  nodes: number
}

export interface SplitResult {
  stages: SplitStage[]
  /** Per boundary, the tensors that cross it (activations passed from earlier stages). */
  crossings: string[][]
  /** How the boundaries were chosen, for the CLI's report. */
  method: 'tensors' | 'layers' | 'nodes'
}

/** Reads the metadata (dtype, dims) of extra outputs `names` of `model` from an ORT session. */
export type OutputTyper = (model: Uint8Array, names: string[], externalDataFolder?: string) => Promise<Map<string, { type: string; shape: (number | string)[] }>>

const bad = (msg: string) => new ServeError('INVALID_REQUEST', msg)

/** Every tensor a node reads, including outer-scope names its subgraphs read. */
function nodeReads(n: O.INodeProto): string[] {
  const out = (n.input ?? []).filter((x) => x !== '')
  for (const a of n.attribute ?? []) {
    const graphs = [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]
    for (const g of graphs) out.push(...outerReads(g as O.IGraphProto))
  }
  return out
}

/** Names a subgraph reads that it does not define (its own inputs, initializers, node outputs). */
function outerReads(g: O.IGraphProto): string[] {
  const local = new Set<string>([...(g.input ?? []).map((x) => x.name ?? ''), ...(g.initializer ?? []).map((x) => x.name ?? '')])
  const reads: string[] = []
  for (const n of g.node ?? []) {
    for (const r of nodeReads(n)) if (!local.has(r)) reads.push(r)
    for (const o of n.output ?? []) local.add(o)
  }
  return reads
}

interface GraphIndex {
  nodes: O.INodeProto[]
  reads: string[][]
  producer: Map<string, number>
  inits: Map<string, O.ITensorProto>
  inputs: Set<string>
  outputs: string[]
}

function indexOf(graph: O.IGraphProto): GraphIndex {
  const nodes = graph.node ?? []
  const producer = new Map<string, number>()
  nodes.forEach((n, i) => { for (const o of n.output ?? []) if (o) producer.set(o, i) })
  return {
    nodes,
    reads: nodes.map(nodeReads),
    producer,
    inits: new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t])),
    inputs: new Set((graph.input ?? []).map((x) => x.name ?? '')),
    outputs: (graph.output ?? []).map((x) => x.name ?? ''),
  }
}

/** Node indices needed to compute `targets`, not already assigned. */
function ancestors(ix: GraphIndex, targets: string[], assigned: Int32Array): Set<number> {
  const out = new Set<number>()
  const stack: number[] = []
  for (const t of targets) {
    const p = ix.producer.get(t)
    if (p !== undefined && assigned[p] < 0) stack.push(p)
  }
  while (stack.length) {
    const i = stack.pop()!
    if (out.has(i)) continue
    out.add(i)
    for (const r of ix.reads[i]!) {
      const p = ix.producer.get(r)
      if (p !== undefined && assigned[p] < 0 && !out.has(p)) stack.push(p)
    }
  }
  return out
}

/** Stage of each node for cut tensor lists (-1 never remains: the last stage takes the rest). */
function assignByTensors(ix: GraphIndex, at: string[][]): Int32Array {
  const assigned = new Int32Array(ix.nodes.length).fill(-1)
  at.forEach((cut, k) => {
    if (cut.length === 0) throw bad(`split boundary ${k + 1} names no tensor`)
    for (const t of cut) {
      if (ix.producer.has(t)) continue
      if (ix.inputs.has(t)) throw bad(`split point ${t} is a graph input: a boundary must be a tensor computed inside the model`)
      if (ix.inits.has(t)) throw bad(`split point ${t} is an initializer (a weight): a boundary must be a tensor computed inside the model`)
      throw bad(`split point ${t} is not a tensor of the model (no node outputs it); see the names with \`ms-serve split MODEL --list\``)
    }
    const set = ancestors(ix, cut, assigned)
    if (set.size === 0) throw bad(`split boundary ${k + 1} (${cut.join(', ')}) adds no node: its tensors are computed in an earlier stage; list boundaries in model order`)
    for (const i of set) assigned[i] = k
  })
  for (let i = 0; i < assigned.length; i++) if (assigned[i]! < 0) assigned[i] = at.length
  return assigned
}

/** A layer's KV output: optimum's `present.{i}.*`, or `present_new.{i}.*` after the engine's load-time rewrite. */
const PRESENT_RE = /^present(?:_new)?\.(\d+)\.(key|value)$/

/** Decoder layers from `present.{i}.*` outputs: their count, or 0 for other graphs. */
function decoderLayers(ix: GraphIndex): number {
  let n = 0
  for (const o of ix.outputs) { const m = PRESENT_RE.exec(o); if (m) n = Math.max(n, Number(m[1]) + 1) }
  return n
}

/** Tensors produced before position p (in node order) and read at or after it (not weights or graph inputs). */
function crossingAt(ix: GraphIndex, p: number): number {
  const live = new Set<string>()
  for (let i = p; i < ix.nodes.length; i++) for (const r of ix.reads[i]!) { const q = ix.producer.get(r); if (q !== undefined && q < p) live.add(r) }
  return live.size
}

/** Ops onnxruntime fuses with what follows them (a bias Add, an activation): a cut right after one costs the fusion. */
const FUSES_FORWARD = new Set(['MatMul', 'Conv', 'ConvTranspose', 'Gemm', 'MatMulInteger', 'MatMulNBits', 'FusedMatMul'])
const ACTIVATIONS = new Set(['Relu', 'Gelu', 'Sigmoid', 'Tanh', 'LeakyRelu', 'HardSigmoid', 'Clip', 'Softplus', 'Elu', 'Selu', 'Swish', 'FastGelu', 'BiasGelu'])

/** 0 for a cut after an activation or a plain op; more where the cut splits a fusable pair (MatMul|Add, Add|Relu). */
function fusionPenalty(ix: GraphIndex, p: number): number {
  const before = ix.nodes[p - 1]
  const after = ix.nodes[p]
  if (!before || !after) return 0
  if (FUSES_FORWARD.has(before.opType ?? '')) return 2
  if (before.opType === 'Add' && ACTIVATIONS.has(after.opType ?? '')) return 1
  return 0
}

/** Even node-count boundaries, each moved to the nearby position where the fewest tensors cross. */
function assignByNodes(ix: GraphIndex, stages: number): Int32Array {
  const n = ix.nodes.length
  if (n < stages) throw bad(`the model has ${n} nodes, fewer than the ${stages} stages asked for`)
  const cuts: number[] = []
  for (let k = 1; k < stages; k++) {
    const target = Math.round((n * k) / stages)
    const lo = Math.max((cuts.at(-1) ?? 0) + 1, target - Math.ceil(n / (4 * stages)))
    const hi = Math.min(n - (stages - k), target + Math.ceil(n / (4 * stages)))
    let best = lo
    let bestCost = Infinity
    for (let p = lo; p <= hi; p++) {
      const cost = (crossingAt(ix, p) * 4 + fusionPenalty(ix, p)) * n + Math.abs(p - target)
      if (cost < bestCost) { bestCost = cost; best = p }
    }
    cuts.push(best)
  }
  const assigned = new Int32Array(n)
  let k = 0
  for (let i = 0; i < n; i++) { while (k < cuts.length && i >= cuts[k]!) k++; assigned[i] = k }
  return assigned
}

/**
 * Boundaries between decoder layers: the cut before layer b lies after every node that touches
 * layer b-1's KV (reads past_key_values.{b-1}, makes or reads present.{b-1}: its attention) and
 * no later than the first node that touches layer b's; within that window, where the fewest
 * tensors cross, which is between the layers (the residual stream, plus values every layer reads
 * such as the rotary tables and the mask), not inside a norm or an MLP.
 */
function assignByLayers(ix: GraphIndex, layers: number, stages: number): Int32Array {
  const n = ix.nodes.length
  if (ix.nodes.some((x) => x.opType === 'If') && !ix.nodes.some((x) => (x.output ?? []).some((o) => PRESENT_RE.test(o) && x.opType !== 'If'))) {
    throw bad('a merged decoder (decoder_model_merged.onnx: the layers are inside one If node) cannot be split by layers; split decoder_with_past_model.onnx')
  }
  const kv = (l: number) => new Set([`past_key_values.${l}.key`, `past_key_values.${l}.value`, `present.${l}.key`, `present.${l}.value`, `present_new.${l}.key`, `present_new.${l}.value`])
  // Sinks (nodes whose outputs only leave the graph, e.g. the engine's rewrite appends the Slices
  // making present_new.* at the end) do not place the cut; each goes with what it reads.
  const read = new Set(ix.reads.flat())
  const sink = ix.nodes.map((x) => (x.output ?? []).every((o) => !read.has(o)))
  const touches = (i: number, names: Set<string>) => !sink[i] && (ix.reads[i]!.some((r) => names.has(r)) || (ix.nodes[i]!.output ?? []).some((o) => names.has(o)))
  const cuts: number[] = []
  for (let k = 1; k < stages; k++) {
    const b = Math.round((layers * k) / stages)
    const prev = kv(b - 1)
    const next = kv(b)
    let lo = 0
    let hi = n
    for (let i = 0; i < n; i++) {
      if (touches(i, prev)) lo = i + 1
      if (hi === n && touches(i, next)) hi = i
    }
    if (lo > hi) throw bad(`the decoder's nodes are not in layer order around layer ${b} (layer ${b - 1}'s KV is used at node ${lo - 1}, after layer ${b}'s at node ${hi}); give the split tensors with --at`)
    let best = hi
    let bestCost = Infinity
    for (let p = Math.max(lo, (cuts.at(-1) ?? 0) + 1); p <= hi; p++) {
      // Ties go to the later position: after layer b-1's MLP rather than after its attention.
      const c = crossingAt(ix, p)
      if (c <= bestCost) { bestCost = c; best = p }
    }
    cuts.push(best)
  }
  const assigned = new Int32Array(n)
  let k = 0
  for (let i = 0; i < n; i++) { while (k < cuts.length && i >= cuts[k]!) k++; assigned[i] = k }
  for (let i = 0; i < n; i++) {
    if (!sink[i]) continue
    let st = 0
    for (const r of ix.reads[i]!) { const q = ix.producer.get(r); if (q !== undefined) st = Math.max(st, assigned[q]!) }
    assigned[i] = st
  }
  return assigned
}

/** Plans the split: each node's stage and how it was chosen. */
export function planSplit(model: O.IModelProto, opts: SplitOptions): { assigned: Int32Array; method: SplitResult['method']; stages: number } {
  const ix = indexOf(model.graph!)
  if (opts.at && opts.at.length > 0) return { assigned: assignByTensors(ix, opts.at), method: 'tensors', stages: opts.at.length + 1 }
  const stages = opts.stages ?? 2
  if (!Number.isInteger(stages) || stages < 2) throw bad(`--stages must be an integer >= 2 (got ${stages})`)
  const layers = decoderLayers(ix)
  if (layers > 0) {
    if (layers < stages) throw bad(`the decoder has ${layers} layers, fewer than the ${stages} stages asked for`)
    return { assigned: assignByLayers(ix, layers, stages), method: 'layers', stages }
  }
  return { assigned: assignByNodes(ix, stages), method: 'nodes', stages }
}

/** Writes the stage models of a plan; `typeOf` gives the crossing tensors' metadata. */
export async function splitModel(bytes: Uint8Array, opts: SplitOptions, typeOf: OutputTyper): Promise<SplitResult> {
  const model = onnx.ModelProto.decode(bytes)
  const graph = model.graph!
  const external = usesExternalData(model)
  if (external && !opts.externalDataFolder) throw bad('the model keeps its weights in an external data file: say which folder it is in (externalDataFolder)')
  const { assigned, method, stages } = planSplit(model, opts)
  const ix = indexOf(graph)
  const stageOfTensor = new Map<string, number>()
  ix.nodes.forEach((n, i) => { for (const o of n.output ?? []) stageOfTensor.set(o, assigned[i]!) })
  const readsOf: Set<string>[] = Array.from({ length: stages }, () => new Set())
  ix.nodes.forEach((_, i) => { for (const r of ix.reads[i]!) readsOf[assigned[i]!]!.add(r) })
  const graphOutputs = new Set(ix.outputs)
  // What crosses into stage s: read there, made in an earlier stage.
  const crossIn = readsOf.map((reads, s) => [...reads].filter((r) => { const p = stageOfTensor.get(r); return p !== undefined && p < s }))
  const crossAll = [...new Set(crossIn.flat())]
  const types = crossAll.length ? await typeOf(bytes, crossAll, opts.externalDataFolder) : new Map<string, { type: string; shape: (number | string)[] }>()
  const vi = (name: string): O.IValueInfoProto => {
    const t = types.get(name)
    if (!t) throw bad(`cannot type tensor ${name} that crosses a stage boundary (onnxruntime did not report it)`)
    const elem = ELEM[t.type]
    if (elem === undefined) throw bad(`tensor ${name} crosses a stage boundary with type ${t.type}, which ms-serve cannot pass between stages`)
    return { name, type: { tensorType: { elemType: elem, shape: { dim: t.shape.map((d) => (typeof d === 'number' && d >= 0 ? { dimValue: d } : { dimParam: typeof d === 'string' && d ? d : undefined })) } } } }
  }
  const graphInputInfo = new Map((graph.input ?? []).map((x) => [x.name ?? '', x]))
  const graphOutputInfo = new Map((graph.output ?? []).map((x) => [x.name ?? '', x]))
  const out: SplitStage[] = []
  const crossings: string[][] = []
  for (let s = 0; s < stages; s++) {
    const nodes = ix.nodes.filter((_, i) => assigned[i] === s)
    if (nodes.length === 0) throw bad(`stage ${s + 1} would be empty; choose other split points`)
    const reads = readsOf[s]!
    const inputs = [...(graph.input ?? []).map((x) => x.name ?? '').filter((n) => reads.has(n)), ...crossIn[s]!]
    const laterReads = new Set<string>()
    for (let t = s + 1; t < stages; t++) for (const r of crossIn[t]!) if (stageOfTensor.get(r) === s) laterReads.add(r)
    const made = nodes.flatMap((n) => n.output ?? [])
    const outputs = [...ix.outputs.filter((o) => stageOfTensor.get(o) === s), ...made.filter((o) => laterReads.has(o) && !graphOutputs.has(o))]
    if (s > 0) crossings.push(crossIn[s]!)
    const stageGraph: O.IGraphProto = {
      name: `${graph.name ?? 'model'}_stage${s + 1}`,
      node: nodes,
      initializer: (graph.initializer ?? []).filter((t) => reads.has(t.name ?? '')),
      sparseInitializer: [],
      input: inputs.map((n) => graphInputInfo.get(n) ?? vi(n)),
      output: outputs.map((n) => graphOutputInfo.get(n) ?? vi(n)),
      valueInfo: (graph.valueInfo ?? []).filter((v) => made.includes(v.name ?? '') && !outputs.includes(v.name ?? '')),
    }
    const stageModel: O.IModelProto = { ...model, graph: stageGraph, metadataProps: [...(model.metadataProps ?? []), { key: 'ms_serve_stage', value: `${s + 1}/${stages}` }] }
    out.push({ bytes: onnx.ModelProto.encode(onnx.ModelProto.fromObject(stageModel)).finish(), externalData: external && usesExternalData(stageModel), inputs, outputs, nodes: nodes.length })
  }
  return { stages: out, crossings, method }
}

/** ORT tensor type -> ONNX elem type. */
const ELEM: Record<string, number> = {
  float32: onnx.TensorProto.DataType.FLOAT, float16: onnx.TensorProto.DataType.FLOAT16, float64: onnx.TensorProto.DataType.DOUBLE,
  int8: onnx.TensorProto.DataType.INT8, uint8: onnx.TensorProto.DataType.UINT8, int16: onnx.TensorProto.DataType.INT16, uint16: onnx.TensorProto.DataType.UINT16,
  int32: onnx.TensorProto.DataType.INT32, uint32: onnx.TensorProto.DataType.UINT32, int64: onnx.TensorProto.DataType.INT64, uint64: onnx.TensorProto.DataType.UINT64,
  bool: onnx.TensorProto.DataType.BOOL,
}
