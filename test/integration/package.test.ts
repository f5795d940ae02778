// The package as users install it: `npm pack`, `npm install <tarball>` into a fresh project with no
// network, then the installed CLI (`init`, `start`, a REST predict, the README's gRPC example) and
// `tsc --noEmit` under a plain NodeNext tsconfig on the scaffolded servable_config.ts.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT, postJson } from '../helpers/server.ts'

interface Run { code: number | null; stdout: string; stderr: string }

/** Runs a command to completion (killed after `timeoutMs`); rejects with its output on a non-zero exit. */
async function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Run> {
  const proc = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout!.on('data', (d) => { stdout += d })
  proc.stderr!.on('data', (d) => { stderr += d })
  const t = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
  const [code] = await once(proc, 'exit')
  clearTimeout(t)
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${code}:\n${stdout}${stderr}`)
  return { code, stdout, stderr }
}

/** The environment for a nested npm: none of the npm_* variables an outer `npm test` sets (they name this project). */
function npmEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v
  return { ...env, ...extra }
}

function newestMtimeMs(dir: string): number {
  let newest = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    newest = Math.max(newest, e.isDirectory() ? newestMtimeMs(p) : statSync(p).mtimeMs)
  }
  return newest
}

async function stopByPid(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  process.kill(proc.pid!, 'SIGTERM')
  const t = setTimeout(() => proc.kill('SIGKILL'), 10_000)
  await once(proc, 'exit')
  clearTimeout(t)
}

function isAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

/** A README example: the first ```js block that starts with `// NAME`. */
function readmeExample(name: string): string {
  const m = new RegExp('```js\\n(// ' + name.replace('.', '\\.') + '[\\s\\S]*?)```').exec(readFileSync(join(ROOT, 'README.md'), 'utf8'))
  assert.ok(m, `README.md has the ${name} example`)
  return m[1]!
}

/** The README's gRPC client example: the first ```js block that starts with `// predict-grpc.mjs`. */
function readmeGrpcExample(): string {
  const m = /```js\n(\/\/ predict-grpc\.mjs[\s\S]*?)```/.exec(readFileSync(join(ROOT, 'README.md'), 'utf8'))
  assert.ok(m, 'README.md has the gRPC client example')
  return m[1]!
}

test('npm pack → npm install offline → init, start, predict (REST and gRPC), tsc on servable_config.ts', { timeout: 180_000 }, async (t) => {
  // In os.tmpdir(), not under the checkout: Node and tsc look up node_modules in parent folders, and
  // the checkout's would hide a dependency missing from the installed package.
  const tmp = mkdtempSync(join(tmpdir(), 'ms-serve-pkg-'))
  const procs: ChildProcess[] = []
  // Where the time goes, printed as test diagnostics (the budget is well under a minute plus a d.ts rebuild).
  let mark = Date.now()
  const phase = (name: string) => { t.diagnostic(`${name}: ${Date.now() - mark} ms`); mark = Date.now() }
  t.after(async () => {
    for (const p of procs) await stopByPid(p)
    rmSync(tmp, { recursive: true, force: true })
  })

  // dist/api.d.ts comes from `build.mjs --types` (the package's `prepare`, so `npm ci` writes it);
  // the test command's plain build does not, so rebuild it here only when src/ is newer.
  const dts = join(ROOT, 'dist', 'api.d.ts')
  if (!existsSync(dts) || statSync(dts).mtimeMs < newestMtimeMs(join(ROOT, 'src'))) {
    await run(process.execPath, [join(ROOT, 'scripts', 'build.mjs'), '--types', '--quiet'], { cwd: ROOT, timeoutMs: 120_000 })
    phase('build.mjs --types (src/ newer than dist/api.d.ts)')
  }
  // --ignore-scripts: `prepare` would also regenerate the example servables, which the package does not ship.
  const packed = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], { cwd: ROOT, env: npmEnv() })
  const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>
  const files = info!.files.map((f) => f.path)
  for (const f of ['LICENSE', 'README.md', 'package.json', 'bin/ms-serve.js', 'dist/api.js', 'dist/api.d.ts', 'dist/cli/main.js', 'proto/ms_service.proto']) {
    assert.ok(files.includes(f), `the tarball has ${f}`)
  }
  phase('npm pack')

  // Installing without network. The app's node_modules starts as a hard-linked copy of this
  // checkout's (`cp -al`: instant, no bytes copied, and npm removing or replacing an entry of the
  // copy does not touch the original), so every dependency of the tarball is already present at a
  // version the lockfile chose and npm, told `--offline`, resolves nothing from the registry: the
  // install fails if it would need to. The checkout's devDependencies are extraneous to the app and
  // npm prunes them, which also shows the package runs without them. An npm cache seeded from
  // ~/.npm would not do: `npm ci` stores tarballs but not the packuments a range resolution needs.
  const app = join(tmp, 'app')
  mkdirSync(app)
  await run('cp', ['-al', join(ROOT, 'node_modules'), join(app, 'node_modules')], { cwd: tmp })
  rmSync(join(app, 'node_modules', '.package-lock.json'), { force: true })
  const version = (name: string) => (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version
  writeFileSync(join(app, 'package.json'), JSON.stringify({
    name: 'app', private: true, type: 'module',
    dependencies: { '@grpc/grpc-js': version('@grpc/grpc-js'), '@grpc/proto-loader': version('@grpc/proto-loader') },
    devDependencies: { typescript: version('typescript'), '@types/node': version('@types/node') },
  }, null, 2))
  // --ignore-scripts: the copied dependencies are installed already (npm would not rerun their scripts
  // anyway); onnxruntime-node's own step is run below the way the README tells CPU-only users to.
  await run('npm', ['install', join(tmp, info!.filename), '--offline', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: app, env: npmEnv() })
  assert.ok(!existsSync(join(app, 'node_modules', 'tsx')), 'devDependencies of ms-serve were pruned')
  // README: CPU-only installs skip onnxruntime-node's CUDA download with ONNXRUNTIME_NODE_INSTALL=skip.
  await run('npm', ['rebuild', 'onnxruntime-node', '--offline'], { cwd: app, env: npmEnv({ ONNXRUNTIME_NODE_INSTALL: 'skip' }) })
  phase('npm install + rebuild')

  // The bin link npm made, run with this test's node (its shebang would pick whichever node is on PATH).
  const msServe = join(app, 'node_modules', '.bin', 'ms-serve')
  const v = await run(process.execPath, [msServe, '--version'], { cwd: app })
  assert.equal(v.stdout, `${(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version}\n`)
  const init = await run(process.execPath, [msServe, 'init', 'add'], { cwd: app })
  assert.match(init.stdout, /^created servables\/add \(servable_config\.ts, 1\/add\.onnx\)$/m)
  phase('--version + init')

  // tsc runs while the server starts: both take seconds and neither needs the other.
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true },
    include: ['servables/**/*.ts', 'api-check.ts'],
  }, null, 2))
  // The helpers' signatures are real types, not `any`: each @ts-expect-error must meet an error.
  writeFileSync(join(app, 'api-check.ts'), [
    "import { castTensor, defineServable, InvalidInputError, tensor, type Tensor } from 'ms-serve'",
    "import { Client, ClientError, type InstanceResult } from 'ms-serve/client'",
    "const client: Client = new Client({ url: 'http://127.0.0.1:1' })",
    "export const pending: Promise<InstanceResult[]> = client.predict('add', 'add_common', { x1: tensor('float32', [1], [1]) })",
    "export const isErr = (e: unknown): boolean => e instanceof ClientError",
    '// @ts-expect-error: the servable name is a string',
    "client.predict(1, 'm', {})",
    "const t: Tensor = castTensor(tensor('int32', [2], [1, 2]), 'float32')",
    "const n: number = t.size",
    "export const checks = [n, new InvalidInputError('x').message, defineServable(() => {}).methods]",
    '// @ts-expect-error: not a dtype',
    "tensor('float99', [1], [1])",
    '// @ts-expect-error: castTensor takes a Tensor',
    "castTensor([1, 2], 'float32')",
    '',
  ].join('\n'))
  const typecheck = run(join(app, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.json'], { cwd: app, timeoutMs: 120_000 })
  typecheck.catch(() => {}) // awaited below; do not let a failure surface as unhandled before then

  const server = spawn(process.execPath, [msServe, 'start', './servables', '--grpc', '127.0.0.1:0', '--rest', '127.0.0.1:0', '--no-watch'], {
    cwd: app, stdio: ['ignore', 'pipe', 'pipe'],
  })
  procs.push(server)
  let out = ''
  server.stdout!.on('data', (d) => { out += d })
  server.stderr!.on('data', (d) => { out += d })
  const deadline = Date.now() + 60_000
  let rest: string | undefined
  let grpc: string | undefined
  while (!(rest && grpc)) {
    rest = /RESTful server start success, listening on ([^\s"]+)/.exec(out)?.[1]
    grpc = /gRPC server start success, listening on ([^\s"]+)/.exec(out)?.[1]
    if (server.exitCode !== null) assert.fail(`ms-serve start exited with ${server.exitCode}:\n${out}`)
    if (Date.now() > deadline) assert.fail(`ms-serve start did not listen within 60 s:\n${out}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  phase('start')

  // The README's request, as text: JSON.stringify would write 1.0 as 1, an int32 to MindSpore's REST format.
  const r = await postJson(`http://${rest}/model/add:add_common`, '{"instances":[{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[5.0,6.0],[7.0,8.0]]}]}')
  assert.equal(r.status, 200, r.text)
  assert.deepEqual(r.json, { instances: [{ y: [[6, 8], [10, 12]] }] })

  writeFileSync(join(app, 'predict-grpc.mjs'), readmeGrpcExample())
  const g = await run(process.execPath, ['predict-grpc.mjs'], { cwd: app, env: { ...process.env, MS_SERVE_GRPC: grpc } })
  assert.equal(g.stdout, 'y [2,2] [6,8,10,12]\n')
  // The README's client example, from the installed package's `ms-serve/client` export.
  writeFileSync(join(app, 'predict-client.mjs'), readmeExample('predict-client.mjs'))
  const c = await run(process.execPath, ['predict-client.mjs'], { cwd: app, env: { ...process.env, MS_SERVE_URL: `http://${rest}` } })
  assert.equal(c.stdout, 'y [2,2] [6,8,10,12]\n')

  const stats = await (await fetch(`http://${rest}/stats`)).json() as { servables: Array<{ isolationReason?: string; replicas: Array<{ pid: number; isolation: string }> }> }
  assert.ok(stats.servables.length > 0 && stats.servables.every((s) => s.isolationReason?.startsWith('auto: ')), `the default isolation is auto, with its reason: ${JSON.stringify(stats.servables)}`)
  // Replicas that auto put in a process (an inline or thread replica has the server's pid) end with it.
  const replicaPids = stats.servables.flatMap((s) => s.replicas.filter((x) => x.isolation === 'process').map((x) => x.pid))
  assert.ok(replicaPids.every((pid) => pid !== server.pid))
  await stopByPid(server)
  assert.equal(server.exitCode, 0, `clean shutdown on SIGTERM:\n${out}`)
  for (const pid of replicaPids) {
    for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((res) => setTimeout(res, 50))
    assert.ok(!isAlive(pid), `replica ${pid} ended with the server`)
  }
  phase('predict REST + gRPC, stop')

  await typecheck
  phase('tsc (ran since init)')
})
