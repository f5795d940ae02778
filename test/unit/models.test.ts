// Built-in model builders: each model must load in onnxruntime-node, expose the
// documented I/O, agree with an independent plain-JS forward pass, and be
// byte-for-byte reproducible.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import p from 'onnx-proto';
import {
  BUILTIN_MODELS,
  IMAGE_CNN_LABELS,
  OnnxGraphBuilder,
  buildAddModel,
  buildBuiltinModel,
  buildImageCnn,
  buildMlp,
  imageCnnWeights,
  mlpWeights,
  mulberry32,
  type ImageCnnWeights,
  type MlpWeights,
} from '../../src/models/index.ts';

const { onnx } = p;
const BATCHES = [1, 3, 8];
const TOL = 1e-4;

function uniform(n: number, seed: number, lo = 0, hi = 1): Float32Array {
  const rng = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rng();
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function tensorMeta(session: ort.InferenceSession, which: 'input' | 'output'): Array<[string, string, unknown[]]> {
  const list = which === 'input' ? session.inputMetadata : session.outputMetadata;
  return list.map((m) => {
    assert.ok(m.isTensor, `${m.name} should be a tensor`);
    return [m.name, m.type, [...m.shape]];
  });
}

async function runOne(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>, out: string): Promise<ort.Tensor> {
  const res = await session.run(feeds);
  const t = res[out];
  assert.ok(t, `missing output ${out}`);
  return t;
}

// ---- plain-JS references (float64 accumulation, NCHW, one sample at a time) ----

function conv3x3Pad1(x: Float64Array, cin: number, hw: number, w: Float32Array, b: Float32Array, cout: number): Float64Array {
  const out = new Float64Array(cout * hw * hw);
  for (let o = 0; o < cout; o++)
    for (let y = 0; y < hw; y++)
      for (let xx = 0; xx < hw; xx++) {
        let s = b[o]!;
        for (let c = 0; c < cin; c++)
          for (let ky = 0; ky < 3; ky++) {
            const iy = y + ky - 1;
            if (iy < 0 || iy >= hw) continue;
            for (let kx = 0; kx < 3; kx++) {
              const ix = xx + kx - 1;
              if (ix < 0 || ix >= hw) continue;
              s += w[((o * cin + c) * 3 + ky) * 3 + kx]! * x[(c * hw + iy) * hw + ix]!;
            }
          }
        out[(o * hw + y) * hw + xx] = s;
      }
  return out;
}

function reluMaxPool2(x: Float64Array, c: number, hw: number): [Float64Array, number] {
  const ho = Math.floor(hw / 2);
  const out = new Float64Array(c * ho * ho);
  for (let k = 0; k < c; k++)
    for (let y = 0; y < ho; y++)
      for (let xx = 0; xx < ho; xx++) {
        let m = -Infinity;
        for (let dy = 0; dy < 2; dy++)
          for (let dx = 0; dx < 2; dx++) m = Math.max(m, x[(k * hw + 2 * y + dy) * hw + 2 * xx + dx]!);
        out[(k * ho + y) * ho + xx] = Math.max(0, m); // relu commutes with max
      }
  return [out, ho];
}

function cnnReference(w: ImageCnnWeights, images: Float32Array, batch: number): Float64Array {
  const { size, classes } = w;
  const logits = new Float64Array(batch * classes);
  const per = 3 * size * size;
  for (let n = 0; n < batch; n++) {
    let h: Float64Array = Float64Array.from(images.subarray(n * per, (n + 1) * per));
    let hw = size;
    h = conv3x3Pad1(h, 3, hw, w.conv1W, w.conv1B, 8);
    [h, hw] = reluMaxPool2(h, 8, hw);
    h = conv3x3Pad1(h, 8, hw, w.conv2W, w.conv2B, 16);
    [h, hw] = reluMaxPool2(h, 16, hw);
    const feat = new Float64Array(16);
    for (let c = 0; c < 16; c++) {
      for (let i = 0; i < hw * hw; i++) feat[c]! += h[c * hw * hw + i]!;
      feat[c]! /= hw * hw;
    }
    for (let k = 0; k < classes; k++) {
      let s = w.fcB[k]!;
      for (let c = 0; c < 16; c++) s += w.fcW[k * 16 + c]! * feat[c]!;
      logits[n * classes + k] = s;
    }
  }
  return logits;
}

function mlpReference(w: MlpWeights, x: Float32Array, batch: number): Float64Array {
  const { inputDim: I, hidden: H, outputDim: O } = w;
  const y = new Float64Array(batch * O);
  const h = new Float64Array(H);
  for (let n = 0; n < batch; n++) {
    h.set(w.b1);
    for (let i = 0; i < I; i++) {
      const xi = x[n * I + i]!;
      for (let j = 0; j < H; j++) h[j]! += xi * w.w1[i * H + j]!;
    }
    for (let k = 0; k < O; k++) {
      let s = w.b2[k]!;
      for (let j = 0; j < H; j++) s += Math.max(0, h[j]!) * w.w2[j * O + k]!;
      y[n * O + k] = s;
    }
  }
  return y;
}

// ---- tests ----

describe('add model', () => {
  let batched: ort.InferenceSession;
  let fixed: ort.InferenceSession;
  before(async () => {
    batched = await ort.InferenceSession.create(buildAddModel({ batchDim: true }));
    fixed = await ort.InferenceSession.create(buildAddModel({ batchDim: false }));
  });
  after(async () => {
    await batched.release();
    await fixed.release();
  });

  it('declares x1, x2 -> y with the documented shapes', () => {
    assert.deepEqual(batched.inputNames, ['x1', 'x2']);
    assert.deepEqual(batched.outputNames, ['y']);
    assert.deepEqual(tensorMeta(batched, 'input'), [['x1', 'float32', ['batch', 2, 2]], ['x2', 'float32', ['batch', 2, 2]]]);
    assert.deepEqual(tensorMeta(batched, 'output'), [['y', 'float32', ['batch', 2, 2]]]);
    assert.deepEqual(tensorMeta(fixed, 'input'), [['x1', 'float32', [2, 2]], ['x2', 'float32', [2, 2]]]);
    assert.deepEqual(tensorMeta(fixed, 'output'), [['y', 'float32', [2, 2]]]);
  });

  for (const b of BATCHES) {
    it(`adds exactly at batch ${b}`, async () => {
      const a = uniform(b * 4, 10 + b, -100, 100);
      const c = uniform(b * 4, 20 + b, -100, 100);
      const y = await runOne(batched, { x1: new ort.Tensor('float32', a, [b, 2, 2]), x2: new ort.Tensor('float32', c, [b, 2, 2]) }, 'y');
      assert.deepEqual(y.dims, [b, 2, 2]);
      assert.deepEqual([...(y.data as Float32Array)], [...a].map((v, i) => Math.fround(v + c[i]!)));
    });
  }

  it('without batch dim adds [2,2] and rejects a batched input', async () => {
    const y = await runOne(fixed, { x1: new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4), [2, 2]), x2: new ort.Tensor('float32', Float32Array.of(10, 20, 30, 40), [2, 2]) }, 'y');
    assert.deepEqual(y.dims, [2, 2]);
    assert.deepEqual([...(y.data as Float32Array)], [11, 22, 33, 44]);
    const bad = new ort.Tensor('float32', new Float32Array(4), [1, 2, 2]);
    await assert.rejects(fixed.run({ x1: bad, x2: bad }));
  });
});

