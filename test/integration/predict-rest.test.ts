// MindSpore Serving REST against the real CLI: add_common / add_cast (spec §6 V2, V3, V5), versions,
// the image servable, per-instance and whole-request errors with their exact texts, bad input.
// After every bad request a good one must still succeed (server and replicas stay up).
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { postJson, startServers, type StartedServer } from '../helpers/server.ts'
import { ADD_BODY, assertClose, floatJson, predictServables, X1, X2 } from '../helpers/fixtures.ts'
import { IMAGE_CNN_LABELS } from '../../src/models/index.ts'

let dir = ''
let server: StartedServer
let small: StartedServer
let compat: StartedServer

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ms-serve-rest-'))
  const { servables, config, small: smallDir } = predictServables(dir)
  ;[server, small, compat] = await startServers([
    [servables, ['--devices', '0', '--config', config]],
    [smallDir, ['--devices', '0', '--max-msg-mb', '1']],
    [smallDir, ['--devices', '0', '--max-msg-mb', '1', '--rest-always-200']],
  ])
})

after(async () => {
  await Promise.all([server?.stop(), small?.stop(), compat?.stop()])
  if (dir) rmSync(dir, { recursive: true, force: true })
})

const url = (path: string, s = server) => `${s.rest}${path}`
const ADD_REPLY = '{"instances":[{"y":[[6.0,8.0],[10.0,12.0]]}]}'

/** The canonical request still works (run after every bad request). */
async function assertStillServing(s = server): Promise<void> {
  const r = await postJson(url('/model/add:add_common', s), ADD_BODY)
  assert.equal(r.status, 200)
  assert.equal(r.text, ADD_REPLY)
}

async function expectError(path: string, body: unknown, status: number, errorMsg: string | RegExp, method = 'POST'): Promise<void> {
  const r = await postJson(url(path), body, method)
  assert.equal(r.status, status, `${method} ${path} ${typeof body === 'string' ? body.slice(0, 80) : JSON.stringify(body).slice(0, 80)} -> ${r.text}`)
  assert.match(r.contentType ?? '', /^application\/json/)
  assert.deepEqual(Object.keys(r.json), ['error_msg'], r.text)
  if (typeof errorMsg === 'string') assert.equal(r.json.error_msg, errorMsg)
  else assert.match(r.json.error_msg, errorMsg)
  await assertStillServing()
}

test('add_common: the README request and its exact reply', async () => {
  const r = await postJson(url('/model/add:add_common'), ADD_BODY)
  assert.equal(r.status, 200)
  assert.equal(r.text, ADD_REPLY)
})

// Spec §6 V2, sent to add_common and add_cast alike: non-integral floats, then the README instance.
const V2_BODY = '{"instances":[{"x1":[[1.1,2.2],[3.3,4.4]],"x2":[[5.5,6.6],[7.7,8.8]]},{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[5.0,6.0],[7.0,8.0]]}]}'
const V2_Y = { instances: [{ y: [[6.599999904632568, 8.800000190734863], [11.0, 13.200000762939453]] }, { y: [[6, 8], [10, 12]] }] }

test('add_common V2: two instances, float32 widened to double, integral floats as 11.0', async () => {
  const r = await postJson(url('/model/add:add_common'), V2_BODY)
  assert.equal(r.status, 200)
  assertClose(r.json, V2_Y, 1e-9)
  assert.ok(r.text.includes('[11.0,13.200000762939453]'), r.text)
  assert.ok(r.text.endsWith('{"y":[[6.0,8.0],[10.0,12.0]]}]}'), r.text)
})

test('add_cast V2: float inputs pass through the cast stage unchanged', async () => {
  const r = await postJson(url('/model/add:add_cast'), V2_BODY)
  assert.equal(r.status, 200)
  assertClose(r.json, V2_Y, 1e-9)
  assert.ok(r.text.includes('[11.0,13.200000762939453]'), r.text)
})

