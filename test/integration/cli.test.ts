// The real `ms-serve` CLI: `init` templates (create, re-run, refuse, --force), `start` failures that
// must exit 2 with a message naming the file, line and fix, and --help listing every flag.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { once } from 'node:events'
import { ROOT, runCli, tempServables } from '../helpers/server.ts'
import { addServable, writeServable } from '../helpers/fixtures.ts'
import { buildAddModel } from '../../src/models/index.ts'

const TEMPLATE_ADD = readFileSync(join(ROOT, 'templates', 'add', 'servable_config.ts'), 'utf8')

/** `ms-serve start DIR` on free ports, run in `cwd`; `extra` flags come last (and win). */
const start = (cwd: string, dir: string, ...extra: string[]) => runCli(['start', dir, '--grpc', '127.0.0.1:0', '--rest', '127.0.0.1:0', ...extra], cwd)

/**
 * A temp cwd with servables/add from the add template, its servable_config.ts edited (`from`
 * replaced by `to`); `line` is the 1-based line holding `marker` (0 if there is none).
 */
function editedAdd(t: { after: (fn: () => void) => void }, from: string, to: string, marker: string): { cwd: string; cfg: string; line: number } {
  const cwd = tempServables(t)
  addServable(join(cwd, 'servables'))
  const cfg = join(cwd, 'servables', 'add', 'servable_config.ts')
  writeFileSync(cfg, TEMPLATE_ADD.replace(from, to))
  const line = readFileSync(cfg, 'utf8').split('\n').findIndex((l) => l.includes(marker)) + 1
  return { cwd, cfg, line }
}

test('init add creates the servable, prints the next command; re-running is a no-op', async (t) => {
  const cwd = tempServables(t)
  const r = await runCli(['init', 'add'], cwd)
  assert.equal(r.code, 0, r.stderr)
  assert.equal(readFileSync(join(cwd, 'servables', 'add', 'servable_config.ts'), 'utf8'), TEMPLATE_ADD)
  assert.deepEqual(readFileSync(join(cwd, 'servables', 'add', '1', 'add.onnx')), Buffer.from(buildAddModel({ batchDim: true })))
  assert.match(r.stdout, /^created servables\/add \(servable_config\.ts, 1\/add\.onnx\)$/m)
  assert.match(r.stdout, /^next: npx ms-serve start \.\/servables --devices 0$/m)
  assert.match(r.stdout, /^then: curl -X POST .*http:\/\/127\.0\.0\.1:1500\/model\/add:add_common$/m)

  const again = await runCli(['init', 'add'], cwd)
  assert.equal(again.code, 0, again.stderr)
  assert.match(again.stdout, /^servables\/add already matches template "add"; nothing to do$/m)
  assert.match(again.stdout, /^next: npx ms-serve start \.\/servables --devices 0$/m)
})

test('init fills in a missing model file of an unchanged servable', async (t) => {
  const cwd = tempServables(t)
  assert.equal((await runCli(['init', 'add', 'calc', '--dir', 'models'], cwd)).code, 0)
  const onnx = join(cwd, 'models', 'calc', '1', 'add.onnx')
  writeFileSync(onnx, '')
  const r = await runCli(['init', 'add', 'calc', '--dir', 'models'], cwd)
  assert.equal(r.code, 2, 'a changed model file counts as a modification')
  rmSync(onnx)
  const r2 = await runCli(['init', 'add', 'calc', '--dir', 'models'], cwd)
  assert.equal(r2.code, 0, r2.stderr)
  assert.match(r2.stdout, /created models\/calc \(1\/add\.onnx\)/)
  assert.ok(existsSync(onnx))
})

