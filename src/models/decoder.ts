/**
 * A Llama-style decoder-only transformer built as ONNX (IR 8, opset 17) with seeded random
 * weights: token embedding, RMSNorm, rotary embedding from `position_ids`, grouped-query
 * attention, SwiGLU MLP, final norm, lm_head. I/O follows the HF optimum with-past convention:
 *
 *   inputs : input_ids [batch, seq] i64, attention_mask [batch, past+seq] i64,
 *            position_ids [batch, seq] i64, past_key_values.{i}.key|value [batch, kv, past, hd] f32
 *   outputs: logits [batch, seq, vocab] f32, present.{i}.key|value [batch, kv, past+seq, hd] f32
 *
 * With `merged: true` the layout is optimum's merged decoder (see DecoderConfig.merged).
 *
 * The vocabulary is the byte-level one of src/llm/tokenizer.ts (PAD 0, BOS 1, EOS 2, byte b at
 * 3+b; 259 ids), or with `tokenizer: 'synthetic-bpe'` a real-size one whose tokenizer.json
 * src/models/synthetic-tokenizer.ts writes (same ids for the specials and bytes). The weights are
 * random: the text is gibberish, but the compute and memory traffic are those of a real model of
 * the same shape.
 */
import { writeFile } from 'node:fs/promises'
import { GraphBuilder, makeValueInfo, onnx } from '../llm/proto-util.ts'
import type { O } from '../llm/proto-util.ts'
import { mulberry32 } from './onnx-builder.ts'

/** Shape of a generated decoder. `numKvHeads` < `numHeads` gives grouped-query attention. */
export interface DecoderConfig {
  numLayers: number
  hiddenSize: number
  numHeads: number
  numKvHeads: number
  intermediateSize: number
  vocabSize: number
  maxPositions: number
  ropeTheta: number
  rmsEps: number
  seed: number
  /** KV cache dtype on the graph's inputs/outputs (default float32; float16 as some optimum exports). */
  kvDtype?: 'float32' | 'float16'
  /** false: no `position_ids` input, positions are past_len..total-1 (older GPT-2 style exports). */
  positionIds?: boolean
  /**
   * true: HF optimum's merged layout (`decoder_model_merged.onnx`): the same inputs plus
   * `use_cache_branch` bool [1], and one `If` node on it producing logits and present.*. The
   * then-branch is the with-past computation; the else-branch the no-past one, which never reads
   * past_key_values (optimum feeds them as empty [B,KV,0,hd] tensors at prefill). Both branches
   * reference the weights (main-graph initializers) and the graph inputs from the outer scope,
   * and name their outputs like the If's (logits, present.*), as optimum's merge_decoders does.
   * The weights are those of the unmerged model with the same config.
   */
  merged?: boolean
  /** true: the output projection is the token embedding transposed (tied, as SmolLM2 and Llama 3.2 1B). */
  tieEmbeddings?: boolean
  /**
   * The vocabulary the ids mean (recorded in the model's metadata): 'byte-level' (default, 259 ids)
   * or 'synthetic-bpe' (vocabSize ids; write its tokenizer.json with writeSyntheticTokenizer).
   */
  tokenizer?: 'byte-level' | 'synthetic-bpe'
  /**
   * For tests that need known output: after a prompt of `after` tokens, greedy decoding writes
   * `ids` (a large logit bias keyed by position; needs position_ids). Outside those positions the
   * model is the random one.
   */
  script?: ReadonlyArray<{ after: number; ids: readonly number[] }>
}

/**
 * `tiny` is for unit tests (~0.1M params); `small` (~25M params) is for benchmarks; `smol` is
 * SmolLM2-135M's shape (L30 d576 H9 KV3, intermediate 1536, 49,152-token vocabulary, tied
 * embeddings, rope theta 1e5; 134.5M params) for benchmarks with a real-size vocabulary.
 */
