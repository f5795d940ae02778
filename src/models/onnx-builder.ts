// A small ONNX graph builder over onnx-proto, plus a seeded PRNG, so the
// built-in models are generated locally (never downloaded) and byte-for-byte
// deterministic across runs and machines.
import p from 'onnx-proto';
import type { onnx as O } from 'onnx-proto';
import { externalizeModel } from './external-data.ts';

// onnx-proto is CommonJS; Node's ESM loader cannot detect its named exports.
const { onnx } = p;
export { onnx };

/** ONNX IR version written into every model (onnx-proto ships the 1.10 / IR 8 schema). */
export const IR_VERSION = 8;
/** Default-domain opset imported by every model. */
export const OPSET_VERSION = 17;

/** A tensor dimension: a fixed size, or a symbolic name such as `'batch'`. */
export type Dim = number | string;

/** Element types the builder can declare for graph inputs and outputs. */
export type ElemType = 'float32' | 'int32' | 'int64';

/** Typed arrays accepted as initializer data (stored as little-endian rawData). */
export type InitData = Float32Array | Int32Array | BigInt64Array | Uint8Array | Int8Array;

/** A float attribute; plain numbers are encoded as INT, so floats must be marked. */
export interface FloatAttr {
  readonly f: number;
}

/** A list-of-floats attribute. */
export interface FloatsAttr {
  readonly floats: readonly number[];
}

/** Attribute values: number = INT, number[] = INTS, string = STRING. */
export type AttrValue = number | readonly number[] | string | FloatAttr | FloatsAttr;

const DataType = onnx.TensorProto.DataType;
const AttrType = onnx.AttributeProto.AttributeType;

const ELEM_TYPES: Record<ElemType, number> = {
  float32: DataType.FLOAT,
  int32: DataType.INT32,
  int64: DataType.INT64,
};

/** Marks a number as a FLOAT attribute (e.g. Gemm `alpha`). */
export function floatAttr(f: number): FloatAttr {
  return { f };
}

function dataTypeOf(data: InitData): number {
  if (data instanceof Float32Array) return DataType.FLOAT;
  if (data instanceof Int32Array) return DataType.INT32;
  if (data instanceof Uint8Array) return DataType.UINT8;
  if (data instanceof Int8Array) return DataType.INT8;
  return DataType.INT64;
}

