/**
 * External-data models (`model.onnx` + `model.onnx_data`, as optimum writes exports over 2 GB and
 * torch's dynamo exporter always does), built by src/models/external-data.ts: the split itself,
 * onnxruntime loading it from a path and from bytes, the KV rewrite keeping the references, and
 * the engine serving it from a folder other than the working directory (the issue 9 failure).
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import ort from 'onnxruntime-node'
import { buildDecoder, DECODER_CONFIGS, type DecoderConfig } from '../../src/models/decoder.ts'
import { externalizeModel, usesExternalData, writeExternalDataModel } from '../../src/models/external-data.ts'
import { OnnxGraphBuilder, mulberry32 } from '../../src/models/onnx-builder.ts'
import { LlmEngine } from '../../src/llm/engine.ts'
import { externalDataFolderEntry, rewriteForNewPositions } from '../../src/llm/graph-rewrite.ts'
import { describeModel } from '../../src/llm/model-spec.ts'
import { onnx, type O } from '../../src/llm/proto-util.ts'
import { generateIds as generate } from '../helpers/llm.ts'

const cfg = DECODER_CONFIGS.tiny
const PROMPTS = ['Hello external data', 'The quick brown fox', 'ab']
let dir: string
let inlinePath: string
let extPath: string

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'llm-ext-'))
  inlinePath = join(dir, 'inline', 'model.onnx')
  extPath = join(dir, 'ext', 'model.onnx')
  mkdirSync(join(dir, 'inline'))
  mkdirSync(join(dir, 'ext'))
  await writeFile(inlinePath, buildDecoder(cfg))
  await writeExternalDataModel(extPath, buildDecoder(cfg))
})
after(() => rmSync(dir, { recursive: true, force: true }))

test('externalizeModel moves every large initializer to one aligned data file and keeps the rest', () => {
  const bytes = buildDecoder(cfg)
  const split = externalizeModel(bytes, { location: 'model.onnx_data' })
  const inits = (b: Uint8Array) => (onnx.ModelProto.decode(b).graph as O.GraphProto).initializer as O.TensorProto[] // decoded: fields present
  const orig = inits(bytes)
  const moved = inits(split.model)
  assert.equal(moved.length, orig.length)
  assert.ok(split.model.byteLength < bytes.byteLength / 10, `graph without weights: ${split.model.byteLength} of ${bytes.byteLength} bytes`)
  let count = 0
  for (const [i, t] of moved.entries()) {
    const raw = orig[i]!.rawData
    if (raw.byteLength < 1024) { assert.equal(t.dataLocation, onnx.TensorProto.DataLocation.DEFAULT, String(t.name)); continue }
    count++
    assert.equal(t.dataLocation, onnx.TensorProto.DataLocation.EXTERNAL, String(t.name))
    assert.equal(t.rawData.byteLength, 0)
    const kv = Object.fromEntries(t.externalData.map((e) => [e.key, e.value]))
    assert.equal(kv.location, 'model.onnx_data')
    assert.equal(Number(kv.offset) % 4096, 0, 'page-aligned, so onnxruntime can map it')
    assert.equal(Number(kv.length), raw.byteLength)
    const chunk = split.chunks.find((c) => c.offset === Number(kv.offset))!
    assert.deepEqual(chunk.bytes, raw)
  }
  assert.ok(count >= cfg.numLayers * 7, `moved ${count} weights`)
  assert.ok(usesExternalData(onnx.ModelProto.decode(split.model)))
  assert.ok(!usesExternalData(onnx.ModelProto.decode(bytes)))
  // The data file on disk holds each tensor at its offset.
  const data = readFileSync(`${extPath}_data`)
  assert.equal(data.byteLength, split.dataLength)
  for (const c of split.chunks) assert.deepEqual(data.subarray(c.offset, c.offset + c.bytes.byteLength), Buffer.from(c.bytes))
})

test('OnnxGraphBuilder writes external-data models that onnxruntime runs like the inline one', async () => {
  const r = mulberry32(3)
  const g = new OnnxGraphBuilder('ext_mm')
  g.input('x', 'float32', ['batch', 64])
  g.initializer('w', Float32Array.from({ length: 64 * 32 }, () => r() - 0.5), [64, 32])
  g.initializer('b', Float32Array.from({ length: 32 }, () => r() - 0.5), [32]) // 128 bytes: stays inline
  g.op('Add', [g.op('MatMul', ['x', 'w']), 'b'], {}, 'y')
  g.output('y', 'float32', ['batch', 32])
  const { model, data } = g.encodeWithExternalData('weights/mm.bin')
  mkdirSync(join(dir, 'builder', 'weights'), { recursive: true })
  await writeFile(join(dir, 'builder', 'mm.onnx'), model)
  await writeFile(join(dir, 'builder', 'weights', 'mm.bin'), data)
  const x = new ort.Tensor('float32', Float32Array.from({ length: 2 * 64 }, (_, i) => Math.sin(i)), [2, 64])
  const [a, b] = await Promise.all([ort.InferenceSession.create(g.encode()), ort.InferenceSession.create(join(dir, 'builder', 'mm.onnx'))])
  try {
    assert.deepEqual((await b.run({ x })).y!.data, (await a.run({ x })).y!.data)
  } finally {
    await Promise.all([a.release(), b.release()])
  }
})

test('from bytes, onnxruntime resolves external data against the working directory unless told the folder', async () => {
  assert.ok(relative(process.cwd(), dir).startsWith('..'), 'the model lives outside the working directory')
  const bytes = readFileSync(extPath)
  await assert.rejects(ort.InferenceSession.create(bytes), /escapes working directory|External data path/)
  const s = await ort.InferenceSession.create(bytes, { extra: externalDataFolderEntry(extPath) } as never)
  await s.release()
  // A location that climbs out of the model's folder stays refused (onnxruntime validates it).
  const climbing = externalizeModel(buildDecoder(cfg), { location: '../model.onnx_data' })
  await assert.rejects(ort.InferenceSession.create(climbing.model, { extra: externalDataFolderEntry(extPath) } as never), /escapes|External data/)
})

test('the KV rewrite keeps external references as they are and inlines no weight', async () => {
  const original = readFileSync(extPath)
  const rw = rewriteForNewPositions(original)
  assert.equal(rw.rewritten, true, rw.reason)
  assert.ok(rw.bytes.byteLength < original.byteLength + 4096, `rewritten graph ${rw.bytes.byteLength} bytes (original ${original.byteLength})`)
  const ext = ((onnx.ModelProto.decode(rw.bytes).graph as O.GraphProto).initializer as O.TensorProto[]).filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL)
  assert.ok(ext.length > 0)
  for (const t of ext) assert.equal(t.externalData.find((e) => e.key === 'location')?.value, 'model.onnx_data')
  const s = await ort.InferenceSession.create(rw.bytes, { extra: externalDataFolderEntry(extPath) } as never)
  try {
    assert.equal(describeModel(s).presentMode, 'new')
  } finally {
    await s.release()
  }
})

test('engine serves an external-data decoder from its folder: same tokens as the inline model, both KV modes', async () => {
  const engines = await Promise.all([
    LlmEngine.load(inlinePath, { maxTotalTokens: 128, kvBlock: 16 }),
    LlmEngine.load(extPath, { maxTotalTokens: 128, kvBlock: 16 }),
    LlmEngine.load(extPath, { maxTotalTokens: 128, kvBlock: 16, kvMode: 'full', allowSpinning: false }),
  ])
  try {
    assert.equal(engines[1]!.stats().presentMode, 'new')
    const outs = await Promise.all(engines.map((e) => Promise.all(PROMPTS.map((p) => generate(e, p, { maxNewTokens: 24 })))))
    assert.deepEqual(outs[1], outs[0])
    assert.deepEqual(outs[2], outs[0])
  } finally {
    await Promise.all(engines.map((e) => e.close()))
  }
})

test('merged (If) decoder with external data: the branches read the external weights of the main graph', async () => {
  const c: DecoderConfig = { ...cfg, merged: true }
  const path = join(dir, 'merged', 'decoder_model_merged.onnx')
  mkdirSync(join(dir, 'merged'))
  const w = await writeExternalDataModel(path, buildDecoder(c))
  assert.equal(statSync(w.dataPath).size, w.dataBytes)
  const [a, b] = await Promise.all([LlmEngine.load(path, { maxTotalTokens: 96, kvBlock: 16 }), LlmEngine.load(inlinePath, { maxTotalTokens: 96, kvBlock: 16 })])
  try {
    assert.equal(a.spec.hasUseCacheBranch, true)
    for (const p of PROMPTS.slice(0, 2)) assert.deepEqual(await generate(a, p, { maxNewTokens: 16 }), await generate(b, p, { maxNewTokens: 16 }))
  } finally {
    await Promise.all([a.close(), b.close()])
  }
})
