// `ms-serve init llm-distributed`: an LLM whose decoder runs in 2 pipeline stages, served by the
// real CLI over devices 0,1 (one pipeline replica, its stages in worker threads), answering greedy requests exactly like the
// same decoder served unsplit.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { plainLlmBeside } from '../helpers/fixtures.ts'
import { logEvents, postJson, runCli, startServer, tempServables, type StartedServer } from '../helpers/server.ts'

let srv: StartedServer
const cleanups: Array<() => void> = []

before(async () => {
  const dir = tempServables({ after: (fn) => cleanups.push(fn) })
  const r = await runCli(['init', 'llm-distributed', '--dir', dir])
  assert.equal(r.code, 0, r.stderr)
  // The same decoder, unsplit, under the plain llm template's config.
  plainLlmBeside(dir)
  // The same decoder as stage files (ms-serve split), declared as declareLlm({ stages: [files] }); and those files out of order.
  for (const [name, order] of [['presplit', "'stage1.onnx', 'stage2.onnx'"], ['presplit-swapped', "'stage2.onnx', 'stage1.onnx'"]] as const) {
    mkdirSync(join(dir, name, '1'), { recursive: true })
    const sp = await runCli(['split', join(dir, 'plain', '1', 'model.onnx'), '--stages', '2', '--out', join(dir, name, '1')])
    assert.equal(sp.code, 0, sp.stderr)
    copyFileSync(join(dir, 'plain', 'tokenizer_config.json'), join(dir, name, 'tokenizer_config.json'))
    writeFileSync(join(dir, name, 'servable_config.ts'), `import { defineServable } from 'ms-serve'\nexport default defineServable((s) => {\n  s.declareLlm({ stages: [${order}], maxTotalTokens: 512 })\n})\n`)
  }
  srv = await startServer(dir, ['--no-watch', '--devices', '0,1', '--isolation', 'process'])
})

after(async () => {
  await srv?.stop()
  for (const c of cleanups) c()
})

test('greedy text of the 2-stage decoder equals the unsplit one, alone and concurrently', async () => {
  const prompts = ['Hello', 'The quick brown fox', 'Pipelines!']
  const gen = (servable: string, prompt: string) => postJson(`${srv.rest}/model/${servable}:generate`, { instances: [{ prompt, max_new_tokens: 16, do_sample: false }] })
  for (const p of prompts) {
    const a = await gen('plain', p)
    const b = await gen('llm-distributed', p)
    assert.equal(b.status, 200, b.text)
    assert.deepEqual(b.json, a.json)
  }
  const together = await Promise.all(prompts.map((p) => gen('llm-distributed', p)))
  for (const [i, p] of prompts.entries()) assert.deepEqual(together[i]!.json, (await gen('plain', p)).json)
  const stats = await (await fetch(`${srv.rest}/stats`)).json() as any
  const staged = stats.servables.find((s: any) => s.name === 'llm-distributed')
  const plain = stats.servables.find((s: any) => s.name === 'plain')
  assert.equal(staged.replicas.length, 1, 'one pipeline over the 2 devices')
  // Its stages in worker threads shared by 2 lanes (micro-batches), each stage busy for the requests above.
  const engine = stats.llms.find((l: any) => l.name === 'llm-distributed').replicas[0].engine
  assert.equal(engine.lanes, 2, JSON.stringify(engine))
  assert.ok(engine.stage1BusyMs > 0 && engine.stage2BusyMs > 0, JSON.stringify(engine))
  assert.equal(plain.replicas.length, 2, 'the unsplit LLM: one replica per device')
})

test('a decoder given as stage files (declareLlm stages: [files]) answers as the whole decoder; stage files out of order fail to load naming them', async () => {
  for (const p of ['Hello', 'Stage files']) {
    const a = await postJson(`${srv.rest}/model/plain:generate`, { instances: [{ prompt: p, max_new_tokens: 16, do_sample: false }] })
    const b = await postJson(`${srv.rest}/model/presplit:generate`, { instances: [{ prompt: p, max_new_tokens: 16, do_sample: false }] })
    assert.equal(b.status, 200, b.text)
    assert.deepEqual(b.json, a.json)
  }
  const engine = ((await (await fetch(`${srv.rest}/stats`)).json()) as any).llms.find((l: any) => l.name === 'presplit').replicas[0].engine
  assert.equal(engine.lanes, 2, 'served in 2 stages with 2 lanes')
  const failed = logEvents(srv.output()).find((e) => e.event === 'servable_failed' && e.servable === 'presplit-swapped')
  assert.ok(failed, srv.output())
  assert.match(failed.error, /declareLlm\(\{ stages: \['stage2\.onnx', 'stage1\.onnx'\] \}\): stage files do not chain: stage2\.onnx feeds no later stage/)
})
