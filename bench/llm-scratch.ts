import ort from 'onnxruntime-node'
import { buildDecoder, DECODER_CONFIGS, countDecoderParams } from '../src/models/decoder.ts'
const c = DECODER_CONFIGS.tiny
const t0 = Date.now()
const bytes = buildDecoder(c)
console.log('build ms', Date.now()-t0, bytes.length, countDecoderParams(c))
const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all' })
console.log(s.inputNames, s.outputNames, JSON.stringify(s.inputMetadata.slice(0,4)))
const hd = c.hiddenSize / c.numHeads
const ids = [1, 75, 76, 77, 78, 79]
function feeds(ids: number[], mask: number[], pos: number[], past: Record<string, ort.Tensor> | null, B=1) {
  const f: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [B, ids.length/B]),
    attention_mask: new ort.Tensor('int64', BigInt64Array.from(mask.map(BigInt)), [B, mask.length/B]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(pos.map(BigInt)), [B, pos.length/B]),
  }
  for (let l = 0; l < c.numLayers; l++) for (const k of ['key','value']) f[`past_key_values.${l}.${k}`] = past ? past[`present.${l}.${k}`]! : new ort.Tensor('float32', new Float32Array(0), [B, c.numKvHeads, 0, hd])
  return f
}
const argmax = (a: Float32Array, off: number, n: number) => { let b=0; for (let i=1;i<n;i++) if (a[off+i]!>a[off+b]!) b=i; return b }
// full recompute greedy
let seq = [...ids]
for (let i = 0; i < 10; i++) {
  const o = await s.run(feeds(seq, seq.map(()=>1), seq.map((_,j)=>j), null))
  const lg = o.logits!.data as Float32Array
  seq.push(argmax(lg, (seq.length-1)*c.vocabSize, c.vocabSize))
}
console.log('full', seq.slice(ids.length))
let o = await s.run(feeds(ids, ids.map(()=>1), ids.map((_,j)=>j), null))
let out: number[] = []; let n = ids.length
let tok = argmax(o.logits!.data as Float32Array, (n-1)*c.vocabSize, c.vocabSize); out.push(tok)
for (let i = 1; i < 10; i++) {
  o = await s.run(feeds([tok], Array(n+1).fill(1), [n], o as any)); n++
  tok = argmax(o.logits!.data as Float32Array, 0, c.vocabSize); out.push(tok)
}
console.log('kv  ', out)
