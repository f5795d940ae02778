/**
 * Builds servable directories for integration tests: servable_config.ts files come from
 * templates/ or test/fixtures/servables/, model files are generated here with src/models builders
 * (no .onnx file is committed).
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildAddModel, buildImageCnn, OnnxGraphBuilder, type Dim } from '../../src/models/index.ts'
import { IR_VERSION, makeValueInfo, onnx, OPSET_VERSION } from '../../src/models/onnx-builder.ts'
import { ROOT } from './server.ts'

export const FIXTURES = join(ROOT, 'test', 'fixtures', 'servables')

/** y = x1 <op> x2 over float32 with the given shape (a fixed first dim makes a fixed-batch model). */
export function binaryModel(op: 'Add' | 'Mul', shape: Dim[]): Uint8Array {
  const g = new OnnxGraphBuilder(`test_${op.toLowerCase()}`, `test fixture: y = x1 ${op} x2`)
  g.input('x1', 'float32', shape)
  g.input('x2', 'float32', shape)
  g.op(op, ['x1', 'x2'], {}, 'y')
  g.output('y', 'float32', shape)
  return g.encode()
}

/**
 * outputs = inputs (one Identity each) for element types the graph builder does not declare:
 * `[name, ONNX TensorProto.DataType, dims]` per input, output i named `<name>_out`.
 */
export function identityModel(inputs: Array<[name: string, elemType: number, dims: Dim[]]>): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: 'ms-serve-test',
    opsetImport: [{ domain: '', version: OPSET_VERSION }],
    graph: {
      name: 'identity',
      node: inputs.map(([name]) => ({ name: `id_${name}`, opType: 'Identity', input: [name], output: [`${name}_out`] })),
      input: inputs.map(([name, t, dims]) => makeValueInfo(name, t, dims)),
      output: inputs.map(([name, t, dims]) => makeValueInfo(`${name}_out`, t, dims)),
    },
  })
  return onnx.ModelProto.encode(model).finish()
}

const T = onnx.TensorProto.DataType

/** Writes DIR/<name>/servable_config.ts from `configFile` and each version's model files. */
export function writeServable(dir: string, name: string, configFile: string, versions: Record<number, Record<string, Uint8Array>>): string {
  const sdir = join(dir, name)
  mkdirSync(sdir, { recursive: true })
  copyFileSync(configFile, join(sdir, 'servable_config.ts'))
  for (const [v, files] of Object.entries(versions)) {
    mkdirSync(join(sdir, v), { recursive: true })
    for (const [f, data] of Object.entries(files)) writeFileSync(join(sdir, v, f), data)
  }
  return sdir
}

/** The `add` template (add_common, add_cast) as `name`. */
/**
 * A servable of one model (`decl`: declareModel's argument, e.g. `{ stages: ['stage1.onnx', 'stage2.onnx'] }`)
 * with a `predict` method x -> y; `files` go into version 1 (bytes, or a path to copy).
 */
export function oneModelServable(dir: string, name: string, decl: string, files: Record<string, Uint8Array | string>): void {
  mkdirSync(join(dir, name, '1'), { recursive: true })
  writeFileSync(join(dir, name, 'servable_config.ts'), `import { defineServable } from 'ms-serve'\nexport default defineServable((s) => {\n  const m = s.declareModel(${decl})\n  s.registerMethod('predict', { inputs: ['x'], outputs: ['y'] }, ({ x }) => ({ y: s.addStage(m, [x]) }))\n})\n`)
  for (const [f, data] of Object.entries(files)) {
    if (typeof data === 'string') copyFileSync(data, join(dir, name, '1', f))
    else writeFileSync(join(dir, name, '1', f), data)
  }
}

/** `plain`: the llm template's config over the decoder of the llm-distributed servable in `dir` (the same model, unsplit). */
export function plainLlmBeside(dir: string, from = 'llm-distributed', name = 'plain'): void {
  mkdirSync(join(dir, name, '1'), { recursive: true })
  copyFileSync(join(ROOT, 'templates', 'llm', 'servable_config.ts'), join(dir, name, 'servable_config.ts'))
  copyFileSync(join(ROOT, 'templates', 'llm', 'tokenizer_config.json'), join(dir, name, 'tokenizer_config.json'))
  copyFileSync(join(dir, from, '1', 'model.onnx'), join(dir, name, '1', 'model.onnx'))
}

export const addServable = (dir: string, name = 'add') =>
  writeServable(dir, name, join(ROOT, 'templates', 'add', 'servable_config.ts'), { 1: { 'add.onnx': buildAddModel({ batchDim: true }) } })

/** The `image` template (classify). */
export const imageServable = (dir: string) =>
  writeServable(dir, 'image', join(ROOT, 'templates', 'image', 'servable_config.ts'), { 1: { 'image_cnn.onnx': buildImageCnn() } })

