import ort from 'onnxruntime-node'
import { readFileSync, readdirSync } from 'node:fs'
import { rewriteForNewPositions } from '/work/main/src/llm/graph-rewrite.ts'
const bytes = rewriteForNewPositions(new Uint8Array(readFileSync(process.env.M ?? '/work/main/bench/.models/decoder-small.onnx'))).bytes
const spin = process.argv[2] ?? '1'
const extra: Record<string, string> = { 'session.intra_op.allow_spinning': spin }
const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all', intraOpNumThreads: Number(process.env.T ?? 2), enableProfiling: process.argv[3] === 'prof', profileFilePrefix: '/tmp/prof/p', extra: extra as never })
const L = 8, KV = 4, hd = 64, C = Number(process.env.C ?? 192), B = Number(process.env.B ?? 1)
const past = new Float32Array(B * KV * C * hd)
const feeds: Record<string, ort.Tensor> = {
  input_ids: new ort.Tensor('int64', new BigInt64Array(B).fill(5n), [B, 1]),
  attention_mask: new ort.Tensor('int64', new BigInt64Array(B * (C + 1)).fill(1n), [B, C + 1]),
  position_ids: new ort.Tensor('int64', new BigInt64Array(B).fill(BigInt(C)), [B, 1]),
}
for (let l = 0; l < L; l++) { feeds[`past_key_values.${l}.key`] = new ort.Tensor('float32', past, [B, KV, C, hd]); feeds[`past_key_values.${l}.value`] = new ort.Tensor('float32', past, [B, KV, C, hd]) }
for (let i = 0; i < 20; i++) await s.run(feeds)
const t0 = performance.now(); const n = Number(process.env.N ?? 200)
for (let i = 0; i < n; i++) await s.run(feeds)
console.log('step ms', ((performance.now() - t0) / n).toFixed(3))
if (process.argv[3] === 'prof') {
  s.endProfiling(); const f = '/tmp/prof/' + readdirSync('/tmp/prof').filter((x) => x.startsWith('p') && x.endsWith('.json')).sort().at(-1)
  const ev = JSON.parse(readFileSync(f, 'utf8')) as Array<{ cat: string; name: string; dur: number; args?: { op_name?: string } }>
  const by = new Map<string, number>(); let tot = 0
  for (const e of ev) if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) { const op = e.args?.op_name ?? '?'; by.set(op, (by.get(op) ?? 0) + e.dur); tot += e.dur }
  const runs = ev.filter((e) => e.name === 'model_run')
  const runTot = runs.reduce((a, e) => a + e.dur, 0)
  console.log('model_run mean us', (runTot / runs.length).toFixed(0), 'kernel sum per run us', (tot / runs.length).toFixed(0), 'nodes per run', (ev.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time')).length / runs.length).toFixed(0))
  for (const [op, d] of [...by].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(op.padEnd(28), (d / runs.length).toFixed(0), 'us')
}
