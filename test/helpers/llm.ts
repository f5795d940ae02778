/** Reference decoding for LLM tests: greedy by full recomputation, no KV cache at all. */
import ort from 'onnxruntime-node'
import type { DecoderConfig } from '../../src/models/decoder.ts'
import type { LlmEngine } from '../../src/llm/engine.ts'
import type { GenerateParameters, TokenEvent } from '../../src/llm/types.ts'

/**
 * Feeds position_ids only if the model has them, empty past tensors in the model's KV dtype, and
 * use_cache_branch [false] to merged (If) decoders, i.e. runs their no-past branch.
 */
export async function greedyNoCache(session: ort.InferenceSession, c: DecoderConfig, prompt: number[], n: number): Promise<number[]> {
  const hd = c.hiddenSize / c.numHeads
  const fp16 = c.kvDtype === 'float16'
  const seq = [...prompt]
  for (let i = 0; i < n; i++) {
    const L = seq.length
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(seq.map(BigInt)), [1, L]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(L).fill(1n), [1, L]),
    }
    if (session.inputNames.includes('position_ids')) feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from(seq.map((_, j) => BigInt(j))), [1, L])
    if (session.inputNames.includes('use_cache_branch')) feeds.use_cache_branch = new ort.Tensor('bool', Uint8Array.of(0), [1])
    for (let l = 0; l < c.numLayers; l++) for (const k of ['key', 'value']) {
      feeds[`past_key_values.${l}.${k}`] = fp16 ? new ort.Tensor('float16', new Uint16Array(0), [1, c.numKvHeads, 0, hd]) : new ort.Tensor('float32', new Float32Array(0), [1, c.numKvHeads, 0, hd])
    }
    const lg = (await session.run(feeds, ['logits'])).logits!.data as Float32Array
    const off = (L - 1) * c.vocabSize
    let best = 0
    for (let v = 1; v < c.vocabSize; v++) if (lg[off + v]! > lg[off + best]!) best = v
    seq.push(best)
  }
  return seq.slice(prompt.length)
}

/** greedyNoCache on a session of its own for the model at `model` (a path or the bytes), released after. */
export async function greedyNoCacheOf(model: string | Uint8Array, c: DecoderConfig, prompt: number[], n: number): Promise<number[]> {
  const s = typeof model === 'string' ? await ort.InferenceSession.create(model) : await ort.InferenceSession.create(model)
  try {
    return await greedyNoCache(s, c, prompt, n)
  } finally {
    await s.release()
  }
}

/** Runs one request through the engine (ignoreEos unless `parameters` says otherwise); resolves with its token ids. */
export function generateIds(engine: LlmEngine, inputs: string, parameters: GenerateParameters, onToken?: (ev: TokenEvent) => void): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const ids: number[] = []
    engine.submit(engine.validate({ inputs, parameters: { ignoreEos: true, ...parameters } }), (ev) => {
      if (ev.type === 'token') { ids.push(ev.id); onToken?.(ev) } else if (ev.type === 'done') resolve(ids)
      else reject(new Error(ev.message))
    })
  })
}

/**
 * The join-mid-batch scenario of the engine tests: every prompt alone first (max new tokens
 * 24, 30, 36, 42), then A and B start together (different prompt lengths), C joins after A's 5th
 * token, D after its 12th, and B finishes first, so rows are compacted while the others go on.
 * `gen(prompt, maxNewTokens, onIndex)` runs one request and resolves with its token ids.
 */
export async function joinMidBatch(
  gen: (prompt: string, maxNewTokens: number, onIndex?: (index: number) => void) => Promise<number[]>,
  prompts: readonly string[],
): Promise<{ together: number[][]; alone: number[][] }> {
  const alone: number[][] = []
  for (const [i, p] of prompts.slice(0, 4).entries()) alone.push(await gen(p, 24 + 6 * i))
  const late: Array<Promise<number[]>> = []
  const a = gen(prompts[0]!, 24, (index) => {
    if (index === 5) late.push(gen(prompts[2]!, 36))
    if (index === 12) late.push(gen(prompts[3]!, 42))
  })
  const b = gen(prompts[1]!, 30)
  const [ra, rb] = await Promise.all([a, b])
  while (late.length < 2) await new Promise((r) => setImmediate(r))
  const [rc, rd] = await Promise.all(late)
  return { together: [ra, rb, rc!, rd!], alone }
}
