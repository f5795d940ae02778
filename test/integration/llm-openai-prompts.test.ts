// What clients send, through the real CLI: an LLM servable with a real HF tokenizer.json and a
// chat_template.jinja (as transformers >= 4.43 saves it), token-id prompts and lists of prompts on
// /v1/completions (the official openai client), gRPC prompt_token_ids, tools and tool messages
// rendered by the model's template, any model name when one LLM is served, 404 with two.
import { generateClient } from '../helpers/grpc-generate.ts'
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import OpenAI from 'openai'
import { ROOT, postJson as post, startServers, type StartedServer } from '../helpers/server.ts'
import { writeServable } from '../helpers/fixtures.ts'
import { CHATML_TOOLS_TEMPLATE, HF_IDS, HF_VOCAB_SIZE, writeHfTokenizer } from '../helpers/hf-tokenizer.ts'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'
import { BUILTIN_MODELS } from '../../src/models/index.ts'
import { loadTokenizer } from '../../src/llm/tokenizer.ts'

const LLM_CONFIG = join(ROOT, 'templates', 'llm', 'servable_config.ts')
/** "hello world" as the tokenizer encodes it with BOS (add_bos_token). */
const HELLO_IDS = [HF_IDS.bos, 259, 264]

/** The `hf` servable: a decoder whose vocabulary is the HF tokenizer's, with the tokenizer files and chat_template.jinja. */
function hfServable(dir: string): string {
  const sdir = writeServable(dir, 'hf', LLM_CONFIG, { 1: { 'model.onnx': buildDecoder({ ...DECODER_CONFIGS.tiny, vocabSize: HF_VOCAB_SIZE }) } })
  writeHfTokenizer(join(sdir, '1'))
  writeFileSync(join(sdir, '1', 'chat_template.jinja'), CHATML_TOOLS_TEMPLATE)
  return sdir
}

function sseChunks(raw: string): any[] {
  return raw.split('\n\n').map((c) => c.replace(/^data: /, '')).filter((d) => d && d !== '[DONE]').map((d) => JSON.parse(d))
}

