import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { LlmEngine } from '../src/llm/engine.ts'
const modelPath = join(tmpdir(), 'ms-serve-decoder-small-4321.onnx')
for (const block of [64, 16]) {
  const engine = await LlmEngine.load(modelPath, { maxBatchSize: 16, maxTotalTokens: 200, maxBatchPrefillTokens: 4096, intraOpNumThreads: 2, kvBlock: block })
  const runner = (engine as any).runner
  const sess = runner.session
  let runMs = 0
  const orig = sess.run.bind(sess)
  sess.run = async (...a: any[]) => { const t = performance.now(); const r = await orig(...a); runMs += performance.now() - t; return r }
  for (let rep = 0; rep < 3; rep++) {
    const s0 = engine.stats(); runMs = 0
    let stepTotal = 0
    await Promise.all(Array.from({ length: 16 }, (_, b) => new Promise<void>((res) => engine.submit({ inputIds: Array.from({ length: 128 }, (_, i) => 40 + ((i + b) % 50)), parameters: { maxNewTokens: 64, ignoreEos: true } }, (ev) => { if (ev.type === 'done') res() }))))
    const s1 = engine.stats()
    console.log(`block ${block}: decode ${(s1.decodeMs - s0.decodeMs) / (s1.numDecodes - s0.numDecodes)} ms/step, session.run total incl prefill ${runMs.toFixed(1)} vs decode+prefill ${(s1.decodeMs - s0.decodeMs + s1.prefillMs - s0.prefillMs).toFixed(1)}, relayouts ${s1.kvRelayouts}`)
  }
  await engine.close()
}