test('init refuses to overwrite a modified servable without --force, and overwrites with it', async (t) => {
  const cwd = tempServables(t)
  assert.equal((await runCli(['init', 'add'], cwd)).code, 0)
  const cfg = join(cwd, 'servables', 'add', 'servable_config.ts')
  const edited = TEMPLATE_ADD + '\n// my change\n'
  writeFileSync(cfg, edited)
  const r = await runCli(['init', 'add'], cwd)
  assert.equal(r.code, 2)
  assert.equal(r.stderr, 'ms-serve: servables/add already exists and differs from template "add" in: servable_config.ts. Use --force to overwrite, or pick another name: npx ms-serve init add <name>\n')
  assert.equal(readFileSync(cfg, 'utf8'), edited, 'left untouched')
  const f = await runCli(['init', 'add', '--force'], cwd)
  assert.equal(f.code, 0, f.stderr)
  assert.match(f.stdout, /^created servables\/add \(servable_config\.ts\)$/m)
  assert.equal(readFileSync(cfg, 'utf8'), TEMPLATE_ADD)
})

test('init image and init --list', async (t) => {
  const cwd = tempServables(t)
  const r = await runCli(['init', 'image', '--dir', 'x'], cwd)
  assert.equal(r.code, 0, r.stderr)
  assert.ok(existsSync(join(cwd, 'x', 'image', '1', 'image_cnn.onnx')))
  const list = await runCli(['init', '--list'], cwd)
  assert.match(list.stdout, /^add\s+MindSpore's tensor_add example/m)
  assert.match(list.stdout, /^image\s+image classifier/m)
})

test('init with an unknown template lists the available ones', async (t) => {
  const cwd = tempServables(t)
  const r = await runCli(['init', 'nope'], cwd)
  assert.equal(r.code, 2)
  assert.match(r.stderr, /^ms-serve: unknown template "nope"\. Available: add, image(, [\w-]+)*\n$/)
  assert.ok(!existsSync(join(cwd, 'servables')))
})

test('start on a missing dir exits 2 with the command to create one', async (t) => {
  const cwd = tempServables(t)
  const r = await start(cwd, 'nowhere')
  assert.equal(r.code, 2)
  assert.equal(r.stderr, 'ms-serve: servable directory nowhere does not exist. Create one with: npx ms-serve init add --dir nowhere\n')
})

test('start on a dir without servables exits 2', async (t) => {
  const cwd = tempServables(t)
  mkdirSync(join(cwd, 'empty'))
  const r = await start(cwd, 'empty')
  assert.equal(r.code, 2)
  assert.match(r.stderr, /^ms-serve: no servable found in empty: expected empty\/<name>\/servable_config\.ts\. Create one with: npx ms-serve init add --dir empty\n$/)
})

test('start with a syntax error in servable_config.ts exits 2 naming file and line', async (t) => {
  const { cwd, cfg, line } = editedAdd(t, "s.declareModel({ file: 'add.onnx', withBatchDim: true, maxBatchSize: 32, maxWaitMs: 0 })", "s.declareModel({ file: 'add.onnx', withBatchDim: true,, })", ',,')
  assert.ok(line > 0)
  const r = await start(cwd, 'servables')
  assert.equal(r.code, 2, r.stdout + r.stderr)
  // The first line names the file as found; the esbuild location is relative to the working dir.
  assert.match(r.stderr, new RegExp(`^ms-serve: ${cfg.replaceAll('.', '\\.')} does not compile:\\nservables/add/servable_config\\.ts:${line}:\\d+: Expected identifier but found ","\\n`))
  assert.match(r.stderr, /Fix the TypeScript error above and start again\.\n$/)
})

test('start with a validation error exits 2 naming file:line and the fix', async (t) => {
  const { cwd, line } = editedAdd(t, 'maxBatchSize: 32', 'maxBatchSize: 0', 'maxBatchSize: 0')
  const r = await start(cwd, 'servables')
  assert.equal(r.code, 2)
  assert.equal(r.stderr, `ms-serve: servables/add/servable_config.ts:${line}: maxBatchSize must be an integer >= 1 (got 0)\n`)
})

test('start with a missing model file exits 2 naming the file and the fix', async (t) => {
  const cwd = tempServables(t)
  writeServable(join(cwd, 'servables'), 'calc', join(ROOT, 'templates', 'add', 'servable_config.ts'), { 1: {} })
  const r = await start(cwd, 'servables')
  assert.equal(r.code, 2)
  assert.match(r.stderr, /^ms-serve: servables\/calc\/servable_config\.ts:\d+: model file "add\.onnx" not found in \S+\/calc\/1\. Put the ONNX file there, or fix the file name\.\n$/)
})

test('start with a model stage whose args do not match the model inputs exits 2 naming the method and the fix', async (t) => {
  const { cwd, line } = editedAdd(t, 'const y = s.addStage(add, [x1, x2])', 'const y = s.addStage(add, [x1])', 's.addStage(add, [x1])')
  const r = await start(cwd, 'servables')
  assert.equal(r.code, 2, r.stdout + r.stderr)
  assert.match(r.stderr, new RegExp(`^ms-serve: servables/add/servable_config\\.ts:${line}: method "add_common" stage 1 \\(model add\\.onnx\\) passes 1 argument\\(s\\) but the model has 2 input\\(s\\): \\[x1, x2\\]\\. Pass one placeholder per model input, in order\\n$`))
})

test('start with bad flags exits 2 naming the flag', async (t) => {
  const cwd = tempServables(t)
  addServable(join(cwd, 'servables'))
  const run = (...extra: string[]) => start(cwd, 'servables', ...extra)
  const d = await run('--devices', '0,x')
  assert.equal(d.code, 2)
  assert.equal(d.stderr, `ms-serve: --devices: "x" is not a device; use a non-negative id (0) or an agent's device as NAME:ID (hostb:0, NAME as the agent's --name), e.g. --devices 0,hostb:0\n`)
  const m = await run('--max-msg-mb', '0')
  assert.equal(m.code, 2)
  assert.equal(m.stderr, 'ms-serve: --max-msg-mb must be an integer in 1..512 (got 0)\n')
  const g = await run('--grpc', 'nohost')
  assert.equal(g.code, 2)
  assert.equal(g.stderr, 'ms-serve: --grpc expects HOST:PORT, e.g. --grpc 127.0.0.1:5500 (got "nohost")\n')
  const dt = await run('--device-type', 'tpu')
  assert.equal(dt.code, 2)
  assert.match(dt.stderr, /--device-type <type>' argument 'tpu' is invalid\. Allowed choices are cpu, cuda\./)
  const c = await run('--device-type', 'cuda')
  assert.equal(c.code, 2)
  assert.match(c.stderr, /device type cuda was asked for, but this onnxruntime-node install has no CUDA execution provider/)
})

test('start --config: a version that does not exist, or a broken YAML, exits 2', async (t) => {
  const cwd = tempServables(t)
  addServable(join(cwd, 'servables'))
  writeFileSync(join(cwd, 'v.yaml'), 'servables:\n  add:\n    versions: [1, 3]\n')
  const v = await start(cwd, 'servables', '--config', 'v.yaml')
  assert.equal(v.code, 2)
  assert.match(v.stderr, /^ms-serve: servable add: version 3 was asked for but \S+\/servables\/add has versions \[1\]\n$/)
  writeFileSync(join(cwd, 'bad.yaml'), 'servables: [\n')
  const b = await runCli(['start', 'servables', '--config', 'bad.yaml'], cwd)
  assert.equal(b.code, 2)
  assert.match(b.stderr, /^ms-serve: cannot read server config bad\.yaml: /)
})

test('start on a servable folder or on a file exits 2 naming what was given and the folder to start', async (t) => {
  const cwd = tempServables(t)
  addServable(join(cwd, 'servables'))
  const folder = await start(cwd, 'servables/add')
  assert.equal(folder.code, 2, folder.stdout + folder.stderr)
  assert.equal(folder.stderr, 'ms-serve: servables/add is a servable folder itself (it holds servable_config.ts); start its parent: ms-serve start servables\n')
  const inside = await start(join(cwd, 'servables'), 'add')
  assert.equal(inside.code, 2)
  assert.equal(inside.stderr, 'ms-serve: add is a servable folder itself (it holds servable_config.ts); start its parent: ms-serve start .\n')
  const cfg = await start(cwd, 'servables/add/servable_config.ts')
  assert.equal(cfg.code, 2)
  assert.equal(cfg.stderr, 'ms-serve: servables/add/servable_config.ts is a file inside servable folder add, not a servable directory; start the folder that holds the servable folders: ms-serve start servables\n')
  writeFileSync(join(cwd, 'some.ts'), 'export {}\n')
  const file = await start(cwd, 'some.ts')
  assert.equal(file.code, 2)
  assert.equal(file.stderr, 'ms-serve: some.ts is a file, not a servable directory. Start a directory holding servable folders (DIR/<name>/servable_config.ts), e.g. ms-serve start servables; create one with: npx ms-serve init add --dir servables\n')
})

/** `start servables --config server.yaml` in `cwd`, with `yaml` as the file. */
function startWithYaml(cwd: string, yaml: string) {
  writeFileSync(join(cwd, 'server.yaml'), yaml)
  return start(cwd, 'servables', '--config', 'server.yaml')
}

test('start --config with a misspelt or mistyped YAML key exits 2 with a suggestion', async (t) => {
  const cwd = tempServables(t)
  addServable(join(cwd, 'servables'))
  const typo = await startWithYaml(cwd, 'devcies: [0]\n')
  assert.equal(typo.code, 2, typo.stdout + typo.stderr)
  assert.equal(typo.stderr, 'ms-serve: server.yaml: unknown key "devcies"; did you mean "devices"? Known keys: grpc, rest, devices, device_type, isolation, max_msg_mb, strict, request_timeout_ms, '
    + 'max_instances_per_request, watchdog_ms, max_connections, headers_timeout_ms, body_timeout_ms, servables, tls, api_key_file, log_level, log_format, access_log\n')
  const type = await startWithYaml(cwd, 'max_msg_mb: lots\n')
  assert.equal(type.code, 2)
  assert.equal(type.stderr, 'ms-serve: server.yaml: max_msg_mb must be an integer in 1..512 (got "lots")\n')
})

test('start with TLS or API key files that cannot be used exits 2 naming the flag or YAML key', async (t) => {
  const cwd = tempServables(t)
  addServable(join(cwd, 'servables'))
  const yaml = await startWithYaml(cwd, 'tls: { cert: nope.pem, key: nope.key }\n')
  assert.equal(yaml.code, 2, yaml.stdout + yaml.stderr)
  assert.match(yaml.stderr, new RegExp(`^ms-serve: server\\.yaml: tls\\.cert ${join(cwd, 'nope.pem').replace(/[.]/g, '\\.')}: cannot read the certificate: .*Give the path of a PEM file\n$`))
  const half = await start(cwd, 'servables', '--tls-cert', 'server.yaml')
  assert.equal(half.code, 2)
  assert.equal(half.stderr, 'ms-serve: TLS needs both a certificate and its private key: add --tls-key FILE (YAML tls.key)\n')
  const keyFile = await start(cwd, 'servables', '--api-key-file', 'missing-keys.txt')
  assert.equal(keyFile.code, 2)
  assert.match(keyFile.stderr, /^ms-serve: --api-key-file missing-keys\.txt: cannot read the API key file/)
})

test('start with an unknown declareModel option exits 2 naming file:line and the option it resembles', async (t) => {
  const { cwd, line } = editedAdd(t, 'maxBatchSize: 32', 'maxBatchsize: 32', 'maxBatchsize: 32')
  assert.ok(line > 0)
  const r = await start(cwd, 'servables')
  assert.equal(r.code, 2, r.stdout + r.stderr)
  // Not anchored at the start: what this checks is the servable's own error, not how the CLI prefixes it.
  assert.match(r.stderr, new RegExp(`servables/add/servable_config\\.ts:${line}: declareModel option "maxBatchsize" is unknown; did you mean "maxBatchSize"\\? Known options: file, stages, maxBatchSize, `))
})

test('start exits 2 when the REST port is taken', async (t) => {
  const cwd = tempServables(t)
  addServable(join(cwd, 'servables'))
  const holder = createServer()
  holder.listen(0, '127.0.0.1')
  await once(holder, 'listening')
  t.after(() => holder.close())
  const port = (holder.address() as { port: number }).port
  const r = await runCli(['start', 'servables', '--grpc', '127.0.0.1:0', '--rest', `127.0.0.1:${port}`], cwd)
  assert.equal(r.code, 2, r.stdout + r.stderr)
  assert.match(r.stderr, new RegExp(`^ms-serve: cannot listen: .*127\\.0\\.0\\.1:${port}.*Another process holds the port; pick another with --grpc HOST:PORT / --rest HOST:PORT \\(port 0 = any free port\\)\\n$`))
})

test('--help lists every flag', async () => {
  const start = await runCli(['start', '--help'])
  assert.equal(start.code, 0)
  for (const flag of ['--devices <ids>', '--device-type <type>', '--grpc <host:port>', '--rest <host:port>', '--no-grpc-server', '--no-rest-server', '--max-msg-mb <n>', '--rest-always-200', '--config <file>', '-h, --help']) {
    assert.ok(start.stdout.includes(flag), `start --help lacks ${flag}:\n${start.stdout}`)
  }
  const init = await runCli(['init', '--help'])
  for (const flag of ['--dir <dir>', '--force', '--list']) assert.ok(init.stdout.includes(flag), `init --help lacks ${flag}`)
  const top = await runCli(['--help'])
  assert.match(top.stdout, /^\s+start \[options\] <dir>/m)
  assert.match(top.stdout, /^\s+init \[options\] \[template\] \[name\]/m)
})

test('--version prints the package version; usage errors exit 2 and name the --help to read', async () => {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  for (const flag of ['--version', '-V']) {
    const v = await runCli([flag])
    assert.equal(v.code, 0)
    assert.equal(v.stdout, `${version}\n`)
  }
  const cases: Array<[args: string[], message: string, hint: string]> = [
    [['start', 'servables', '--bogus'], "ms-serve: unknown option '--bogus'", "run 'ms-serve start --help' for its usage"],
    [['start'], "ms-serve: missing required argument 'dir'", "run 'ms-serve start --help' for its usage"],
    [['start', 'servables', '--isolation', 'fiber'], "ms-serve: option '--isolation <where>' argument 'fiber' is invalid.", "run 'ms-serve start --help' for its usage"],
    [['init', '--dir'], "ms-serve: option '--dir <dir>' argument missing", "run 'ms-serve init --help' for its usage"],
    [['bench', '--bogus'], "ms-serve: unknown option '--bogus'", "run 'ms-serve bench --help' for its usage"],
    [['strat'], "ms-serve: unknown command 'strat'", "run 'ms-serve --help' for its usage"],
    [['--bogus'], "ms-serve: unknown option '--bogus'", "run 'ms-serve --help' for its usage"],
  ]
  for (const [args, message, hint] of cases) {
    const r = await runCli(args)
    assert.equal(r.code, 2, `ms-serve ${args.join(' ')}: ${r.stderr}`)
    assert.ok(r.stderr.startsWith(message), `ms-serve ${args.join(' ')}: ${r.stderr}`)
    assert.ok(r.stderr.trimEnd().endsWith(hint), `ms-serve ${args.join(' ')}: ${r.stderr}`)
    assert.equal(r.stdout, '')
  }
  // No command at all: the help, on stderr, as a usage error.
  const none = await runCli([])
  assert.equal(none.code, 2)
  assert.match(none.stderr, /^Usage: ms-serve \[options\] \[command\]/m)
})
