// MindSpore Serving wire codec: the spec's V1 hex vectors byte for byte, every request tensor
// check text, and the reply error rules (all ok / one whole error / N mixed errors).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ServeError } from '../../src/errors.ts'
import { Tensor, tensor, type Value } from '../../src/tensor.ts'
import {
  decodeInstances, decodeReply, encodeReply, encodeRequest, type WirePredictReply, type WirePredictRequest, type WireTensor,
} from '../../src/protocol/grpc/ms-codec.ts'
import { handlePredict, loadMsServiceDefinition } from '../../src/protocol/grpc/ms-service.ts'
import { collapseOutcomes, type InstanceOutcome } from '../../src/runtime/predict-outcome.ts'

const predict = loadMsServiceDefinition()['Predict']!
const toHex = (b: Buffer): string => b.toString('hex')
const decodeRequest = (hex: string): WirePredictRequest => predict.requestDeserialize(Buffer.from(hex, 'hex')) as WirePredictRequest
const encodeReplyHex = (r: WirePredictReply): string => toHex(predict.responseSerialize(r))
const roundTripReply = (r: WirePredictReply): WirePredictReply => predict.responseDeserialize(predict.responseSerialize(r)) as WirePredictReply

const V1_REQUEST = '0a130a03616464120a6164645f636f6d6d6f6e180112220a200a027831121a0a040a020202100b1a100000803f000000400000404000008040'
const V1_REPLY = '0a110a03616464120a6164645f636f6d6d6f6e1a210a1f0a0179121a0a040a020202100b1a100000c040000000410000204100004041'
const V1_ERROR = '0a090a046e6f706512016d22400802123c52657175657374207365727661626c65286e6f706529206d6574686f64286d29202c207365727661626c65206973206e6f7420617661696c61626c65'
const V1_STRING_TENSOR = '0a030a0101100d22026869'

test('V1 request decodes to spec + float32 [[1,2],[3,4]]', () => {
  const req = decodeRequest(V1_REQUEST)
  assert.deepEqual({ ...req.servable_spec }, { name: 'add', method_name: 'add_common', version_number: 1 })
  const [inst] = decodeInstances(req)
  const x1 = inst!['x1']
  assert.ok(x1 instanceof Tensor)
  assert.equal(x1.dtype, 'float32')
  assert.deepEqual(x1.shape, [2, 2])
  assert.deepEqual(x1.toArray(), [1, 2, 3, 4])
})

test('V1 request is what encodeRequest produces', () => {
  const req = encodeRequest('add', 'add_common', 1, [{ x1: tensor('float32', [2, 2], [1, 2, 3, 4]) }])
  assert.equal(toHex(predict.requestSerialize(req)), V1_REQUEST)
})

test('V1 reply: one instance y = float32 [[6,8],[10,12]]', () => {
  const reply = encodeReply({ name: 'add', method_name: 'add_common' }, { instances: [{ outputs: { y: tensor('float32', [2, 2], [6, 8, 10, 12]) } }] })
  assert.equal(encodeReplyHex(reply), V1_REPLY)
})

test('V1 reply copies the decoded request spec (version 0 stays absent)', () => {
  const spec = decodeRequest('0a110a03616464120a6164645f636f6d6d6f6e').servable_spec
  assert.equal(spec?.version_number, 0)
  const reply = encodeReply(spec, { instances: [{ outputs: { y: tensor('float32', [2, 2], [6, 8, 10, 12]) } }] })
  assert.equal(encodeReplyHex(reply), V1_REPLY)
})

test('V1 whole-request error reply', () => {
  const err = new ServeError('SERVABLE_NOT_FOUND', 'Request servable(nope) method(m) , servable is not available')
  assert.equal(encodeReplyHex(encodeReply({ name: 'nope', method_name: 'm' }, { error: err })), V1_ERROR)
  assert.deepEqual(decodeReply(predict.responseDeserialize(Buffer.from(V1_ERROR, 'hex')) as WirePredictReply), {
    error: { msStatus: 2, message: 'Request servable(nope) method(m) , servable is not available' },
  })
})

