// A two-layer perceptron sized so that batching pays off measurably on CPU
// (B=1 is dominated by per-call overhead, B=32+ by the 784x1024 GEMM).
import { OnnxGraphBuilder, heNormal, mulberry32, normalSampler, randomNormal } from './onnx-builder.ts';

/** Options for {@link buildMlp}; all have defaults (784 -> 1024 -> 10, seed 5678). */
export interface MlpOptions {
  readonly inputDim?: number;
  readonly hidden?: number;
  readonly outputDim?: number;
  readonly seed?: number;
}

/** MLP parameters; weights are `[in, out]` row-major because the graph uses `x @ W`. */
export interface MlpWeights {
  readonly inputDim: number;
  readonly hidden: number;
  readonly outputDim: number;
  readonly w1: Float32Array;
  readonly b1: Float32Array;
  readonly w2: Float32Array;
  readonly b2: Float32Array;
}

const DEFAULTS = { inputDim: 784, hidden: 1024, outputDim: 10, seed: 5678 };
const BIAS_STD = 0.05;

function resolve(opts: MlpOptions): Required<MlpOptions> {
  const r = { ...DEFAULTS, ...opts };
  for (const k of ['inputDim', 'hidden', 'outputDim'] as const) {
    if (!Number.isInteger(r[k]) || r[k] < 1) throw new Error(`mlp: ${k} must be a positive integer, got ${r[k]}`);
  }
  return r;
}

/** Generates the seeded He-initialised weights that {@link buildMlp} embeds. */
export function mlpWeights(opts: MlpOptions = {}): MlpWeights {
  const { inputDim, hidden, outputDim, seed } = resolve(opts);
  const normal = normalSampler(mulberry32(seed));
  // Draw order is part of the format: changing it changes every model byte.
  const w1 = heNormal(inputDim * hidden, inputDim, normal);
  const b1 = randomNormal(hidden, BIAS_STD, normal);
  const w2 = heNormal(hidden * outputDim, hidden, normal);
  const b2 = randomNormal(outputDim, BIAS_STD, normal);
  return { inputDim, hidden, outputDim, w1, b1, w2, b2 };
}

/**
 * Builds `y = relu(x @ W1 + b1) @ W2 + b2`: `x` float32 `['batch', 784]` -> `y` float32 `['batch', 10]`.
 * About 3.3 MB with the default sizes.
 */
export function buildMlp(opts: MlpOptions = {}): Uint8Array {
  const w = mlpWeights(opts);
  const g = new OnnxGraphBuilder('mlp', `ms-serve builtin: random-weight MLP ${w.inputDim}-${w.hidden}-${w.outputDim}, seed ${resolve(opts).seed}`);
  g.input('x', 'float32', ['batch', w.inputDim]);
  g.initializer('fc1.weight', w.w1, [w.inputDim, w.hidden]);
  g.initializer('fc1.bias', w.b1, [w.hidden]);
  g.initializer('fc2.weight', w.w2, [w.hidden, w.outputDim]);
  g.initializer('fc2.bias', w.b2, [w.outputDim]);
  // MatMul+Add (not Gemm) to match the mlp.onnx whose throughput is recorded in the spec notes.
  let h = g.op('MatMul', ['x', 'fc1.weight'], {}, 'fc1.matmul');
  h = g.op('Add', [h, 'fc1.bias'], {}, 'fc1.out');
  h = g.op('Relu', [h], {}, 'relu1');
  h = g.op('MatMul', [h, 'fc2.weight'], {}, 'fc2.matmul');
  g.op('Add', [h, 'fc2.bias'], {}, 'y');
  g.output('y', 'float32', ['batch', w.outputDim]);
  return g.encode();
}

/** Options for {@link buildDeepMlp}. */
export interface DeepMlpOptions {
  readonly layers?: number;
  readonly width?: number;
  readonly inputDim?: number;
  readonly outputDim?: number;
  readonly seed?: number;
}

/**
 * A deeper MLP for pipeline tests and benchmarks (`ms-serve split`, staged servables): `layers`
 * hidden layers of `width` (MatMul + Add + Relu each), then a linear output. `x` float32
 * `['batch', inputDim]` -> `y` float32 `['batch', outputDim]`. Defaults: 8 layers of 512, 256 -> 16.
 */
export function buildDeepMlp(opts: DeepMlpOptions = {}): Uint8Array {
  const { layers = 8, width = 512, inputDim = 256, outputDim = 16, seed = 4321 } = opts;
  const normal = normalSampler(mulberry32(seed));
  const g = new OnnxGraphBuilder('deep_mlp', `ms-serve builtin: random-weight MLP ${inputDim}-${layers}x${width}-${outputDim}, seed ${seed}`);
  g.input('x', 'float32', ['batch', inputDim]);
  let h = 'x';
  let fanIn = inputDim;
  for (let l = 0; l < layers; l++) {
    g.initializer(`fc${l}.weight`, heNormal(fanIn * width, fanIn, normal), [fanIn, width]);
    g.initializer(`fc${l}.bias`, randomNormal(width, BIAS_STD, normal), [width]);
    h = g.op('MatMul', [h, `fc${l}.weight`], {}, `fc${l}.matmul`);
    h = g.op('Add', [h, `fc${l}.bias`], {}, `fc${l}.out`);
    h = g.op('Relu', [h], {}, `relu${l}`);
    fanIn = width;
  }
  g.initializer('head.weight', heNormal(fanIn * outputDim, fanIn, normal), [fanIn, outputDim]);
  g.initializer('head.bias', randomNormal(outputDim, BIAS_STD, normal), [outputDim]);
  h = g.op('MatMul', [h, 'head.weight'], {}, 'head.matmul');
  g.op('Add', [h, 'head.bias'], {}, 'y');
  g.output('y', 'float32', ['batch', outputDim]);
  return g.encode();
}