test('add_cast: JSON integers are cast to float32 by the TS preprocess stage', async () => {
  const r = await postJson(url('/model/add:add_cast'), '{"instances":[{"x1":[[1,2],[3,4]],"x2":[[5,6],[7,8]]}]}')
  assert.equal(r.status, 200)
  assert.equal(r.text, ADD_REPLY)
  const two = await postJson(url('/model/add:add_cast'), '{"instances":[{"x1":[[1,2],[3,4]],"x2":[[1,1],[1,1]]},{"x1":[[1.5,2.5],[3.5,4.5]],"x2":[[0.5,0.5],[0.5,0.5]]}]}')
  assert.equal(two.text, '{"instances":[{"y":[[2.0,3.0],[4.0,5.0]]},{"y":[[2.0,3.0],[4.0,5.0]]}]}')
})

test('typed b64 (V3) and the instances-as-object form', async () => {
  const r = await postJson(url('/model/add:add_common'), '{"instances":{"x1":{"b64":"AACAPwAAAEAAAEBAAACAQA==","type":"fp32","shape":[2,2]},"x2":[[1.0,1.0],[1.0,1.0]]}}')
  assert.equal(r.status, 200)
  assert.equal(r.text, '{"instances":[{"y":[[2.0,3.0],[4.0,5.0]]}]}')
})

test('many instances come back in request order', async () => {
  const instances = Array.from({ length: 9 }, (_, i) => ({ x1: [[i + 0.5, i], [i, i]], x2: [[1.0, 0.0], [0.0, 10.0 * i + 0.25]] }))
  const r = await postJson(url('/model/add:add_common'), floatJson({ instances }))
  assert.equal(r.status, 200)
  assertClose(r.json, { instances: instances.map((_, i) => ({ y: [[i + 1.5, i], [i, 11 * i + 0.25]] })) })
})

test('versions: /version/1 adds, /version/2 and /version/0 and no version multiply; version 3 is not available', async () => {
  const y = async (path: string) => (await postJson(url(path), ADD_BODY)).text
  assert.equal(await y('/model/addv/version/1:add_common'), ADD_REPLY)
  const product = '{"instances":[{"y":[[5.0,12.0],[21.0,32.0]]}]}'
  assert.equal(await y('/model/addv/version/2:add_common'), product)
  assert.equal(await y('/model/addv/version/0:add_common'), product)
  assert.equal(await y('/model/addv:add_common'), product)
  assert.equal(await y('/version/1/model/addv:add_common'), ADD_REPLY, 'segment order does not matter (MindSpore quirk)')
  await expectError('/model/addv/version/3:add_common', ADD_BODY, 404, 'Request servable(addv) method(add_common)  version(3) , servable is not available')
})

test('V4: strings and bytes through a TS stage', async () => {
  const r = await postJson(url('/model/errors:echo'), '{"instances":[{"text":"ABC","raw":{"b64":"QUJD"}},{"text":{"b64":"aMOp","type":"str"},"raw":{"b64":""}}]}')
  assert.equal(r.status, 200)
  assert.equal(r.text, '{"instances":[{"raw":{"b64":"Q0JB"},"size":3,"text":"ABC!"},{"raw":{"b64":""},"size":0,"text":"hé!"}]}')
})

// ---- the image servable ----

async function images(): Promise<{ png: string; jpeg: string }> {
  const w = 48
  const h = 40
  const raw = Buffer.alloc(w * h * 3)
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw.set([x * 5, y * 6, (x + y) * 3], (y * w + x) * 3)
  const img = () => sharp(raw, { raw: { width: w, height: h, channels: 3 } })
  return { png: (await img().png().toBuffer()).toString('base64'), jpeg: (await img().jpeg().toBuffer()).toString('base64') }
}

