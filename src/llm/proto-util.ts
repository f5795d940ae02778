/**
 * The expression-style graph builder of the decoder builder (src/models/decoder.ts) and the
 * load-time graph rewrite (graph-rewrite.ts). Value infos, tensor protos and the onnx-proto
 * namespace are src/models/onnx-builder.ts's (that module has no dependency but onnx-proto).
 */
import type { onnx as O } from 'onnx-proto'
import { makeTensor, makeValueInfo, onnx } from '../models/onnx-builder.ts'

export { makeValueInfo, onnx }
export type { O }

/** Attribute values: a tagged form so ints and floats are never confused. */
export type AttrValue = { i: number } | { f: number } | { ints: number[] } | { t: O.ITensorProto }

/** Builds one AttributeProto from the tagged value. */
export function makeAttr(name: string, v: AttrValue): O.IAttributeProto {
  if ('i' in v) return { name, type: onnx.AttributeProto.AttributeType.INT, i: v.i }
  if ('f' in v) return { name, type: onnx.AttributeProto.AttributeType.FLOAT, f: v.f }
  if ('ints' in v) return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: v.ints }
  return { name, type: onnx.AttributeProto.AttributeType.TENSOR, t: v.t }
}

/**
 * Accumulates nodes and initializers with generated unique names. `op` returns the output
 * names so graph code reads like expressions.
 */
export class GraphBuilder {
  readonly nodes: O.INodeProto[] = []
  readonly inits: O.ITensorProto[] = []
  private seq = 0
  constructor(private readonly prefix = 'n') {}

  /** Fresh unique value name. */
  name(hint: string): string { return `${this.prefix}_${hint}_${this.seq++}` }

  /** Adds a node; returns its `numOutputs` output names. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, numOutputs = 1, hint = opType): string[] {
    const outputs = Array.from({ length: numOutputs }, () => this.name(hint))
    this.nodes.push({
      opType, input: inputs, output: outputs, name: this.name(`${opType}_node`),
      attribute: Object.entries(attrs).map(([k, v]) => makeAttr(k, v)),
    })
    return outputs
  }

  /** Single-output shorthand. */
  op1(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, hint = opType): string {
    return this.op(opType, inputs, attrs, 1, hint)[0]!
  }

  /** Adds a node writing to a fixed output name (graph outputs such as `logits`). */
  opTo(opType: string, inputs: string[], output: string, attrs: Record<string, AttrValue> = {}): string {
    this.nodes.push({
      opType, input: inputs, output: [output], name: this.name(`${opType}_node`),
      attribute: Object.entries(attrs).map(([k, v]) => makeAttr(k, v)),
    })
    return output
  }

  /** Registers an initializer and returns its name. */
  init(hint: string, dims: number[], data: Float32Array | BigInt64Array | number[], int64 = false): string {
    const n = this.name(hint)
    const arr = !Array.isArray(data) ? data : int64 ? BigInt64Array.from(data, (x) => BigInt(x)) : Float32Array.from(data)
    this.inits.push(makeTensor(n, arr, dims))
    return n
  }

  /** int64 constant (1-D unless `scalar`). */
  i64(values: number[], scalar = false): string {
    return this.init('i64', scalar ? [] : [values.length], values, true)
  }

  /** float32 scalar constant. */
  f32(value: number): string { return this.init('f32', [], [value]) }
}
