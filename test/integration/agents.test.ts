// Remote replicas: a master with --agents-listen and no local replicas, and `ms-serve agent`
// processes that join it, serve, are killed (clean errors, not ready) and rejoin (recovery); an
// agent that cannot see the servable directory fetches its files into --cache-dir (issue 13).
// Everything on loopback; every process is stopped by PID.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { addServable, binaryModel, FIXTURE_SERVABLES, floatJson, writeServable, X1, X2 } from '../helpers/fixtures.ts'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'
import { killByPid, spawnAgent, until as waitFor, type StartedAgent } from '../helpers/agents.ts'
import { BIN, logEvents, startServer, tempServables, type StartedServer } from '../helpers/server.ts'

let srv: StartedServer
let agentsAddress = ''
const cleanups: Array<() => void> = []
const agents: ChildProcess[] = []
// Agents fetch into a temp cache, never the user's ~/.cache.
const cacheDir = mkdtempSync(join(tmpdir(), 'ms-serve-agent-cache-'))
cleanups.push(() => rmSync(cacheDir, { recursive: true, force: true }))
const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex')
const unshareWorks = () => spawnSync('unshare', ['-m', 'true']).status === 0

function startAgent(name: string): StartedAgent {
  const a = spawnAgent(agentsAddress, name, cacheDir)
  agents.push(a.proc)
  return a
}

const until = <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000) => waitFor(what, fn, () => srv.output(), timeoutMs)

const predict = async () => {
  const res = await fetch(`${srv.rest}/model/add:add_common`, { method: 'POST', body: floatJson({ instances: [{ x1: X1, x2: X2 }] }) })
  return { status: res.status, json: await res.json() as any }
}
const ready = async () => (await fetch(`${srv.rest}/v2/health/ready`)).status === 200

