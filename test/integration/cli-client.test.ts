// `ms-serve predict`, `generate` and `list` against the real server over REST and gRPC: printed
// tables and --json, dtypes from the servable's description, --dtype, @files and --instances, exit
// codes (0, 1 server errors and failed instances, 2 usage, 130 Ctrl-C), and the message that names
// the fix when no server answers.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BIN, postJson, runCli, startServer, type StartedServer } from '../helpers/server.ts'
import { addServable, FIXTURE_SERVABLES } from '../helpers/fixtures.ts'

describe('ms-serve predict / generate / list', () => {
  let dir = ''
  let srv: StartedServer
  let transports: Array<[string, string[]]>
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-cli-client-'))
    const servables = join(dir, 'servables')
    addServable(servables)
    FIXTURE_SERVABLES['errors']!(servables)
    FIXTURE_SERVABLES['dtypes']!(servables)
    const r = await runCli(['init', 'llm', '--dir', servables])
    assert.equal(r.code, 0, r.stderr)
    srv = await startServer(servables, ['--devices', '0', '--no-watch'])
    transports = [['rest', ['--url', srv.rest]], ['grpc', ['--grpc', srv.grpc]]]
    writeFileSync(join(dir, 'x2.json'), '[[5.0, 6.0], [7.0, 8.0]]')
    writeFileSync(join(dir, 'raw.bin'), Buffer.from([0, 1, 2, 254]))
    writeFileSync(join(dir, 'two.json'), JSON.stringify({ instances: [{ x1: [[1, 2], [3, 4]], x2: [[1, 1], [1, 1]] }, { x1: [[1, 2, 3]], x2: [[1, 1], [1, 1]] }] }))
  })
  after(async () => {
    await srv?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  test('predict prints a table of the outputs; values as JSON or @file; --json parses', async () => {
    for (const [name, flags] of transports) {
      const r = await runCli(['predict', '--servable', 'add', '--method', 'add_common', '--input', 'x1=[[1.0,2.0],[3.0,4.0]]', '--input', `x2=@${join(dir, 'x2.json')}`, ...flags])
      assert.equal(r.code, 0, `${name}: ${r.stderr}`)
      assert.deepEqual(r.stdout.trimEnd().split('\n').map((l) => l.split(/\s{2,}/)), [['output', 'dtype', 'shape', 'values'], ['y', 'float32', '[2,2]', '[[6, 8], [10, 12]]']], name)
      const j = await runCli(['predict', '--servable', 'add', '--method', 'add_common', '--input', 'x1=[[1.5,2],[3,4]]', '--input', 'x2=[[0.1,0],[0,0]]', '--json', ...flags])
      assert.equal(j.code, 0, j.stderr)
      assert.deepEqual(JSON.parse(j.stdout), { instances: [{ outputs: { y: { dtype: 'float32', shape: [2, 2], data: [[1.6, 2], [3, 4]] } } }] }, name)
    }
  })

  test('predict: integers go in as the servable\'s declared float32; --dtype overrides; --method defaults to the only one', async () => {
    for (const [name, flags] of transports) {
      // Without the description these would be int64 and fail the float32 model.
      const r = await runCli(['predict', '--servable', 'add', '--method', 'add_common', '--input', 'x1=[[1,2],[3,4]]', '--input', 'x2=[[1,1],[1,1]]', '--json', ...flags])
      assert.equal(r.code, 0, `${name}: ${r.stderr}`)
      assert.deepEqual(JSON.parse(r.stdout).instances[0].outputs.y.data, [[2, 3], [4, 5]])
      const forced = await runCli(['predict', '--servable', 'add', '--method', 'add_common', '--input', 'x1=[[1,2],[3,4]]', '--input', 'x2=[[1,1],[1,1]]', '--dtype', 'x1=int32', ...flags])
      assert.equal(forced.code, 1)
      assert.match(forced.stderr, /^ms-serve: Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model \((HTTP 400|MindSpore status 2)\)$/m)
      const only = await runCli(['predict', '--servable', 'dtypes', '--input', 'h=[1.5,0.1,-2]', '--input', 'i=[4611686018427387905,-5,0]', '--input', 'd=[0.1,1e300]', '--input', 'b=[true,false]', '--json', ...flags])
      assert.equal(only.code, 0, `${name}: ${only.stderr}`)
      // int64 beyond 2^53 printed exactly; float16 as its shortest exact decimal.
      assert.match(only.stdout, /"i":\{"dtype":"int64","shape":\[3\],"data":\[4611686018427387905,-5,0\]\}/)
      assert.deepEqual(JSON.parse(only.stdout).instances[0].outputs.h, { dtype: 'float16', shape: [3], data: [1.5, 0.1, -2] })
      assert.deepEqual(JSON.parse(only.stdout).instances[0].outputs.b, { dtype: 'bool', shape: [2], data: [true, false] })
      const two = await runCli(['predict', '--servable', 'add', '--input', 'x1=1', ...flags])
      assert.equal(two.code, 2)
      assert.match(two.stderr, /--method is required: add has the methods add_common, add_cast/)
    }
  })

  test('predict: strings, @file bytes, --instances with a failed instance (exit 1, both printed)', async () => {
    for (const [name, flags] of transports) {
      const r = await runCli(['predict', '--servable', 'errors', '--method', 'echo', '--input', 'text="héllo"', '--input', `raw=@${join(dir, 'raw.bin')}`, '--dtype', 'raw=bytes', '--json', ...flags])
      assert.equal(r.code, 0, `${name}: ${r.stderr}`)
      assert.deepEqual(JSON.parse(r.stdout).instances[0].outputs, {
        raw: { dtype: 'bytes', b64: Buffer.from([254, 2, 1, 0]).toString('base64') },
        size: { dtype: 'int32', shape: [], data: 4 },
        text: { dtype: 'string', value: 'héllo!' },
      })
      const table = await runCli(['predict', '--servable', 'errors', '--method', 'echo', '--input', 'text=plain words', '--dtype', 'text=string', '--input', 'raw="ab"', '--dtype', 'raw=bytes', ...flags])
      assert.equal(table.code, 0, table.stderr)
      assert.match(table.stdout, /^text\s+string\s+\[\]\s+"plain words!"$/m)
      assert.match(table.stdout, /^raw\s+bytes\s+\[\]\s+2 bytes: 62 61$/m)
      const two = await runCli(['predict', '--servable', 'add', '--method', 'add_common', '--instances', `@${join(dir, 'two.json')}`, ...flags])
      assert.equal(two.code, 1, 'a failed instance makes exit code 1')
      assert.match(two.stdout, /^instance 0\n  output\s+dtype\s+shape\s+values\n  y\s+float32\s+\[2,2\]\s+\[\[2, 3\], \[4, 5\]\]\ninstance 1: error: Given model input 0 size 12 not match the size 16 defined in model/m)
      const twoJson = await runCli(['predict', '--servable', 'add', '--method', 'add_common', '--instances', `@${join(dir, 'two.json')}`, '--json', ...flags])
      const parsed = JSON.parse(twoJson.stdout)
      assert.equal(parsed.instances[1].error, 'Given model input 0 size 12 not match the size 16 defined in model')
      assert.equal(parsed.instances[1].ms_status, name === 'grpc' ? 2 : undefined)
    }
  })

  test('predict: long bytes are abbreviated in the table (tensors: test/unit/cli-client-values.test.ts)', async () => {
    const r = await runCli(['predict', '--servable', 'errors', '--method', 'echo', '--input', 'text="x"', '--input', `raw=@${join(dir, 'x2.json')}`, '--dtype', 'raw=bytes', '--url', srv.rest])
    assert.equal(r.code, 0, r.stderr)
    // x2.json reversed: 24 bytes, the first 16 shown.
    assert.match(r.stdout, /^raw\s+bytes\s+\[\]\s+24 bytes: 5d 5d 30 2e 38 20 2c 30 2e 37 5b 20 2c 5d 30 2e …$/m)
  })

  test('predict: usage errors exit 2 and say what to write; server errors exit 1 with the server\'s message', async () => {
    const base = ['predict', '--servable', 'add', '--method', 'add_common', '--url', srv.rest]
    const cases: Array<[string[], RegExp]> = [
      [['--input', 'x1'], /--input expects NAME=VALUE, e\.g\. --input x1='\[\[1\.0,2\.0\],\[3\.0,4\.0\]\]' \(got "x1"\)/],
      [['--input', 'x1=hello'], /--input x1: not JSON .*Strings are JSON strings: --input x1='"text"' \(or --dtype x1=string for raw text\)/],
      [['--input', 'x1=[1]', '--dtype', 'x1=float99'], /--dtype x1=float99: unknown dtype; use one of bool, int8/],
      [['--input', 'x1=[[1,2],[3]]'], /ragged array at \[1\]: expected 2 elements along dim 1/],
      [['--input', 'x1=[1.5]', '--dtype', 'x1=int32'], /1\.5 is not an integer, but the dtype is int32/],
      [['--input', 'x1=@/nonexistent.json'], /--input x1=@\/nonexistent\.json: cannot read the file \(ENOENT\)/],
      [[], /nothing to send: give --input NAME=VALUE/],
      [['--input', 'x1=1', '--grpc', srv.grpc], /give one of --url \(REST\) or --grpc \(gRPC\), not both/],
    ]
    for (const [extra, message] of cases) {
      const r = await runCli([...base, ...extra])
      assert.equal(r.code, 2, `${extra.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, message)
      assert.match(r.stderr, /^ms-serve: /)
    }
    const missing = await runCli(['predict', '--method', 'm', '--url', srv.rest])
    assert.equal(missing.code, 2)
    assert.match(missing.stderr, /required option '--servable <name>' not specified/)
    const unknown = await runCli(['predict', '--servable', 'nope', '--method', 'm', '--input', 'x="a"', '--url', srv.rest])
    assert.equal(unknown.code, 1)
    assert.equal(unknown.stderr, 'ms-serve: Request servable(nope) method(m) , servable is not available (HTTP 404). `ms-serve list` shows what the server serves\n')
  })

  test('generate: the whole text, or tokens as they arrive with --stream, equal to TGI /generate (greedy)', async () => {
    const whole = await postJson(`${srv.rest}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 10, do_sample: false } })
    assert.equal(whole.status, 200)
    const text = whole.json.generated_text as string
    for (const [name, flags] of transports) {
      for (const extra of [[], ['--stream'], ['--servable', 'llm', '--stream']]) {
        const r = await runCli(['generate', 'Hello', '--max-new-tokens', '10', ...extra, ...flags])
        assert.equal(r.code, 0, `${name} ${extra}: ${r.stderr}`)
        assert.equal(r.stdout, `${text}\n`, `${name} ${extra}`)
        assert.match(r.stderr, /\(10 tokens, finish reason: length\)/)
      }
      const j = await runCli(['generate', 'Hello', '--max-new-tokens', '10', '--json', ...flags])
      assert.deepEqual(JSON.parse(j.stdout), { generated_text: text, finish_reason: 'length', generated_tokens: 10 })
      const events = (await runCli(['generate', 'Hello', '--max-new-tokens', '3', '--stream', '--json', ...flags])).stdout.trimEnd().split('\n').map((l) => JSON.parse(l))
      assert.deepEqual(events.map((e) => e.type), ['token', 'token', 'token', 'done'])
      assert.deepEqual(events.slice(0, 3).map((e) => e.index), [0, 1, 2])
    }
    const bad = await runCli(['generate', 'Hello', '--max-new-tokens', '0', '--url', srv.rest])
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /--max-new-tokens expects an integer >= 1 \(got "0"\)/)
    const tooMany = await runCli(['generate', 'Hello', '--max-new-tokens', '100000', '--url', srv.rest])
    assert.equal(tooMany.code, 1)
    assert.match(tooMany.stderr, /^ms-serve: Input validation error: .*max_new_tokens.* \(HTTP 422\)$/m)
  })

  test('generate --stream: Ctrl-C (SIGINT) cancels the request on the server and exits 130', async () => {
    for (const [name, flags] of transports) {
      const before = await llmTokens()
      const proc = spawn(process.execPath, [BIN, 'generate', 'long story', '--max-new-tokens', '400', '--stream', ...flags], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stderr = ''
      proc.stderr!.on('data', (d) => { stderr += d })
      // The first tokens arrived: the request runs on the server.
      await once(proc.stdout!, 'data')
      proc.kill('SIGINT')
      const [code] = await once(proc, 'exit')
      assert.equal(code, 130, `${name}: ${stderr}`)
      assert.match(stderr, /^ms-serve: cancelled$/m)
      let generated = -1
      for (let i = 0; i < 200 && generated < 0; i++) {
        const s = await llmState()
        if (s.busy === 0) generated = s.generated - before
        else await new Promise((r) => setTimeout(r, 50))
      }
      assert.ok(generated >= 0 && generated < 400, `${name}: the request stopped early (${generated} tokens)`)
    }
  })

  async function llmState(): Promise<{ busy: number; generated: number }> {
    const stats = await (await fetch(`${srv.rest}/stats`)).json() as { llms: Array<{ replicas: Array<{ active: number; engine: { running: number; queued: number; generatedTokens: number } }> }> }
    const reps = stats.llms[0]!.replicas
    return { busy: reps.reduce((a, r) => a + r.active + r.engine.running + r.engine.queued, 0), generated: reps.reduce((a, r) => a + r.engine.generatedTokens, 0) }
  }
  const llmTokens = async () => (await llmState()).generated

  test('list: servables, versions, methods with dtypes and shapes (? when unknown), replicas; --json is GET /servables', async () => {
    const described = await (await fetch(`${srv.rest}/servables`)).json()
    for (const [name, flags] of transports) {
      const r = await runCli(['list', ...flags])
      assert.equal(r.code, 0, `${name}: ${r.stderr}`)
      assert.match(r.stdout, /^add \(model, ready\)$/m)
      assert.match(r.stdout, /^ {2}version 1: ready; replicas: cpu:0 \w+ ready pid \d+$/m)
      assert.match(r.stdout, /^ {4}add_common\(x1: float32 \[2,2\], x2: float32 \[2,2\]\) -> \(y: float32 \[2,2\]\) {2}\(batched, up to 32 per run\)$/m)
      assert.match(r.stdout, /^ {4}echo\(text: \? \?, raw: \? \?\) -> \(text: \? \?, raw: \? \?, size: \? \?\)$/m)
      assert.match(r.stdout, /^llm \(llm, ready\)$/m)
      const j = await runCli(['list', '--json', ...flags])
      assert.equal(j.code, 0)
      const strip = (d: any) => ({ ...d, servables: d.servables.map((s: any) => ({ ...s, versions: s.versions.map(({ llm: _l, ...v }: any) => v) })) })
      assert.deepEqual(strip(JSON.parse(j.stdout)), strip(described), name)
    }
  })

  test('no server: the message names the address and the fix; env MS_SERVE_URL / MS_SERVE_GRPC pick the server', async () => {
    const rest = await runCli(['list', '--url', 'http://127.0.0.1:1'])
    assert.equal(rest.code, 1)
    assert.equal(rest.stderr, 'ms-serve: cannot reach http://127.0.0.1:1: connection refused. Is the server running? Start it with `npx ms-serve start ./servables` or pass --url\n')
    const grpc = await runCli(['predict', '--servable', 'add', '--input', 'x1=1', '--grpc', '127.0.0.1:1'])
    assert.equal(grpc.code, 1)
    assert.equal(grpc.stderr, 'ms-serve: cannot reach 127.0.0.1:1 (gRPC): connection refused. Is the server running? Start it with `npx ms-serve start ./servables` or pass --grpc\n')
    const gen = await runCli(['generate', 'x', '--url', 'http://127.0.0.1:1'])
    assert.equal(gen.code, 1)
    assert.match(gen.stderr, /cannot reach http:\/\/127\.0\.0\.1:1: connection refused\. Is the server running\?/)
    const saved = { url: process.env.MS_SERVE_URL, grpc: process.env.MS_SERVE_GRPC }
    try {
      process.env.MS_SERVE_URL = 'http://127.0.0.1:1'
      const env = await runCli(['list'])
      assert.equal(env.code, 1)
      assert.match(env.stderr, /or pass --url \(this address came from MS_SERVE_URL\)\n$/)
      delete process.env.MS_SERVE_URL
      process.env.MS_SERVE_GRPC = srv.grpc
      const viaEnv = await runCli(['list', '--json'])
      assert.equal(viaEnv.code, 0, viaEnv.stderr)
      assert.ok(JSON.parse(viaEnv.stdout).servables.some((s: { name: string }) => s.name === 'add'))
      // A flag wins over the environment.
      process.env.MS_SERVE_GRPC = '127.0.0.1:1'
      assert.equal((await runCli(['list', '--url', srv.rest])).code, 0)
    } finally {
      for (const [k, v] of [['MS_SERVE_URL', saved.url], ['MS_SERVE_GRPC', saved.grpc]] as const) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    }
  })

  test('--help lists every flag of the client commands', async () => {
    const common = ['--url <url>', '--grpc <host:port>', '--api-key <key>', '--tls-ca <file>', '--tls-cert <file>', '--tls-key <file>', '--timeout <time>']
    const flags: Record<string, string[]> = {
      predict: ['--servable <name>', '--method <name>', '--input <name=value>', '--dtype <name=dtype>', '--instances <json|@file>', '--version <n>', '--json', 'float32 when any number is'],
      generate: ['<prompt>', '--servable <name>', '--version <n>', '--max-new-tokens <n>', '--temperature <t>', '--top-k <k>', '--top-p <p>', '--repetition-penalty <x>', '--seed <n>', '--do-sample', '--stop <text>', '--stream', '--json'],
      list: ['--json'],
    }
    for (const [cmd, list] of Object.entries(flags)) {
      const r = await runCli([cmd, '--help'])
      assert.equal(r.code, 0)
      for (const f of [...list, ...common]) assert.ok(r.stdout.includes(f), `${cmd} --help lacks ${f}:\n${r.stdout}`)
    }
    const top = await runCli(['--help'])
    for (const cmd of ['predict', 'generate', 'list']) assert.match(top.stdout, new RegExp(`^  ${cmd}\\b`, 'm'))
  })
})