describe('OpenAI prompts, chat templates and model names', () => {
  let one: string
  let two: string
  let srv: StartedServer
  let srv2: StartedServer
  before(async () => {
    one = mkdtempSync(join(tmpdir(), 'ms-serve-hf-one-'))
    two = mkdtempSync(join(tmpdir(), 'ms-serve-hf-two-'))
    hfServable(one)
    hfServable(two)
    // A second LLM with no chat template at all (byte-level tokenizer, no tokenizer_config.json).
    writeServable(two, 'plain', LLM_CONFIG, { 1: { 'model.onnx': BUILTIN_MODELS.decoder_tiny!() } });
    [srv, srv2] = await startServers([[one, ['--devices', '0']], [two, ['--devices', '0']]])
  })
  after(async () => {
    await Promise.all([srv?.stop(), srv2?.stop()])
    rmSync(one, { recursive: true, force: true })
    rmSync(two, { recursive: true, force: true })
  })

  test('/v1/models entries carry id, object, created, owned_by, max_model_len', async () => {
    const r = await (await fetch(`${srv.rest}/v1/models`)).json() as any
    assert.equal(r.object, 'list')
    assert.equal(r.data.length, 1)
    const m = r.data[0]
    assert.deepEqual(Object.keys(m).sort(), ['created', 'id', 'max_model_len', 'object', 'owned_by'])
    assert.equal(m.id, 'hf')
    assert.equal(m.object, 'model')
    assert.ok(Number.isInteger(m.created) && m.created > 1_600_000_000)
    assert.equal(m.owned_by, 'ms-serve')
    assert.equal(m.max_model_len, 512)
  })

  test('one LLM servable answers any model name; with two, an unknown name is 404', async () => {
    const client = new OpenAI({ baseURL: `${srv.rest}/v1`, apiKey: 'unused' })
    // HF InferenceClient against a base URL sends a placeholder name ("tgi" or the URL's own).
    const chat = await client.chat.completions.create({ model: 'placeholder-model', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, temperature: 0 })
    assert.equal(chat.model, 'hf')
    const comp = await client.completions.create({ model: 'whatever/7b', prompt: 'hello', max_tokens: 2, temperature: 0 })
    assert.equal(comp.model, 'hf')
    const client2 = new OpenAI({ baseURL: `${srv2.rest}/v1`, apiKey: 'unused', maxRetries: 0 })
    await assert.rejects(client2.chat.completions.create({ model: 'placeholder-model', messages: [{ role: 'user', content: 'hi' }] }),
      (e: any) => e.status === 404 && /The model `placeholder-model` does not exist/.test(e.error.message))
    for (const model of ['hf', 'plain']) assert.equal((await client2.completions.create({ model, prompt: 'x', max_tokens: 1 })).model, model)
  })

  test('the default-template warning names the servable without a template, once; none for the one with chat_template.jinja', () => {
    const warn = srv2.output().split('\n').filter((l) => l.includes('no chat template'))
    assert.equal(warn.length, 1, srv2.output())
    assert.ok(warn[0]!.includes(join(two, 'plain')), warn[0])
    assert.ok(!srv.output().includes('no chat template'), srv.output())
  })

  test('a token-id prompt equals its text; a list of prompts answers one choice per prompt, with usage summed', async () => {
    const client = new OpenAI({ baseURL: `${srv.rest}/v1`, apiKey: 'unused' })
    const base = { model: 'hf', max_tokens: 6, temperature: 0 }
    const text = await client.completions.create({ ...base, prompt: 'hello world' })
    assert.equal(text.usage!.prompt_tokens, 3, 'BOS + 2 BPE tokens')
    const ids = await client.completions.create({ ...base, prompt: HELLO_IDS })
    assert.equal(ids.choices.length, 1)
    assert.equal(ids.choices[0]!.text, text.choices[0]!.text)
    assert.deepEqual(ids.usage, text.usage)
    const short = await client.completions.create({ ...base, prompt: 'hello' })

    const many = await client.completions.create({ ...base, prompt: ['hello world', 'hello'] })
    assert.deepEqual(many.choices.map((c) => c.index), [0, 1])
    assert.deepEqual(many.choices.map((c) => c.text), [text.choices[0]!.text, short.choices[0]!.text])
    assert.deepEqual(many.choices.map((c) => c.finish_reason), [text.choices[0]!.finish_reason, short.choices[0]!.finish_reason])
    const sum = (f: 'prompt_tokens' | 'completion_tokens') => text.usage![f] + short.usage![f]
    assert.deepEqual(many.usage, { prompt_tokens: sum('prompt_tokens'), completion_tokens: sum('completion_tokens'), total_tokens: sum('prompt_tokens') + sum('completion_tokens') })
    // A list of token-id lists (the raw body: the client types only some of OpenAI's forms).
    const lists = await post(`${srv.rest}/v1/completions`, { ...base, prompt: [HELLO_IDS, [HF_IDS.bos, 259], HELLO_IDS] })
    assert.equal(lists.status, 200)
    assert.deepEqual(lists.json.choices.map((c: any) => c.index), [0, 1, 2])
    assert.equal(lists.json.choices[0].text, text.choices[0]!.text)
    assert.equal(lists.json.choices[2].text, text.choices[0]!.text)
    assert.equal(lists.json.usage.prompt_tokens, 3 + 2 + 3)

    // Streaming: chunks carry their choice's index; each choice ends with its finish chunk; usage sums.
    const s = await client.completions.create({ ...base, prompt: ['hello world', 'hello'], stream: true, stream_options: { include_usage: true } })
    const texts = ['', '']
    const finish: Array<string | null> = [null, null]
    let usage: any = null
    for await (const c of s) {
      if (c.usage) usage = c.usage
      for (const ch of c.choices) {
        texts[ch.index] += ch.text
        if (ch.finish_reason) { assert.equal(finish[ch.index], null, 'one finish chunk per choice'); finish[ch.index] = ch.finish_reason }
      }
    }
    assert.deepEqual(texts, many.choices.map((c) => c.text))
    assert.deepEqual(finish, many.choices.map((c) => c.finish_reason))
    assert.deepEqual(usage, many.usage)

    // Validation: ids outside the vocabulary, empty lists, mixed element types.
    for (const prompt of [[HF_VOCAB_SIZE], [], [[]], ['x', 3]]) {
      const r = await post(`${srv.rest}/v1/completions`, { ...base, prompt })
      assert.equal(r.status, 422, JSON.stringify({ prompt, body: r.json }))
    }
    const bad = await post(`${srv.rest}/v1/completions`, { ...base, prompt: [[1.5]] })
    assert.equal(bad.status, 422)
    assert.match(bad.json.error.message, /token ids must be integers >= 0 and < 270/)
  })

  test('a list of prompts over the concurrency limit is refused whole with 429 (raw stream body)', async () => {
    const r = await fetch(`${srv.rest}/v1/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'hf', prompt: Array.from({ length: 70 }, () => 'hello'), max_tokens: 2, stream: true }),
    })
    assert.equal(r.status, 429)
    // The server serves again once the started ones are cancelled (each engine reports it a step later).
    let ok = await post(`${srv.rest}/v1/completions`, { model: 'hf', prompt: ['hello', 'hello world'], max_tokens: 2, stream: true })
    for (let i = 0; ok.status === 429 && i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100))
      ok = await post(`${srv.rest}/v1/completions`, { model: 'hf', prompt: ['hello', 'hello world'], max_tokens: 2, stream: true })
    }
    assert.equal(ok.status, 200)
    assert.equal(sseChunks(ok.text).filter((c) => c.choices?.[0]?.finish_reason).length, 2)
  })

  test('tools, tool_calls and tool messages reach the chat template (the prompt is the one apply_chat_template renders)', async () => {
    const client = new OpenAI({ baseURL: `${srv.rest}/v1`, apiKey: 'unused' })
    const tools = [{ type: 'function' as const, function: { name: 'get_weather', description: 'Weather now', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }]
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
      { role: 'user', content: [{ type: 'text', text: 'Weather in ' }, { type: 'text', text: 'Paris?' }] },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '21 C', name: 'get_weather' } as OpenAI.Chat.ChatCompletionMessageParam,
    ]
    const r = await client.chat.completions.create({ model: 'hf', messages, tools, tool_choice: 'auto', max_tokens: 2, temperature: 0 })
    // Written by hand from Python Jinja's semantics and transformers' tojson (json.dumps defaults);
    // `arguments` arrives as a JSON string and is rendered as the object it encodes.
    const expected = '<s><|im_start|>system\n# Tools\n' +
      '{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}\n' +
      '<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n' +
      '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|im_end|>\n' +
      '<|im_start|>user\n<tool_response id="call_1" name="get_weather">21 C</tool_response><|im_end|>\n<|im_start|>assistant\n'
    const tok = await loadTokenizer(join(one, 'hf', '1', 'model.onnx'))
    const want = tok.encode(expected, false)
    assert.equal(want.filter((id) => id === HF_IDS.bos).length, 1)
    assert.equal(r.usage!.prompt_tokens, want.length)
    // The same prompt as token ids on /v1/completions gives the same greedy answer.
    const same = await client.completions.create({ model: 'hf', prompt: want, max_tokens: 2, temperature: 0 })
    assert.equal(same.choices[0]!.text, r.choices[0]!.message.content)
    // tool_choice "required" is constrained output (llm-structured-routes.test.ts): a tool call, or
    // its start cut by max_tokens (the schema's string is unbounded); streamed, the same answer.
    const req = await client.chat.completions.create({ model: 'hf', messages, tools, tool_choice: 'required', max_tokens: 120, temperature: 0 })
    const ch = req.choices[0]!
    if (ch.finish_reason === 'tool_calls') {
      const fn = (ch.message.tool_calls![0] as any).function as { name: string; arguments: string }
      assert.equal(fn.name, 'get_weather')
      assert.equal(typeof JSON.parse(fn.arguments), 'object')
    } else assert.equal(ch.finish_reason, 'length')
    const streamed = await client.chat.completions.stream({ model: 'hf', messages, tools, tool_choice: 'required', max_tokens: 120, temperature: 0 }).finalChatCompletion()
    assert.equal(streamed.choices[0]!.finish_reason, ch.finish_reason)
    assert.deepEqual(streamed.choices[0]!.message.tool_calls?.map((c: any) => [c.function.name, c.function.arguments]), ch.message.tool_calls?.map((c: any) => [c.function.name, c.function.arguments]))
  })

  test('gRPC Generate takes prompt_token_ids', async () => {
    const { generate, close } = generateClient(srv.grpc)
    try {
      const byText = await generate({ servable: 'hf', prompt: 'hello world', max_new_tokens: 4, do_sample: false })
      const byIds = await generate({ servable: 'hf', prompt_token_ids: HELLO_IDS, max_new_tokens: 4, do_sample: false })
      assert.equal(byIds.length, byText.length)
      assert.deepEqual(byIds.map((e) => e.token_id), byText.map((e) => e.token_id))
      assert.equal(byIds.at(-1).generated_text, byText.at(-1).generated_text)
      for (const req of [{ prompt_token_ids: [HF_VOCAB_SIZE] }, { prompt: 'x', prompt_token_ids: [1] }]) {
        await assert.rejects(generate({ servable: 'hf', max_new_tokens: 2, ...req }), (e: any) => e.code === grpc.status.INVALID_ARGUMENT, JSON.stringify(req))
      }
    } finally {
      close()
    }
  })
})
