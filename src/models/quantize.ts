/**
 * A small weight-only quantizer for test and bench models, writing the formats onnxruntime's own
 * quantizers write, so the server is tested on the graphs users bring:
 *
 *   'nbits'   com.microsoft MatMulNBits (matmul_nbits_quantizer / onnxruntime-genai): B [K,N] is
 *             stored per output column n as ceil(K/block) blocks of `block` codes, packed low
 *             nibble first (4-bit) or one per byte (8-bit), into uint8 [N, blocks, block*bits/8];
 *             float scales [N, blocks]; optional uint8 zero points [N, ceil(blocks*bits/8)]
 *             (packed the same way; absent means 2^(bits-1), i.e. symmetric). w = (q - zp) * scale.
 *             Cross-checked once against onnxruntime 1.30's MatMulNBitsQuantizer (Python, block 32,
 *             4/8 bits, symmetric or not) on the tiny decoder: identical packed B and zero points,
 *             scales within 1 ulp, identical logits (8-bit symmetric: within 5e-4).
 *   'qdq'     int8 weight + per-column scale/zero point -> DequantizeLinear(axis 1) -> MatMul
 *             (the weight half of QDQ models).
 *   'dynamic' quantize_dynamic's QOperator form: DynamicQuantizeLinear(A) -> MatMulInteger(A_q,
 *             W_q int8, A_zp, W_zp) -> Cast float -> Mul(A_scale * W_scale); 7-bit weight codes
 *             as its `reduce_range` (see below).
 *
 * Every MatMul (main graph and If/Loop bodies) whose B is a float32 2-D initializer is replaced;
 * initializers no longer read are dropped. Gather'ed embeddings stay float, as ORT's quantizers do.
 */
import { onnx } from './onnx-builder.ts'
import type { onnx as O } from 'onnx-proto'

/** Which format to write; see the file comment. */
export type QuantFormat = 'nbits' | 'qdq' | 'dynamic'

/** Options of `quantizeModel`. */
export interface QuantizeOptions {
  format: QuantFormat
  /** MatMulNBits code width (default 4). */
  bits?: 4 | 8
  /** MatMulNBits block size along K, a power of two >= 16 (default 32). */
  blockSize?: number
  /** MatMulNBits: no zero points (codes centred on 2^(bits-1)); default false (asymmetric, with zero points). */
  symmetric?: boolean
  /** MatMulNBits `accuracy_level` (0 = unset; 4 = int8 compute on CPU). */
  accuracyLevel?: number
  /** Weights with fewer elements stay float (default 0: all). */
  minElements?: number
}

/** Blockwise-quantized [K, N] weight in MatMulNBits layout. */
export interface BlockwiseWeight {
  K: number
  N: number
  bits: 4 | 8
  blockSize: number
  /** uint8 [N, blocks, blockSize*bits/8] */
  packed: Uint8Array
  /** float [N * blocks] */
  scales: Float32Array
  /** uint8 [N * ceil(blocks*bits/8)], or null when symmetric */
  zeroPoints: Uint8Array | null
}

function put(buf: Uint8Array, bits: 4 | 8, byteBase: number, idx: number, q: number): void {
  if (bits === 8) { buf[byteBase + idx] = q; return }
  const at = byteBase + (idx >> 1)
  buf[at] = (idx & 1) === 0 ? (buf[at]! & 0xf0) | q : (buf[at]! & 0x0f) | (q << 4)
}

function get(buf: Uint8Array, bits: 4 | 8, byteBase: number, idx: number): number {
  if (bits === 8) return buf[byteBase + idx]!
  const b = buf[byteBase + (idx >> 1)]!
  return (idx & 1) === 0 ? b & 0x0f : b >> 4
}

/**
 * Quantizes a row-major [K, N] float weight blockwise along K. Asymmetric: each block maps
 * [min(0,lo), max(0,hi)] onto 0..2^bits-1 with a zero point; symmetric: the block's largest
 * magnitude maps to -2^(bits-1) (as MLAS does) and the zero point is the implicit 2^(bits-1).
 */
