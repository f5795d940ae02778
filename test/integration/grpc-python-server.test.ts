// Cross-language interop against the REAL server: the same Python grpcio client as
// grpc-python.test.ts (test/fixtures/python/ms_client.py, stubs generated at test time from our
// proto/ms_service.proto) calls `ms-serve start` serving the add template.
// Needs Debian's python3-grpcio, python3-grpc-tools (or protobuf-compiler-grpc), python3-numpy.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startServer, type StartedServer } from '../helpers/server.ts'
import { addServable } from '../helpers/fixtures.ts'
import { pyFloat2x2 as y, runPythonClient } from '../helpers/python.ts'

let dir = ''
let server: StartedServer

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ms-serve-pyreal-'))
  addServable(join(dir, 'servables'))
  server = await startServer(join(dir, 'servables'), ['--devices', '0,1'])
})

after(async () => {
  await server?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

test('Python grpcio client against ms-serve start (add servable, two replicas)', async () => {
  const r = await runPythonClient(server.grpc, dir)

  assert.deepEqual(r['add'], { spec: { name: 'add', method: 'add_common', version: 0 }, instances: [{ y: y([[6, 8], [10, 12]]) }], errors: [] })

  assert.deepEqual(r['multi']!.spec, { name: 'add', method: 'add_common', version: 1 }, 'reply copies the request spec')
  assert.deepEqual(r['multi']!.instances, [{ y: y([[6, 8], [10, 12]]) }, { y: y([[10, 12], [14, 16]]) }])
  assert.deepEqual(r['multi']!.errors, [])

  assert.deepEqual(r['mixed']!.instances, [{ y: y([[6, 8], [10, 12]]) }, {}, { y: y([[2, 4], [6, 8]]) }])
  assert.deepEqual(r['mixed']!.errors, [
    { code: 0, msg: '' },
    { code: 2, msg: 'Given model input 1 size 12 not match the size 16 defined in model' },
    { code: 0, msg: '' },
  ])

  assert.deepEqual(r['missing'], { spec: { name: 'add', method: 'add_common', version: 0 }, instances: [], errors: [{ code: 2, msg: 'Cannot find input x2 in instance input , servable add, method add_common' }] })
  assert.deepEqual(r['bad_size']!.errors, [{ code: 2, msg: 'Instances input x1 check failed, detail: Tensor check failed: input data size 12 invalid' }])
  assert.deepEqual(r['bad_version']!.errors, [{ code: 2, msg: 'Request servable(add) method(add_common)  version(2) , servable is not available' }])
  assert.deepEqual(r['string']!.errors, [{ code: 2, msg: 'Request servable(add) method(echo) , method is not available' }])
})
