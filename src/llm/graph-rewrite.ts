/**
 * Load-time rewrite of an optimum with-past decoder so a step's outputs are small:
 *
 *   present.{i}.key [B,KV,P+S,hd] --Slice(starts=-S, axis 2)--> present_new.{i}.key [B,KV,S,hd]
 *   logits [B,S,V]                --Slice(starts=-1, axis 1)--> logits [B,1,V]
 *
 * where S = shape(input_ids)[1]. The full `present.*` stays an internal value (attention needs
 * it), but onnxruntime no longer copies it into a fresh JS buffer every step, which the notes
 * measured as 60-70% of a batch-16 decode step. The engine keeps the cache itself (kv-cache.ts).
 * The rewrite is generic (no knowledge of the attention subgraph), so it also works on merged
 * (`If`) decoders whose presents are outputs of the If node: the Slices are appended to the main
 * graph after the If (S comes from the main graph's input_ids, so both branches are covered), and
 * the logits rename touches only main-graph nodes, i.e. the If's output. The branches' own values
 * named `logits`/`present.*` (optimum names branch outputs like the If's) are left alone: they are
 * local to their subgraph, and renaming them would need the branch output lists renamed too.
 * Tested on src/models/decoder.ts `merged: true` (test/unit/llm-merged.test.ts).
 *
 * External data (`model.onnx` + `model.onnx_data`, optimum's exports over 2 GB, torch dynamo's
 * always): the weight-less graph is rewritten and the initializers' `location`s are kept as they
 * are, relative to the model's folder. The engine creates the session from the rewritten bytes
 * with `externalDataFolderEntry(modelPath)`, so onnxruntime reads (memory-maps) the weights from
 * that folder, never from the server's working directory; nothing is inlined or copied.
 * Quantized graphs (com.microsoft MatMulNBits, QDQ, MatMulInteger) need nothing special: the
 * Slices only read graph outputs, and the model's opset imports are kept.
 *
 * Second, where the attention pattern allows it (splitAttentionOverPast below), the per-layer
 * Concat(past, new) that attention reads is removed: attention reads `past` in place and the new
 * positions are output directly, which saves a copy of the whole past every step (-31% of a batch-16
 * step of the bench decoder at 224 positions; BENCHMARKS.md §8d).
 */
import { dirname, resolve } from 'node:path'
import { GraphBuilder, makeValueInfo, onnx } from './proto-util.ts'
import { externalDataFolderOption } from '../models/external-data.ts'
import type { O } from './proto-util.ts'
import { LOGIT_STATS, NEW_PRESENT_PREFIX } from './model-spec.ts'

/** Result of `rewriteForNewPositions`; `bytes` is the input unchanged when `rewritten` is false. */
export interface RewriteResult {
  bytes: Uint8Array
  rewritten: boolean
  /** Why the model was left as is (the engine then reads the new positions out of full presents). */
  reason?: string
}

const PRESENT_RE = /^present\.(\d+)\.(key|value)$/
const INT64_MAX = 9223372036854775807n

function shapeWithDim(vi: O.IValueInfoProto, axis: number, dim: number | string): O.IValueInfoProto {
  const tt = vi.type?.tensorType
  const dims = (tt?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue ?? 0)) as number | string)
  if (dims.length > axis) dims[axis] = dim
  return makeValueInfo(vi.name ?? '', tt?.elemType ?? onnx.TensorProto.DataType.FLOAT, dims)
}

/** externalDataFolderOption (models/external-data.ts) for the folder of `modelPath`: a model created from its (rewritten) bytes. */
export function externalDataFolderEntry(modelPath: string): Record<string, string> {
  return externalDataFolderOption(dirname(resolve(modelPath)))
}

const attrInt = (n: O.INodeProto, name: string): number | undefined => {
  const a = n.attribute?.find((x) => x.name === name)
  return a?.i === undefined || a.i === null ? undefined : Number(a.i)
}
const attrInts = (n: O.INodeProto, name: string): number[] | undefined => n.attribute?.find((x) => x.name === name)?.ints?.map(Number)

/** Each value's producing node and its consumers, in the main graph as it is now. */
function indexGraph(graph: O.GraphProto): { producer: Map<string, O.INodeProto>; users: Map<string, O.INodeProto[]> } {
  const producer = new Map<string, O.INodeProto>()
  const users = new Map<string, O.INodeProto[]>()
  for (const n of graph.node) {
    for (const o of n.output ?? []) producer.set(o, n)
    for (const i of n.input ?? []) { const u = users.get(i); if (u) u.push(n); else users.set(i, [n]) }
  }
  return { producer, users }
}

