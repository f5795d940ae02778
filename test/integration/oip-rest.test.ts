// Open Inference Protocol v2 over REST against the real server: the spec's JSON examples (server
// and model metadata, readiness, infer with flat and nested data), the binary tensor extension in
// both directions (numeric and BYTES, raw single-tensor bodies), model names (servable,
// servable/method, versions), batching of OIP batch dims through the dynamic batcher, and errors
// as {"error": ...} with the protocol's statuses.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import sharp from 'sharp'
import { addServable, assertClose, FIXTURE_SERVABLES, imageServable, writeServable } from '../helpers/fixtures.ts'
import { OnnxGraphBuilder } from '../../src/models/index.ts'
import { startServer, tempServables, type StartedServer } from '../helpers/server.ts'
import { IMAGE_CNN_LABELS } from '../../src/models/index.ts'

let srv: StartedServer
let dir = ''
const cleanups: Array<() => void> = []

before(async () => {
  dir = tempServables({ after: (fn) => cleanups.push(fn) })
  addServable(dir)
  imageServable(dir)
  for (const n of ['add_nobatch', 'errors', 'addv', 'single']) FIXTURE_SERVABLES[n]!(dir)
  // The spec's illustrative model: scaler version 2, y = 2x over FP32 [batch, 3]; and KServe's iris-shaped [batch, 4].
  for (const [name, width, version] of [['scaler', 3, 2], ['iris', 4, 1]] as const) {
    const cfg = join(dir, `${name}.config.ts`)
    writeFileSync(cfg, `import { defineServable } from 'ms-serve'\nexport default defineServable((s) => {\n  const m = s.declareModel({ file: 'double.onnx' })\n  s.registerMethod('predict', { inputs: ['x'], outputs: ['y'] }, ({ x }) => ({ y: s.addStage(m, [x]) }))\n})\n`)
    const g = new OnnxGraphBuilder('double', 'y = x + x')
    g.input('x', 'float32', ['batch', width])
    g.op('Add', ['x', 'x'], {}, 'y')
    g.output('y', 'float32', ['batch', width])
    writeServable(dir, name, cfg, { [version]: { 'double.onnx': g.encode() } })
  }
  writeFileSync(join(dir, 'server.yaml'), 'servables:\n  addv: { versions: [1, 2] }\n')
  srv = await startServer(dir, ['--no-watch', '--config', join(dir, 'server.yaml')])
})

after(async () => {
  await srv?.stop()
  for (const c of cleanups) c()
})

const url = (p: string) => `${srv.rest}${p}`
async function getJson(p: string): Promise<{ status: number; json: any }> {
  const r = await fetch(url(p))
  return { status: r.status, json: await r.json() }
}
async function infer(model: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any; res: Response; buf: Buffer }> {
  const res = await fetch(url(`/v2/models/${model}/infer`), { method: 'POST', body: Buffer.isBuffer(body) ? new Uint8Array(body) : JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } })
  const buf = Buffer.from(await res.arrayBuffer())
  let json: any
  try { json = JSON.parse(buf.toString()) } catch { json = undefined }
  return { status: res.status, json, res, buf }
}

/** A binary-extension body: the JSON header, then the tensors' bytes; and its length header. */
function binaryBody(json: unknown, ...tensors: Buffer[]): [Buffer, Record<string, string>] {
  const header = Buffer.from(JSON.stringify(json))
  return [Buffer.concat([header, ...tensors]), { 'inference-header-content-length': String(header.length) }]
}

const f32 = (xs: number[]) => Buffer.from(new Float32Array(xs).buffer)

test('server metadata, liveness and readiness', async () => {
  const meta = await getJson('/v2')
  assert.equal(meta.status, 200)
  assert.equal(meta.json.name, 'ms-serve')
  assert.match(meta.json.version, /^\d+\.\d+\.\d+/)
  assert.deepEqual(meta.json.extensions, ['binary_tensor_data', 'generate'])
  assert.deepEqual((await getJson('/v2/health/live')).json, { live: true })
  assert.deepEqual(await getJson('/v2/health/ready'), { status: 200, json: { ready: true } })
})