function checkClassification(out: Record<string, unknown>): void {
  assert.deepEqual(Object.keys(out), ['label', 'score', 'top_labels', 'top_scores'])
  assert.ok(IMAGE_CNN_LABELS.includes(out['label'] as string), `label ${out['label']}`)
  const scores = out['top_scores'] as number[]
  assert.equal(scores.length, 3)
  for (let i = 1; i < scores.length; i++) assert.ok(scores[i - 1]! >= scores[i]!, `sorted: ${scores}`)
  const sum = scores.reduce((a, b) => a + b, 0)
  assert.ok(sum > 0 && sum <= 1 + 1e-6, `sum ${sum}`)
  assertClose(out['score'], scores[0])
  const labels = (out['top_labels'] as string).split(',')
  assert.equal(labels[0], out['label'])
  for (const l of labels) assert.ok(IMAGE_CNN_LABELS.includes(l))
}

test('image: PNG and JPEG as b64, several instances in one request', async () => {
  const { png, jpeg } = await images()
  const r = await postJson(url('/model/image:classify'), { instances: [{ image: { b64: png } }, { image: { b64: jpeg } }, { image: { b64: png } }] })
  assert.equal(r.status, 200, r.text)
  assert.equal(r.json.instances.length, 3)
  for (const out of r.json.instances) checkClassification(out)
  assert.deepEqual(r.json.instances[2], r.json.instances[0], 'same image, same answer')
  const one = await postJson(url('/model/image:classify'), { instances: { image: { b64: jpeg } } })
  assert.deepEqual(one.json.instances[0], r.json.instances[1])
})

test('image: a b64 that is not an image fails in the Preprocess stage; good instances in the same request still succeed', async () => {
  const notImage = Buffer.from('definitely not a picture').toString('base64')
  await expectError('/model/image:classify', { instances: [{ image: { b64: notImage } }] }, 500,
    /^Call Preprocess Failed, method: 'classify', stage index\(begin with 1\): 1, error msg: cannot decode image \(.+\); send a JPEG or PNG$/)
  const { png } = await images()
  const mixed = await postJson(url('/model/image:classify'), { instances: [{ image: { b64: png } }, { image: { b64: notImage } }] })
  assert.equal(mixed.status, 200)
  checkClassification(mixed.json.instances[0])
  assert.match(mixed.json.instances[1].error_msg, /^Call Preprocess Failed, method: 'classify', stage index\(begin with 1\): 1, error msg: cannot decode image/)
})

// ---- errors of §6 V5 and §1.4 ----

test('unknown servable, version, method (V5 texts)', async () => {
  await expectError('/model/add_error:add_common', ADD_BODY, 404, 'Request servable(add_error) method(add_common) , servable is not available')
  await expectError('/model/add/version/2:add_common', ADD_BODY, 404, 'Request servable(add) method(add_common)  version(2) , servable is not available')
  await expectError('/model/add:add_nope', ADD_BODY, 404, 'Request servable(add) method(add_nope) , method is not available')
})

test('URL and HTTP method errors', async () => {
  await expectError('/model/add', ADD_BODY, 400, 'please check url, the keyword:[service method] must contain.')
  await expectError('/model/add/version/x:add_common', ADD_BODY, 400, 'please check url, the keyword:[version] value invalid, request version number x')
  await expectError('/model/add/version/-1:add_common', ADD_BODY, 400, 'please check url, version number range failed, request version number -1')
  const get = await fetch(url('/model/add:add_common'))
  assert.equal(get.status, 405)
  assert.deepEqual(await get.json(), { error_msg: 'http message only support POST right now' })
  const nowhere = await fetch(url('/predict/add'), { method: 'POST', body: ADD_BODY })
  assert.equal(nowhere.status, 404)
  const body = await nowhere.json() as { error_msg: string; error: string }
  assert.equal(body.error_msg, 'please check url, the keyword:[model] must contain.')
  assert.match(body.error, /^no route POST \/predict\/add: predict with POST \/model\/\{name\}/)
  await assertStillServing()
})

test('elements type not equal', async () => {
  await expectError('/model/add:add_common', '{"instances":[{"x1":[[1,2],[3,4.5]],"x2":[[1.0,2.0],[3.0,4.0]]}]}', 400, 'Parser request failed, json array, elements type is not equal')
})