test('V1 string tensor "hi": encoded as the Python client sends it, decoded to a string', () => {
  const req = encodeRequest('s', 'm', 0, [{ t: 'hi' }])
  const hex = toHex(predict.requestSerialize(req))
  assert.ok(hex.endsWith(`0a0174120b${V1_STRING_TENSOR}`), hex)
  assert.deepEqual(decodeInstances(decodeRequest(hex)), [{ t: 'hi' }])
})

test('replies carry strings as MS_STRING [] and bytes as MS_BYTES []', () => {
  const wire = roundTripReply(encodeReply({ name: 'e' }, { instances: [{ outputs: { s: 'héllo', b: new Uint8Array([1, 2, 3]) } }] }))
  const items = wire.instances![0]!.items!
  assert.equal(items['s']!.dtype, 13)
  assert.deepEqual(items['s']!.shape?.dims, [])
  assert.equal(Buffer.from(items['s']!.bytes_val![0]!).toString('utf8'), 'héllo')
  assert.equal(items['b']!.dtype, 14)
  assert.deepEqual([...items['b']!.bytes_val![0]!], [1, 2, 3])
  const back = decodeReply(wire) as { instances: { outputs: Record<string, Value> }[] }
  assert.equal(back.instances[0]!.outputs['s'], 'héllo')
  assert.deepEqual([...(back.instances[0]!.outputs['b'] as Uint8Array)], [1, 2, 3])
})

test('numeric dtypes round-trip, including int64, float16 bits, bool and scalars', () => {
  const values: Record<string, Value> = {
    i64: tensor('int64', [3], [1n, -2n, 3n]),
    f16: tensor('float16', [2], new Uint16Array([0x3c00, 0xc000])),
    b: tensor('bool', [2], [1, 0]),
    scalar: tensor('float64', [], [2.5]),
    empty: tensor('int32', [3, 0], []),
  }
  const wire = predict.requestDeserialize(predict.requestSerialize(encodeRequest('n', 'm', 7, [values]))) as WirePredictRequest
  assert.equal(wire.servable_spec?.version_number, 7)
  const [inst] = decodeInstances(wire)
  for (const [k, v] of Object.entries(values)) {
    const got = inst![k] as Tensor
    assert.equal(got.dtype, (v as Tensor).dtype, k)
    assert.deepEqual(got.shape, (v as Tensor).shape, k)
    assert.deepEqual(got.toArray(), (v as Tensor).toArray(), k)
  }
})

test('aligned numeric data is wrapped without copying', () => {
  // Place the data field at a 4-byte aligned offset inside the message buffer.
  const req = encodeRequest('a', 'm', 0, [{ x: tensor('float32', [4], [1, 2, 3, 4]) }])
  const bytes = predict.requestSerialize(req)
  const ab = new ArrayBuffer(bytes.length + 8)
  for (let shift = 0; shift < 4; shift++) {
    const buf = Buffer.from(ab, shift, bytes.length)
    bytes.copy(buf)
    const x = decodeInstances(predict.requestDeserialize(buf) as WirePredictRequest)[0]!['x'] as Tensor
    assert.deepEqual(x.toArray(), [1, 2, 3, 4])
    const shared = x.data.buffer === ab
    assert.equal(shared, (shift + bytes.length - 16) % 4 === 0, `shift ${shift}`)
  }
})

function checkError(t: WireTensor, detail: string, name = 'x1'): void {
  assert.throws(() => decodeInstances({ instances: [{ items: { [name]: t } }] }), (e: unknown) => {
    assert.ok(e instanceof ServeError)
    assert.equal(e.msStatus, 2)
    assert.equal(e.message, `Instances input ${name} check failed, detail: ${detail}`)
    return true
  })
}