function toAttribute(name: string, value: AttrValue): O.IAttributeProto {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: ${value} is not an integer; use floatAttr()`);
    return { name, type: AttrType.INT, i: value };
  }
  if (typeof value === 'string') return { name, type: AttrType.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: AttrType.INTS, ints: [...(value as readonly number[])] };
  if ('floats' in value) return { name, type: AttrType.FLOATS, floats: [...value.floats] };
  return { name, type: AttrType.FLOAT, f: (value as FloatAttr).f };
}

/** A graph input/output declaration of any ONNX element type; string dims become `dimParam`. */
export function makeValueInfo(name: string, elemType: number, dims: readonly Dim[]): O.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/** A tensor proto whose rawData views `data`'s bytes (little-endian, as the typed-array layout on x86/arm64). */
export function makeTensor(name: string, data: InitData, dims: readonly number[]): O.ITensorProto {
  return { name, dims: [...dims], dataType: dataTypeOf(data), rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** Accumulates nodes, initializers and graph I/O, then encodes a ModelProto. */
export class OnnxGraphBuilder {
  private readonly nodes: O.INodeProto[] = [];
  private readonly initializers: O.ITensorProto[] = [];
  private readonly inputs: O.IValueInfoProto[] = [];
  private readonly outputs: O.IValueInfoProto[] = [];
  private readonly metadata: O.IStringStringEntryProto[] = [];
  private readonly usedNames = new Set<string>();
  private counter = 0;

  constructor(
    readonly graphName: string,
    readonly docString = '',
  ) {}

  /** Declares a graph input; string dims become symbolic (`dimParam`). */
  input(name: string, elem: ElemType, dims: readonly Dim[]): string {
    this.claim(name);
    this.inputs.push(makeValueInfo(name, ELEM_TYPES[elem], dims));
    return name;
  }

  /** Declares a graph output; `name` must be produced by some node. */
  output(name: string, elem: ElemType, dims: readonly Dim[]): string {
    this.outputs.push(makeValueInfo(name, ELEM_TYPES[elem], dims));
    return name;
  }

  /** Adds a constant tensor; the bytes are copied so later mutation cannot leak in. */
  initializer(name: string, data: InitData, dims: readonly number[]): string {
    const count = dims.reduce((a, b) => a * b, 1);
    if (count !== data.length) throw new Error(`initializer ${name}: dims ${dims} need ${count} values, got ${data.length}`);
    this.claim(name);
    this.initializers.push(makeTensor(name, data.slice(), dims));
    return name;
  }

  /** Adds a node with explicit output names; returns them for chaining. */
  node(opType: string, inputs: readonly string[], outputs: readonly string[], attrs: Record<string, AttrValue> = {}): string[] {
    for (const o of outputs) this.claim(o);
    this.nodes.push({
      name: `${opType}_${this.counter++}`,
      opType,
      input: [...inputs],
      output: [...outputs],
      attribute: Object.entries(attrs).map(([k, v]) => toAttribute(k, v)),
    });
    return [...outputs];
  }

  /** Adds a single-output node; the output name defaults to a fresh unique one. */
  op(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, out?: string): string {
    return this.node(opType, inputs, [out ?? this.fresh(opType.toLowerCase())], attrs)[0]!;
  }

  /** Returns an unused value name with the given prefix. */
  fresh(prefix: string): string {
    let i = 0;
    while (this.usedNames.has(`${prefix}_${i}`)) i++;
    return `${prefix}_${i}`;
  }

  /** Records a key/value pair in the model's metadata_props. */
  meta(key: string, value: string): void {
    this.metadata.push({ key, value });
  }

  /** Serialises the model; no timestamps or random ids, so output is reproducible. */
  encode(): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: IR_VERSION,
      producerName: 'ms-serve',
      // The builder's format version, not the package's (src/version.ts): a release must not change
      // the bytes of generated models, which `init` compares with the files on disk.
      producerVersion: '0.1.0',
      domain: 'ms-serve.builtin',
      modelVersion: 1,
      docString: this.docString,
      opsetImport: [{ domain: '', version: OPSET_VERSION }],
      metadataProps: this.metadata,
      graph: {
        name: this.graphName,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }

  /**
   * Serialises the model with every initializer of at least `sizeThreshold` bytes in one external
   * data file (see external-data.ts): returns the weight-less model and the data file's bytes.
   */
  encodeWithExternalData(location: string, sizeThreshold = 1024): { model: Uint8Array; data: Uint8Array } {
    const split = externalizeModel(this.encode(), { location, sizeThreshold });
    const data = new Uint8Array(split.dataLength);
    for (const c of split.chunks) data.set(c.bytes, c.offset);
    return { model: split.model, data };
  }

  private claim(name: string): void {
    // SSA: a value defined twice would make ORT reject the graph with an opaque error.
    if (this.usedNames.has(name)) throw new Error(`value name ${name} is already defined`);
    this.usedNames.add(name);
  }
}

/** mulberry32: a tiny 32-bit seeded PRNG returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard-normal sampler (Box-Muller) driven by a uniform source such as mulberry32. */
export function normalSampler(uniform: () => number): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    // 1 - u keeps the log argument in (0, 1], avoiding log(0) = -Infinity.
    const r = Math.sqrt(-2 * Math.log(1 - uniform()));
    const theta = 2 * Math.PI * uniform();
    spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  };
}

/** Fills a Float32Array of `n` values drawn from N(0, std²). */
export function randomNormal(n: number, std: number, normal: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = normal() * std;
  return out;
}

/** He (Kaiming) normal initialisation for a layer with `fanIn` inputs per unit. */
export function heNormal(n: number, fanIn: number, normal: () => number): Float32Array {
  return randomNormal(n, Math.sqrt(2 / fanIn), normal);
}