export function quantizeBlockwise(w: Float32Array, K: number, N: number, bits: 4 | 8 = 4, blockSize = 32, symmetric = false): BlockwiseWeight {
  if (w.length !== K * N) throw new Error(`weight has ${w.length} values, not K*N = ${K * N}`)
  if (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) throw new Error(`block size ${blockSize} must be a power of two >= 16`)
  const blocks = Math.ceil(K / blockSize)
  const blob = (blockSize * bits) / 8
  const qmax = (1 << bits) - 1
  const mid = 1 << (bits - 1)
  const zpRow = Math.ceil((blocks * bits) / 8)
  const packed = new Uint8Array(N * blocks * blob)
  const scales = new Float32Array(N * blocks)
  const zeroPoints = symmetric ? null : new Uint8Array(N * zpRow)
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const k0 = b * blockSize, k1 = Math.min(K, k0 + blockSize)
      let scale: number, zp: number
      if (symmetric) {
        let ext = 0
        for (let k = k0; k < k1; k++) { const v = w[k * N + n]!; if (Math.abs(v) > Math.abs(ext)) ext = v }
        scale = ext === 0 ? 1 : ext / -mid
        zp = mid
      } else {
        let lo = 0, hi = 0
        for (let k = k0; k < k1; k++) { const v = w[k * N + n]!; if (v < lo) lo = v; if (v > hi) hi = v }
        scale = hi === lo ? 1 : (hi - lo) / qmax
        zp = Math.min(qmax, Math.max(0, Math.round(-lo / scale)))
        put(zeroPoints!, bits, n * zpRow, b, zp)
      }
      scales[n * blocks + b] = scale
      const base = (n * blocks + b) * blob
      // Codes past K (a last, partial block) are the zero point, i.e. weight 0.
      for (let j = 0; j < blockSize; j++) {
        const k = k0 + j
        const q = k < k1 ? Math.min(qmax, Math.max(0, Math.round(w[k * N + n]! / Math.fround(scale)) + zp)) : zp
        put(packed, bits, base, j, q)
      }
    }
  }
  return { K, N, bits, blockSize, packed, scales, zeroPoints }
}

/** The float [K, N] weight a BlockwiseWeight stands for (what MatMulNBits multiplies by). */
export function dequantizeBlockwise(q: BlockwiseWeight): Float32Array {
  const { K, N, bits, blockSize } = q
  const blocks = Math.ceil(K / blockSize)
  const blob = (blockSize * bits) / 8
  const zpRow = Math.ceil((blocks * bits) / 8)
  const out = new Float32Array(K * N)
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const scale = q.scales[n * blocks + b]!
      const zp = q.zeroPoints ? get(q.zeroPoints, bits, n * zpRow, b) : 1 << (bits - 1)
      for (let j = 0; j < blockSize && b * blockSize + j < K; j++) {
        out[(b * blockSize + j) * N + n] = (get(q.packed, bits, (n * blocks + b) * blob, j) - zp) * scale
      }
    }
  }
  return out
}

/** Per-column symmetric int8 ([K, N] weight): scale[n] = max|w[:,n]| / 127, zero point 0. */
export function quantizeInt8PerColumn(w: Float32Array, K: number, N: number): { q: Int8Array; scales: Float32Array } {
  const scales = new Float32Array(N)
  for (let i = 0; i < K * N; i++) scales[i % N] = Math.max(scales[i % N]!, Math.abs(w[i]!))
  for (let n = 0; n < N; n++) scales[n] = scales[n]! === 0 ? 1 : scales[n]! / 127
  const q = new Int8Array(K * N)
  for (let i = 0; i < K * N; i++) q[i] = Math.max(-127, Math.min(127, Math.round(w[i]! / scales[i % N]!)))
  return { q, scales }
}

const DT = onnx.TensorProto.DataType
const AT = onnx.AttributeProto.AttributeType

function tensor(name: string, dataType: number, dims: number[], bytes: ArrayBufferView): O.TensorProto {
  return onnx.TensorProto.create({ name, dataType, dims, rawData: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) })
}

