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
 */
import { dirname, resolve } from 'node:path'
import { GraphBuilder, makeValueInfo, onnx } from './proto-util.ts'
import type { O } from './proto-util.ts'
import { NEW_PRESENT_PREFIX } from './model-spec.ts'

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

/**
 * Session config entry for a model created from bytes (rewritten or not): onnxruntime resolves
 * external data `location`s against this folder (honoured by onnxruntime-node 1.30; without it,
 * bytes resolve against the working directory and a model elsewhere fails to load).
 */
export function externalDataFolderEntry(modelPath: string): Record<string, string> {
  return { 'session.model_external_initializers_file_folder_path': dirname(resolve(modelPath)) }
}

/** Rewrites the model bytes; never throws for an unsupported graph (returns `rewritten: false`). */
export function rewriteForNewPositions(bytes: Uint8Array): RewriteResult {
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
  // negS = [-S] as a 1-D int64 tensor, S = shape(input_ids)[1]
  const sLen = g.op1('Gather', [g.op1('Shape', ['input_ids']), g.i64([1])], { axis: { i: 0 } })
  const negS = g.op1('Neg', [sLen])
  const ends = g.init('ends', [1], BigInt64Array.of(INT64_MAX))
  const axisSeq = g.i64([2])
  const outputs: O.IValueInfoProto[] = []
  for (const out of graph.output) {
    const name = out.name ?? ''
    const m = PRESENT_RE.exec(name)
    if (m) {
      const newName = `${NEW_PRESENT_PREFIX}.${m[1]}.${m[2]}`
      g.opTo('Slice', [name, negS, ends, axisSeq], newName)
      outputs.push(shapeWithDim({ ...out, name: newName }, 2, 'sequence_length'))
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
  graph.node.push(...(g.nodes as O.NodeProto[]))
  graph.initializer.push(...(g.inits as O.TensorProto[]))
  graph.output = outputs as O.ValueInfoProto[]
  return { bytes: onnx.ModelProto.encode(model).finish(), rewritten: true }
}