const fixture = (name: string) => join(FIXTURES, name, 'servable_config.ts')
const ADD = () => buildAddModel({ batchDim: true })

/** Fixture servables by name, each with its generated models. */
export const FIXTURE_SERVABLES: Record<string, (dir: string) => string> = {
  batching: (dir) => writeServable(dir, 'batching', fixture('batching'), { 1: { 'add.onnx': ADD() } }),
  single: (dir) => writeServable(dir, 'single', fixture('single'), { 1: { 'add.onnx': ADD() } }),
  fixed4: (dir) => writeServable(dir, 'fixed4', fixture('fixed4'), { 1: { 'add4.onnx': binaryModel('Add', [4, 2, 2]) } }),
  add_nobatch: (dir) => writeServable(dir, 'add_nobatch', fixture('add_nobatch'), { 1: { 'add_nobatch.onnx': buildAddModel({ batchDim: false }) } }),
  errors: (dir) => writeServable(dir, 'errors', fixture('errors'), { 1: { 'add.onnx': ADD() } }),
  slow: (dir) => writeServable(dir, 'slow', fixture('slow'), { 1: { 'add.onnx': ADD() } }),
  crashy: (dir) => writeServable(dir, 'crashy', fixture('crashy'), { 1: { 'add.onnx': ADD() } }),
  constant: (dir) => writeServable(dir, 'constant', fixture('constant'), { 1: { 'add.onnx': ADD() } }),
  stall: (dir) => writeServable(dir, 'stall', fixture('stall'), { 1: { 'add.onnx': ADD() } }),
  dtypes: (dir) => writeServable(dir, 'dtypes', fixture('dtypes'), {
    1: { 'identity.onnx': identityModel([['h', T.FLOAT16, ['batch', 3]], ['i', T.INT64, ['batch', 3]], ['d', T.DOUBLE, ['batch', 2]], ['b', T.BOOL, ['batch', 2]]]) },
  }),
  // Version 1 adds, version 2 multiplies.
  addv: (dir) => writeServable(dir, 'addv', fixture('addv'), { 1: { 'model.onnx': ADD() }, 2: { 'model.onnx': binaryModel('Mul', ['batch', 2, 2]) } }),
}

/** Float32 2x2 instance helpers. */
export const X1 = [[1.0, 2.0], [3.0, 4.0]]
export const X2 = [[5.0, 6.0], [7.0, 8.0]]

/** One add_common instance, X1 + X2, as MindSpore REST JSON (floats written as `1.0`). */
export const ADD_BODY = floatJson({ instances: [{ x1: X1, x2: X2 }] })

/** The k-th add instance of the load tests: x1 = [[k,k],[k,k]], x2 = X2. */
export const kInstance = (k: number) => ({ x1: [[k, k], [k, k]], x2: X2 })
/** A REST body holding kInstance(k) alone. */
export const kRequest = (k: number) => floatJson({ instances: [kInstance(k)] })
/** y of kInstance(k). */
export const kSum = (k: number) => [[k + 5, k + 6], [k + 7, k + 8]]

/**
 * The servables of the predict suites (REST and gRPC): DIR/servables holds add, image, addv
 * (versions 1 and 2 loaded through DIR/server.yaml) and errors; DIR/small holds add alone.
 */
export function predictServables(dir: string): { servables: string; config: string; small: string } {
  const servables = join(dir, 'servables')
  addServable(servables)
  imageServable(servables)
  FIXTURE_SERVABLES['addv']!(servables)
  FIXTURE_SERVABLES['errors']!(servables)
  const config = join(dir, 'server.yaml')
  writeFileSync(config, 'servables:\n  addv:\n    versions: [1, 2]\n')
  const small = join(dir, 'small')
  addServable(small)
  return { servables, config, small }
}

/** Compares nested number arrays within float32 precision. */
export function assertClose(actual: unknown, expected: unknown, eps = 1e-5, path = '$'): void {
  if (typeof expected === 'number') {
    if (typeof actual !== 'number' || Math.abs(actual - expected) > eps * Math.max(1, Math.abs(expected))) {
      throw new Error(`${path}: expected ${expected}, got ${JSON.stringify(actual)}`)
    }
    return
  }
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual) || actual.length !== expected.length) throw new Error(`${path}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`)
    expected.forEach((e, i) => assertClose(actual[i], e, eps, `${path}[${i}]`))
    return
  }
  if (JSON.stringify(actual) !== JSON.stringify(expected)) throw new Error(`${path}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`)
}

/** JSON text where every number is written as a float (`1.0`): MindSpore REST types 1 as int32. */
export function floatJson(v: unknown): string {
  if (typeof v === 'number') return Number.isInteger(v) ? `${v}.0` : String(v)
  if (Array.isArray(v)) return `[${v.map(floatJson).join(',')}]`
  if (v && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${floatJson(x)}`).join(',')}}`
  return JSON.stringify(v)
}
