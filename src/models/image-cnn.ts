// A small image classifier with random (untrained) weights. Its purpose is to
// exercise the image pre/post-processing pipeline and batching with realistic
// conv workloads, not to classify anything correctly.
import { OnnxGraphBuilder, floatAttr, heNormal, mulberry32, normalSampler, randomNormal } from './onnx-builder.ts';

/** CIFAR-10 class names, index-aligned with the default 10 logits. */
export const IMAGE_CNN_LABELS: readonly string[] = Object.freeze([
  'airplane',
  'automobile',
  'bird',
  'cat',
  'deer',
  'dog',
  'frog',
  'horse',
  'ship',
  'truck',
]);

/** Options for {@link buildImageCnn}; all have defaults. */
export interface ImageCnnOptions {
  /** Input height and width in pixels (default 32; at least 4 so both pools keep one pixel). */
  readonly size?: number;
  /** Number of output logits (default 10, matching IMAGE_CNN_LABELS). */
  readonly classes?: number;
  /** PRNG seed for the weights (default 1234). */
  readonly seed?: number;
}

/** Channel widths of the two conv layers; exported so references can mirror the graph. */
export const IMAGE_CNN_CHANNELS = [3, 8, 16] as const;

/** All parameters of the CNN, in ONNX layouts (conv OIHW, fc `[classes, 16]` used with transB). */
export interface ImageCnnWeights {
  readonly size: number;
  readonly classes: number;
  readonly conv1W: Float32Array;
  readonly conv1B: Float32Array;
  readonly conv2W: Float32Array;
  readonly conv2B: Float32Array;
  readonly fcW: Float32Array;
  readonly fcB: Float32Array;
}

const DEFAULTS = { size: 32, classes: 10, seed: 1234 };
// Small but non-zero biases so a reference that forgets to add them fails.
const BIAS_STD = 0.05;

function resolve(opts: ImageCnnOptions): Required<ImageCnnOptions> {
  const r = { ...DEFAULTS, ...opts };
  if (!Number.isInteger(r.size) || r.size < 4) throw new Error(`image_cnn: size must be an integer >= 4, got ${r.size}`);
  if (!Number.isInteger(r.classes) || r.classes < 1) throw new Error(`image_cnn: classes must be a positive integer, got ${r.classes}`);
  return r;
}

/**
 * Generates the seeded He-initialised weights that {@link buildImageCnn} embeds,
 * so tests and examples can recompute the network independently.
 */
export function imageCnnWeights(opts: ImageCnnOptions = {}): ImageCnnWeights {
  const { size, classes, seed } = resolve(opts);
  const [c0, c1, c2] = IMAGE_CNN_CHANNELS;
  const normal = normalSampler(mulberry32(seed));
  // Draw order is part of the format: changing it changes every model byte.
  const conv1W = heNormal(c1 * c0 * 9, c0 * 9, normal);
  const conv1B = randomNormal(c1, BIAS_STD, normal);
  const conv2W = heNormal(c2 * c1 * 9, c1 * 9, normal);
  const conv2B = randomNormal(c2, BIAS_STD, normal);
  const fcW = heNormal(classes * c2, c2, normal);
  const fcB = randomNormal(classes, BIAS_STD, normal);
  return { size, classes, conv1W, conv1B, conv2W, conv2B, fcW, fcB };
}

/**
 * Builds the CNN: `image` float32 `['batch', 3, size, size]` -> `logits` float32 `['batch', classes]`.
 * Conv3x3+Relu+MaxPool2 twice, GlobalAveragePool, Gemm.
 */
export function buildImageCnn(opts: ImageCnnOptions = {}): Uint8Array {
  const w = imageCnnWeights(opts);
  const { size, classes } = w;
  const [c0, c1, c2] = IMAGE_CNN_CHANNELS;
  const g = new OnnxGraphBuilder('image_cnn', `ms-serve builtin: random-weight CNN classifier, seed ${resolve(opts).seed}`);

  g.input('image', 'float32', ['batch', c0, size, size]);
  g.initializer('conv1.weight', w.conv1W, [c1, c0, 3, 3]);
  g.initializer('conv1.bias', w.conv1B, [c1]);
  g.initializer('conv2.weight', w.conv2W, [c2, c1, 3, 3]);
  g.initializer('conv2.bias', w.conv2B, [c2]);
  g.initializer('fc.weight', w.fcW, [classes, c2]);
  g.initializer('fc.bias', w.fcB, [classes]);

  const conv = { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [1, 1] };
  const pool = { kernel_shape: [2, 2], strides: [2, 2] };
  let h = g.op('Conv', ['image', 'conv1.weight', 'conv1.bias'], conv, 'conv1');
  h = g.op('Relu', [h], {}, 'relu1');
  h = g.op('MaxPool', [h], pool, 'pool1');
  h = g.op('Conv', [h, 'conv2.weight', 'conv2.bias'], conv, 'conv2');
  h = g.op('Relu', [h], {}, 'relu2');
  h = g.op('MaxPool', [h], pool, 'pool2');
  // Global pooling keeps the head independent of `size`.
  h = g.op('GlobalAveragePool', [h], {}, 'gap');
  h = g.op('Flatten', [h], { axis: 1 }, 'features');
  g.op('Gemm', [h, 'fc.weight', 'fc.bias'], { alpha: floatAttr(1), beta: floatAttr(1), transB: 1 }, 'logits');
  g.output('logits', 'float32', ['batch', classes]);

  if (classes === IMAGE_CNN_LABELS.length) g.meta('labels', IMAGE_CNN_LABELS.join(','));
  return g.encode();
}
