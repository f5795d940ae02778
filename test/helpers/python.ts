/**
 * The Python grpcio client of the interop suites: test/fixtures/python/ms_client.py, with stubs
 * generated at test time from OUR proto/ms_service.proto. Needs Debian's python3-grpcio,
 * python3-grpc-tools (or protobuf-compiler-grpc) and python3-numpy.
 */
import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ROOT } from './server.ts'

const PYTHON = '/usr/bin/python3'
const INSTALL_HINT = 'run `apt-get install -y python3-grpcio python3-grpc-tools python3-numpy` (Debian packages for /usr/bin/python3)'
const execFileAsync = promisify(execFile)

/** Generates <proto>_pb2*.py from proto/<protoFile> into outDir, failing with the apt hint if impossible. */
export function generateStubs(outDir: string, protoDir = join(ROOT, 'proto'), protoFile = 'ms_service.proto'): void {
  const check = spawnSync(PYTHON, ['-c', 'import grpc, numpy, google.protobuf'], { encoding: 'utf8' })
  if (check.status !== 0) assert.fail(`${PYTHON} cannot import grpc/numpy/protobuf (${(check.stderr || String(check.error)).trim()}); ${INSTALL_HINT}`)
  const args = [`-I${protoDir}`, `--python_out=${outDir}`, protoFile]
  const tools = spawnSync(PYTHON, ['-m', 'grpc_tools.protoc', ...args, `--grpc_python_out=${outDir}`], { encoding: 'utf8' })
  if (tools.status === 0) return
  const protoc = spawnSync('protoc', [...args, `--grpc_out=${outDir}`, '--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin'], { encoding: 'utf8' })
  if (protoc.status === 0) return
  assert.fail(`cannot generate Python stubs: grpc_tools.protoc said ${tools.stderr.trim()}; protoc said ${(protoc.stderr || String(protoc.error)).trim()}; ${INSTALL_HINT}`)
}

export interface PyTensor { dtype: number; dims: number[]; values?: unknown; text?: string[]; hex?: string[] }
export interface PyReply { spec: { name: string; method: string; version: number }; instances: Record<string, PyTensor>[]; errors: { code: number; msg: string }[] }

/**
 * Generates the stubs into stubDir, runs ROOT/test/fixtures/python/ms_client.py against a gRPC
 * address and returns its replies by case name. Asynchronous: a server on this process's event
 * loop keeps answering.
 */
export async function runPythonClient(address: string, stubDir: string, root = ROOT): Promise<Record<string, PyReply>> {
  generateStubs(stubDir, join(root, 'proto'))
  const script = join(root, 'test', 'fixtures', 'python', 'ms_client.py')
  const { stdout } = await execFileAsync(PYTHON, [script, address], { env: { ...process.env, PYTHONPATH: stubDir }, timeout: 60_000 })
  return JSON.parse(stdout) as Record<string, PyReply>
}

/** The float32 2x2 tensor `v` as ms_client.py prints it (dtype 11 = MS_FLOAT32). */
export const pyFloat2x2 = (v: number[][]): PyTensor => ({ dtype: 11, dims: [2, 2], values: v })

/**
 * Runs ROOT/test/fixtures/python/oip_client.py (stubs generated now from OUR proto/oip_inference.proto)
 * against a gRPC address; returns its JSON report by case name.
 */
export async function runPythonOipClient(address: string, stubDir: string): Promise<Record<string, any>> {
  generateStubs(stubDir, join(ROOT, 'proto'), 'oip_inference.proto')
  const script = join(ROOT, 'test', 'fixtures', 'python', 'oip_client.py')
  const { stdout } = await execFileAsync(PYTHON, [script, address], { env: { ...process.env, PYTHONPATH: stubDir }, timeout: 60_000 })
  return JSON.parse(stdout) as Record<string, any>
}