test('int32 into the float32 model: every instance fails alike and collapses to one error_msg', async () => {
  await expectError('/model/add:add_common', '{"instances":[{"x1":[[1,2],[3,4]],"x2":[[5,6],[7,8]]},{"x1":[[1,2],[3,4]],"x2":[[5,6],[7,8]]}]}', 400,
    'Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model')
})

test('mixed per-instance errors keep the good instances', async () => {
  const r = await postJson(url('/model/add:add_common'), '{"instances":[{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[5.0,6.0],[7.0,8.0]]},{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[1.0,2.0,3.0]},{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[1.0,1.0],[1.0,1.0]]}]}')
  assert.equal(r.status, 200)
  assert.equal(r.text, '{"instances":[{"y":[[6.0,8.0],[10.0,12.0]]},{"error_msg":"Given model input 1 size 12 not match the size 16 defined in model"},{"y":[[2.0,3.0],[4.0,5.0]]}]}')
})

test('different errors in every instance give one error_msg per instance', async () => {
  const r = await postJson(url('/model/add:add_common'), '{"instances":[{"x1":[[1,2],[3,4]],"x2":[[1.0,2.0],[3.0,4.0]]},{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[1.0]}]}')
  assert.equal(r.status, 200)
  assert.deepEqual(r.json, { instances: [
    { error_msg: 'Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model' },
    { error_msg: 'Given model input 1 size 4 not match the size 16 defined in model' },
  ] })
})

test('a missing input names it, the servable and the method', async () => {
  await expectError('/model/add:add_common', floatJson({ instances: [{ x1: X1 }] }), 400, 'Cannot find input x2 in instance input , servable add, method add_common')
  await expectError('/model/add:add_common', floatJson({ instances: [{ x1: X1, x2: X2 }, { x1: X1, y: X2 }] }), 400, 'Cannot find input x2 in instance input , servable add, method add_common')
})

test('a TS stage that throws: Preprocess per instance, batched Postprocess for all', async () => {
  const neg = { x1: [[1.0, -1.0], [3.0, 4.0]], x2: X2 }
  await expectError('/model/errors:checked', floatJson({ instances: [neg] }), 500, "Call Preprocess Failed, method: 'checked', stage index(begin with 1): 1, error msg: x1 must be non-negative, got -1")
  const mixed = await postJson(url('/model/errors:checked'), floatJson({ instances: [{ x1: X1, x2: X2 }, neg] }))
  assert.equal(mixed.status, 200)
  assert.equal(mixed.text, `{"instances":[{"y":[[6.0,8.0],[10.0,12.0]]},{"error_msg":"Call Preprocess Failed, method: 'checked', stage index(begin with 1): 1, error msg: x1 must be non-negative, got -1"}]}`)
  await expectError('/model/errors:post_fail', floatJson({ instances: [{ x1: X1, x2: X2 }, { x1: X2, x2: X1 }] }), 500, "Call Postprocess Failed, method: 'post_fail', stage index(begin with 1): 2, error msg: postprocess exploded")
})

test('a TS stage that returns something that is not a value fails with a message naming the stage', async () => {
  await expectError('/model/errors:bad_return', floatJson({ instances: [{ x1: X1 }] }), 500,
    "Call Postprocess Failed, method: 'bad_return', stage index(begin with 1): 1, error msg: stage Postprocess returned number for output 0; return a Tensor (e.g. tensor('float32', [], [x])), a string or a Uint8Array")
})

/** add@1's counters in /stats: add_common's batches and instances, and the model's runs. */
async function addCounters(s = server): Promise<{ batches: number; instances: number; requests: number; executions: number; inferences: number }> {
  type Stats = { servables: Array<{ name: string; methods: Record<string, { batches: number; instances: number; requests: number }>; models: Array<{ executions: number; inferences: number }> }> }
  const stats = await (await fetch(url('/stats', s))).json() as Stats
  const add = stats.servables.find((x) => x.name === 'add')!
  const m = add.methods['add_common']!
  return { batches: m.batches, instances: m.instances, requests: m.requests, executions: add.models[0]!.executions, inferences: add.models[0]!.inferences }
}