test('tensor check texts', () => {
  const f32 = (dims: number[], bytes: number): WireTensor => ({ shape: { dims }, dtype: 11, data: Buffer.alloc(bytes) })
  checkError(f32([2, 2], 12), 'Tensor check failed: input data size 12 invalid')
  checkError(f32([], 0), 'Tensor check failed: input data size 0 invalid')
  checkError({ shape: { dims: [3] }, dtype: 8 }, 'Tensor check failed: input data size 0 invalid')
  checkError(f32([2, -1], 8), 'Tensor check failed: input  shape [2, -1] invalid')
  checkError(f32([0, 2], 0), 'Tensor check failed: input  shape [0, 2] invalid')
  checkError(f32([0, 0], 0), 'Tensor check failed: input  shape [0, 0] invalid')
  checkError({ shape: { dims: [1] }, dtype: 0, data: Buffer.alloc(4) }, 'Tensor check failed: input data type proto::MS_UNKNOWN invalid')
  checkError({ shape: { dims: [1] }, dtype: 99, data: Buffer.alloc(4) }, 'Tensor check failed: input data type proto::MS_UNKNOWN invalid')
  checkError({ shape: { dims: [1] }, dtype: 11, shm_data: { memory_key: 'k' }, tensor_data: 'shm_data' }, 'Tensor check failed: input shared memory data is not supported')
  const batch = 'Instance tensor check failed: bytes or string type shape batch size can only be 1'
  checkError({ shape: { dims: [1] }, dtype: 13, bytes_val: [] }, batch)
  checkError({ shape: { dims: [2] }, dtype: 14, bytes_val: [Buffer.from('a'), Buffer.from('b')] }, batch)
  const shape = 'Instance tensor check failed: bytes or string type input  shape can only be (1,) or empty, but given shape is '
  checkError({ shape: { dims: [2] }, dtype: 13, bytes_val: [Buffer.from('a')] }, `${shape}[2]`)
  checkError({ shape: { dims: [1, 1] }, dtype: 14, bytes_val: [Buffer.from('a')] }, `${shape}[1, 1]`)
  // Accepted forms: [] and [1] for string/bytes, [2, 0] (zero last) and scalars for numbers.
  const ok = decodeInstances({ instances: [{ items: {
    s: { shape: { dims: [] }, dtype: 13, bytes_val: [Buffer.from('x')] },
    b: { shape: null, dtype: 14, bytes_val: [Buffer.from('y')] },
    z: f32([2, 0], 0),
    k: { shape: { dims: [] }, dtype: 6, data: Buffer.alloc(4) },
  } }] })[0]!
  assert.equal(ok['s'], 'x')
  assert.deepEqual((ok['z'] as Tensor).shape, [2, 0])
})

const y = (v: number): { outputs: Record<string, Value> } => ({ outputs: { y: tensor('float32', [1], [v]) } })
const err = (message: string, code = 'INFERENCE_FAILED'): { error: { code: string; message: string } } => ({ error: { code, message } })
/** A reply from per-instance outcomes, as the registry hands them over (after the collapse rule). */
const collapsed = (outcomes: InstanceOutcome<{ code: string; message: string }>[]) => encodeReply({ name: 'a' }, collapseOutcomes(outcomes))

test('reply rules: all ok', () => {
  const r = roundTripReply(encodeReply({ name: 'a' }, { instances: [y(1), y(2)] }))
  assert.equal(r.instances!.length, 2)
  assert.deepEqual(r.error_msg, [])
})

test('reply rules: every instance failed identically collapses to one error', () => {
  const r = roundTripReply(collapsed([err('same'), err('same'), err('same')]))
  assert.deepEqual(r.instances, [])
  assert.equal(r.error_msg!.length, 1)
  assert.equal(r.error_msg![0]!.error_code, 1)
  assert.equal(Buffer.from(r.error_msg![0]!.error_msg!).toString(), 'same')
  assert.deepEqual(decodeReply(r), { error: { msStatus: 1, message: 'same' } })
})

test('reply rules: a single failed instance is a whole-request error', () => {
  const r = roundTripReply(collapsed([err('bad', 'VALIDATION')]))
  assert.deepEqual(r.instances, [])
  assert.deepEqual(decodeReply(r), { error: { msStatus: 2, message: 'bad' } })
})

