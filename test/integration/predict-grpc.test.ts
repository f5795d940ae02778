// MindSpore Serving gRPC (MSService.Predict) against the real CLI, through the client's gRPC transport: add_common,
// add_cast, versions, image, bytes/strings, and every error of §1.4 / §6 V5 with its MindSpore
// status and exact text. Application errors always come with gRPC status OK.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { status as GrpcStatus } from '@grpc/grpc-js'
import { startServers, type StartedServer } from '../helpers/server.ts'
import { predictServables } from '../helpers/fixtures.ts'
import { Client, ClientError, type InstanceResult } from '../../src/client/index.ts'
import { encodeRequest } from '../../src/protocol/grpc/ms-codec.ts'
import { tensor, type Tensor, type Value } from '../../src/tensor.ts'
import { IMAGE_CNN_LABELS } from '../../src/models/index.ts'

let dir = ''
let server: StartedServer
let small: StartedServer
let client: Client

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ms-serve-grpc-'))
  const { servables, config, small: smallDir } = predictServables(dir)
  ;[server, small] = await startServers([
    [servables, ['--devices', '0', '--config', config]],
    [smallDir, ['--devices', '0', '--max-msg-mb', '1']],
  ])
  client = new Client({ grpc: server.grpc })
})

after(async () => {
  await client?.close()
  await Promise.all([server?.stop(), small?.stop()])
  if (dir) rmSync(dir, { recursive: true, force: true })
})

const f32 = (v: number[]) => tensor('float32', [2, 2], v)
const X1 = f32([1, 2, 3, 4])
const X2 = f32([5, 6, 7, 8])

/** The outputs of every instance; fails on any error. */
function outputs(r: InstanceResult[]): Record<string, Value>[] {
  return r.map((i, k) => {
    assert.equal(i.error, undefined, `instance ${k} failed: ${i.error}`)
    return i.outputs!
  })
}
const wire = () => client.grpcTransport!
const values = (v: Value | undefined) => {
  assert.ok(v && typeof v === 'object' && 'dtype' in v, `expected a tensor, got ${v}`)
  return { dtype: v.dtype, shape: [...v.shape], data: v.toArray() }
}

async function assertStillServing(): Promise<void> {
  const [out] = outputs(await client.predict('add', 'add_common', { x1: X1, x2: X2 }))
  assert.deepEqual(values(out!['y']), { dtype: 'float32', shape: [2, 2], data: [6, 8, 10, 12] })
}

/** A whole-request error: thrown, with MindSpore's status in a reply of gRPC status OK. */
async function wholeError(name: string, method: string, instances: Record<string, Value>[], msStatus: number, message: string | RegExp, version = 0): Promise<void> {
  await assert.rejects(client.predict(name, method, instances, { version }), (e: unknown) => {
    assert.ok(e instanceof ClientError, `expected a ClientError, got ${e}`)
    assert.equal(e.msStatus, msStatus, e.message)
    assert.equal(e.grpcCode, GrpcStatus.OK)
    if (typeof message === 'string') assert.equal(e.message, message)
    else assert.match(e.message, message)
    return true
  })
  await assertStillServing()
}

test('add_common: one instance', async () => {
  await assertStillServing()
})

test('add_common: several instances come back in order; float values exact to float32', async () => {
  const a = f32([1.1, 2.2, 3.3, 4.4])
  const b = f32([5.5, 6.6, 7.7, 8.8])
  const list = [{ x1: a, x2: b }, { x1: X1, x2: X2 }, ...Array.from({ length: 6 }, (_, i) => ({ x1: f32([i, i, i, i]), x2: X1 }))]
  const out = outputs(await client.predict('add', 'add_common', list))
  assert.equal(out.length, 8)
  const expected = list.map(({ x1, x2 }) => Array.from(x1.data as Float32Array, (v, i) => Math.fround(v + (x2.data as Float32Array)[i]!)))
  out.forEach((o, i) => assert.deepEqual(values(o['y']).data, expected[i]))
  assert.equal(values(out[0]!['y']).data[2], 11)
})

test('add_cast: int32 and int64 inputs are cast by the TS stage', async () => {
  const i32 = tensor('int32', [2, 2], [1, 2, 3, 4])
  const i64 = tensor('int64', [2, 2], [5, 6, 7, 8])
  const [out] = outputs(await client.predict('add', 'add_cast', { x1: i32, x2: i64 }))
  assert.deepEqual(values(out!['y']), { dtype: 'float32', shape: [2, 2], data: [6, 8, 10, 12] })
})

test('float16 input is not silently accepted by a float32 model', async () => {
  const h = tensor('float16', [2, 2], new Uint16Array([0x3c00, 0x4000, 0x4200, 0x4400]))
  await wholeError('add', 'add_common', [{ x1: h, x2: X2 }], 2, 'Given model input 0 data type kMSI_Float16 not match the data type kMSI_Float32 defined in model')
  const [out] = outputs(await client.predict('add', 'add_cast', { x1: h, x2: X2 }))
  assert.deepEqual(values(out!['y']).data, [6, 8, 10, 12], 'add_cast widens float16 (1, 2, 3, 4)')
})