/**
 * Attention over the past without copying it (main graph, float32 KV, 'new' mode only). Each
 * layer's `present = Concat(past, cur, axis 2)` is a copy of the whole past every step (at batch 16
 * and 224 positions, 59 MB a step for the bench decoder, 22% of it). Where the concatenated K only
 * feeds `MatMul(q, Transpose(present, [0,1,3,2]))` and V only `MatMul(p, present)` (the builder's
 * and GPT-2/MHA-style exports; exports that repeat_kv between them keep their Concat), the
 * products are split instead, which is exact algebra (the V sum is done in two parts):
 *
 *   q . [past ; cur]^T  =  Concat(q . past^T, q . cur^T, axis -1)
 *   p . [past ; cur]    =  p[..., :P] . past  +  p[..., P:] . cur        P = shape(past)[2]
 *
 * so `past` is read in place, and the step's new positions are `cur` itself. Returns, per present
 * name, the value that holds its new positions (for `present_new.*`); layers it could not match
 * are left as they are (their present_new is sliced from the Concat as before).
 */
function splitAttentionOverPast(graph: O.GraphProto, g: GraphBuilder, ends: string): Map<string, string> {
  const inputs = new Set(graph.input.map((i) => i.name ?? ''))
  const outputs = new Set(graph.output.map((o) => o.name ?? ''))
  const { producer, users } = indexGraph(graph)
  const newPositions = new Map<string, string>()
  const remove = new Set<O.INodeProto>()
  const replace = new Map<O.INodeProto, O.INodeProto[]>()
  let shared: { zero: string; minusOne: string; two: string; three: string } | undefined
  const consts = () => (shared ??= { zero: g.i64([0]), minusOne: g.i64([-1]), two: g.i64([2]), three: g.i64([3]) })
  const kt = { perm: { ints: [0, 1, 3, 2] } }
  /** Nodes g makes while `fn` runs, in order (to put them where the node they replace was). */
  const made = (fn: () => void): O.INodeProto[] => { const from = g.nodes.length; fn(); return g.nodes.splice(from) }
  for (const present of outputs) {
    const m = PRESENT_RE.exec(present)
    const cat = producer.get(present)
    if (!m || !cat || cat.opType !== 'Concat' || (cat.domain ?? '') !== '' || cat.input?.length !== 2) continue
    const axis = attrInt(cat, 'axis')
    const [past, cur] = cat.input as [string, string]
    if ((axis !== 2 && axis !== -2) || !inputs.has(past) || !/^past_key_values\.\d+\.(key|value)$/.test(past)) continue
    const consumers = users.get(present) ?? []
    if (consumers.length === 0) continue
    const plan: Array<[O.INodeProto, O.INodeProto[]]> = []
    const drop: O.INodeProto[] = []
    let ok = true
    if (m[2] === 'key') {
      for (const t of consumers) {
        const perm = attrInts(t, 'perm')
        const mms = users.get(t.output?.[0] ?? '') ?? []
        if (t.opType !== 'Transpose' || perm?.join(',') !== '0,1,3,2' || outputs.has(t.output![0]!) || mms.length === 0
          || !mms.every((mm) => mm.opType === 'MatMul' && (mm.domain ?? '') === '' && mm.input?.[1] === t.output![0] && mm.input?.[0] !== t.output![0])) { ok = false; break }
        drop.push(t)
        for (const mm of mms) {
          plan.push([mm, made(() => {
            const q = mm.input![0]!
            const onPast = g.op1('MatMul', [q, g.op1('Transpose', [past], kt)])
            const onCur = g.op1('MatMul', [q, g.op1('Transpose', [cur], kt)])
            g.opTo('Concat', [onPast, onCur], mm.output![0]!, { axis: { i: -1 } })
          })])
        }
      }
    } else {
      for (const mm of consumers) {
        if (mm.opType !== 'MatMul' || (mm.domain ?? '') !== '' || mm.input?.[1] !== present || mm.input?.[0] === present) { ok = false; break }
        plan.push([mm, made(() => {
          const probs = mm.input![0]!
          const { zero, minusOne, two, three } = consts()
          const P = g.op1('Slice', [g.op1('Shape', [past]), two, three])
          const onPast = g.op1('MatMul', [g.op1('Slice', [probs, zero, P, minusOne]), past])
          const onCur = g.op1('MatMul', [g.op1('Slice', [probs, P, ends, minusOne]), cur])
          g.opTo('Add', [onPast, onCur], mm.output![0]!)
        })])
      }
    }
    if (!ok) continue
    for (const [node, nodes] of plan) replace.set(node, nodes)
    for (const n of drop) remove.add(n)
    remove.add(cat)
    newPositions.set(present, cur)
  }
  if (newPositions.size > 0) {
    graph.node = graph.node.flatMap((n) => (remove.has(n) ? [] : replace.get(n) ?? [n])) as O.NodeProto[]
  }
  return newPositions
}