test('requests whose direct model inputs are all wrong are answered by the listener: no batch, no replica', async () => {
  const before = await addCounters()
  const int = '{"x1":[[1,2],[3,4]],"x2":[[5,6],[7,8]]}'
  const bad: Array<[string, number, string]> = [
    [`{"instances":[${int},${int}]}`, 400, '{"error_msg":"Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model"}'],
    ['{"instances":[{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[1.0,2.0,3.0]}]}', 400, '{"error_msg":"Given model input 1 size 12 not match the size 16 defined in model"}'],
    ['{"instances":[{"x1":"text","x2":{"b64":"AAEC"}}]}', 400, '{"error_msg":"Given model input 0 data type kMSI_String not match the data type kMSI_Float32 defined in model"}'],
    [`{"instances":[${int},{"x1":[[1.0,2.0],[3.0,4.0]],"x2":{"b64":"AAEC"}}]}`, 200,
      '{"instances":[{"error_msg":"Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model"},'
      + '{"error_msg":"Given model input 1 data type kMSI_Bytes not match the data type kMSI_Float32 defined in model"}]}'],
  ]
  for (const [body, status, text] of bad) {
    const r = await postJson(url('/model/add:add_common'), body)
    assert.equal(r.status, status, r.text)
    assert.equal(r.text, text)
  }
  assert.deepEqual(await addCounters(), before, 'nothing was queued, batched or run')
  // A mixed request: only its good instances are queued and run; the reply keeps request order.
  const good = floatJson({ x1: X1, x2: X2 })
  const mixed = await postJson(url('/model/add:add_common'), `{"instances":[${good},${int},${good}]}`)
  assert.equal(mixed.status, 200)
  assert.equal(mixed.text, '{"instances":[{"y":[[6.0,8.0],[10.0,12.0]]},'
    + '{"error_msg":"Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model"},{"y":[[6.0,8.0],[10.0,12.0]]}]}')
  const after = await addCounters()
  assert.equal(after.requests, before.requests + 1)
  assert.equal(after.instances, before.instances + 2)
  assert.equal(after.inferences, before.inferences + 2)
})

// ---- bad input ----

test('malformed bodies get clear errors and the server stays up', async () => {
  const cases: Array<[string, string | RegExp]> = [
    ['{"instances":[{"x1":', /^Illegal JSON format\.\[json\.exception\.parse_error\.101\] parse error at line 1, column \d+: /],
    ['not json', /^Illegal JSON format\./],
    ['{"instances":[{"x1":[[1.0,2.0],[3.0]],"x2":[[1.0,2.0],[3.0,4.0]]}]}', 'Parser request failed, invalid json array: json size is 1, the dim 1 expected to be 2'],
    ['{"instances":[{"x1":[[1.0,2.0],3.0],"x2":[[1.0,2.0],[3.0,4.0]]}]}', /^Parser request failed, /],
    ['{"instances":[{"x1":{"b64":"AAEC*","type":"fp32","shape":[1]},"x2":[[1.0,2.0],[3.0,4.0]]}]}', /^Parser request failed, .*illegal b64 encode string/],
    ['{"instances":[{"x1":{"b64":"AACAPw==","type":"fp32","shape":[2,2]},"x2":[[1.0,2.0],[3.0,4.0]]}]}', /^Parser request failed, size is not matched, decode base64 size:4/],
    ['{"instances":[{"x1":null,"x2":[[1.0,2.0],[3.0,4.0]]}]}', 'Parser request failed, json value is null, it is not supported'],
    ['{"instances":[{"x1":[[1.0,null],[3.0,4.0]],"x2":[[1.0,2.0],[3.0,4.0]]}]}', /^Parser request failed, /],
    ['{"instances":null}', 'Parser request failed, instances no key mode is not supported'],
    ['null', "Parser request failed, key 'instances' expects to exist once, but actually 0 times"],
    ['{"inputs":[]}', "Parser request failed, key 'instances' expects to exist once, but actually 0 times"],
    ['{"instances":[]}', 'Parser request failed, instances value is array type, but no value'],
    ['{"instances":[{}]}', 'Parser request failed, json array, instance is object type, but no value'],
    ['{"instances":[{"x1":[],"x2":[]}]}', 'Parser request failed, json array, shape is empty'],
  ]
  for (const [body, msg] of cases) await expectError('/model/add:add_common', body, 400, msg)
})

