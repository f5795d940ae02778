/**
 * Structured output on the tiny decoder (random weights): under a grammar every output parses and
 * validates. Property test: random schemas (objects with string/integer/boolean/enum/array
 * properties, required lists) x sampled decoding at temperature 1 with seeds. Plus the listener
 * check (a schema xgrammar cannot compile is refused) and the mask itself.
 */
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'
import { LlmEngine } from '../../src/llm/engine.ts'
import { checkGrammar, encodedVocab, GrammarCompilerCache, jsonSchemaSpec, vocabBytes } from '../../src/llm/grammar.ts'
import { byteToUnicode, loadTokenizer } from '../../src/llm/tokenizer.ts'
import { HF_IDS, HF_VOCAB_SIZE, writeHfTokenizer } from '../helpers/hf-tokenizer.ts'
import { applyBitmask, createRng } from '../../src/llm/sampler.ts'
import type { DoneEvent, GenerateParameters } from '../../src/llm/types.ts'
import { ServeError } from '../../src/errors.ts'

let dir: string
let engine: LlmEngine

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'llm-structured-'))
  const modelPath = join(dir, 'model.onnx')
  await writeFile(modelPath, buildDecoder(DECODER_CONFIGS.tiny))
  engine = await LlmEngine.load(modelPath, { maxTotalTokens: 512, maxBatchSize: 8, kvBlock: 64 })
})
after(async () => { await engine.close(); rmSync(dir, { recursive: true, force: true }) })

function run(inputs: string, parameters: GenerateParameters): Promise<DoneEvent> {
  return new Promise((resolve, reject) => {
    engine.submit(engine.validate({ inputs, parameters }), (ev) => {
      if (ev.type === 'done') resolve(ev)
      else if (ev.type === 'error') reject(new Error(ev.message))
    })
  })
}

type Schema = Record<string, unknown>

/** A random schema of the tested subset; strings, arrays and integers are bounded so outputs end. */
function randomSchema(rng: () => number, depth = 0): Schema {
  const pick = <T>(xs: T[]): T => xs[Math.floor(rng() * xs.length)]!
  const kinds = depth < 2 ? ['string', 'integer', 'boolean', 'enum', 'array', 'object'] : ['string', 'integer', 'boolean', 'enum']
  const leaf = (): Schema => {
    const k = pick(kinds)
    if (k === 'string') return { type: 'string', maxLength: 1 + Math.floor(rng() * 8) }
    if (k === 'integer') return { type: 'integer', minimum: -50, maximum: 1000 }
    if (k === 'boolean') return { type: 'boolean' }
    if (k === 'enum') return { enum: ['red', 'green', 'blue', 42, true].slice(0, 2 + Math.floor(rng() * 4)) }
    if (k === 'array') return { type: 'array', items: { type: pick(['integer', 'boolean']), ...(rng() < 0.5 ? {} : {}) }, maxItems: 3 }
    return randomSchema(rng, depth + 1)
  }
  const n = 1 + Math.floor(rng() * 4)
  const properties: Record<string, Schema> = {}
  for (let i = 0; i < n; i++) properties[`p${i}_${pick(['a', 'bb', 'ccc'])}`] = leaf()
  const names = Object.keys(properties)
  const required = names.filter(() => rng() < 0.6)
  for (const s of Object.values(properties)) if (s.type === 'array' && (s.items as Schema).type === 'integer') (s.items as Schema).maximum = 99
  return { type: 'object', properties, required, additionalProperties: false }
}

/** Validator for the generated subset; returns the first violation or null. */
function violation(v: unknown, s: Schema, path = '$'): string | null {
  if (s.enum) return (s.enum as unknown[]).some((e) => e === v) ? null : `${path}: ${JSON.stringify(v)} not in enum`
  switch (s.type) {
    case 'string':
      if (typeof v !== 'string') return `${path}: not a string`
      return s.maxLength !== undefined && [...v].length > (s.maxLength as number) ? `${path}: longer than ${s.maxLength}` : null
    case 'integer':
      if (!Number.isInteger(v)) return `${path}: not an integer`
      if (s.minimum !== undefined && (v as number) < (s.minimum as number)) return `${path}: below minimum`
      if (s.maximum !== undefined && (v as number) > (s.maximum as number)) return `${path}: above maximum`
      return null
    case 'boolean': return typeof v === 'boolean' ? null : `${path}: not a boolean`
    case 'array': {
      if (!Array.isArray(v)) return `${path}: not an array`
      if (s.maxItems !== undefined && v.length > (s.maxItems as number)) return `${path}: too many items`
      for (const [i, x] of v.entries()) { const e = violation(x, s.items as Schema, `${path}[${i}]`); if (e) return e }
      return null
    }
    case 'object': {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return `${path}: not an object`
      const props = s.properties as Record<string, Schema>
      for (const r of s.required as string[]) if (!(r in v)) return `${path}: missing ${r}`
      for (const [k, x] of Object.entries(v)) {
        if (!(k in props)) return `${path}: unexpected property ${k}`
        const e = violation(x, props[k]!, `${path}.${k}`)
        if (e) return e
      }
      return null
    }
  }
  return `${path}: schema type ${String(s.type)} not handled`
}

