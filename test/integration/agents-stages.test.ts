// Pipeline stages on another host (issue 13): `--devices 0,st:0` puts stage 1 of each staged
// servable here and stage 2 on the agent named st, its activations over the agent link. A staged
// MLP and the 2-stage LLM decoder answer exactly as their unsplit models; before the agent joins
// they are loaded but not ready; killed, their work fails with the reason and they are not ready;
// rejoined, they serve again. The unsplit servables get one replica here and one on the agent.
// Everything on loopback; every process is stopped by PID.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildDeepMlp, writeExternalDataModel } from '../../src/models/index.ts'
import { assertClose, floatJson, oneModelServable, plainLlmBeside } from '../helpers/fixtures.ts'
import { killByPid, spawnAgent, until as waitFor, type StartedAgent } from '../helpers/agents.ts'
import { Agent as Dispatcher } from 'undici'
import { makeCertificates } from '../helpers/certs.ts'
import { copyInto, logEvents, postJson, ROOT, runCli, startServer, tempServables, type StartedServer } from '../helpers/server.ts'

let srv: StartedServer
/** The split MLP's stage files. */
let work = ''
/** The main server's servables folder. */
let servablesDir = ''
let agentsAddress = ''
const cleanups: Array<() => void> = []
const agents: StartedAgent[] = []
const cacheDir = mkdtempSync(join(tmpdir(), 'ms-serve-stage-cache-'))
cleanups.push(() => rmSync(cacheDir, { recursive: true, force: true }))

function startAgent(name: string): StartedAgent {
  const a = spawnAgent(agentsAddress, name, cacheDir)
  agents.push(a)
  return a
}

/** Waits with the master's (access lines left out) and the agents' output for the failure. */
const until = <T>(what: string, fn: () => Promise<T | undefined>) => waitFor(what, fn, () => `${srv.output().split('\n').filter((l) => !l.includes('"event":"access"')).join('\n')}\nagents:\n${agents.map((a) => a.output()).join('\n')}`, 60_000)

const ready = async (name: string) => (await fetch(`${srv.rest}/v2/models/${name}/ready`)).status === 200
const X = Array.from({ length: 3 }, (_, i) => Array.from({ length: 32 }, (_, j) => Math.sin(i * 32 + j)))
const predict = async (name: string) => {
  const res = await fetch(`${srv.rest}/model/${name}:predict`, { method: 'POST', body: floatJson({ instances: X.map((row) => ({ x: row })) }) })
  return { status: res.status, json: await res.json() as any }
}
const gen = (servable: string, prompt: string) => postJson(`${srv.rest}/model/${servable}:generate`, { instances: [{ prompt, max_new_tokens: 12, do_sample: false }] })

