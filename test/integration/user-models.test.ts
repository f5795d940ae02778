// Models as users have them, through the real CLI: a plain servable and an LLM whose weights are in
// an external data file (model.onnx + model.onnx_data, in a folder outside the server's working
// directory), and quantized decoders (MatMulNBits int4/int8, QDQ, dynamic int8). Each answers as its
// inline / fp32 twin does where that is expected.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { postJson, ROOT, startServer, type StartedServer } from '../helpers/server.ts'
import { floatJson, writeServable } from '../helpers/fixtures.ts'
import { buildMlp, BUILTIN_MODELS } from '../../src/models/index.ts'
import { writeExternalDataModel } from '../../src/models/external-data.ts'
import { quantizeModel } from '../../src/models/quantize.ts'

const MLP_CONFIG = `import { defineServable } from 'ms-serve'
export default defineServable((s) => {
  const mlp = s.declareModel({ file: 'mlp.onnx', withBatchDim: true, maxBatchSize: 8, maxWaitMs: 0 })
  s.registerMethod('predict', { inputs: ['x'], outputs: ['y'] }, ({ x }) => ({ y: s.addStage(mlp, [x]) }))
})
`
const LLM_CONFIG = join(ROOT, 'templates', 'llm', 'servable_config.ts')
const PROMPT = 'Hello world, this is a test prompt.'

let dir = ''
let srv: StartedServer

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ms-serve-user-models-'))
  assert.ok(relative(ROOT, dir).startsWith('..'), 'models live outside the server working directory')
  const configFile = join(dir, 'mlp_config.ts')
  writeFileSync(configFile, MLP_CONFIG)
  const mlp = buildMlp()
  writeServable(dir, 'mlp', configFile, { 1: { 'mlp.onnx': mlp } })
  writeServable(dir, 'mlp_ext', configFile, { 1: {} })
  await writeExternalDataModel(join(dir, 'mlp_ext', '1', 'mlp.onnx'), mlp)
  const decoder = BUILTIN_MODELS.decoder_tiny!()
  writeServable(dir, 'llm', LLM_CONFIG, { 1: { 'model.onnx': decoder } })
  writeServable(dir, 'llm_ext', LLM_CONFIG, { 1: {} })
  await writeExternalDataModel(join(dir, 'llm_ext', '1', 'model.onnx'), decoder)
  writeServable(dir, 'llm_int4', LLM_CONFIG, { 1: { 'model.onnx': quantizeModel(decoder, { format: 'nbits', bits: 4 }).bytes } })
  writeServable(dir, 'llm_int8', LLM_CONFIG, { 1: { 'model.onnx': quantizeModel(decoder, { format: 'nbits', bits: 8 }).bytes } })
  writeServable(dir, 'llm_qdq', LLM_CONFIG, { 1: { 'model.onnx': quantizeModel(decoder, { format: 'qdq' }).bytes } })
  writeServable(dir, 'llm_dynamic', LLM_CONFIG, { 1: { 'model.onnx': quantizeModel(decoder, { format: 'dynamic' }).bytes } })
  rmSync(configFile)
  srv = await startServer(dir, ['--devices', '0', '--no-watch', '--strict'])
})

after(async () => {
  await srv?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

test('a plain servable with external data loads and answers as its inline twin', async () => {
  const x = Array.from({ length: 784 }, (_, i) => Math.sin(i) * 0.5)
  const body = floatJson({ instances: [{ x }, { x: x.map((v) => -v) }] }) // 0 as 0.0: one element type
  const [a, b] = await Promise.all([postJson(`${srv.rest}/model/mlp:predict`, body), postJson(`${srv.rest}/model/mlp_ext:predict`, body)])
  assert.equal(a.status, 200, a.text)
  assert.equal(b.status, 200, b.text)
  assert.equal(a.json.instances[0].y.length, 10)
  assert.deepEqual(b.json, a.json)
})

test('an LLM with external data and quantized LLMs (int4, int8, QDQ, dynamic) serve; external == inline, int8 == fp32 on the test prompt', async () => {
  const gen = async (name: string): Promise<any> => {
    const r = await postJson(`${srv.rest}/model/${name}:generate`, { instances: { prompt: PROMPT, max_new_tokens: 12, ignore_eos: true } })
    assert.equal(r.status, 200, `${name}: ${r.text}`)
    return r.json.instances[0]
  }
  const [fp, ext, q4, q8, qdq, dyn] = await Promise.all(['llm', 'llm_ext', 'llm_int4', 'llm_int8', 'llm_qdq', 'llm_dynamic'].map(gen))
  for (const r of [fp, ext, q4, q8, qdq, dyn]) assert.equal(r.generated_tokens, 12)
  assert.equal(ext.text, fp.text)
  // test/unit/llm-quantized.test.ts: the int8 decoder keeps fp32's 16 greedy tokens on this prompt.
  assert.equal(q8.text, fp.text)
  const stats = await (await fetch(`${srv.rest}/stats`)).json() as any
  assert.deepEqual(stats.unavailable ?? [], [])
})