test('versions: 1 adds, 2 multiplies, 0 is the newest; 3 is not available', async () => {
  const y = async (v: number) => values(outputs(await client.predict('addv', 'add_common', { x1: X1, x2: X2 }, { version: v }))[0]!['y']).data
  assert.deepEqual(await y(1), [6, 8, 10, 12])
  assert.deepEqual(await y(2), [5, 12, 21, 32])
  assert.deepEqual(await y(0), [5, 12, 21, 32])
  await wholeError('addv', 'add_common', [{ x1: X1, x2: X2 }], 2, 'Request servable(addv) method(add_common)  version(3) , servable is not available', 3)
})

test('the reply copies the request servable_spec', async () => {
  const reply = await wire().predictWire(encodeRequest('addv', 'add_common', 1, [{ x1: X1, x2: X2 }]))
  assert.equal(reply.servable_spec?.name, 'addv')
  assert.equal(reply.servable_spec?.method_name, 'add_common')
  assert.equal(Number(reply.servable_spec?.version_number), 1)
  assert.deepEqual(reply.error_msg, [])
})

test('strings and bytes through a TS stage', async () => {
  const [out] = outputs(await client.predict('errors', 'echo', { text: 'héllo', raw: new Uint8Array([1, 2, 255]) }))
  assert.equal(out!['text'], 'héllo!')
  assert.deepEqual([...(out!['raw'] as Uint8Array)], [255, 2, 1])
  assert.deepEqual(values(out!['size']), { dtype: 'int32', shape: [], data: [3] })
})

test('image: PNG and JPEG bytes, several instances; a non-image fails in Preprocess', async () => {
  const raw = Buffer.alloc(20 * 30 * 3, 0)
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 7) % 256
  const img = () => sharp(raw, { raw: { width: 20, height: 30, channels: 3 } })
  const png = await img().png().toBuffer()
  const jpeg = await img().jpeg().toBuffer()
  const r = await client.predict('image', 'classify', [{ image: png }, { image: jpeg }, { image: Buffer.from('not an image') }])
  for (const inst of r.slice(0, 2)) {
    assert.ok(inst.outputs, JSON.stringify(inst))
    assert.ok(IMAGE_CNN_LABELS.includes(inst.outputs['label'] as string))
    const scores = Array.from((inst.outputs['top_scores'] as Tensor).data as Float32Array)
    assert.ok(scores[0]! >= scores[1]! && scores[1]! >= scores[2]!, `sorted ${scores}`)
    assert.ok(scores.reduce((a, b) => a + b, 0) <= 1 + 1e-6)
  }
  const bad = r[2]!
  assert.equal(bad.msStatus, 1)
  assert.match(bad.error!, /^Call Preprocess Failed, method: 'classify', stage index\(begin with 1\): 1, error msg: cannot decode image/)
})

test('unknown servable, version and method (V1 vector text)', async () => {
  await wholeError('nope', 'm', [{ x1: X1 }], 2, 'Request servable(nope) method(m) , servable is not available')
  await wholeError('add', 'add_common', [{ x1: X1, x2: X2 }], 2, 'Request servable(add) method(add_common)  version(2) , servable is not available', 2)
  await wholeError('add', 'add_nope', [{ x1: X1, x2: X2 }], 2, 'Request servable(add) method(add_nope) , method is not available')
})

test('missing input x2', async () => {
  await wholeError('add', 'add_common', [{ x1: X1 }], 2, 'Cannot find input x2 in instance input , servable add, method add_common')
})

test('no instances', async () => {
  await wholeError('add', 'add_common', [], 2, 'Instances count of request cannot be 0, servable: add, method: add_common')
})

test('int32 into the float32 model collapses to one error', async () => {
  const i32 = tensor('int32', [2, 2], [1, 2, 3, 4])
  await wholeError('add', 'add_common', [{ x1: i32, x2: i32 }, { x1: i32, x2: i32 }], 2, 'Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model')
})

test('mixed per-instance errors: N instances, failed ones empty, N error entries', async () => {
  const request = encodeRequest('add', 'add_common', 0, [{ x1: X1, x2: X2 }, { x1: X1, x2: tensor('float32', [3], [1, 2, 3]) }, { x1: X1, x2: X1 }])
  const reply = await wire().predictWire(request)
  assert.equal(reply.instances?.length, 3)
  assert.deepEqual(reply.instances![1], { items: {}, output_buffers: {} })
  assert.deepEqual(reply.error_msg!.map((e) => [Number(e.error_code), Buffer.from(e.error_msg ?? []).toString()]), [
    [0, ''], [2, 'Given model input 1 size 12 not match the size 16 defined in model'], [0, ''],
  ])
  const r = await client.predict('add', 'add_common', [{ x1: X1, x2: X2 }, { x1: X1, x2: tensor('float32', [3], [1, 2, 3]) }, { x1: X1, x2: X1 }])
  assert.deepEqual(r[1], { error: 'Given model input 1 size 12 not match the size 16 defined in model', msStatus: 2 })
  assert.deepEqual(values(r[2]!.outputs!['y']).data, [2, 4, 6, 8])
})