test('the spec example: scaler version 2, id echoed, requested output', async () => {
  const r = await infer('scaler', { id: 'r7', inputs: [{ name: 'x', shape: [1, 3], datatype: 'FP32', data: [0.5, 1.5, 2.5] }], outputs: [{ name: 'y' }] })
  assert.equal(r.status, 200, r.buf.toString())
  assert.deepEqual(r.json, { model_name: 'scaler', model_version: '2', id: 'r7', outputs: [{ name: 'y', shape: [1, 3], datatype: 'FP32', data: [1.0, 3.0, 5.0] }] })
  const meta = await getJson('/v2/models/scaler/versions/2')
  assert.deepEqual(meta.json, { name: 'scaler', versions: ['2'], platform: 'onnx_onnxv1', inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3] }], outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 3] }] })
  // The one-input model of known type and shape takes a raw body (header length 0) as batch 1.
  const raw = await infer('scaler', f32([1, 2, 3]), { 'inference-header-content-length': '0' })
  assert.equal(raw.status, 200, raw.buf.toString())
  const n = Number(raw.res.headers.get('inference-header-content-length'))
  assert.deepEqual(JSON.parse(raw.buf.subarray(0, n).toString()).outputs, [{ name: 'y', datatype: 'FP32', shape: [1, 3], parameters: { binary_data_size: 12 } }])
  assert.deepEqual(Array.from(new Float32Array(new Uint8Array(raw.buf.subarray(n)).buffer)), [2, 4, 6])
})

test("KServe's v2 example request (iris-shaped FP32 [2,4], nested data)", async () => {
  const r = await infer('iris', { inputs: [{ name: 'x', shape: [2, 4], datatype: 'FP32', data: [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]] }] })
  assert.equal(r.status, 200, r.buf.toString())
  assert.deepEqual(r.json.outputs[0].shape, [2, 4])
  assertClose(r.json.outputs[0].data, [13.6, 5.6, 9.6, 2.8, 12.0, 6.8, 9.0, 3.2])
  assert.equal(r.json.id, undefined)
})

test('model metadata: servable/method, the batch dim as -1, versions, and one-method servables by their name', async () => {
  const m = await getJson('/v2/models/add/add_common')
  assert.equal(m.status, 200)
  assert.deepEqual(m.json, {
    name: 'add/add_common', versions: ['1'], platform: 'onnx_onnxv1',
    inputs: [{ name: 'x1', datatype: 'FP32', shape: [-1, 2, 2] }, { name: 'x2', datatype: 'FP32', shape: [-1, 2, 2] }],
    outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 2, 2] }],
  })
  // A model without a batch dim: the whole shape, no -1.
  assert.deepEqual((await getJson('/v2/models/add_nobatch')).json.inputs[0], { name: 'x1', datatype: 'FP32', shape: [2, 2] })
  // add_cast's inputs go to a TS stage first: their type is decided at run time.
  assert.deepEqual((await getJson('/v2/models/add/add_cast')).json.inputs[0], { name: 'x1', datatype: 'ANY', shape: [-1] })
  const v = await getJson('/v2/models/addv/versions/1')
  assert.deepEqual(v.json.versions, ['1', '2'])
  assert.equal(v.json.name, 'addv')
  // %2F is the same as two segments.
  assert.deepEqual((await getJson('/v2/models/add%2Fadd_common')).json.name, 'add/add_common')
})

test('model readiness, with and without a method and a version', async () => {
  for (const p of ['/v2/models/add/ready', '/v2/models/add/add_common/ready', '/v2/models/addv/versions/2/ready']) {
    const r = await getJson(p)
    assert.equal(r.status, 200, p)
    assert.equal(r.json.ready, true, p)
  }
  assert.equal((await getJson('/v2/models/nosuch/ready')).status, 404)
  assert.equal((await getJson('/v2/models/add/nosuch/ready')).status, 404)
  assert.equal((await getJson('/v2/models/addv/versions/7/ready')).status, 404)
})

