/** Sampler, byte-level tokenizer, incremental detokenizer, HF tokenizer loading and chat templates. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createRng, GREEDY, sampleToken } from '../../src/llm/sampler.ts'
import type { SamplingParams } from '../../src/llm/sampler.ts'
import { ByteLevelTokenizer, DetokenizeStream, loadTokenizer } from '../../src/llm/tokenizer.ts'
import { ChatTemplate } from '../../src/llm/chat-template.ts'

const logits = Float32Array.from([1, 3, 2, 0.5, 2.9])
const sample: SamplingParams = { ...GREEDY, doSample: true }

test('greedy picks the argmax and reports its log-probability', () => {
  const r = sampleToken(logits, GREEDY, new Map(), createRng(1))
  assert.equal(r.id, 1)
  const z = Math.log([...logits].reduce((a, x) => a + Math.exp(x), 0))
  assert.ok(Math.abs(r.logprob - (3 - z)) < 1e-6)
})

test('repetition penalty divides positive logits of seen tokens', () => {
  assert.equal(sampleToken(logits, { ...GREEDY, repetitionPenalty: 1.2 }, new Map([[1, 1]]), createRng(1)).id, 4)
})

test('seeded RNG is reproducible and seeds differ', () => {
  const a = createRng(42), b = createRng(42), c = createRng(43)
  const xs = Array.from({ length: 5 }, () => a())
  assert.deepEqual(xs, Array.from({ length: 5 }, () => b()))
  assert.notDeepEqual(xs, Array.from({ length: 5 }, () => c()))
  assert.ok(xs.every((x) => x >= 0 && x < 1))
})

test('top-k 1 is greedy; top-p keeps the smallest nucleus', () => {
  const rng = createRng(5)
  for (let i = 0; i < 50; i++) assert.equal(sampleToken(logits, { ...sample, topK: 1 }, new Map(), rng).id, 1)
  const seen = new Set<number>()
  for (let i = 0; i < 300; i++) seen.add(sampleToken(logits, { ...sample, topP: 0.5 }, new Map(), rng).id)
  assert.deepEqual([...seen].sort(), [1, 4]) // p(1)=.39, p(4)=.35: cumulative passes 0.5 at the second
})

test('sampling frequencies follow softmax(logits / T)', () => {
  const rng = createRng(9)
  const counts = new Array(5).fill(0)
  const n = 20000
  for (let i = 0; i < n; i++) counts[sampleToken(logits, { ...sample, temperature: 2 }, new Map(), rng).id]++
  const p = [...logits].map((x) => Math.exp(x / 2))
  const s = p.reduce((a, b) => a + b, 0)
  for (let i = 0; i < 5; i++) assert.ok(Math.abs(counts[i] / n - p[i]! / s) < 0.015, `token ${i}`)
})

test('byte-level tokenizer round-trips UTF-8 and marks specials', () => {
  const t = new ByteLevelTokenizer()
  const ids = t.encode('héllo ✓')
  assert.equal(ids[0], 1)
  assert.equal(t.decode(ids), 'héllo ✓')
  assert.equal(t.decode([1, 2]), '')
  assert.equal(t.decode([1, 3 + 65, 2], false), '<s>A</s>')
  assert.ok(t.isSpecial(2) && !t.isSpecial(3 + 65))
})

test('incremental detokenization holds back incomplete UTF-8', () => {
  const t = new ByteLevelTokenizer()
  const d = new DetokenizeStream(t, t.encode('x'))
  const bytes = t.encode('a✓b', false)
  assert.deepEqual(bytes.map((id) => d.push(id)), ['a', '', '', '✓', 'b'])
})

test('HF tokenizer.json: eos/bos from tokenizer_config, chat template renders', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'llm-tok-'))
  try {
    const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2, hello: 3, world: 4 }
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
      version: '1.0', truncation: null, padding: null,
      added_tokens: [
        { id: 0, content: '<unk>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
        { id: 1, content: '<s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
        { id: 2, content: '</s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      ],
      normalizer: null, pre_tokenizer: { type: 'Whitespace' }, post_processor: null, decoder: null,
      model: { type: 'WordLevel', vocab, unk_token: '<unk>' },
    }))
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({
      bos_token: '<s>', eos_token: { content: '</s>' },
      chat_template: "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
    }))
    const t = await loadTokenizer(join(dir, 'model.onnx'))
    assert.equal(t.kind, 'hf')
    assert.deepEqual(t.encode('hello world'), [3, 4])
    assert.deepEqual(t.eosTokenIds, [2])
    assert.equal(t.bosTokenId, 1)
    assert.ok(t.isSpecial(2) && !t.isSpecial(3))
    const tpl = new ChatTemplate(t.config)
    assert.equal(tpl.isDefault, false)
    assert.equal(tpl.render([{ role: 'user', content: 'hi' }]), '<s>[user] hi [assistant]')
  } finally { rmSync(dir, { recursive: true, force: true }) }
})

test('default chat template when the tokenizer has none', () => {
  const tpl = new ChatTemplate({})
  assert.equal(tpl.isDefault, true)
  assert.equal(tpl.render([{ role: 'system', content: 'S' }, { role: 'user', content: 'U' }]), '<|system|>\nS\n<|user|>\nU\n<|assistant|>\n')
})