test('property: 20 random schemas x seeded sampling at temperature 1 -> every output parses and validates', async () => {
  const rng = createRng(20261202)
  const runs: Array<Promise<void>> = []
  for (let i = 0; i < 20; i++) {
    const schema = randomSchema(rng)
    const grammar = jsonSchemaSpec(schema, 'schema')
    await checkGrammar(grammar)
    for (const seed of [1, 2]) {
      runs.push(run(`schema ${i}:`, { doSample: true, temperature: 1, seed: i * 10 + seed, maxNewTokens: 400, grammar }).then((done) => {
        const ctx = `schema ${JSON.stringify(schema)} seed ${seed}: ${JSON.stringify(done.generatedText)}`
        assert.equal(done.finishReason, 'eos_token', ctx)
        let parsed: unknown
        assert.doesNotThrow(() => { parsed = JSON.parse(done.generatedText) }, ctx)
        assert.equal(violation(parsed, schema), null, ctx)
      }))
    }
  }
  await Promise.all(runs)
})

test('json_object grammar: greedy and sampled outputs are JSON; unconstrained rows in the same batch are untouched', async () => {
  const free = { maxNewTokens: 40, ignoreEos: true }
  const alone = await run('same prompt', free)
  const [a, b, c] = await Promise.all([
    run('same prompt', free),
    run('json please', { maxNewTokens: 400, grammar: { type: 'json' } }),
    run('json please', { doSample: true, seed: 7, maxNewTokens: 400, grammar: { type: 'json' } }),
  ])
  assert.equal(a.generatedText, alone.generatedText)
  for (const d of [b, c]) {
    assert.equal(d.finishReason, 'eos_token', d.generatedText)
    const v = JSON.parse(d.generatedText) as unknown
    assert.equal(typeof v, 'object')
  }
})