describe('image_cnn model', () => {
  let session: ort.InferenceSession;
  const weights = imageCnnWeights();
  before(async () => {
    session = await ort.InferenceSession.create(buildImageCnn());
  });
  after(async () => {
    await session.release();
  });

  it('declares image -> logits and 10 labels', () => {
    assert.deepEqual(tensorMeta(session, 'input'), [['image', 'float32', ['batch', 3, 32, 32]]]);
    assert.deepEqual(tensorMeta(session, 'output'), [['logits', 'float32', ['batch', 10]]]);
    assert.equal(IMAGE_CNN_LABELS.length, 10);
    assert.equal(new Set(IMAGE_CNN_LABELS).size, 10);
  });

  for (const b of BATCHES) {
    it(`matches the JS reference at batch ${b}`, async () => {
      const images = uniform(b * 3 * 32 * 32, 100 + b);
      const y = await runOne(session, { image: new ort.Tensor('float32', images, [b, 3, 32, 32]) }, 'logits');
      assert.deepEqual(y.dims, [b, 10]);
      const ref = cnnReference(weights, images, b);
      const d = maxAbsDiff(y.data as Float32Array, ref);
      assert.ok(d <= TOL, `max |diff| ${d}`);
      // Guard against a degenerate network (e.g. all-zero logits) that would pass trivially.
      assert.ok(maxAbsDiff(ref, new Float64Array(ref.length)) > 0.01);
    });
  }

  it('honours size, classes and seed options', async () => {
    const opts = { size: 20, classes: 5, seed: 7 };
    const s = await ort.InferenceSession.create(buildImageCnn(opts));
    try {
      assert.deepEqual(tensorMeta(s, 'input'), [['image', 'float32', ['batch', 3, 20, 20]]]);
      assert.deepEqual(tensorMeta(s, 'output'), [['logits', 'float32', ['batch', 5]]]);
      const images = uniform(2 * 3 * 20 * 20, 5);
      const y = await runOne(s, { image: new ort.Tensor('float32', images, [2, 3, 20, 20]) }, 'logits');
      const d = maxAbsDiff(y.data as Float32Array, cnnReference(imageCnnWeights(opts), images, 2));
      assert.ok(d <= TOL, `max |diff| ${d}`);
    } finally {
      await s.release();
    }
    assert.throws(() => buildImageCnn({ size: 3 }), /size/);
  });
});