test('infer: the spec example shape (id echoed, flat and nested data), a batch of 3 split into instances', async () => {
  const x1 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
  const r = await infer('add/add_common', {
    id: 'r7',
    inputs: [
      { name: 'x1', shape: [3, 2, 2], datatype: 'FP32', data: x1 },
      { name: 'x2', shape: [3, 2, 2], datatype: 'FP32', data: [[[1, 1], [1, 1]], [[2, 2], [2, 2]], [[3, 3], [3, 3]]] },
    ],
    outputs: [{ name: 'y' }],
  })
  assert.equal(r.status, 200, JSON.stringify(r.json))
  assert.deepEqual(r.json, {
    model_name: 'add/add_common', model_version: '1', id: 'r7',
    outputs: [{ name: 'y', datatype: 'FP32', shape: [3, 2, 2], data: [2, 3, 4, 5, 7, 8, 9, 10, 12, 13, 14, 15] }],
  })
  // The 3 instances went through the method's batch queue as 3 instances of one request.
  const stats = await getJson('/stats')
  const add = stats.json.servables.find((s: any) => s.name === 'add')
  assert.ok(add.methods.add_common.instances >= 3)
})

test('infer: versions pick the model (addv 1 adds, 2 multiplies), the newest without one', async () => {
  const body = { inputs: [{ name: 'x1', shape: [1, 2, 2], datatype: 'FP32', data: [1, 2, 3, 4] }, { name: 'x2', shape: [1, 2, 2], datatype: 'FP32', data: [2, 2, 2, 2] }] }
  const v1 = await infer('addv/versions/1', body)
  const v2 = await infer('addv/versions/2', body)
  const newest = await infer('addv', body)
  assert.deepEqual(v1.json.outputs[0].data, [3, 4, 5, 6])
  assert.deepEqual(v2.json.outputs[0].data, [2, 4, 6, 8])
  assert.equal(v2.json.model_version, '2')
  assert.deepEqual(newest.json, v2.json)
})

test('binary extension: binary inputs and binary_data_output, bytes equal to the JSON answer', async () => {
  const header = Buffer.from(JSON.stringify({
    inputs: [
      { name: 'x1', shape: [2, 2, 2], datatype: 'FP32', parameters: { binary_data_size: 32 } },
      { name: 'x2', shape: [2, 2, 2], datatype: 'FP32', parameters: { binary_data_size: 32 } },
    ],
    parameters: { binary_data_output: true },
  }))
  const x1 = [0.5, 1, 2, 3, 4, 5, 6, 7]
  const x2 = [1, 1, 1, 1, 2, 2, 2, 2]
  const r = await infer('add/add_common', Buffer.concat([header, f32(x1), f32(x2)]), { 'inference-header-content-length': String(header.length), 'content-type': 'application/octet-stream' })
  assert.equal(r.status, 200, r.buf.toString())
  assert.equal(r.res.headers.get('content-type'), 'application/octet-stream')
  const n = Number(r.res.headers.get('inference-header-content-length'))
  const head = JSON.parse(r.buf.subarray(0, n).toString())
  assert.deepEqual(head.outputs, [{ name: 'y', datatype: 'FP32', shape: [2, 2, 2], parameters: { binary_data_size: 32 } }])
  const y = new Float32Array(r.buf.buffer.slice(r.buf.byteOffset + n, r.buf.byteOffset + n + 32))
  assert.deepEqual(Array.from(y), x1.map((v, i) => v + x2[i]!))
  // Per-output binary_data false wins over binary_data_output: JSON again.
  const [body, headers] = binaryBody({
    inputs: [
      { name: 'x1', shape: [2, 2, 2], datatype: 'FP32', parameters: { binary_data_size: 32 } },
      { name: 'x2', shape: [2, 2, 2], datatype: 'FP32', data: x2 },
    ],
    outputs: [{ name: 'y', parameters: { binary_data: false } }],
    parameters: { binary_data_output: true },
  }, f32(x1))
  const mixed = await infer('add/add_common', body, headers)
  assert.equal(mixed.status, 200, mixed.buf.toString())
  assert.deepEqual(mixed.json.outputs[0].data, Array.from(y))
})

