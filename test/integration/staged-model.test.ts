// A model split into pipeline stages (`ms-serve split`) served as one servable: the same outputs as
// the unsplit model through the real server, stages on the devices of one pipeline, per-stage busy
// time in /stats, the split CLI itself, and stage files that do not chain refused at load.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync, copyFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { buildDeepMlp, writeExternalDataModel } from '../../src/models/index.ts'
import { assertClose, floatJson, oneModelServable } from '../helpers/fixtures.ts'
import { logEvents, runCli, startServer, tempServables, type StartedServer } from '../helpers/server.ts'

let srv: StartedServer
let dir = ''
/** Where the whole model and the split's outputs go (outside the servable directory). */
let work = ''
const cleanups: Array<() => void> = []

const servable = (name: string, decl: string, files: Record<string, Uint8Array | string>) => oneModelServable(dir, name, decl, files)

before(async () => {
  dir = tempServables({ after: (fn) => cleanups.push(fn) })
  const whole = buildDeepMlp({ layers: 6, width: 64, inputDim: 32, outputDim: 8 })
  work = tempServables({ after: (fn) => cleanups.push(fn) })
  writeFileSync(join(work, 'model.onnx'), whole)
  // The CLI writes stage1.onnx, stage2.onnx and checks them against the whole model.
  const r = await runCli(['split', join(work, 'model.onnx'), '--stages', '2', '--out', work])
  assert.equal(r.code, 0, r.stderr)
  assert.match(r.stdout, /boundary 1 \(nodes\): 1 tensor\(s\) cross: relu2/)
  assert.match(r.stdout, /check passed: stages equal the whole model within 0.0001/)
  servable('whole', `{ file: 'model.onnx' }`, { 'model.onnx': whole })
  servable('staged', `{ stages: ['stage1.onnx', 'stage2.onnx'] }`, { 'stage1.onnx': join(work, 'stage1.onnx'), 'stage2.onnx': join(work, 'stage2.onnx') })
  // The same model with its weights in model.onnx_data: each stage gets its own data file.
  const extSrc = tempServables({ after: (fn) => cleanups.push(fn) })
  const extOut = join(extSrc, 'out')
  await writeExternalDataModel(join(extSrc, 'model.onnx'), whole)
  const rx = await runCli(['split', join(extSrc, 'model.onnx'), '--stages', '2', '--out', extOut])
  assert.equal(rx.code, 0, rx.stderr)
  assert.match(rx.stdout, /stage 1: .*stage1\.onnx .*weights in .*stage1\.onnx_data/)
  assert.match(rx.stdout, /check passed/)
  servable('staged-ext', `{ stages: ['stage1.onnx', 'stage2.onnx'] }`, Object.fromEntries(['stage1.onnx', 'stage1.onnx_data', 'stage2.onnx', 'stage2.onnx_data'].map((f) => [f, join(extOut, f)])))
  // The same files in the wrong order do not chain.
  servable('swapped', `{ stages: ['stage2.onnx', 'stage1.onnx'] }`, { 'stage1.onnx': join(work, 'stage1.onnx'), 'stage2.onnx': join(work, 'stage2.onnx') })
  srv = await startServer(dir, ['--no-watch', '--devices', '0,1'])
})

after(async () => {
  await srv?.stop()
  for (const c of cleanups) c()
})

const predict = async (name: string, x: number[][]) => {
  const res = await fetch(`${srv.rest}/model/${name}:predict`, { method: 'POST', body: floatJson({ instances: x.map((row) => ({ x: row })) }) })
  return { status: res.status, json: await res.json() as any }
}

test('a staged servable answers like the whole model, one pipeline over devices 0 and 1', async () => {
  const xs = Array.from({ length: 5 }, (_, i) => Array.from({ length: 32 }, (_, j) => Math.sin(i * 7 + j)))
  const a = await predict('whole', xs)
  const b = await predict('staged', xs)
  assert.equal(b.status, 200, JSON.stringify(b.json))
  assertClose(b.json.instances.map((i: any) => i.y), a.json.instances.map((i: any) => i.y), 1e-5)
  // Split from an external-data model: the stage files load their own data files.
  const e = await predict('staged-ext', xs)
  assert.equal(e.status, 200, JSON.stringify(e.json))
  assertClose(e.json.instances.map((i: any) => i.y), a.json.instances.map((i: any) => i.y), 1e-5)
  // Concurrent requests share the pipeline (batches overlap across the two stages).
  const many = await Promise.all(xs.map((x) => predict('staged', [x])))
  many.forEach((m, i) => assertClose(m.json.instances[0].y, a.json.instances[i].y, 1e-5))
  const stats = await (await fetch(`${srv.rest}/stats`)).json() as any
  const st = stats.servables.find((s: any) => s.name === 'staged')
  assert.equal(st.replicas.length, 1, 'one pipeline for 2 devices and 2 stages')
  assert.equal(st.replicas[0].device, 'cpu:0')
  assert.equal(st.models[0].stageMs.length, 2)
  assert.ok(st.models[0].stageMs.every((x: number) => x > 0), JSON.stringify(st.models[0]))
  const whole = stats.servables.find((s: any) => s.name === 'whole')
  assert.equal(whole.replicas.length, 2, 'an unsplit servable keeps one replica per device')
  // Its metadata is the chain's: the model's input and output.
  const desc = await (await fetch(`${srv.rest}/servables/staged`)).json() as any
  assert.deepEqual(desc.versions[0].methods[0].inputs, [{ name: 'x', dtype: 'float32', shape: [32] }])
  assert.deepEqual(desc.versions[0].methods[0].outputs, [{ name: 'y', dtype: 'float32', shape: [8] }])
})

test('stage files that do not chain are refused at load, naming the files', () => {
  const failed = logEvents(srv.output()).find((e) => e.event === 'servable_failed' && e.servable === 'swapped')
  assert.ok(failed, srv.output())
  assert.match(failed.error, /stage files do not chain: stage1\.onnx takes x as float32\[\?,32\]|stage files do not chain: no later stage reads an output of stage2\.onnx/)
})

test('split: a bad split point is refused naming the tensor (exit 2)', async () => {
  assert.ok(existsSync(join(work, 'model.onnx')))
  const r = await runCli(['split', join(work, 'model.onnx'), '--at', 'nosuch', '--out', work])
  assert.equal(r.code, 2, r.stdout + r.stderr)
  assert.match(r.stderr, /split point nosuch is not a tensor of the model/)
  const list = await runCli(['split', join(work, 'model.onnx'), '--list'])
  assert.equal(list.code, 0)
  assert.match(list.stdout, /Relu\trelu0\n/)
  const at = await runCli(['split', join(work, 'model.onnx'), '--at', 'relu0', '--at', 'relu3', '--out', join(work, 'three')])
  assert.equal(at.code, 0, at.stderr)
  assert.ok(existsSync(join(work, 'three', 'stage3.onnx')))
  assert.match(at.stdout, /boundary 2 \(tensors\): 1 tensor\(s\) cross: relu3/)
})