before(async () => {
  const dir = tempServables({ after: (fn) => cleanups.push(fn) })
  servablesDir = dir
  work = tempServables({ after: (fn) => cleanups.push(fn) })
  const whole = buildDeepMlp({ layers: 6, width: 64, inputDim: 32, outputDim: 8 })
  writeFileSync(join(work, 'model.onnx'), whole)
  const r = await runCli(['split', join(work, 'model.onnx'), '--stages', '2', '--out', work])
  assert.equal(r.code, 0, r.stderr)
  oneModelServable(dir, 'whole', `{ file: 'model.onnx' }`, { 'model.onnx': whole })
  oneModelServable(dir, 'staged', `{ stages: ['stage1.onnx', 'stage2.onnx'] }`, { 'stage1.onnx': join(work, 'stage1.onnx'), 'stage2.onnx': join(work, 'stage2.onnx') })
  const init = await runCli(['init', 'llm-distributed', '--dir', dir])
  assert.equal(init.code, 0, init.stderr)
  plainLlmBeside(dir)
  // The same 2-stage LLM with its weights in model.onnx_data: the agent's stage fetches the data file.
  mkdirSync(join(dir, 'llm-ext', '1'), { recursive: true })
  for (const f of ['servable_config.ts', 'tokenizer_config.json']) copyFileSync(join(ROOT, 'templates', 'llm-distributed', f), join(dir, 'llm-ext', f))
  await writeExternalDataModel(join(dir, 'llm-ext', '1', 'model.onnx'), new Uint8Array(readFileSync(join(dir, 'llm-distributed', '1', 'model.onnx'))))
  srv = await startServer(dir, ['--no-watch', '--devices', '0,st:0', '--agents-listen', '127.0.0.1:0', '--isolation', 'process'])
  agentsAddress = /agents link start success, listening on ([^\s"]+)/.exec(srv.output())![1]!
})

after(async () => {
  for (const a of agents) await killByPid(a.proc)
  await srv?.stop()
  for (const c of cleanups) c()
})

test('--devices NAME:ID without --agents-listen exits 2 naming the fix; a bad device names the form', async () => {
  const a = await runCli(['start', ROOT, '--devices', '0,st:0'])
  assert.equal(a.code, 2, a.stderr)
  assert.match(a.stderr, /places work on agent st, which needs --agents-listen HOST:PORT/)
  const b = await runCli(['start', ROOT, '--devices', '0,st:x'])
  assert.equal(b.code, 2, b.stderr)
  assert.match(b.stderr, /"st:x" is not a device; .* NAME:ID/)
})

test('before the agent joins: the staged servables are loaded but not ready (503), the unsplit ones serve here', async () => {
  assert.equal(await ready('staged'), false)
  assert.equal(await ready('llm-distributed'), false)
  assert.equal((await predict('staged')).status, 503)
  assert.equal((await predict('whole')).status, 200)
  // The start line counts the replica that waits for its agent apart from the ready ones.
  const line = logEvents(srv.output()).find((e) => e.event === 'servable_ready' && e.servable === 'staged')
  assert.equal(line?.replicas, 0, JSON.stringify(line))
  assert.equal(line?.waiting_for_agents, 1, JSON.stringify(line))
  assert.match(line!.msg, /1 more wait for agents \(st:0\)/)
})

test('stage 2 on the agent: outputs equal the unsplit model; greedy text equals the unsplit decoder; killed and rejoined', async () => {
  const a = startAgent('st')
  await until('the staged servables to be ready', async () => ((await ready('staged')) && (await ready('llm-distributed')) ? true : undefined))
  const w = await predict('whole')
  const s = await predict('staged')
  assert.equal(s.status, 200, JSON.stringify(s.json))
  for (let i = 0; i < X.length; i++) assertClose(s.json.instances[i].y, w.json.instances[i].y, 1e-4)
  await until('the external-data LLM to be ready', async () => ((await ready('llm-ext')) ? true : undefined))
  for (const p of ['Hello', 'Pipelines across hosts']) {
    const plain = await gen('plain', p)
    for (const name of ['llm-distributed', 'llm-ext']) {
      const staged = await gen(name, p)
      assert.equal(staged.status, 200, staged.text)
      assert.deepEqual(staged.json, plain.json, name)
    }
  }
  // The LLM stage travelled as bytes; its weights' file was fetched into the agent's cache.
  assert.ok(logEvents(a.output()).some((e) => e.event === 'agent_file_fetched' && /llm-ext\/1\/model\.onnx_data$/.test(e.path)), a.output())
  // A stage whose weights are inline needs nothing fetched: the agent got no file of llm-distributed.
  assert.ok(!logEvents(a.output()).some((e) => e.event === 'agent_file_fetched' && /\/llm-distributed\//.test(e.path)), a.output())
  // Concurrent streams through both lanes, stage 2 remote.
  const together = await Promise.all(['a', 'bb', 'ccc', 'dddd'].map((p) => gen('llm-distributed', p)))
  for (const [i, p] of ['a', 'bb', 'ccc', 'dddd'].entries()) assert.deepEqual(together[i]!.json, (await gen('plain', p)).json)
  await until('the agent to log its stages', async () => (/runs staged@1 stage 2 for the master/.test(a.output()) && /runs llm-distributed@1 stage 2/.test(a.output()) ? true : undefined))
  // One pipeline replica here for each staged servable; the unsplit ones also got a replica on the agent.
  const stats = await (await fetch(`${srv.rest}/stats`)).json() as any
  assert.equal(stats.servables.find((x: any) => x.name === 'staged').replicas.length, 1)
  assert.equal(stats.servables.find((x: any) => x.name === 'whole').replicas.length, 2)
  const model = stats.servables.find((x: any) => x.name === 'staged').models[0]
  assert.ok(model.stageMs?.length === 2 && model.stageMs[1] > 0, JSON.stringify(model))

  // A stream in flight when the agent dies fails with the reason; the staged servables are not ready.
  const long = postJson(`${srv.rest}/model/llm-distributed:generate`, { instances: [{ prompt: 'x', max_new_tokens: 400, do_sample: false, stop: [] }] })
  await new Promise((r) => setTimeout(r, 150))
  await killByPid(a.proc)
  const failed = await long
  assert.notEqual(failed.status, 200, failed.text)
  assert.match(failed.text, /stage 2 on agent st ended/)
  await until('the staged servables to be not ready', async () => (!(await ready('staged')) && !(await ready('llm-distributed')) ? true : undefined))
  const down = await predict('staged')
  assert.equal(down.status, 503, JSON.stringify(down.json))
  assert.ok(logEvents(srv.output()).some((e) => e.event === 'stage_lost' && e.agent === 'st'), srv.output())
  assert.equal((await predict('whole')).status, 200, 'the local replica of the unsplit model still serves')

  startAgent('st')
  await until('the staged servables to be ready again', async () => ((await ready('staged')) && (await ready('llm-distributed')) ? true : undefined))
  const again = await predict('staged')
  assert.equal(again.status, 200, JSON.stringify(again.json))
  for (let i = 0; i < X.length; i++) assertClose(again.json.instances[i].y, w.json.instances[i].y, 1e-4)
  assert.deepEqual((await gen('llm-distributed', 'Hello')).json, (await gen('plain', 'Hello')).json)
})

test('over TLS with an API key: an agent with the CA and the key runs its stage; one without the CA cannot join, one without the key is refused', async (t) => {
  const certs = makeCertificates(tempServables(t))
  const sdir = tempServables(t)
  oneModelServable(sdir, 'staged', `{ stages: ['stage1.onnx', 'stage2.onnx'] }`, { 'stage1.onnx': join(work, 'stage1.onnx'), 'stage2.onnx': join(work, 'stage2.onnx') })
  // The 2-stage LLM too, its stages (~0.4 MB) over the 100 kB this master sends inline: they go as fetched files.
  copyInto(join(servablesDir, 'llm-distributed'), join(sdir, 'llm-distributed'))
  process.env.MS_SERVE_AGENT_INLINE_STAGE_BYTES = '100000'
  t.after(() => { delete process.env.MS_SERVE_AGENT_INLINE_STAGE_BYTES })
  const m = await startServer(sdir, ['--no-watch', '--devices', '0,sec:0', '--agents-listen', '127.0.0.1:0', '--isolation', 'process', '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey, '--api-key', 'k3y'])
  const started: StartedAgent[] = []
  t.after(async () => { for (const a of started) await killByPid(a.proc); await m.stop() })
  const address = /agents link start success, listening on ([^\s"]+)/.exec(m.output())![1]!
  const dispatcher = new Dispatcher({ connect: { ca: readFileSync(certs.ca) } })
  const https = m.rest.replace('http://', 'https://')
  const isReady = async () => (await fetch(`${https}/v2/models/staged/ready`, { dispatcher } as RequestInit)).status === 200
  const noCa = spawnAgent(address, 'sec', cacheDir, ['--api-key', 'k3y'])
  started.push(noCa)
  await waitFor('the agent without the CA to fail its handshake', async () => (/cannot join the master/.test(noCa.output()) ? true : undefined), () => noCa.output())
  assert.equal(await isReady(), false)
  await killByPid(noCa.proc)
  const noKey = spawnAgent(address, 'sec', cacheDir, ['--tls-ca', certs.ca])
  started.push(noKey)
  const [code] = await once(noKey.proc, 'exit')
  assert.equal(code, 2, noKey.output())
  assert.match(noKey.output(), /the master refused it/)
  const good = spawnAgent(address, 'sec', cacheDir, ['--tls-ca', certs.ca, '--api-key', 'k3y'])
  started.push(good)
  await waitFor('the pipeline over TLS to be ready', async () => ((await isReady()) ? true : undefined), () => `${m.output()}\n${good.output()}`, 60_000)
  const body = floatJson({ instances: X.map((row) => ({ x: row })) })
  const res = await fetch(`${https}/model/staged:predict`, { method: 'POST', body, headers: { authorization: 'Bearer k3y' }, dispatcher } as RequestInit)
  assert.equal(res.status, 200)
  const want = await predict('whole')
  const got = await res.json() as any
  for (let i = 0; i < X.length; i++) assertClose(got.instances[i].y, want.json.instances[i].y, 1e-4)
  assert.match(good.output(), /runs staged@1 stage 2 for the master/)
  await waitFor('the LLM pipeline over TLS to be ready', async () => ((await fetch(`${https}/v2/models/llm-distributed/ready`, { dispatcher } as RequestInit)).status === 200 ? true : undefined), () => `${m.output()}\n${good.output()}`, 60_000)
  const g = await fetch(`${https}/model/llm-distributed:generate`, { method: 'POST', headers: { authorization: 'Bearer k3y' }, body: JSON.stringify({ instances: [{ prompt: 'Hello', max_new_tokens: 12, do_sample: false }] }), dispatcher } as RequestInit)
  assert.deepEqual(await g.json(), (await gen('plain', 'Hello')).json)
  assert.ok(logEvents(good.output()).some((e) => e.event === 'agent_file_fetched' && /\/ms-serve-stages\/[0-9a-f]{64}\.onnx$/.test(e.path)), good.output())
})