/** add@1's counters in /stats (on the same server's REST listener). */
async function addCounters(): Promise<{ batches: number; instances: number; executions: number }> {
  type Stats = { servables: Array<{ name: string; methods: Record<string, { batches: number; instances: number }>; models: Array<{ executions: number }> }> }
  const stats = await (await fetch(`${server.rest}/stats`)).json() as Stats
  const add = stats.servables.find((x) => x.name === 'add')!
  return { batches: add.methods['add_common']!.batches, instances: add.methods['add_common']!.instances, executions: add.models[0]!.executions }
}

test('wrong dtype, size and string inputs are refused by the listener without reaching a replica', async () => {
  const before = await addCounters()
  const i32 = tensor('int32', [2, 2], [1, 2, 3, 4])
  await wholeError('add', 'add_common', [{ x1: i32, x2: X2 }], 2, 'Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model')
  const r = await client.predict('add', 'add_common', [{ x1: X1, x2: tensor('float32', [3], [1, 2, 3]) }, { x1: 'text', x2: X2 }, { x1: X1, x2: new Uint8Array(16) }])
  assert.deepEqual(r, [
    { error: 'Given model input 1 size 12 not match the size 16 defined in model', msStatus: 2 },
    { error: 'Given model input 0 data type kMSI_String not match the data type kMSI_Float32 defined in model', msStatus: 2 },
    { error: 'Given model input 1 data type kMSI_Bytes not match the data type kMSI_Float32 defined in model', msStatus: 2 },
  ])
  const after = await addCounters()
  // wholeError's closing check ran one good request: exactly one instance, nothing from the refused ones.
  assert.equal(after.instances, before.instances + 1)
  assert.equal(after.batches, before.batches + 1)
  assert.equal(after.executions, before.executions + 1)
})

test('a malformed tensor is rejected before the model', async () => {
  const request = encodeRequest('add', 'add_common', 0, [{ x1: X1, x2: X2 }])
  request.instances![0]!.items!['x1']!.data = Buffer.alloc(12)
  const reply = await wire().predictWire(request)
  assert.deepEqual(reply.instances, [])
  assert.deepEqual(reply.error_msg!.map((e) => [Number(e.error_code), Buffer.from(e.error_msg ?? []).toString()]), [[2, 'Instances input x1 check failed, detail: Tensor check failed: input data size 12 invalid']])
  const str = encodeRequest('add', 'add_common', 0, [{ x1: 'a', x2: X2 }])
  str.instances![0]!.items!['x1']!.shape = { dims: [2] }
  const r2 = await wire().predictWire(str)
  assert.equal(Buffer.from(r2.error_msg![0]!.error_msg ?? []).toString(), 'Instances input x1 check failed, detail: Instance tensor check failed: bytes or string type input  shape can only be (1,) or empty, but given shape is [2]')
  await assertStillServing()
})

test('a TS stage that throws: per instance (Preprocess) and for a whole batch (Postprocess)', async () => {
  const neg = f32([1, -2, 3, 4])
  await wholeError('errors', 'checked', [{ x1: neg, x2: X2 }], 1, "Call Preprocess Failed, method: 'checked', stage index(begin with 1): 1, error msg: x1 must be non-negative, got -2")
  const r = await client.predict('errors', 'checked', [{ x1: X1, x2: X2 }, { x1: neg, x2: X2 }])
  assert.ok(r[0]!.outputs)
  assert.deepEqual(r[1], { error: "Call Preprocess Failed, method: 'checked', stage index(begin with 1): 1, error msg: x1 must be non-negative, got -2", msStatus: 1 })
  await wholeError('errors', 'post_fail', [{ x1: X1, x2: X2 }, { x1: X2, x2: X1 }], 1, "Call Postprocess Failed, method: 'post_fail', stage index(begin with 1): 2, error msg: postprocess exploded")
})

test('a message over --max-msg-mb is refused with RESOURCE_EXHAUSTED; the server keeps serving', async () => {
  const c = new Client({ grpc: small.grpc })
  try {
    const big = tensor('float32', [300_000], new Float32Array(300_000))
    await assert.rejects(c.predict('add', 'add_common', { x1: big, x2: X2 }), (e: ClientError) => {
      assert.equal(e.grpcCode, GrpcStatus.RESOURCE_EXHAUSTED, e.message)
      assert.equal(e.code, 'PAYLOAD_TOO_LARGE', e.message)
      return true
    })
    const [out] = outputs(await c.predict('add', 'add_common', { x1: X1, x2: X2 }))
    assert.deepEqual(values(out!['y']).data, [6, 8, 10, 12])
  } finally {
    await c.close()
  }
})