test('an empty body', async () => {
  await expectError('/model/add:add_common', '', 400, 'http message invalid')
})

test('wrong dtype and shape in typed b64', async () => {
  // float64 [2,2] into the float32 model: 32 bytes, dtype checked first.
  const f64 = Buffer.from(new Float64Array([1, 2, 3, 4]).buffer).toString('base64')
  await expectError('/model/add:add_common', `{"instances":[{"x1":{"b64":"${f64}","type":"fp64","shape":[2,2]},"x2":${floatJson(X2)}}]}`, 400,
    'Given model input 0 data type kMSI_Float64 not match the data type kMSI_Float32 defined in model')
  await expectError('/model/add:add_common', floatJson({ instances: [{ x1: 'a string', x2: X2 }] }), 400, /^Given model input 0 data type kMSI_String not match the data type kMSI_Float32 defined in model$/)
})

test('an oversized body is refused with the configured limit (--max-msg-mb 1)', async () => {
  const big = floatJson({ instances: [{ x1: X1, x2: X2, pad: 'x'.repeat(1024 * 1024 + 10) }] })
  const r = await postJson(url('/model/add:add_common', small), big)
  assert.equal(r.status, 413)
  assert.deepEqual(r.json, { error_msg: 'http message is bigger than 1048576' })
  await assertStillServing(small)
  const r200 = await postJson(url('/model/add:add_common', compat), big)
  assert.equal(r200.status, 200, '--rest-always-200')
  assert.deepEqual(r200.json, { error_msg: 'http message is bigger than 1048576' })
  await assertStillServing(compat)
  // Just under the limit is parsed (and fails on its own merits: `pad` is simply ignored).
  const ok = await postJson(url('/model/add:add_common', small), floatJson({ instances: [{ x1: X1, x2: X2, pad: 'x'.repeat(1000) }] }))
  assert.equal(ok.text, ADD_REPLY)
})

test('--rest-always-200 answers errors with HTTP 200 and error_msg, as MindSpore does', async () => {
  const r = await postJson(url('/model/add_error:add_common', compat), ADD_BODY)
  assert.equal(r.status, 200)
  assert.deepEqual(r.json, { error_msg: 'Request servable(add_error) method(add_common) , servable is not available' })
  const get = await fetch(url('/model/add:add_common', compat))
  assert.equal(get.status, 200)
  assert.deepEqual(await get.json(), { error_msg: 'http message only support POST right now' })
  const bad = await postJson(url('/model/add:add_common', compat), '{"instances":[{"x1":[[1,2],[3,4]],"x2":[[5,6],[7,8]]}]}')
  assert.equal(bad.status, 200)
  assert.equal(bad.json.error_msg, 'Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model')
})

test('health and stats', async () => {
  const h = await fetch(url('/health'))
  assert.equal(h.status, 200)
  const stats = await (await fetch(url('/stats'))).json() as { servables: Array<{ name: string; version: number; ready: boolean; restarts: number }> }
  assert.deepEqual(stats.servables.map((s) => `${s.name}@${s.version}:${s.ready}`), ['add@1:true', 'addv@1:true', 'addv@2:true', 'errors@1:true', 'image@1:true'])
  assert.ok(stats.servables.every((s) => s.restarts === 0), 'no replica crashed during all the bad requests')
})
