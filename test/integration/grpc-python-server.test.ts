// Cross-language interop against the REAL server: the same Python grpcio client as
// grpc-python.test.ts (test/fixtures/python/ms_client.py, stubs generated at test time from our
// proto/ms_service.proto) calls `ms-serve start` serving the add template.
// Needs Debian's python3-grpcio, python3-grpc-tools (or protobuf-compiler-grpc), python3-numpy.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ROOT, startServer, type StartedServer } from '../helpers/server.ts'
import { addServable } from '../helpers/fixtures.ts'

const PYTHON = '/usr/bin/python3'
const INSTALL_HINT = 'run `apt-get install -y python3-grpcio python3-grpc-tools python3-numpy` (Debian packages for /usr/bin/python3)'
const execFileAsync = promisify(execFile)

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

function generateStubs(outDir: string): void {
  const check = spawnSync(PYTHON, ['-c', 'import grpc, numpy, google.protobuf'], { encoding: 'utf8' })
  if (check.status !== 0) assert.fail(`${PYTHON} cannot import grpc/numpy/protobuf (${(check.stderr || String(check.error)).trim()}); ${INSTALL_HINT}`)
  const args = [`-I${join(ROOT, 'proto')}`, `--python_out=${outDir}`, 'ms_service.proto']
  const tools = spawnSync(PYTHON, ['-m', 'grpc_tools.protoc', ...args, `--grpc_python_out=${outDir}`], { encoding: 'utf8' })
  if (tools.status === 0) return
  const protoc = spawnSync('protoc', [...args, `--grpc_out=${outDir}`, '--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin'], { encoding: 'utf8' })
  if (protoc.status === 0) return
  assert.fail(`cannot generate Python stubs: grpc_tools.protoc said ${tools.stderr.trim()}; protoc said ${(protoc.stderr || String(protoc.error)).trim()}; ${INSTALL_HINT}`)
}

interface PyTensor { dtype: number; dims: number[]; values?: unknown }
interface PyReply { spec: { name: string; method: string; version: number }; instances: Record<string, PyTensor>[]; errors: { code: number; msg: string }[] }

test('Python grpcio client against ms-serve start (add servable, two replicas)', async () => {
  generateStubs(dir)
  const script = join(ROOT, 'test', 'fixtures', 'python', 'ms_client.py')
  const { stdout } = await execFileAsync(PYTHON, [script, server.grpc], { env: { ...process.env, PYTHONPATH: dir }, timeout: 60_000 })
  const r = JSON.parse(stdout) as Record<string, PyReply>
  const y = (v: number[][]): PyTensor => ({ dtype: 11, dims: [2, 2], values: v })

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