export const DECODER_CONFIGS: Record<'tiny' | 'small' | 'smol', DecoderConfig> = {
  tiny: { numLayers: 2, hiddenSize: 64, numHeads: 4, numKvHeads: 2, intermediateSize: 128, vocabSize: 259, maxPositions: 512, ropeTheta: 10000, rmsEps: 1e-5, seed: 1234 },
  small: { numLayers: 8, hiddenSize: 512, numHeads: 8, numKvHeads: 4, intermediateSize: 1536, vocabSize: 259, maxPositions: 2048, ropeTheta: 10000, rmsEps: 1e-5, seed: 4321 },
  smol: { numLayers: 30, hiddenSize: 576, numHeads: 9, numKvHeads: 3, intermediateSize: 1536, vocabSize: 49152, maxPositions: 2048, ropeTheta: 100000, rmsEps: 1e-5, seed: 135, tieEmbeddings: true, tokenizer: 'synthetic-bpe' },
}

/** Number of parameters of a config (weights only). */
export function countDecoderParams(c: DecoderConfig): number {
  const hd = c.hiddenSize / c.numHeads
  const attn = c.hiddenSize * (c.numHeads * hd) * 2 + c.hiddenSize * (c.numKvHeads * hd) * 2
  const mlp = 3 * c.hiddenSize * c.intermediateSize
  return c.numLayers * (attn + mlp + 2 * c.hiddenSize) + (c.tieEmbeddings ? 1 : 2) * c.vocabSize * c.hiddenSize + c.hiddenSize + c.vocabSize
}