/**
 * Logits of the last position only, computed as such: walks back from `logits` through
 * element-wise ops with a constant, position-free operand (a bias [V], a scale) to the lm_head
 * MatMul (or MatMulNBits) on constant weights, and slices that MatMul's input to its last
 * position. Every op on the way is row-wise along the sequence, so this equals slicing the logits
 * afterwards, without computing S x V logits at prefill (with a 32k vocabulary that is 40% of a
 * 128-token prefill's FLOPs on the bench decoder's shape). Returns false, changing nothing, where
 * the pattern is not found (the caller then slices the logits).
 */
function sliceBeforeLmHead(graph: O.GraphProto, g: GraphBuilder, ends: string): boolean {
  const inits = new Map(graph.initializer.map((t) => [t.name ?? '', t]))
  const { producer, users } = indexGraph(graph)
  const positionFree = (name: string) => { const t = inits.get(name); return t !== undefined && (t.dims?.length ?? 0) <= 1 }
  let node = producer.get('logits')
  for (let hops = 0; node && hops < 8; hops++) {
    if (['Add', 'Mul', 'Sub', 'Div'].includes(node.opType ?? '') && (node.domain ?? '') === '' && node.input?.length === 2) {
      const [a, b] = node.input as [string, string]
      const next = positionFree(b) ? a : positionFree(a) ? b : null
      if (next === null || users.get(next)?.length !== 1) return false
      node = producer.get(next)
      continue
    }
    const isMatMul = node.opType === 'MatMul' && (node.domain ?? '') === ''
    const isNBits = node.opType === 'MatMulNBits' && node.domain === 'com.microsoft'
    if (!isMatMul && !isNBits) return false
    const w = node.input![1]!
    const wp = producer.get(w)
    const constantWeights = inits.has(w) || (wp?.opType === 'Transpose' && inits.has(wp.input?.[0] ?? ''))
    if (!constantWeights) return false
    const from = node.input![0]!
    const last = g.name('lm_head_last_position')
    const slice: O.INodeProto = { opType: 'Slice', input: [from, g.i64([-1]), ends, g.i64([1])], output: [last], name: g.name('Slice_node') }
    node.input![0] = last
    graph.node.splice(graph.node.indexOf(node as O.NodeProto), 0, slice as O.NodeProto)
    return true
  }
  return false
}

/**
 * Per-row logit statistics for the sampler (LOGIT_STATS), computed by onnxruntime's vectorised
 * kernels from the last-position `logits` [B,1,V]:
 *
 *   msserve_logit_max   = ReduceMax(logits)                                  [B,1,1]
 *   msserve_top_logprob = ReduceMax(LogSoftmax(logits * inv_temperature))    [B,1,1]
 *
 * The second is the most likely token's log-probability at the row's temperature, so the
 * sampler gets log Z = max/T - top_logprob without its own exp pass over the vocabulary (that
 * pass was most of a greedy token choice at V = 49k; here it costs ~25-50 µs a row, BENCHMARKS.md
 * §6). float16 logits are cast first. Returns the new outputs ([] and nothing added for other logit
 * types, or when the graph already has the input).
 */