test('binary extension: BYTES in and out (length-prefixed), strings from JSON', async () => {
  const raw = Buffer.from([1, 2, 3, 250])
  const lp = (b: Buffer) => Buffer.concat([Buffer.from(new Uint32Array([b.length]).buffer), b])
  const header = Buffer.from(JSON.stringify({
    inputs: [
      { name: 'text', shape: [1], datatype: 'BYTES', data: ['héllo'] },
      { name: 'raw', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: 8 } },
    ],
    outputs: [{ name: 'raw', parameters: { binary_data: true } }, { name: 'text' }, { name: 'size' }],
  }))
  const r = await infer('errors/echo', Buffer.concat([header, lp(raw)]), { 'inference-header-content-length': String(header.length) })
  assert.equal(r.status, 200, r.buf.toString())
  const n = Number(r.res.headers.get('inference-header-content-length'))
  const head = JSON.parse(r.buf.subarray(0, n).toString())
  assert.deepEqual(head.outputs, [
    { name: 'raw', datatype: 'BYTES', shape: [], parameters: { binary_data_size: 8 } },
    { name: 'text', datatype: 'BYTES', shape: [], data: ['héllo!'] },
    { name: 'size', datatype: 'INT32', shape: [], data: [4] },
  ])
  assert.deepEqual([...r.buf.subarray(n)], [...lp(Buffer.from([250, 3, 2, 1]))])
})

