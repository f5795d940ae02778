/** `ms-serve split` (src/models/split.ts): stage files that chain and equal the whole model; bad split points. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildMlp, externalizeModel, usesExternalData, writeExternalDataModel } from '../../src/models/index.ts'
import { repackExternalData } from '../../src/models/external-data.ts'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'
import { onnx } from '../../src/models/onnx-builder.ts'
import { splitModel } from '../../src/models/split.ts'
import { mergeStages } from '../../src/models/merge.ts'
import { checkSplit, ortTyper } from '../../src/models/split-check.ts'

const DEC4 = { ...DECODER_CONFIGS.tiny, numLayers: 4 }

test('a 4-layer decoder in 2 and 3 stages: layers and their KV stay together, outputs equal the whole model', async () => {
  const bytes = buildDecoder(DEC4)
  for (const n of [2, 3]) {
    const r = await splitModel(bytes, { stages: n }, ortTyper)
    assert.equal(r.method, 'layers')
    assert.equal(r.stages.length, n)
    // Each layer's past input and present output are in the same stage, and only there.
    for (let l = 0; l < 4; l++) {
      const withPast = r.stages.filter((s) => s.inputs.includes(`past_key_values.${l}.key`))
      const withPresent = r.stages.filter((s) => s.outputs.includes(`present.${l}.key`))
      assert.equal(withPast.length, 1, `layer ${l} past in one stage`)
      assert.equal(withPresent[0], withPast[0], `layer ${l} present in the stage of its past`)
    }
    assert.ok(r.stages.at(-1)!.outputs.includes('logits'))
    // Between layers only the residual stream and the shared rotary tables and mask cross.
    for (const c of r.crossings) assert.ok(c.length <= 4, `crossing ${c}`)
    const rep = await checkSplit(bytes, r.stages)
    assert.ok(rep.maxAbsDiff <= 1e-5, `max diff ${rep.maxAbsDiff}`)
    assert.deepEqual(rep.outputs.map((o) => o.name).sort(), ['logits', ...[0, 1, 2, 3].flatMap((l) => [`present.${l}.key`, `present.${l}.value`])].sort())
  }
})

test('the MLP by node count, and at a named tensor', async () => {
  const bytes = buildMlp()
  const even = await splitModel(bytes, { stages: 2 }, ortTyper)
  assert.equal(even.method, 'nodes')
  assert.equal(even.crossings[0]!.length, 1)
  assert.equal((await checkSplit(bytes, even.stages)).maxAbsDiff, 0)
  const names = onnx.ModelProto.decode(bytes).graph!.node!.map((n) => n.output![0]!)
  const at = await splitModel(bytes, { at: [[names[0]!]] }, ortTyper)
  assert.equal(at.method, 'tensors')
  assert.deepEqual(at.stages[0]!.outputs, [names[0]])
  assert.deepEqual(at.stages[1]!.inputs, [names[0]])
  // A cut between a MatMul and its Add stops ORT fusing them: float rounding, not a different result.
  assert.ok((await checkSplit(bytes, at.stages)).maxAbsDiff <= 1e-5)
})

test('bad split points are refused naming the tensor', async () => {
  const bytes = buildMlp()
  const g = onnx.ModelProto.decode(bytes).graph!
  const input = g.input![0]!.name!
  const weight = g.initializer![0]!.name!
  const last = g.node!.at(-1)!.output![0]!
  await assert.rejects(splitModel(bytes, { at: [['nosuch']] }, ortTyper), /split point nosuch is not a tensor of the model/)
  await assert.rejects(splitModel(bytes, { at: [[input]] }, ortTyper), new RegExp(`split point ${input} is a graph input`))
  await assert.rejects(splitModel(bytes, { at: [[weight]] }, ortTyper), new RegExp(`split point ${weight} is an initializer`))
  await assert.rejects(splitModel(bytes, { at: [[last]] }, ortTyper), /stage 2 would be empty/)
  await assert.rejects(splitModel(bytes, { stages: 99 }, ortTyper), /fewer than the 99 stages/)
  await assert.rejects(splitModel(buildDecoder(DECODER_CONFIGS.tiny), { stages: 3 }, ortTyper), /the decoder has 2 layers, fewer than the 3 stages/)
})

test('merged decoders are refused with what to do; an external-data model needs its folder', async () => {
  await assert.rejects(splitModel(buildDecoder({ ...DECODER_CONFIGS.tiny, merged: true }), { stages: 2 }, ortTyper), /merged decoder .* split decoder_with_past_model.onnx/)
  const ext = externalizeModel(buildMlp(), { location: 'w.bin', sizeThreshold: 0 })
  await assert.rejects(splitModel(ext.model, { stages: 2 }, ortTyper), /external data file: say which folder it is in \(externalDataFolder\)/)
})

test('an external-data decoder splits without reading its weights; repacked stages carry their own data files and equal the whole model', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'split-ext-'))
  try {
    const whole = buildDecoder(DEC4)
    const modelPath = join(dir, 'model.onnx')
    await writeExternalDataModel(modelPath, whole)
    const small = readFileSync(modelPath)
    assert.ok(small.length < whole.length / 4, 'the weights are in model.onnx_data')
    const r = await splitModel(small, { stages: 2, externalDataFolder: dir }, ortTyper)
    assert.equal(r.method, 'layers')
    // The stage graphs still reference model.onnx_data (nothing inlined).
    for (const st of r.stages) assert.ok(st.bytes.length < whole.length / 4 && usesExternalData(onnx.ModelProto.decode(st.bytes)))
    assert.ok((await checkSplit(small, r.stages, {}, 7, { whole: dir })).maxAbsDiff <= 1e-5)
    // Repacked elsewhere: each stage file with its own data file, holding only its weights.
    const out = join(dir, 'out')
    mkdirSync(out)
    let total = 0
    const stages = []
    for (const [i, st] of r.stages.entries()) {
      const file = join(out, `stage${i + 1}.onnx`)
      const packed = await repackExternalData(st.bytes, dir, file)
      assert.equal(packed.dataPath, `${file}_data`)
      total += packed.dataBytes
      stages.push({ ...st, bytes: readFileSync(file) })
      const refs = onnx.ModelProto.decode(stages[i]!.bytes).graph!.initializer!.filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL)
      assert.ok(refs.length > 0 && refs.every((t) => t.externalData!.find((e) => e.key === 'location')!.value === `stage${i + 1}.onnx_data`))
    }
    // Shared tensors (rotary tables) go to every stage that reads them; together about the original.
    const original = statSync(join(dir, 'model.onnx_data')).size
    assert.ok(total >= original * 0.9 && total <= original * 1.5, `${total} vs ${original}`)
    rmSync(join(dir, 'model.onnx_data'))
    assert.ok((await checkSplit(whole, stages, {}, 7, { stages: out })).maxAbsDiff <= 1e-5, 'the stages load from their own data files')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('mergeStages joins split stages back into the whole model; stages out of order or not chaining are refused naming the file', async () => {
  const bytes = buildDecoder(DEC4)
  for (const n of [2, 3]) {
    const r = await splitModel(bytes, { stages: n }, ortTyper)
    const joined = mergeStages(r.stages.map((st, k) => ({ name: `stage${k + 1}.onnx`, bytes: st.bytes })))
    // The joined graph has the whole model's inputs and outputs and computes the same (split it again and check against the whole).
    const whole = onnx.ModelProto.decode(bytes).graph!
    const back = onnx.ModelProto.decode(joined).graph!
    assert.deepEqual(back.input!.map((i) => i.name).sort(), whole.input!.map((i) => i.name).sort())
    assert.deepEqual(back.output!.map((o) => o.name).sort(), whole.output!.map((o) => o.name).sort())
    const again = await splitModel(joined, { stages: 2 }, ortTyper)
    const rep = await checkSplit(bytes, again.stages)
    assert.ok(rep.maxAbsDiff <= 1e-5, `max diff ${rep.maxAbsDiff}`)
  }
  const two = await splitModel(bytes, { stages: 2 }, ortTyper)
  assert.throws(() => mergeStages([{ name: 'stage2.onnx', bytes: two.stages[1]!.bytes }, { name: 'stage1.onnx', bytes: two.stages[0]!.bytes }]), { code: 'CONFIG_INVALID', message: /stage files do not chain: stage2\.onnx feeds no later stage \(are they in order\? stage2\.onnx, stage1\.onnx\)/ })
  assert.throws(() => mergeStages([{ name: 'a.onnx', bytes: two.stages[0]!.bytes }, { name: 'b.onnx', bytes: two.stages[0]!.bytes }]), { code: 'CONFIG_INVALID', message: /made by both a\.onnx and b\.onnx/ })
  assert.throws(() => mergeStages([{ name: 'a.onnx', bytes: Uint8Array.of(1, 2, 3) }, { name: 'b.onnx', bytes: two.stages[1]!.bytes }]), { code: 'CONFIG_INVALID', message: /stage file a\.onnx is not an ONNX model/ })
})
