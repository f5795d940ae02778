/** Sampler, byte-level tokenizer, incremental detokenizer, HF tokenizer loading and chat templates. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createRng, GREEDY, sampleToken, topTokens, typicalFilter } from '../../src/llm/sampler.ts'
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

// A skewed distribution: one token at 0.4, ten at 0.06 each. Entropy H = -0.4 ln 0.4 - 0.6 ln 0.06
// = 2.054 nats; typicality |-ln p - H| is |0.916 - 2.054| = 1.138 for the head and
// |2.813 - 2.054| = 0.759 for each tail token, so the tail is the *typical* set: with mass 0.5 the
// tail tokens come first (cumulative 0.06, 0.12, ..., 0.54), i* = 8, the cut is 0.759 and all ten
// tied tail tokens stay, the head goes. top_p 0.5 instead keeps the head and two tail tokens
// (0.4, 0.46, 0.52 >= 0.5).
const skewed = Float32Array.from([0.4, ...new Array(10).fill(0.06)].map(Math.log))
const tail = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]

test('typical_p: the hand-computed typical set of a skewed distribution (ties with the cut kept)', () => {
  const probs = [0.4, ...new Array(10).fill(0.06)]
  assert.deepEqual(typicalFilter(probs, 1, 0.5), tail)
  // Mass small enough that the first typical token alone reaches it: still every tie of it stays.
  assert.deepEqual(typicalFilter(probs, 1, 0.01), tail)
  // Mass above the tail's 0.6: the head (the least typical) is needed too.
  assert.deepEqual(typicalFilter(probs, 1, 0.9), [0, ...tail])
  // Unnormalised input (probabilities x 5) gives the same set.
  assert.deepEqual(typicalFilter(probs.map((p) => p * 5), 5, 0.5), tail)
  // No ties: p = .5 .3 .2, H = 1.0297; scores .337 .174 .580 -> order 1, 0, 2; mass 0.5:
  // cumulative .3 < .5, then .8 -> i* = 1, cut .337 -> keep tokens 0 and 1.
  assert.deepEqual(typicalFilter([0.5, 0.3, 0.2], 1, 0.5), [0, 1])
  assert.deepEqual(typicalFilter([0.5, 0.3, 0.2], 1, 0.2), [1])
})

test('typical_p sampling differs from top_p on a skewed distribution and runs after top_k (TGI order)', () => {
  const rng = createRng(11)
  const typical = new Set<number>()
  const nucleus = new Set<number>()
  for (let i = 0; i < 400; i++) {
    typical.add(sampleToken(skewed, { ...sample, typicalP: 0.5 }, new Map(), rng).id)
    nucleus.add(sampleToken(skewed, { ...sample, topP: 0.5 }, new Map(), rng).id)
  }
  assert.ok(!typical.has(0), 'the atypical head token is never sampled')
  assert.ok(typical.size >= 8, `tail tokens are sampled: ${[...typical]}`)
  assert.deepEqual([...nucleus].sort((a, b) => a - b), [0, 1, 2])
  // top_k 3 first: {0.4, 0.06, 0.06} renormalised is {.769, .115, .115}, H = .698; the head's
  // score is .436 against 1.46, so typical 0.5 now keeps the head alone.
  for (let i = 0; i < 50; i++) assert.equal(sampleToken(skewed, { ...sample, topK: 3, typicalP: 0.5 }, new Map(), rng).id, 0)
  // Temperature first too: T = 0.2 sharpens the head to ~0.9 (H small), which makes it typical.
  const hot = new Set<number>()
  for (let i = 0; i < 100; i++) hot.add(sampleToken(skewed, { ...sample, temperature: 0.2, typicalP: 0.5 }, new Map(), rng).id)
  assert.deepEqual([...hot], [0])
})

test('typical_p sampling is reproducible with a seed and its logprob is the untruncated one', () => {
  const draw = (seed: number) => { const rng = createRng(seed); return Array.from({ length: 30 }, () => sampleToken(skewed, { ...sample, typicalP: 0.5 }, new Map(), rng).id) }
  assert.deepEqual(draw(7), draw(7))
  assert.notDeepEqual(draw(7), draw(8))
  const r = sampleToken(skewed, { ...sample, typicalP: 0.5 }, new Map(), createRng(1))
  assert.ok(Math.abs(r.logprob - Math.log(0.06)) < 1e-5)
})

test('top-n tokens: most likely first, same distribution as the chosen logprob, none unless asked', () => {
  const lse = (xs: number[]) => Math.log(xs.reduce((a, x) => a + Math.exp(x), 0))
  const g = sampleToken(logits, GREEDY, new Map(), createRng(1), undefined, 3)
  assert.deepEqual(g.top!.map((t) => t.id), [1, 4, 2])
  assert.equal(g.top![0]!.id, g.id, 'greedy: the chosen token is the first alternative')
  assert.equal(g.top![0]!.logprob, g.logprob)
  const z = lse([...logits])
  g.top!.forEach((t) => assert.ok(Math.abs(t.logprob - (logits[t.id]! - z)) < 1e-6))
  assert.equal(sampleToken(logits, GREEDY, new Map(), createRng(1)).top, undefined)
  assert.equal('top' in sampleToken(logits, sample, new Map(), createRng(1), undefined, 0), false)
  // Sampling with temperature: values are log softmax(logits / T), untouched by top-k truncation,
  // and the chosen token's entry equals its logprob.
  const rng = createRng(3)
  for (let i = 0; i < 20; i++) {
    const r = sampleToken(logits, { ...sample, temperature: 0.7, topK: 2 }, new Map(), rng, undefined, 5)
    assert.equal(r.top!.length, 5)
    const zt = lse([...logits].map((x) => x / 0.7))
    r.top!.forEach((t) => assert.ok(Math.abs(t.logprob - (logits[t.id]! / 0.7 - zt)) < 1e-6))
    assert.equal(r.top!.find((t) => t.id === r.id)!.logprob, r.logprob)
  }
  // After the logits processors: a repetition penalty on token 1 moves it behind token 4.
  assert.deepEqual(sampleToken(logits, { ...GREEDY, repetitionPenalty: 1.2 }, new Map([[1, 1]]), createRng(1), undefined, 2).top!.map((t) => t.id), [4, 1])
  // n beyond the vocabulary; ties go to the lower id (as greedy's argmax).
  assert.equal(topTokens(logits, 10, 1, 0).length, 5)
  assert.deepEqual(topTokens(Float32Array.from([0, 2, 1, 2, 2]), 2, 1, 0).map((t) => t.id), [1, 3])
  // Sampling with the same seed picks the same tokens whether or not top tokens are asked for.
  const a = createRng(21), b = createRng(21)
  for (let i = 0; i < 20; i++) assert.equal(sampleToken(skewed, { ...sample, topP: 0.9 }, new Map(), a).id, sampleToken(skewed, { ...sample, topP: 0.9 }, new Map(), b, undefined, 4).id)
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
