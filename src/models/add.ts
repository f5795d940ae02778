// The "add" servable from MindSpore Serving's examples, as an ONNX graph:
// the simplest model, used for protocol tests and per-request overhead benchmarks.
import { OnnxGraphBuilder, type Dim } from './onnx-builder.ts';

/** Options for {@link buildAddModel}. */
export interface AddModelOptions {
  /** true: inputs are `['batch', 2, 2]`; false: a fixed `[2, 2]` (MindSpore's `with_batch_dim=False`). */
  readonly batchDim: boolean;
}

/** Shape of each add input/output for the given batch mode. */
export function addModelShape(opts: AddModelOptions): Dim[] {
  return opts.batchDim ? ['batch', 2, 2] : [2, 2];
}

/**
 * Builds `y = x1 + x2` over float32 tensors; no weights, so output is a pure
 * function of the options.
 */
export function buildAddModel(opts: AddModelOptions): Uint8Array {
  const shape = addModelShape(opts);
  const g = new OnnxGraphBuilder(
    opts.batchDim ? 'add' : 'add_nobatch',
    'ms-serve builtin: y = x1 + x2 (float32)',
  );
  g.input('x1', 'float32', shape);
  g.input('x2', 'float32', shape);
  g.op('Add', ['x1', 'x2'], {}, 'y');
  g.output('y', 'float32', shape);
  g.meta('with_batch_dim', String(opts.batchDim));
  return g.encode();
}