/** Builds the model and returns the encoded ModelProto bytes. */
export function buildDecoder(c: DecoderConfig): Uint8Array {
  if (c.hiddenSize % c.numHeads !== 0) throw new Error('hiddenSize must be divisible by numHeads')
  if (c.numHeads % c.numKvHeads !== 0) throw new Error('numHeads must be divisible by numKvHeads')
  const hd = c.hiddenSize / c.numHeads
  if (hd % 2 !== 0) throw new Error('head dim must be even for rotary embedding')
  const d = c.hiddenSize
  const rand = mulberry32(c.seed)
  // Uniform(-a, a) with a = sqrt(3 / fanIn) keeps activations at unit variance.
  const weight = (rows: number, cols: number, gain = 1): Float32Array => {
    const a = gain * Math.sqrt(3 / rows)
    const w = new Float32Array(rows * cols)
    for (let i = 0; i < w.length; i++) w[i] = (rand() * 2 - 1) * a
    return w
  }
  const g = new GraphBuilder('dec')
  const F = onnx.TensorProto.DataType.FLOAT
  const I64 = onnx.TensorProto.DataType.INT64
  const F16 = onnx.TensorProto.DataType.FLOAT16
  const fp16 = c.kvDtype === 'float16'
  const withPos = c.positionIds !== false
  // Random weights are drawn once, in a fixed order, and shared by both branches of a merged
  // model (the second emission reuses the initializer names), so a merged model computes exactly
  // what the unmerged one with the same config does. Drawing the data before `g.init` names it
  // keeps the default model's bytes as they were before this indirection.
  const weights = new Map<string, string>()
  const W = (hint: string, rows: number, cols: number, gain = 1): string => {
    let n = weights.get(hint)
    if (n === undefined) {
      const data = weight(rows, cols, gain)
      n = g.init(hint, [rows, cols], data)
      weights.set(hint, n)
    }
    return n
  }

  /**
   * Emits the whole decoder into `g.nodes`, writing `logits` and `present.*`. `withPast` false is
   * the no-past decoder: present.* is the step's own K/V and past_key_values are never read.
   */
  const emit = (withPast: boolean): void => {
    // ---- shapes and the additive mask [B,1,S,T] (built from shapes; -1e9 keeps pad rows NaN-free)
    const S = g.op1('Gather', [g.op1('Shape', ['input_ids']), g.i64([1], true)], { axis: { i: 0 } }, 'S')
    const T = g.op1('Gather', [g.op1('Shape', ['attention_mask']), g.i64([1], true)], { axis: { i: 0 } }, 'T')
    const P = g.op1('Sub', [T, S], {}, 'P')
    const one = g.i64([1], true)
    const keyIdx = g.op1('Unsqueeze', [g.op1('Range', [g.i64([0], true), T, one]), g.i64([0])]) // [1,T]
    const qryIdx = g.op1('Unsqueeze', [g.op1('Range', [P, T, one]), g.i64([1])]) // [S,1]
    const causal = g.op1('LessOrEqual', [keyIdx, qryIdx]) // key j visible to query i iff j <= P+i
    const padOk = g.op1('Unsqueeze', [g.op1('Cast', ['attention_mask'], { to: { i: onnx.TensorProto.DataType.BOOL } }), g.i64([1, 2])])
    const allowed = g.op1('And', [causal, padOk]) // [B,1,S,T]
    const bias = g.op1('Where', [allowed, g.f32(0), g.f32(-1e9)], {}, 'mask_bias')

    // ---- rotary tables from position_ids: cos/sin [B,1,S,hd] (HF "rotate_half" convention)
    const invFreq = new Float32Array(hd / 2)
    for (let i = 0; i < hd / 2; i++) invFreq[i] = 1 / Math.pow(c.ropeTheta, (2 * i) / hd)
    // Without position_ids the positions are P..T-1 for every row ([1,S,1], broadcast over the batch).
    const pos = withPos
      ? g.op1('Unsqueeze', [g.op1('Cast', ['position_ids'], { to: { i: F } }), g.i64([2])]) // [B,S,1]
      : g.op1('Unsqueeze', [g.op1('Cast', [g.op1('Range', [P, T, one])], { to: { i: F } }), g.i64([0, 2])])
    const freqs = g.op1('Mul', [pos, g.init('inv_freq', [hd / 2], invFreq)])
    const emb = g.op1('Concat', [freqs, freqs], { axis: { i: -1 } })
    const cos = g.op1('Unsqueeze', [g.op1('Cos', [emb]), g.i64([1])], {}, 'cos')
    const sin = g.op1('Unsqueeze', [g.op1('Sin', [emb]), g.i64([1])], {}, 'sin')
    const halves = g.i64([hd / 2, hd / 2])
    const rope = (x: string): string => {
      const [x1, x2] = g.op('Split', [x, halves], { axis: { i: 3 } }, 2) as [string, string]
      const rot = g.op1('Concat', [g.op1('Neg', [x2]), x1], { axis: { i: 3 } })
      return g.op1('Add', [g.op1('Mul', [x, cos]), g.op1('Mul', [rot, sin])], {}, 'rope')
    }
    const eps = g.f32(c.rmsEps)
    // As torch exports transformers' RMSNorm (x.pow(2).mean(-1) -> rsqrt as 1/sqrt -> x * r -> w * x), the
    // form onnxruntime's SimplifiedLayerNormFusion turns into one SimplifiedLayerNormalization node.
    const two = g.f32(2)
    const oneF = g.f32(1)
    const rmsNorm = (x: string, hint: string): string => {
      const ms = g.op1('ReduceMean', [g.op1('Pow', [x, two])], { axes: { ints: [-1] }, keepdims: { i: 1 } })
      const inv = g.op1('Div', [oneF, g.op1('Sqrt', [g.op1('Add', [ms, eps])])])
      return g.op1('Mul', [g.init(`${hint}_w`, [d], new Float32Array(d).fill(1)), g.op1('Mul', [x, inv])], {}, hint)
    }
    const toHeads = (x: string, heads: number): string =>
      g.op1('Transpose', [g.op1('Reshape', [x, g.i64([0, 0, heads, hd])])], { perm: { ints: [0, 2, 1, 3] } })

    const embed = W('embed_tokens', c.vocabSize, d, Math.sqrt(c.vocabSize / 3)) // unit-variance embeddings
    let x = g.op1('Gather', [embed, 'input_ids'], { axis: { i: 0 } }, 'embeds')
    const qScale = g.f32(1 / Math.sqrt(hd))
    const shapeKvGroups = g.i64([0, c.numKvHeads, -1, hd])
    const shapeScores = g.i64([0, c.numHeads, -1, 0])
    const shapeScoresGrouped = g.i64([0, c.numKvHeads, -1, 0])
    const shapeHeads = g.i64([0, c.numHeads, -1, hd])
    const residualGain = 1 / Math.sqrt(2 * c.numLayers)
    for (let l = 0; l < c.numLayers; l++) {
      const h = rmsNorm(x, `l${l}_in_norm`)
      const q = rope(toHeads(g.op1('MatMul', [h, W(`l${l}_wq`, d, c.numHeads * hd)]), c.numHeads))
      const k = rope(toHeads(g.op1('MatMul', [h, W(`l${l}_wk`, d, c.numKvHeads * hd)]), c.numKvHeads))
      const v = toHeads(g.op1('MatMul', [h, W(`l${l}_wv`, d, c.numKvHeads * hd)]), c.numKvHeads)
      // fp16 KV: the cache crosses the graph boundary as float16; attention runs in float32.
      // No-past branch of a merged model: present is the step's own K/V, the past is not read.
      const kv = (kind: 'key' | 'value', cur: string): string => {
        if (!withPast) {
          if (fp16) g.opTo('Cast', [cur], `present.${l}.${kind}`, { to: { i: F16 } })
          else g.opTo('Identity', [cur], `present.${l}.${kind}`)
          return cur
        }
        if (!fp16) return g.opTo('Concat', [`past_key_values.${l}.${kind}`, cur], `present.${l}.${kind}`, { axis: { i: 2 } })
        const full = g.op1('Concat', [g.op1('Cast', [`past_key_values.${l}.${kind}`], { to: { i: F } }), cur], { axis: { i: 2 } })
        g.opTo('Cast', [full], `present.${l}.${kind}`, { to: { i: F16 } })
        return full
      }
      const presentK = kv('key', k)
      const presentV = kv('value', v)
      // GQA without repeating K/V: fold the G query heads of one kv head into the row axis,
      // [B,H,S,hd] -> [B,KV,G*S,hd] (head h uses kv head floor(h/G), as HF repeat_kv does).
      const qg = g.op1('Reshape', [g.op1('Mul', [q, qScale]), shapeKvGroups])
      const kt = g.op1('Transpose', [presentK], { perm: { ints: [0, 1, 3, 2] } })
      const scores = g.op1('Add', [g.op1('Reshape', [g.op1('MatMul', [qg, kt]), shapeScores]), bias]) // [B,H,S,T]
      const probs = g.op1('Reshape', [g.op1('Softmax', [scores], { axis: { i: -1 } }), shapeScoresGrouped])
      const ctx = g.op1('Reshape', [g.op1('MatMul', [probs, presentV]), shapeHeads]) // [B,H,S,hd]
      const merged = g.op1('Reshape', [g.op1('Transpose', [ctx], { perm: { ints: [0, 2, 1, 3] } }), g.i64([0, 0, c.numHeads * hd])])
      x = g.op1('Add', [x, g.op1('MatMul', [merged, W(`l${l}_wo`, c.numHeads * hd, d, residualGain)])])
      const h2 = rmsNorm(x, `l${l}_post_norm`)
      const gate = g.op1('MatMul', [h2, W(`l${l}_wg`, d, c.intermediateSize)])
      const up = g.op1('MatMul', [h2, W(`l${l}_wu`, d, c.intermediateSize)])
      const act = g.op1('Mul', [g.op1('Mul', [gate, g.op1('Sigmoid', [gate])]), up])
      x = g.op1('Add', [x, g.op1('MatMul', [act, W(`l${l}_wd`, c.intermediateSize, d, residualGain)])])
    }
    const hf = rmsNorm(x, 'final_norm')
    // Logit scale ~3 and a bias towards printable ASCII make random-weight output readable-ish
    // and keep greedy margins far above float noise (the cache/no-cache tests rely on that).
    const logitBias = new Float32Array(c.vocabSize)
    for (let b = 32; b < 127 && 3 + b < c.vocabSize; b++) logitBias[3 + b] = 3
    // Tied: logits = (hf x s) E^T, with s = 3 sqrt(3/d) giving the logit scale of an untied lm_head.
    const lm = c.tieEmbeddings
      ? g.op1('MatMul', [g.op1('Mul', [hf, g.f32(3 * Math.sqrt(3 / d))]), g.op1('Transpose', [embed], { perm: { ints: [1, 0] } })])
      : g.op1('MatMul', [hf, W('lm_head', d, c.vocabSize, 3)])
    const biased = [lm, g.init('logit_bias', [c.vocabSize], logitBias)]
    if (!c.script) {
      g.opTo('Add', biased, 'logits')
      return
    }
    if (!withPos) throw new Error('a scripted decoder needs position_ids')
    const table = new Float32Array(c.maxPositions * c.vocabSize)
    for (const { after, ids } of c.script) {
      ids.forEach((id, i) => { table[(after - 1 + i) * c.vocabSize + id] = 100 })
    }
    const scripted = g.op1('Gather', [g.init('script', [c.maxPositions, c.vocabSize], table), 'position_ids'], { axis: { i: 0 } })
    g.opTo('Add', [g.op1('Add', biased), scripted], 'logits')
  }

  if (!c.merged) {
    emit(true)
  } else {
    // Each branch is emitted into g.nodes and moved out; their initializers (weights, shared;
    // constants, one copy per branch) stay in the main graph, visible to both as outer scope.
    emit(true)
    const withPastNodes = g.nodes.splice(0)
    emit(false)
    const noPastNodes = g.nodes.splice(0)
    const outNames = ['logits']
    for (let l = 0; l < c.numLayers; l++) outNames.push(`present.${l}.key`, `present.${l}.value`)
    const branch = (name: string, node: typeof g.nodes, seqDim: string): O.IGraphProto => ({
      name, node, initializer: [], input: [],
      output: outNames.map((n) => n === 'logits'
        ? makeValueInfo(n, F, ['batch_size', 'sequence_length', c.vocabSize])
        : makeValueInfo(n, fp16 ? F16 : F, ['batch_size', c.numKvHeads, seqDim, hd])),
    })
    const GRAPH = onnx.AttributeProto.AttributeType.GRAPH
    g.nodes.push({
      opType: 'If', name: 'optimum::if', input: ['use_cache_branch'], output: outNames,
      attribute: [
        { name: 'then_branch', type: GRAPH, g: branch('with_past', withPastNodes, 'total_sequence_length') },
        { name: 'else_branch', type: GRAPH, g: branch('no_past', noPastNodes, 'sequence_length') },
      ],
    })
  }

  const inputs = [
    makeValueInfo('input_ids', I64, ['batch_size', 'sequence_length']),
    makeValueInfo('attention_mask', I64, ['batch_size', 'total_sequence_length']),
    ...(withPos ? [makeValueInfo('position_ids', I64, ['batch_size', 'sequence_length'])] : []),
  ]
  const outputs = [makeValueInfo('logits', F, ['batch_size', 'sequence_length', c.vocabSize])]
  for (let l = 0; l < c.numLayers; l++) {
    for (const kind of ['key', 'value']) {
      inputs.push(makeValueInfo(`past_key_values.${l}.${kind}`, fp16 ? F16 : F, ['batch_size', c.numKvHeads, 'past_sequence_length', hd]))
      outputs.push(makeValueInfo(`present.${l}.${kind}`, fp16 ? F16 : F, ['batch_size', c.numKvHeads, 'total_sequence_length', hd]))
    }
  }
  if (c.merged) inputs.push(makeValueInfo('use_cache_branch', onnx.TensorProto.DataType.BOOL, [1]))
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'ms-serve-decoder',
    opsetImport: [{ domain: '', version: 17 }],
    metadataProps: [{ key: 'ms_serve.tokenizer', value: c.tokenizer ?? 'byte-level' }, { key: 'ms_serve.config', value: JSON.stringify(c) }],
    graph: { name: 'decoder', node: g.nodes, initializer: g.inits, input: inputs, output: outputs },
  })
  return onnx.ModelProto.encode(model).finish()
}

/** Builds a decoder and writes it to `path`; returns the byte size. */
export async function writeDecoder(path: string, c: DecoderConfig): Promise<number> {
  const bytes = buildDecoder(c)
  await writeFile(path, bytes)
  return bytes.byteLength
}
