// Open Inference Protocol over gRPC with a client nobody here wrote: Python grpcio with stubs
// generated at test time from our proto/oip_inference.proto (package inference, the protocol's
// field numbers), against the real server: health, metadata, infer with typed contents and with
// raw_input_contents, versions, BYTES, and errors as gRPC statuses.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { addServable, FIXTURE_SERVABLES } from '../helpers/fixtures.ts'
import { startServer, tempServables, type StartedServer } from '../helpers/server.ts'
import { runPythonOipClient } from '../helpers/python.ts'

let srv: StartedServer
let report: Record<string, any> = {}
const cleanups: Array<() => void> = []

before(async () => {
  const dir = tempServables({ after: (fn) => cleanups.push(fn) })
  addServable(dir)
  for (const n of ['errors', 'addv']) FIXTURE_SERVABLES[n]!(dir)
  writeFileSync(join(dir, 'server.yaml'), 'servables:\n  addv: { versions: [1, 2] }\n')
  srv = await startServer(dir, ['--no-watch', '--config', join(dir, 'server.yaml')])
  const stubs = mkdtempSync(join(tmpdir(), 'ms-serve-oip-stubs-'))
  cleanups.push(() => rmSync(stubs, { recursive: true, force: true }))
  report = await runPythonOipClient(srv.grpc, stubs)
})

after(async () => {
  await srv?.stop()
  for (const c of cleanups) c()
})

test('health and server metadata', () => {
  assert.equal(report['live'], true)
  assert.equal(report['ready'], true)
  assert.equal(report['server_metadata'].name, 'ms-serve')
  assert.deepEqual(report['server_metadata'].extensions, ['binary_tensor_data', 'generate'])
  assert.equal(report['model_ready'], true)
})

test('model metadata equals the REST answer', async () => {
  const rest = await (await fetch(`${srv.rest}/v2/models/add/add_common`)).json()
  assert.deepEqual(report['model_metadata'], rest)
})

test('infer with typed contents and with raw_input_contents: same outputs, stacked over the batch', () => {
  const want = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5]
  assert.deepEqual(report['infer_contents'], { model_name: 'add/add_common', model_version: '1', id: 'py-1', outputs: [{ name: 'y', datatype: 'FP32', shape: [2, 2, 2], data: want }] })
  assert.deepEqual(report['infer_raw'].outputs, report['infer_contents'].outputs)
  assert.equal(report['infer_raw'].id, '')
})

test('model_version picks the version (addv 1 adds)', () => {
  assert.equal(report['infer_versioned'].model_version, '1')
  assert.deepEqual(report['infer_versioned'].outputs[0].data, [0.5, 1.5, 2.5, 3.5])
})

test('BYTES contents in (content_type "str" makes them strings), length-prefixed raw BYTES out', () => {
  const b = report['infer_bytes']
  const lp = (hex: string) => Buffer.concat([Buffer.from(new Uint32Array([hex.length / 2]).buffer), Buffer.from(hex, 'hex')]).toString('hex')
  assert.deepEqual(b['text'], { datatype: 'BYTES', shape: [], hex: lp(Buffer.from('hi!').toString('hex')) })
  assert.deepEqual(b['raw'], { datatype: 'BYTES', shape: [], hex: lp('030201') })
  assert.deepEqual(b['size'], { datatype: 'INT32', shape: [], hex: '03000000' })
  // Without content_type the element is bytes, and the stage that wants a string says so.
  assert.equal(report['bytes_not_str'].code, 'INTERNAL')
  assert.match(report['bytes_not_str'].details, /text must be a string/)
})

test('errors are gRPC statuses naming the fault', () => {
  assert.equal(report['unknown_model'].code, 'NOT_FOUND')
  assert.match(report['unknown_model'].details, /no model nosuch; loaded: .*add\/add_common/)
  assert.equal(report['bad_count'].code, 'INVALID_ARGUMENT')
  assert.match(report['bad_count'].details, /input x1: shape \[1,2,2\] needs 4 elements, "data" has 3/)
  assert.equal(report['raw_count'].code, 'INVALID_ARGUMENT')
  assert.match(report['raw_count'].details, /raw_input_contents has 1 entries for 2 inputs/)
})