describe('mlp model', () => {
  let session: ort.InferenceSession;
  const weights = mlpWeights();
  before(async () => {
    session = await ort.InferenceSession.create(buildMlp());
  });
  after(async () => {
    await session.release();
  });

  it('declares x [batch,784] -> y [batch,10]', () => {
    assert.deepEqual(tensorMeta(session, 'input'), [['x', 'float32', ['batch', 784]]]);
    assert.deepEqual(tensorMeta(session, 'output'), [['y', 'float32', ['batch', 10]]]);
  });

  for (const b of BATCHES) {
    it(`matches the JS reference at batch ${b}`, async () => {
      const x = uniform(b * 784, 200 + b);
      const y = await runOne(session, { x: new ort.Tensor('float32', x, [b, 784]) }, 'y');
      assert.deepEqual(y.dims, [b, 10]);
      const ref = mlpReference(weights, x, b);
      const d = maxAbsDiff(y.data as Float32Array, ref);
      assert.ok(d <= TOL, `max |diff| ${d}`);
      assert.ok(maxAbsDiff(ref, new Float64Array(ref.length)) > 0.01);
    });
  }
});

describe('registry, determinism and encoding', () => {
  it('lists exactly the built-in models', () => {
    assert.deepEqual(Object.keys(BUILTIN_MODELS).sort(), ['add', 'add_nobatch', 'decoder_small', 'decoder_tiny', 'decoder_tiny4', 'image_cnn', 'mlp']);
    assert.throws(() => buildBuiltinModel('nope'), /unknown built-in model/);
    assert.throws(() => buildBuiltinModel('toString'), /unknown built-in model/);
  });

  // decoder_small (25M params, ~100 MB) is left out of the loops below to keep unit tests fast;
  // decoder_tiny is built by the same code.
  const cheap = Object.entries(BUILTIN_MODELS).filter(([name]) => name !== 'decoder_small');

  it('builds identical bytes twice, and different bytes for a different seed', () => {
    for (const [name, build] of cheap) {
      assert.ok(Buffer.from(build()).equals(Buffer.from(build())), `${name} is not deterministic`);
    }
    assert.ok(!Buffer.from(buildImageCnn()).equals(Buffer.from(buildImageCnn({ seed: 1 }))));
    assert.ok(!Buffer.from(buildMlp({ hidden: 8 })).equals(Buffer.from(buildMlp({ hidden: 8, seed: 1 }))));
  });

  it('writes IR 8, opset 17 and a ~3.3 MB mlp', () => {
    for (const [name, build] of cheap) {
      const m = onnx.ModelProto.decode(build());
      assert.equal(Number(m.irVersion), 8, name);
      assert.deepEqual(m.opsetImport.map((o) => [o.domain ?? '', Number(o.version)]), [['', 17]], name);
    }
    const size = BUILTIN_MODELS.mlp!().length;
    assert.ok(size > 3_200_000 && size < 3_400_000, `mlp is ${size} bytes`);
  });

  it('builder rejects duplicate value names and non-integer INT attributes', () => {
    const g = new OnnxGraphBuilder('t');
    g.input('a', 'float32', [1]);
    assert.throws(() => g.input('a', 'float32', [1]), /already defined/);
    assert.throws(() => g.op('Foo', ['a'], { alpha: 0.5 }), /floatAttr/);
    assert.throws(() => g.initializer('w', new Float32Array(3), [2, 2]), /need 4 values/);
  });
});