before(async () => {
  const dir = tempServables({ after: (fn) => cleanups.push(fn) })
  addServable(dir)
  FIXTURE_SERVABLES['slow']!(dir)
  srv = await startServer(dir, ['--no-watch', '--agents-listen', '127.0.0.1:0', '--no-local-replicas'])
  agentsAddress = /agents link start success, listening on ([^\s"]+)/.exec(srv.output())![1]!
})

after(async () => {
  for (const a of agents) await killByPid(a)
  await srv?.stop()
  for (const c of cleanups) c()
})

test('no agent: the servable is loaded but not ready; predict is a 503 naming it', async () => {
  assert.equal(await ready(), false)
  const r = await predict()
  assert.equal(r.status, 503)
  assert.match(r.json.error_msg, /servable is not available/)
})

test('an agent joins and serves; killed, its work fails cleanly and the servable is not ready; it rejoins and serves again', async () => {
  const a = startAgent('a1')
  await until('the agent replica to be ready', async () => ((await ready()) ? true : undefined))
  const ok = await predict()
  assert.equal(ok.status, 200, JSON.stringify(ok.json))
  assert.deepEqual(ok.json.instances[0].y, [[6, 8], [10, 12]])
  const stats = await (await fetch(`${srv.rest}/stats`)).json() as any
  assert.deepEqual(stats.servables.map((s: any) => s.replicas.map((r: any) => [r.device, r.state])), [[['cpu:0@a1', 'ready']], [['cpu:0@a1', 'ready']]])
  assert.ok(logEvents(srv.output()).some((e) => e.event === 'agent_joined' && e.agent === 'a1'))

  // A request in flight on the agent (a 300 ms stage) when it dies fails with a clear error, at once.
  const slow = fetch(`${srv.rest}/model/slow:add_slow`, { method: 'POST', body: floatJson({ instances: [{ x1: X1, x2: X2 }] }) })
  await new Promise((r) => setTimeout(r, 100))
  await killByPid(a.proc)
  const failed = await slow
  assert.equal(failed.status, 503)
  assert.match(((await failed.json()) as any).error_msg, /agent a1 lost/)
  await until('the master to notice the agent is gone', async () => ((await ready()) ? undefined : true))
  const down = await predict()
  assert.equal(down.status, 503, JSON.stringify(down.json))
  assert.ok(logEvents(srv.output()).some((e) => e.event === 'agent_lost' && e.agent === 'a1'))

  startAgent('a1')
  await until('the agent to rejoin and its replica to restart', async () => ((await ready()) ? true : undefined))
  const again = await predict()
  assert.equal(again.status, 200, JSON.stringify(again.json))
  assert.ok(logEvents(srv.output()).some((e) => e.event === 'agent_rejoined' && e.agent === 'a1'))
})

test('a second agent adds a replica; a name already connected is refused (exit 2)', async () => {
  const b = startAgent('b1')
  await until('two ready replicas', async () => {
    const st = await (await fetch(`${srv.rest}/stats`)).json() as any
    return st.servables.every((s: any) => s.replicas.filter((r: any) => r.state === 'ready').length === 2) ? true : undefined
  })
  const results = await Promise.all(Array.from({ length: 8 }, () => predict()))
  assert.ok(results.every((r) => r.status === 200))
  const dup = startAgent('b1')
  const [code] = await once(dup.proc, 'exit')
  assert.equal(code, 2, dup.output())
  assert.match(dup.output(), /already connected; give each agent its own --name/)
  await killByPid(b.proc)
})

test('with --api-key the agent link needs the key: without it the agent is refused (exit 2), with it it serves', async (t) => {
  const dir = tempServables(t)
  addServable(dir)
  const keyed = await startServer(dir, ['--no-watch', '--agents-listen', '127.0.0.1:0', '--no-local-replicas', '--api-key', 'sekret'])
  try {
    const address = /agents link start success, listening on ([^\s"]+)/.exec(keyed.output())![1]!
    const run = (extra: string[]) => spawn(process.execPath, [BIN, 'agent', '--master', address, '--devices', '0', '--cache-dir', cacheDir, ...extra], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MS_SERVE_API_KEY: '' } })
    const refused = run(['--name', 'nokey'])
    agents.push(refused)
    let out = ''
    refused.stderr!.on('data', (d) => { out += d })
    refused.stdout!.on('data', (d) => { out += d })
    const [code] = await once(refused, 'exit')
    assert.equal(code, 2, out)
    assert.match(out, /the master refused it/)
    const good = run(['--name', 'withkey', '--api-key', 'sekret'])
    agents.push(good)
    const deadline = Date.now() + 30_000
    for (;;) {
      const r = await fetch(`${keyed.rest}/v2/health/ready`)
      if (r.status === 200) break
      if (Date.now() > deadline) throw new Error(`not ready:\n${keyed.output()}`)
      await new Promise((res) => setTimeout(res, 100))
    }
    const res = await fetch(`${keyed.rest}/model/add:add_common`, { method: 'POST', body: floatJson({ instances: [{ x1: X1, x2: X2 }] }), headers: { authorization: 'Bearer sekret' } })
    assert.equal(res.status, 200)
    await killByPid(good)
  } finally {
    await keyed.stop()
  }
})

test('with --no-fetch-models, an agent whose copy of a model file differs from the master\'s refuses to serve it, naming the file', async (t) => {
  if (!unshareWorks()) { t.skip('needs unshare -m (root) to give the agent its own view of the files'); return }
  const dir = tempServables(t)
  addServable(dir)
  const other = join(dir, '..', `${dir.split('/').pop()}-other.onnx`)
  writeFileSync(other, binaryModel('Mul', ['batch', 2, 2]))
  t.after(() => rmSync(other, { force: true }))
  const m = await startServer(dir, ['--no-watch', '--agents-listen', '127.0.0.1:0', '--no-local-replicas'])
  try {
    const address = /agents link start success, listening on ([^\s"]+)/.exec(m.output())![1]!
    // The agent sees another add.onnx at the same path (a bind mount in its own mount namespace).
    const model = join(dir, 'add', '1', 'add.onnx')
    const agent = spawn('unshare', ['-m', 'sh', '-c', `mount --bind "${other}" "${model}" && exec "${process.execPath}" "${BIN}" agent --master ${address} --devices 0 --name skewed --no-fetch-models --cache-dir "${cacheDir}"`], { stdio: ['ignore', 'pipe', 'pipe'] })
    agents.push(agent)
    const deadline = Date.now() + 30_000
    while (!/differs from the master's/.test(m.output())) {
      if (Date.now() > deadline) throw new Error(`no refusal:\n${m.output()}`)
      await new Promise((r) => setTimeout(r, 100))
    }
    assert.match(m.output(), new RegExp(`agent skewed: ${model.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} differs from the master's \\(sha256 `))
    assert.match(m.output(), /Copy the servable directory to this host at the same path/)
    assert.equal((await fetch(`${m.rest}/v2/health/ready`)).status, 503, 'nothing serves the differing model')
    await killByPid(agent)
  } finally {
    await m.stop()
  }
})

test('an agent that cannot see the servable directory fetches its files into --cache-dir (sha256 checked) and serves; restarted it uses the cache; a corrupted cache file is fetched again', async (t) => {
  if (!unshareWorks()) { t.skip('needs unshare -m (root) to hide the servable directory from the agent'); return }
  const dir = tempServables(t)
  addServable(dir)
  // The config reads a data file beside it at load (import.meta.url is its own place): it must travel too.
  const configPath = join(dir, 'add', 'servable_config.ts')
  writeFileSync(join(dir, 'add', 'meta.json'), '{"method":"add_common"}')
  mkdirSync(join(dir, 'add', 'lib'))
  writeFileSync(join(dir, 'add', 'lib', 'meta.ts'), `import { readFileSync } from 'node:fs'\nexport const meta = JSON.parse(readFileSync(new URL('../meta.json', import.meta.url), 'utf8'))\n`)
  writeFileSync(configPath, `import { meta } from './lib/meta.ts'\nif (meta.method !== 'add_common') throw new Error('meta.json')\n` + readFileSync(configPath, 'utf8'))
  const cache = mkdtempSync(join(tmpdir(), 'ms-serve-agent-fetch-'))
  t.after(() => rmSync(cache, { recursive: true, force: true }))
  const m = await startServer(dir, ['--no-watch', '--agents-listen', '127.0.0.1:0', '--no-local-replicas'])
  const isReady = async () => (await fetch(`${m.rest}/v2/health/ready`)).status === 200
  const wait = async (what: string, fn: () => Promise<boolean> | boolean) => {
    const deadline = Date.now() + 30_000
    while (!(await fn())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${m.output()}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }
  try {
    const address = /agents link start success, listening on ([^\s"]+)/.exec(m.output())![1]!
    // In its own mount namespace the agent sees an empty tmpfs where the servable directory is.
    const run = () => {
      const p = spawn('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none "${dir}" && exec "${process.execPath}" "${BIN}" agent --master ${address} --devices 0 --name fetcher --cache-dir "${cache}"`], { stdio: ['ignore', 'pipe', 'pipe'] })
      agents.push(p)
      let out = ''
      p.stdout!.on('data', (d) => { out += d })
      p.stderr!.on('data', (d) => { out += d })
      return { proc: p, output: () => out }
    }
    const model = join(dir, 'add', '1', 'add.onnx')
    const config = join(dir, 'add', 'servable_config.ts')
    const cached = (p: string) => join(cache, address.replace(/[^A-Za-z0-9._-]/g, '_'), p)
    const serves = async () => {
      const res = await fetch(`${m.rest}/model/add:add_common`, { method: 'POST', body: floatJson({ instances: [{ x1: X1, x2: X2 }] }) })
      const json = await res.json() as any
      assert.equal(res.status, 200, JSON.stringify(json))
      assert.deepEqual(json.instances[0].y, [[6, 8], [10, 12]])
    }

    const first = run()
    await wait('the fetching agent to serve', isReady)
    await serves()
    for (const f of [model, config, join(dir, 'add', 'meta.json'), join(dir, 'add', 'lib', 'meta.ts')]) {
      assert.match(first.output(), new RegExp(`fetched ${f.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(\\d+ bytes, \\d+ ms\\)`), first.output())
      assert.equal(sha256(cached(f)), sha256(f), `${f} cached with the master's sha256`)
    }
    assert.ok(logEvents(m.output()).some((e) => e.event === 'agent_file_served' && e.path === model))
    await killByPid(first.proc)
    await wait('the master to notice the agent is gone', async () => !(await isReady()))

    // Restarted: everything comes from the cache, nothing is requested.
    const served = logEvents(m.output()).filter((e) => e.event === 'agent_file_served').length
    const second = run()
    await wait('the agent to serve from its cache', isReady)
    await serves()
    assert.match(second.output(), /add\.onnx cached/)
    // Its digest was kept beside it, so the restarted agent did not hash it again.
    assert.equal(JSON.parse(readFileSync(`${cached(model)}.ms-serve-sha256`, 'utf8')).sha256, sha256(model))
    assert.doesNotMatch(second.output(), /fetched /)
    assert.equal(logEvents(m.output()).filter((e) => e.event === 'agent_file_served').length, served, 'no file was requested')
    await killByPid(second.proc)
    await wait('the master to notice the agent is gone', async () => !(await isReady()))

    // A cache file with other content is noticed and fetched again.
    writeFileSync(cached(model), 'not the model')
    const third = run()
    await wait('the agent to serve after fetching again', isReady)
    await serves()
    assert.match(third.output(), /differs from the master's .*fetching it again/)
    assert.match(third.output(), /fetched .*add\.onnx/)
    assert.equal(sha256(cached(model)), sha256(model))
    await killByPid(third.proc)
  } finally {
    await m.stop()
  }
})

test('an LLM servable over a fetching agent: its tokenizer config and chat template come from the master, and chat answers as a local replica does', async (t) => {
  if (!unshareWorks()) { t.skip('needs unshare -m (root) to hide the servable directory from the agent'); return }
  const dir = tempServables(t)
  const config = join(dir, 'config.ts')
  writeFileSync(config, "import { defineServable } from 'ms-serve'\nexport default defineServable((s) => { s.declareLlm({ file: 'model.onnx', maxTotalTokens: 256 }) })\n")
  const sdir = writeServable(dir, 'chat', config, { 1: { 'model.onnx': buildDecoder(DECODER_CONFIGS.tiny) } })
  rmSync(config)
  // A template of its own: were it not fetched, the agent would render its default one instead.
  const template = '{% for m in messages %}<<{{ m.role }}>> {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<<assistant>> {% endif %}'
  const tokConfig = join(sdir, 'tokenizer_config.json')
  writeFileSync(tokConfig, JSON.stringify({ bos_token: '<s>', eos_token: '</s>', chat_template: template }))
  const cache = mkdtempSync(join(tmpdir(), 'ms-serve-agent-llm-'))
  t.after(() => rmSync(cache, { recursive: true, force: true }))
  const chat = async (origin: string) => {
    const res = await fetch(`${origin}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'chat', messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 8, temperature: 0 }) })
    const json = await res.json() as any
    assert.equal(res.status, 200, JSON.stringify(json))
    return { text: json.choices[0].message.content as string, promptTokens: json.usage.prompt_tokens as number }
  }
  const local = await startServer(dir, ['--no-watch', '--devices', '0'])
  let want
  try { want = await chat(local.rest) } finally { await local.stop() }
  const m = await startServer(dir, ['--no-watch', '--agents-listen', '127.0.0.1:0', '--no-local-replicas'])
  try {
    const address = /agents link start success, listening on ([^\s"]+)/.exec(m.output())![1]!
    const p = spawn('unshare', ['-m', 'sh', '-c', `mount -t tmpfs none "${dir}" && exec "${process.execPath}" "${BIN}" agent --master ${address} --devices 0 --name llm --cache-dir "${cache}"`], { stdio: ['ignore', 'pipe', 'pipe'] })
    agents.push(p)
    let out = ''
    p.stdout!.on('data', (d) => { out += d })
    p.stderr!.on('data', (d) => { out += d })
    const deadline = Date.now() + 60_000
    while ((await fetch(`${m.rest}/v2/health/ready`)).status !== 200) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for the LLM agent:\n${m.output()}\n${out}`)
      await new Promise((r) => setTimeout(r, 100))
    }
    const got = await chat(m.rest)
    assert.deepEqual(got, want, 'same prompt (the fetched template) and the same greedy text')
    assert.match(out, /fetched .*tokenizer_config\.json/, out)
    const cachedTok = join(cache, address.replace(/[^A-Za-z0-9._-]/g, '_'), tokConfig)
    assert.equal(sha256(cachedTok), sha256(tokConfig))
    await killByPid(p)
  } finally {
    await m.stop()
  }
})