const intAttr = (name: string, i: number): O.IAttributeProto => ({ name, type: AT.INT, i })

/** The float data of a FLOAT initializer (raw or float_data), or null. */
function floatData(t: O.ITensorProto): Float32Array | null {
  if (t.dataType !== DT.FLOAT || t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) return null
  // A decoded rawData may be a Node Buffer view into a larger pool (Buffer#slice does not copy).
  if (t.rawData && t.rawData.byteLength) { const c = new Uint8Array(t.rawData.byteLength); c.set(t.rawData); return new Float32Array(c.buffer) }
  return t.floatData?.length ? Float32Array.from(t.floatData) : null
}

function* graphsOf(g: O.IGraphProto): Generator<O.IGraphProto> {
  yield g
  for (const n of g.node ?? []) for (const a of n.attribute ?? []) {
    if (a.g) yield* graphsOf(a.g)
    for (const sg of a.graphs ?? []) yield* graphsOf(sg)
  }
}

/** What `quantizeModel` did. */
export interface QuantizeReport { bytes: Uint8Array; quantized: string[]; floatBytes: number; quantBytes: number }

/** Quantizes every MatMul with a constant float [K, N] B of `bytes`; see the file comment. */
export function quantizeModel(bytes: Uint8Array, opts: QuantizeOptions): QuantizeReport {
  const bits = opts.bits ?? 4
  const blockSize = opts.blockSize ?? 32
  const model = onnx.ModelProto.decode(bytes)
  const main = model.graph
  if (!main) throw new Error('model has no graph')
  // Initializers visible by name: the main graph's are outer scope for every subgraph.
  const inits = new Map<string, { t: O.ITensorProto; owner: O.IGraphProto }>()
  for (const g of graphsOf(main)) for (const t of g.initializer ?? []) inits.set(t.name ?? '', { t, owner: g })
  const done = new Map<string, { inputs: string[]; K: number; N: number }>()
  const added: O.TensorProto[] = []
  const quantized: string[] = []
  let floatBytes = 0, quantBytes = 0
  const addInit = (t: O.TensorProto): string => { added.push(t); quantBytes += t.rawData.byteLength; return t.name }

  const quantizeWeight = (name: string, t: O.ITensorProto): { inputs: string[]; K: number; N: number } | null => {
    const hit = done.get(name)
    if (hit) return hit
    const dims = (t.dims ?? []).map(Number)
    const w = dims.length === 2 ? floatData(t) : null
    if (!w || w.length < (opts.minElements ?? 0)) return null
    const [K, N] = dims as [number, number]
    floatBytes += w.byteLength
    let inputs: string[]
    if (opts.format === 'nbits') {
      const q = quantizeBlockwise(w, K, N, bits, blockSize, opts.symmetric ?? false)
      const blocks = Math.ceil(K / blockSize)
      inputs = [
        addInit(tensor(`${name}_Q${bits}`, DT.UINT8, [N, blocks, (blockSize * bits) / 8], q.packed)),
        // 2-D, as onnxruntime's matmul_nbits_quantizer writes them (the op reads [N * blocks] values).
        addInit(tensor(`${name}_scales`, DT.FLOAT, [N, blocks], q.scales)),
        ...(q.zeroPoints ? [addInit(tensor(`${name}_zp`, DT.UINT8, [N, q.zeroPoints.length / N], q.zeroPoints))] : []),
      ]
    } else if (opts.format === 'qdq') {
      const { q, scales } = quantizeInt8PerColumn(w, K, N)
      inputs = [
        addInit(tensor(`${name}_quantized`, DT.INT8, [K, N], q)),
        addInit(tensor(`${name}_scale`, DT.FLOAT, [N], scales)),
        addInit(tensor(`${name}_zero_point`, DT.INT8, [N], new Int8Array(N))),
      ]
    } else {
      // quantize_dynamic's default, per-tensor symmetric int8 weights, with its reduce_range: codes
      // in [-63, 63]. MLAS's u8s8 kernel on x86 without VNNI adds code pairs in int16 and saturates
      // with full-range weights (measured on this box: max |error| 3.6 on an 80x24 MatMul, 0.08 with 7 bits).
      let amax = 0
      for (const v of w) amax = Math.max(amax, Math.abs(v))
      const scale = amax === 0 ? 1 : amax / 63
      const q = Int8Array.from(w, (v) => Math.max(-63, Math.min(63, Math.round(v / scale))))
      inputs = [
        addInit(tensor(`${name}_quantized`, DT.INT8, [K, N], q)),
        addInit(tensor(`${name}_scale`, DT.FLOAT, [], Float32Array.of(scale))),
        addInit(tensor(`${name}_zero_point`, DT.INT8, [], new Int8Array(1))),
      ]
    }
    const r = { inputs, K, N }
    done.set(name, r)
    quantized.push(name)
    return r
  }

  let seq = 0
  for (const g of graphsOf(main)) {
    const out: O.INodeProto[] = []
    for (const n of g.node ?? []) {
      const b = n.input?.[1]
      const init = n.opType === 'MatMul' && (!n.domain || n.domain === 'ai.onnx') && b !== undefined ? inits.get(b) : undefined
      const q = init ? quantizeWeight(b!, init.t) : null
      if (!q) { out.push(n); continue }
      const a = n.input![0]!, y = n.output![0]!
      const id = `${n.name || 'MatMul'}_q${seq++}`
      if (opts.format === 'nbits') {
        out.push({
          opType: 'MatMulNBits', domain: 'com.microsoft', name: id, input: [a, ...q.inputs], output: [y],
          attribute: [intAttr('K', q.K), intAttr('N', q.N), intAttr('bits', bits), intAttr('block_size', blockSize),
            ...(opts.accuracyLevel ? [intAttr('accuracy_level', opts.accuracyLevel)] : [])],
        })
      } else if (opts.format === 'qdq') {
        const wf = `${id}_dq`
        out.push({ opType: 'DequantizeLinear', name: `${id}_DequantizeLinear`, input: q.inputs, output: [wf], attribute: [intAttr('axis', 1)] })
        out.push({ opType: 'MatMul', name: id, input: [a, wf], output: [y] })
      } else {
        const [aq, as, azp, mi, mf, sc] = ['a_q', 'a_scale', 'a_zp', 'int32', 'float', 'scale'].map((s) => `${id}_${s}`) as [string, string, string, string, string, string]
        out.push({ opType: 'DynamicQuantizeLinear', name: `${id}_DynamicQuantizeLinear`, input: [a], output: [aq, as, azp] })
        out.push({ opType: 'MatMulInteger', name: `${id}_MatMulInteger`, input: [aq, q.inputs[0]!, azp, q.inputs[2]!], output: [mi] })
        out.push({ opType: 'Cast', name: `${id}_Cast`, input: [mi], output: [mf], attribute: [intAttr('to', DT.FLOAT)] })
        out.push({ opType: 'Mul', name: `${id}_scale_Mul`, input: [as, q.inputs[1]!], output: [sc] })
        out.push({ opType: 'Mul', name: id, input: [mf, sc], output: [y] })
      }
    }
    g.node = out as O.NodeProto[]
  }
  // Drop the float weights nothing reads any more; quantized ones go to the main graph (outer scope).
  const reads = new Set<string>()
  for (const g of graphsOf(main)) for (const n of g.node ?? []) for (const i of n.input ?? []) reads.add(i)
  for (const g of graphsOf(main)) g.initializer = (g.initializer ?? []).filter((t) => !done.has(t.name ?? '') || reads.has(t.name ?? '')) as O.TensorProto[]
  main.initializer = [...(main.initializer ?? []), ...added] as O.TensorProto[]
  if (opts.format === 'nbits' && !model.opsetImport.some((o) => o.domain === 'com.microsoft')) {
    model.opsetImport.push(onnx.OperatorSetIdProto.create({ domain: 'com.microsoft', version: 1 }))
  }
  return { bytes: onnx.ModelProto.encode(model).finish(), quantized, floatBytes, quantBytes }
}
