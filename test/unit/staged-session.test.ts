/**
 * StagedSession over stage workers (each stage's ORT session in its own thread): outputs equal the
 * whole model, batches in flight together really overlap across stages (stage 2 of one batch runs
 * while stage 1 runs another) and stages on the calling thread agree; a stage that cannot load is
 * refused with ORT's message; activations moved between workers leave the model's outputs intact.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import ort from 'onnxruntime-node'
import { buildDeepMlp } from '../../src/models/mlp.ts'
import { splitModel } from '../../src/models/split.ts'
import { ortTyper } from '../../src/models/split-check.ts'
import { StagedSession, inThread } from '../../src/runtime/staged-session.ts'
import { StageWorker } from '../../src/runtime/stage-worker.ts'

const opts: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, extra: { 'session.intra_op.allow_spinning': '0' } as never }
// Big enough that one stage of a 32-row batch takes milliseconds, so two in flight can meet.
const whole = buildDeepMlp({ layers: 8, width: 512, inputDim: 256, outputDim: 16 })

function batch(seed: number): ort.Tensor {
  const data = Float32Array.from({ length: 32 * 256 }, (_, i) => Math.sin(seed * 13 + i * 0.01))
  return new ort.Tensor('float32', data, [32, 256])
}

/** Did stage 2 of some batch run while stage 1 ran another? */
function overlapped(runs: { stageMs: number[]; stageStart: number[] }[]): boolean {
  return runs.some((a) => runs.some((b) => a !== b && a.stageStart[1]! < b.stageStart[0]! + b.stageMs[0]! && b.stageStart[0]! < a.stageStart[1]! + a.stageMs[1]!))
}

test('stage workers: outputs equal the whole model and batches overlap across stages; stages on one thread agree', async () => {
  const split = await splitModel(whole, { stages: 2 }, ortTyper)
  const ref = await ort.InferenceSession.create(whole, opts)
  const workers = await Promise.all(split.stages.map((s) => StageWorker.start({ bytes: s.bytes }, opts)))
  const staged = new StagedSession(workers, ['stage1.onnx', 'stage2.onnx'])
  const local = new StagedSession(await Promise.all(split.stages.map(async (s) => inThread(await ort.InferenceSession.create(s.bytes, opts)))), ['stage1.onnx', 'stage2.onnx'])
  try {
    assert.deepEqual(staged.inputNames, ref.inputNames)
    assert.deepEqual(staged.outputNames, ref.outputNames)
    const name = ref.outputNames[0]!
    let sawOverlap = false
    // Several rounds: a round on a busy machine may happen to run its batches back to back.
    for (let round = 0; round < 5 && !sawOverlap; round++) {
      const inputs = Array.from({ length: 6 }, (_, i) => batch(round * 10 + i))
      const runs = await Promise.all(inputs.map((x) => staged.runTimed({ x })))
      for (const [i, r] of runs.entries()) {
        const want = (await ref.run({ x: inputs[i]! }))[name]!.data as Float32Array
        const got = r.out[name]!.data as Float32Array
        assert.equal(got.length, want.length)
        for (let j = 0; j < want.length; j++) assert.ok(Math.abs(got[j]! - want[j]!) <= 1e-5, `batch ${i} row value ${j}: ${got[j]} vs ${want[j]}`)
        assert.equal(r.stageMs.length, 2)
      }
      sawOverlap = overlapped(runs)
    }
    assert.ok(sawOverlap, 'stage 2 of one batch never ran while stage 1 ran another')
    // Stages on the calling thread give the same outputs (they take turns: run() holds the thread).
    const x = batch(99)
    const a = (await local.run({ x }))[name]!.data as Float32Array
    const b = (await staged.run({ x }))[name]!.data as Float32Array
    assert.deepEqual(b, a)
  } finally {
    await Promise.all([staged.release(), local.release(), ref.release()])
  }
})

test('a stage that cannot load is refused with onnxruntime\'s reason; a released pipeline refuses runs', async () => {
  await assert.rejects(StageWorker.start({ bytes: Uint8Array.of(1, 2, 3) }, opts), /protobuf|parse|load|model/i)
  await assert.rejects(StageWorker.start({ path: '/nonexistent/stage1.onnx' }, opts), /nonexistent|No such file|load/i)
  const split = await splitModel(whole, { stages: 2 }, ortTyper)
  const w = await StageWorker.start({ bytes: split.stages[0]!.bytes }, opts)
  await w.release()
  await assert.rejects(w.run({ x: batch(0) }), /stage worker exited/)
})
