/**
 * Structured output cost on the generated decoders: grammar compile time (first request of a
 * schema, engine-side, against the decoder's vocabulary) and wall-clock ms per generated token at
 * 1 and 16 concurrent streams, unconstrained vs constrained by a JSON schema (a free string
 * property, so constrained outputs run to max_new_tokens as the unconstrained ones do).
 *
 *   node --import tsx bench/structured.ts [--model tiny|small|smol] [--tokens 64] [--reps 3]
 *
 * `--model smol` is the real-vocabulary decoder (49,152 tokens, its synthetic byte-level BPE
 * tokenizer.json written next to it): the per-token mask cost at a real vocabulary size.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import { DECODER_CONFIGS, writeDecoder } from '../src/models/decoder.ts'
import { writeSyntheticTokenizer } from '../src/models/synthetic-tokenizer.ts'
import { LlmEngine } from '../src/llm/engine.ts'
import { GrammarCompilerCache, jsonSchemaSpec } from '../src/llm/grammar.ts'
import type { GenerateParameters } from '../src/llm/types.ts'

const { values: args } = parseArgs({ options: { model: { type: 'string', default: 'tiny' }, tokens: { type: 'string', default: '64' }, reps: { type: 'string', default: '3' } } })
const cfg = DECODER_CONFIGS[args.model as keyof typeof DECODER_CONFIGS]!
const M = Number(args.tokens), REPS = Number(args.reps)
const dir = mkdtempSync(join(tmpdir(), 'bench-structured-'))
const modelPath = join(dir, 'model.onnx')
process.stderr.write(`building decoder ${args.model}...\n`)
await writeDecoder(modelPath, cfg)
if (cfg.tokenizer === 'synthetic-bpe') await writeSyntheticTokenizer(dir, cfg.vocabSize)
const engine = await LlmEngine.load(modelPath, { maxTotalTokens: 512, maxBatchSize: 16 })

const typical = { type: 'object', properties: { name: { type: 'string' }, age: { type: 'integer' }, email: { type: 'string' }, tags: { type: 'array', items: { type: 'string' } }, address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' }, zip: { type: 'string' } }, required: ['city'] }, role: { enum: ['admin', 'user', 'guest'] }, active: { type: 'boolean' } }, required: ['name', 'age', 'role'] }
const tok = engine.tokenizer
const compileMs: number[] = []
for (let i = 0; i < 3; i++) {
  const c = new GrammarCompilerCache(tok, cfg.vocabSize)
  const t1 = performance.now()
  await c.compile(jsonSchemaSpec(typical, 's'))
  console.log(`cold compile (TokenizerInfo + compiler + first schema): ${(performance.now() - t1).toFixed(1)} ms`)
  const t0 = performance.now()
  await c.compile(jsonSchemaSpec({ ...typical, title: `v${i}` }, 's'))
  compileMs.push(performance.now() - t0)
}
console.log(`compile (typical 7-property schema, warm compiler, vocab ${cfg.vocabSize}): ${compileMs.map((x) => x.toFixed(1)).join(' / ')} ms`)

function run(parameters: GenerateParameters): Promise<number> {
  return new Promise((resolve, reject) => {
    engine.submit(engine.validate({ inputs: 'Write:', parameters }), (ev) => {
      if (ev.type === 'done') resolve(ev.generatedTokens)
      else if (ev.type === 'error') reject(new Error(ev.message))
    })
  })
}
const free = jsonSchemaSpec({ type: 'object', properties: { text: { type: 'string' } }, required: ['text'] }, 's')
await run({ maxNewTokens: 4, grammar: free }) // compile outside the timings
for (const streams of [1, 16]) {
  for (const constrained of [false, true]) {
    const p: GenerateParameters = constrained ? { maxNewTokens: M, doSample: true, seed: 1, grammar: free } : { maxNewTokens: M, doSample: true, seed: 1, ignoreEos: true }
    const per: number[] = []
    for (let r = 0; r < REPS; r++) {
      const t0 = performance.now()
      const tokens = (await Promise.all(Array.from({ length: streams }, () => run(p)))).reduce((a, b) => a + b, 0)
      per.push((performance.now() - t0) / (tokens / streams))
    }
    per.sort((a, b) => a - b)
    console.log(`${args.model} streams=${streams} ${constrained ? 'constrained  ' : 'unconstrained'}: ${per[Math.floor(per.length / 2)]!.toFixed(3)} ms per token per stream (median of ${REPS}, ${M} tokens)`)
  }
}
await engine.close()
rmSync(dir, { recursive: true, force: true })