function addLogitStats(graph: O.GraphProto, g: GraphBuilder, logits: O.IValueInfoProto, opsetVersion: number): O.IValueInfoProto[] {
  const elem = logits.type?.tensorType?.elemType
  const F = onnx.TensorProto.DataType
  if (elem !== F.FLOAT && elem !== F.FLOAT16) return []
  if (graph.input.some((i) => i.name === LOGIT_STATS.invTemperature)) return []
  const x = elem === F.FLOAT ? 'logits' : g.op1('Cast', ['logits'], { to: { i: F.FLOAT } })
  // ReduceMax takes its axes as an input from opset 18, as an attribute before.
  const reduceMax = (input: string, out: string): void => {
    if (opsetVersion >= 18) g.opTo('ReduceMax', [input, g.i64([-1])], out, { keepdims: { i: 1 } })
    else g.opTo('ReduceMax', [input], out, { axes: { ints: [-1] }, keepdims: { i: 1 } })
  }
  reduceMax(x, LOGIT_STATS.max)
  const scaled = g.op1('Mul', [x, LOGIT_STATS.invTemperature])
  reduceMax(g.op1('LogSoftmax', [scaled], { axis: { i: -1 } }), LOGIT_STATS.topLogprob)
  graph.input.push(makeValueInfo(LOGIT_STATS.invTemperature, F.FLOAT, ['batch_size', 1, 1]) as O.ValueInfoProto)
  return [makeValueInfo(LOGIT_STATS.max, F.FLOAT, ['batch_size', 1, 1]), makeValueInfo(LOGIT_STATS.topLogprob, F.FLOAT, ['batch_size', 1, 1])]
}

/** Rewrites the model bytes; never throws for an unsupported graph (returns `rewritten: false`). */
export function rewriteForNewPositions(bytes: Uint8Array, opts: { splitAttention?: boolean; logitStats?: boolean } = {}): RewriteResult {
  let model: O.ModelProto
  try { model = onnx.ModelProto.decode(bytes) } catch (e) {
    return { bytes, rewritten: false, reason: `cannot parse model: ${(e as Error).message}` }
  }
  if (!model.graph) return { bytes, rewritten: false, reason: 'model has no graph' }
  // Decoded messages always carry (possibly empty) repeated fields.
  const graph = model.graph as O.GraphProto
  const opset = model.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx')
  if (!opset || Number(opset.version) < 10) return { bytes, rewritten: false, reason: 'opset < 10 has no dynamic Slice' }
  const presents = graph.output.filter((o) => PRESENT_RE.test(o.name ?? ''))
  if (presents.length === 0) return { bytes, rewritten: false, reason: 'no present.* outputs' }
  if (!graph.input.some((i) => i.name === 'input_ids')) return { bytes, rewritten: false, reason: 'no input_ids input' }

  const g = new GraphBuilder('msserve_rw')
  const ends = g.init('ends', [1], BigInt64Array.of(INT64_MAX))
  const direct = opts.splitAttention === false ? new Map<string, string>() : splitAttentionOverPast(graph, g, ends)
  // [-S] as a 1-D int64 tensor, S = shape(input_ids)[1]; made only when a present is sliced.
  let sliceArgs: [string, string] | undefined
  const negS = (): [string, string] => (sliceArgs ??= [g.op1('Neg', [g.op1('Gather', [g.op1('Shape', ['input_ids']), g.i64([1])], { axis: { i: 0 } })]), g.i64([2])])
  const outputs: O.IValueInfoProto[] = []
  for (const out of graph.output) {
    const name = out.name ?? ''
    const m = PRESENT_RE.exec(name)
    if (m) {
      const newName = `${NEW_PRESENT_PREFIX}.${m[1]}.${m[2]}`
      const cur = direct.get(name)
      if (cur) g.opTo('Identity', [cur], newName)
      else { const [ns, axis] = negS(); g.opTo('Slice', [name, ns, ends, axis], newName) }
      outputs.push(shapeWithDim({ ...out, name: newName }, 2, 'sequence_length'))
    } else if (name === 'logits' && sliceBeforeLmHead(graph, g, ends)) {
      outputs.push(shapeWithDim(out, 1, 1))
    } else if (name === 'logits') {
      // Rename the producer's output; consumers inside the main graph are renamed too (for a
      // merged decoder the producer is the If node; its subgraphs are deliberately not visited).
      const inner = 'msserve_logits_all'
      for (const n of graph.node) {
        n.output = (n.output ?? []).map((o) => (o === name ? inner : o))
        n.input = (n.input ?? []).map((i) => (i === name ? inner : i))
      }
      g.opTo('Slice', [inner, g.i64([-1]), ends, g.i64([1])], 'logits')
      outputs.push(shapeWithDim(out, 1, 1))
    } else {
      outputs.push(out)
    }
  }
  const logitsOut = outputs.find((o) => o.name === 'logits')
  if (logitsOut && opts.logitStats !== false) outputs.push(...addLogitStats(graph, g, logitsOut, Number(opset.version)))
  graph.node.push(...(g.nodes as O.NodeProto[]))
  graph.initializer.push(...(g.inits as O.TensorProto[]))
  graph.output = outputs as O.ValueInfoProto[]
  return { bytes: onnx.ModelProto.encode(model).finish(), rewritten: true }
}