test('reply rules: mixed gives N instances and N errors with code 0 for ok ones', () => {
  const wire = encodeReply({ name: 'a' }, { instances: [y(1), err('Given model input 1 size 12 not match the size 16 defined in model'), y(3)] })
  assert.equal(encodeReplyHex({ error_msg: [wire.error_msg![0]!] }), '2200') // ok entry: empty ErrorMsg
  const r = roundTripReply(wire)
  assert.equal(r.instances!.length, 3)
  assert.deepEqual(r.instances![1]!.items, {})
  assert.deepEqual(r.error_msg!.map((e) => Number(e.error_code)), [0, 1, 0])
  const back = decodeReply(r) as { instances: unknown[] }
  assert.deepEqual(back.instances[1], { error: { msStatus: 1, message: 'Given model input 1 size 12 not match the size 16 defined in model' } })
  assert.deepEqual(((back.instances[2] as { outputs: Record<string, Tensor> }).outputs['y']!).toArray(), [3])
})

test('reply rules: all failed with different errors gives N errors and N empty instances', () => {
  const r = roundTripReply(collapsed([err('one'), err('two')]))
  assert.deepEqual(r.instances!.map((i) => i.items), [{}, {}])
  assert.deepEqual(r.error_msg!.map((e) => Buffer.from(e.error_msg!).toString()), ['one', 'two'])
  const same = roundTripReply(collapsed([err('one', 'TIMEOUT'), err('one', 'INTERNAL')]))
  assert.equal(same.error_msg!.length, 2, 'different status codes do not collapse')
  const uncollapsed = roundTripReply(encodeReply({ name: 'a' }, { instances: [err('same'), err('same')] }))
  assert.equal(uncollapsed.error_msg!.length, 2, 'encodeReply renders what it is given; the rule is collapseOutcomes')
})

test('decodeReply rejects an error count other than 0, 1 or N', () => {
  assert.throws(() => decodeReply({ instances: [{}, {}, {}], error_msg: [{}, {}] }), /error msg result size 2/)
  assert.deepEqual(decodeReply({ instances: [{ items: {} }], error_msg: [{}] }), { instances: [{ outputs: {} }] })
})

test('handlePredict never rejects and maps errors to MindSpore statuses', async () => {
  const spec = { name: 'a', method_name: 'm' }
  const reqOk: WirePredictRequest = { servable_spec: spec, instances: [{ items: {} }] }
  const cases: [() => Promise<never>, number, string][] = [
    [() => Promise.reject(new ServeError('QUEUE_FULL', 'Serving Error: enqueued requests count exceeds the limit 1')), 1, 'Serving Error: enqueued requests count exceeds the limit 1'],
    [() => Promise.reject(new ServeError('SERVABLE_NOT_READY', 'warming up')), 5, 'warming up'],
    [() => Promise.reject(new Error('boom')), 3, 'boom'],
    [() => { throw new Error('sync boom') }, 3, 'sync boom'],
  ]
  for (const [handler, code, message] of cases) {
    const r = await handlePredict(reqOk, handler)
    assert.deepEqual(r.servable_spec, spec)
    assert.deepEqual(decodeReply(roundTripReply(r)), { error: { msStatus: code, message } })
  }
  const badOutput = await handlePredict(reqOk, async () => ({ instances: [{ outputs: { y: 5 as unknown as Value } }] }))
  assert.equal(badOutput.error_msg![0]!.error_code, 3)
  const badTensor = await handlePredict({ servable_spec: spec, instances: [{ items: { x: { dtype: 11, shape: { dims: [2] }, data: Buffer.alloc(4) } } }] }, async () => { throw new Error('not called') })
  assert.deepEqual(decodeReply(roundTripReply(badTensor)), { error: { msStatus: 2, message: 'Instances input x check failed, detail: Tensor check failed: input data size 4 invalid' } })
})