test('the same schema twice gives the same seeded output (the engine caches the compiled grammar)', async () => {
  const grammar = jsonSchemaSpec({ type: 'object', properties: { name: { type: 'string', maxLength: 5 }, n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['name', 'n'] }, 's')
  const p = { doSample: true, seed: 3, maxNewTokens: 200, grammar }
  const x = await run('a', p)
  const y = await run('a', p)
  assert.equal(x.generatedText, y.generatedText)
  const v = JSON.parse(x.generatedText) as { name: string; n: number }
  assert.equal(typeof v.name, 'string')
  assert.ok(Number.isInteger(v.n) && v.n >= 0 && v.n <= 9)
})

test('a schema xgrammar cannot compile is refused with VALIDATION; so is a non-object schema and grammar + ignore_eos', async () => {
  await assert.rejects(checkGrammar(jsonSchemaSpec({ type: 'object', properties: { a: { type: 'no-such-type' } } }, 's')), (e: unknown) => e instanceof ServeError && e.code === 'VALIDATION' && /grammar/.test(e.message))
  assert.throws(() => jsonSchemaSpec('nope', 'grammar.value'), (e: unknown) => e instanceof ServeError && e.code === 'VALIDATION')
  assert.throws(() => engine.validate({ inputs: 'x', parameters: { ignoreEos: true, grammar: { type: 'json' } } }), /ignore_eos/)
})

test('applyBitmask: disallowed ids and ids past the mask become -Infinity', () => {
  const row = new Float32Array(70).fill(1)
  const mask = new Int32Array([0b101, -1])
  applyBitmask(row, mask)
  assert.equal(row[0], 1); assert.equal(row[1], -Infinity); assert.equal(row[2], 1); assert.equal(row[3], -Infinity)
  assert.equal(row[40], 1); assert.equal(row[64], -Infinity); assert.equal(row[69], -Infinity)
})

test('an HF byte-level BPE tokenizer: raw tokens go to xgrammar as byte_level, and outputs validate', async () => {
  const hfDir = mkdtempSync(join(tmpdir(), 'llm-structured-hf-'))
  try {
    writeHfTokenizer(hfDir)
    const modelPath = join(hfDir, 'model.onnx')
    await writeFile(modelPath, buildDecoder({ ...DECODER_CONFIGS.tiny, vocabSize: HF_VOCAB_SIZE }))
    const hf = await LlmEngine.load(modelPath, { maxTotalTokens: 512, maxBatchSize: 4 })
    try {
      const { vocab, type } = encodedVocab(hf.tokenizer)
      assert.equal(type, 'byte_level')
      assert.equal(vocab.length, HF_VOCAB_SIZE)
      assert.ok(vocab.includes('Ġworld'))
      const rng = createRng(77)
      const runs: Array<Promise<void>> = []
      for (let i = 0; i < 6; i++) {
        const schema = randomSchema(rng)
        const grammar = jsonSchemaSpec(schema, 'schema')
        runs.push(new Promise<DoneEvent>((resolve, reject) => {
          hf.submit(hf.validate({ inputs: 'hello world', parameters: { doSample: true, seed: i, maxNewTokens: 400, grammar } }), (ev) => {
            if (ev.type === 'done') resolve(ev)
            else if (ev.type === 'error') reject(new Error(ev.message))
          })
        }).then((done) => {
          const ctx = `${JSON.stringify(schema)}: ${JSON.stringify(done.generatedText)}`
          assert.equal(done.finishReason, 'eos_token', ctx)
          assert.equal(violation(JSON.parse(done.generatedText), schema), null, ctx)
        }))
      }
      await Promise.all(runs)
    } finally { await hf.close() }
  } finally { rmSync(hfDir, { recursive: true, force: true }) }
})

test('UTF-8 guard on an HF byte-level BPE vocabulary: tokens that would make invalid UTF-8 (overlong, surrogate, past U+10FFFF, mid-character ends) are masked', async () => {
  const hfDir = mkdtempSync(join(tmpdir(), 'llm-structured-u8-'))
  try {
    writeHfTokenizer(hfDir)
    const tok = await loadTokenizer(join(hfDir, 'model.onnx'))
    const encoded = encodedVocab(tok)
    const bytes = vocabBytes(tok, encoded)!
    const alphabet = byteToUnicode()
    const byteId = (b: number) => encoded.vocab.indexOf(alphabet[b]!)
    assert.deepEqual([...bytes[encoded.vocab.indexOf('Ġworld')]!], [...new TextEncoder().encode(' world')])
    assert.equal(bytes[HF_IDS.eos], null)
    const cache = new GrammarCompilerCache(tok, HF_VOCAB_SIZE)
    const m = await cache.matcher({ type: 'json' })
    for (const id of tok.encode('["', false).filter((i) => !tok.isSpecial(i))) assert.ok(m.accept(id))
    const maskNow = async () => { const row = new Float32Array(HF_VOCAB_SIZE); await m.mask(row); return row }
    let row = await maskNow()
    // At a character boundary inside a string: no continuation byte, no C0/C1 (overlong), no F5..FF.
    for (const b of [0x80, 0xbf, 0xc0, 0xc1, 0xf5, 0xff]) assert.equal(row[byteId(b)], -Infinity, `byte ${b.toString(16)} at a boundary`)
    for (const b of [0x41, 0xc3, 0xe0, 0xed, 0xf0, 0xf4]) assert.equal(row[byteId(b)], 0, `byte ${b.toString(16)} at a boundary`)
    assert.equal(row[encoded.vocab.indexOf('hello')], 0)
    const after = async (lead: number, allowed: number[], refused: number[]) => {
      const g = await cache.matcher({ type: 'json' })
      for (const id of tok.encode('["', false).filter((i) => !tok.isSpecial(i))) g.accept(id)
      assert.ok(g.accept(byteId(lead)))
      const r = new Float32Array(HF_VOCAB_SIZE)
      await g.mask(r)
      for (const b of allowed) assert.equal(r[byteId(b)], 0, `after ${lead.toString(16)}: ${b.toString(16)} allowed`)
      for (const b of refused) assert.equal(r[byteId(b)], -Infinity, `after ${lead.toString(16)}: ${b.toString(16)} refused`)
      assert.equal(r[encoded.vocab.indexOf('hello')], -Infinity, 'an ASCII token mid-character')
      assert.equal(r[HF_IDS.eos], -Infinity, 'no end mid-character')
      g.dispose()
    }
    await after(0xe0, [0xa0, 0xbf], [0x80, 0x9f]) // E0 80..9F would be overlong
    await after(0xed, [0x80, 0x9f], [0xa0, 0xbf]) // ED A0..BF are surrogates
    await after(0xf4, [0x80, 0x8f], [0x90, 0xbf]) // F4 90.. is past U+10FFFF
    await after(0xc3, [0x80, 0xbf], [0x41, 0xc3])
    // A complete character puts the guard back at a boundary.
    assert.ok(m.accept(byteId(0xc3)) && m.accept(byteId(0xa9)))
    row = await maskNow()
    assert.equal(row[encoded.vocab.indexOf('hello')], 0)
    assert.equal(row[byteId(0x80)], -Infinity)
    m.dispose()
  } finally { rmSync(hfDir, { recursive: true, force: true }) }
})
