// Wire compatibility with a Python grpcio client: a grpc-js server with addMsService and a fake
// `add` servable, called by test/fixtures/python/ms_client.py through stubs generated at test time
// from OUR proto/ms_service.proto. Needs Debian's python3-grpcio, python3-grpc-tools, python3-numpy.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { ServeError } from '../../src/errors.ts'
import { Tensor, tensor, type Value } from '../../src/tensor.ts'
import type { MsErrorLike } from '../../src/protocol/grpc/ms-codec.ts'
import type { InstanceOutcome } from '../../src/runtime/predict-outcome.ts'
import { addMsService, findPackageRoot, msServerOptions, type MsPredictCall } from '../../src/protocol/grpc/ms-service.ts'
import { Client, ClientError } from '../../src/client/index.ts'
import { pyFloat2x2 as y, runPythonClient } from '../helpers/python.ts'

/** Fake servable `add`: add_common(x1, x2) -> y = x1 + x2 (float32 2x2), echo(text, raw) -> text!, reversed raw. */
async function fakeHandler({ name, method, version, instances }: MsPredictCall): Promise<{ instances: InstanceOutcome<MsErrorLike>[] }> {
  if (name !== 'add' || (version !== 0 && version !== 1)) {
    throw new ServeError('SERVABLE_NOT_FOUND', `Request servable(${name}) method(${method})${version ? `  version(${version}) ` : ' '}, servable is not available`)
  }
  const inputs = method === 'add_common' ? ['x1', 'x2'] : method === 'echo' ? ['text', 'raw'] : undefined
  if (!inputs) throw new ServeError('SERVABLE_NOT_FOUND', `Request servable(${name}) method(${method}) , method is not available`)
  for (const inst of instances) {
    for (const k of inputs) if (!(k in inst)) throw new ServeError('INVALID_REQUEST', `Cannot find input ${k} in instance input , servable ${name}, method ${method}`)
  }
  return {
    instances: instances.map((inst): InstanceOutcome<MsErrorLike> => {
      if (method === 'echo') {
        const raw = Uint8Array.from(inst['raw'] as Uint8Array).reverse()
        return { outputs: { text: `${inst['text'] as string}!`, raw } }
      }
      const [a, b] = [inst['x1'] as Tensor, inst['x2'] as Tensor]
      for (const [i, t] of [a, b].entries()) {
        if (t.dtype !== 'float32') return { error: { code: 'VALIDATION', message: `Given model input ${i} data type not match` } }
        if (t.byteLength !== 16) return { error: { code: 'VALIDATION', message: `Given model input ${i} size ${t.byteLength} not match the size 16 defined in model` } }
      }
      const y = new Float32Array(4)
      for (let i = 0; i < 4; i++) y[i] = (a.data as Float32Array)[i]! + (b.data as Float32Array)[i]!
      return { outputs: { y: tensor('float32', [2, 2], y) } }
    }),
  }
}

let server: grpc.Server
let address = ''
let workDir = ''

before(async () => {
  server = new grpc.Server(msServerOptions())
  addMsService(server, fakeHandler)
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))))
  address = `127.0.0.1:${port}`
  workDir = mkdtempSync(join(tmpdir(), 'ms-serve-pystubs-'))
})

after(() => {
  server?.forceShutdown()
  if (workDir) rmSync(workDir, { recursive: true, force: true })
})

test('Python grpcio client against addMsService', async () => {
  // Async exec: the server runs on this process's event loop.
  const r = await runPythonClient(address, workDir, findPackageRoot())

  assert.deepEqual(r['add'], { spec: { name: 'add', method: 'add_common', version: 0 }, instances: [{ y: y([[6, 8], [10, 12]]) }], errors: [] })
  assert.deepEqual(r['multi']!.spec.version, 1, 'reply copies the request spec')
  assert.deepEqual(r['multi']!.instances, [{ y: y([[6, 8], [10, 12]]) }, { y: y([[10, 12], [14, 16]]) }])
  assert.deepEqual(r['multi']!.errors, [])

  assert.deepEqual(r['mixed']!.instances, [{ y: y([[6, 8], [10, 12]]) }, {}, { y: y([[2, 4], [6, 8]]) }])
  assert.deepEqual(r['mixed']!.errors, [
    { code: 0, msg: '' },
    { code: 2, msg: 'Given model input 1 size 12 not match the size 16 defined in model' },
    { code: 0, msg: '' },
  ])

  assert.deepEqual(r['missing']!.instances, [])
  assert.deepEqual(r['missing']!.errors, [{ code: 2, msg: 'Cannot find input x2 in instance input , servable add, method add_common' }])

  assert.deepEqual(r['string']!.instances, [{ text: { dtype: 13, dims: [], text: ['hi!'] }, raw: { dtype: 14, dims: [], hex: ['ff0100'] } }])
  assert.deepEqual(r['string']!.errors, [])

  assert.deepEqual(r['bad_size']!.errors, [{ code: 2, msg: 'Instances input x1 check failed, detail: Tensor check failed: input data size 12 invalid' }])
  assert.deepEqual(r['bad_version']!.errors, [{ code: 2, msg: 'Request servable(add) method(add_common)  version(2) , servable is not available' }])
  assert.deepEqual(r['bad_version']!.spec, { name: 'add', method: 'add_common', version: 2 })
})

test('Node Client (gRPC) against addMsService', async () => {
  const client = new Client({ grpc: address })
  try {
    const x1 = tensor('float32', [2, 2], [1, 2, 3, 4])
    const [first, second] = await client.predict('add', 'add_common', [{ x1, x2: x1 }, { x1, x2: tensor('float32', [1], [0]) }])
    assert.deepEqual((first!.outputs!['y'] as Tensor).toArray(), [2, 4, 6, 8])
    assert.deepEqual(second, { error: 'Given model input 1 size 4 not match the size 16 defined in model', msStatus: 2 })
    const [echo] = await client.predict('add', 'echo', { text: 'héllo', raw: new Uint8Array([1, 2]) })
    const out: Record<string, Value> = echo!.outputs!
    assert.equal(out['text'], 'héllo!')
    assert.deepEqual([...(out['raw'] as Uint8Array)], [2, 1])
    await assert.rejects(client.predict('nope', 'm', { x: 'a' }), (e: ClientError) => e instanceof ClientError && e.msStatus === 2 && e.message === 'Request servable(nope) method(m) , servable is not available')
  } finally {
    await client.close()
  }
})