test('raw request body (header length 0): one tensor for a one-input model, batch 1', async () => {
  const w = 48
  const h = 40
  const pixels = Buffer.alloc(w * h * 3, 90)
  const png = await sharp(pixels, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer()
  // image/classify takes bytes through a TS stage, so its type is not known: a raw body is refused and says why.
  const refused = await infer('image', png, { 'inference-header-content-length': '0' })
  assert.equal(refused.status, 400)
  assert.match(refused.json.error, /raw request body needs the input's datatype and whole shape/)
  // The same image as a BYTES tensor with a JSON header, batch of 2: classified like the MindSpore route does.
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', parameters: { binary_data_size: 2 * (4 + png.length) } }] }))
  const lp = Buffer.concat([Buffer.from(new Uint32Array([png.length]).buffer), png])
  const r = await infer('image', Buffer.concat([header, lp, lp]), { 'inference-header-content-length': String(header.length) })
  assert.equal(r.status, 200, r.buf.toString())
  const label = r.json.outputs.find((o: any) => o.name === 'label')
  assert.equal(label.datatype, 'BYTES')
  assert.deepEqual(label.shape, [2])
  assert.ok(IMAGE_CNN_LABELS.includes(label.data[0]))
  assert.equal(label.data[0], label.data[1])
  const ms = await fetch(url('/model/image:classify'), { method: 'POST', body: JSON.stringify({ instances: [{ image: { b64: png.toString('base64') } }] }) })
  const msJson = await ms.json() as any
  assert.equal(msJson.instances[0].label, label.data[0])
  assertClose(r.json.outputs.find((o: any) => o.name === 'score').data[0], msJson.instances[0].score)
})

test('raw request body for a model with two inputs is refused', async () => {
  // add_nobatch has two inputs: refused, naming the count.
  const r = await infer('add_nobatch', f32([1, 2, 3, 4]), { 'inference-header-content-length': '0' })
  assert.equal(r.status, 400)
  assert.match(r.json.error, /one tensor, for models with one input; model add_nobatch has 2/)
  // A one-input model of fixed type and shape reads a raw body as batch 1: test/unit/oip.test.ts.
})

test('errors: {"error"} with the protocol statuses, naming what was wrong', async () => {
  const cases: Array<[string, unknown, number, RegExp]> = [
    ['nosuch', { inputs: [] }, 404, /no model nosuch; loaded: .*add\/add_common/],
    ['add', { inputs: [] }, 404, /servable add has 2 methods: name one as the model, one of add\/add_common, add\/add_cast/],
    ['add/add_common', { inputs: [] }, 400, /needs "inputs"/],
    ['add/add_common', { inputs: [{ name: 'x1', shape: [1, 2, 2], datatype: 'FP32', data: [1, 2, 3] }] }, 400, /shape \[1,2,2\] needs 4 elements, "data" has 3/],
    ['add/add_common', { inputs: [{ name: 'x1', shape: [1, 2, 2], datatype: 'FP32', data: [1, 2, 3, 4] }] }, 400, /missing input x2/],
    ['add/add_common', { inputs: [{ name: 'x1', shape: [1, 2, 2], datatype: 'BF16', data: [1, 2, 3, 4] }] }, 400, /BF16 is not supported/],
    ['add/add_common', { inputs: [{ name: 'x1', shape: [1, 2, 2], datatype: 'FP32', data: [1, 2, 3, 4] }, { name: 'x2', shape: [2, 2, 2], datatype: 'FP32', data: [1, 2, 3, 4, 5, 6, 7, 8] }] }, 400, /disagree on the batch size/],
    ['add/add_common', { inputs: [{ name: 'x1', shape: [1, 2, 2], datatype: 'INT32', data: [1, 2, 3, 4] }, { name: 'x2', shape: [1, 2, 2], datatype: 'FP32', data: [1, 2, 3, 4] }] }, 400, /data type kMSI_Int32 not match the data type kMSI_Float32/],
    ['add/add_common', { inputs: [{ name: 'x1', shape: [1, 2, 2], datatype: 'FP32', data: [1, 2, 3, 4] }, { name: 'x2', shape: [1, 2, 2], datatype: 'FP32', data: [1, 2, 3, 4] }], outputs: [{ name: 'z' }] }, 400, /unknown output z; model outputs: y/],
    ['addv/versions/9', { inputs: [] }, 404, /model addv has no version 9/],
  ]
  for (const [model, body, status, re] of cases) {
    const r = await infer(model, body)
    assert.equal(r.status, status, `${model} ${JSON.stringify(body)}: ${r.buf.toString()}`)
    assert.deepEqual(Object.keys(r.json), ['error'])
    assert.match(r.json.error, re)
  }
  const notJson = await infer('add/add_common', Buffer.from('{nope'))
  assert.equal(notJson.status, 400)
  assert.match(notJson.json.error, /not valid JSON/)
  const get = await fetch(url('/v2/models/add/add_common/infer'))
  assert.equal(get.status, 405)
  // An instance that fails in a stage fails the request: the index and the stage's error.
  const neg = await infer('errors/checked', { inputs: [{ name: 'x1', shape: [2, 2, 2], datatype: 'FP32', data: [1, 1, 1, 1, -1, 1, 1, 1] }, { name: 'x2', shape: [2, 2, 2], datatype: 'FP32', data: [1, 1, 1, 1, 1, 1, 1, 1] }] })
  assert.equal(neg.status, 500, neg.buf.toString())
  assert.match(neg.json.error, /instance 1 \(of 2\): .*x1 must be non-negative, got -1/)
  // The server still answers.
  const ok = await infer('single', { inputs: [{ name: 'x1', shape: [1, 2, 2], datatype: 'FP32', data: [1, 2, 3, 4] }, { name: 'x2', shape: [1, 2, 2], datatype: 'FP32', data: [1, 1, 1, 1] }] })
  assert.deepEqual(ok.json.outputs[0].data, [2, 3, 4, 5])
})

test('GET /servables describes methods, tensors, versions and replicas', async () => {
  const r = await getJson('/servables')
  assert.equal(r.status, 200)
  const add = r.json.servables.find((s: any) => s.name === 'add')
  assert.equal(add.kind, 'model')
  assert.equal(add.ready, true)
  const common = add.versions[0].methods.find((m: any) => m.name === 'add_common')
  assert.deepEqual(common, { name: 'add_common', inputs: [{ name: 'x1', dtype: 'float32', shape: [2, 2] }, { name: 'x2', dtype: 'float32', shape: [2, 2] }], outputs: [{ name: 'y', dtype: 'float32', shape: [2, 2] }], batched: true, maxBatchSize: 32 })
  assert.equal(add.versions[0].replicas[0].state, 'ready')
  const addv = r.json.servables.find((s: any) => s.name === 'addv')
  assert.deepEqual(addv.versions.map((v: any) => v.version), [1, 2])
  assert.deepEqual((await getJson('/servables/addv')).json, addv)
  const missing = await getJson('/servables/nosuch')
  assert.equal(missing.status, 404)
  assert.match(missing.json.error, /no servable nosuch \(loaded: .*add.*\); GET \/servables lists them/)
})
