// Tool calls with tool_choice "auto" through the real server and the official openai client: a
// decoder scripted to answer a Hermes-style <tool_call> after the exact prompt the chat template
// renders for the request (and a plain answer after the follow-up with the tool's result), so the
// test shows the template rendered the tools, the call and the tool message as the server did, and
// that the parser turns the output into message.tool_calls, streaming and not.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI from 'openai'
import { startServer, type StartedServer } from '../helpers/server.ts'
import { writeServable } from '../helpers/fixtures.ts'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'
import { ChatTemplate, type ChatMessage } from '../../src/llm/chat-template.ts'
import { ByteLevelTokenizer } from '../../src/llm/tokenizer.ts'

// Qwen2.5's tool format, shortened: tools in a system turn, calls as <tool_call> JSON, results as <tool_response>.
const HERMES_TEMPLATE = [
  "{%- if tools %}<|im_start|>system\nYou may call functions:\n<tools>\n{%- for tool in tools %}{{ tool | tojson }}\n{%- endfor %}</tools>\n",
  'For each call return <tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n{%- endif %}',
  "{%- for message in messages %}",
  "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n{{ message.content }}",
  '{%- for tc in message.tool_calls %}<tool_call>\n{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}\n</tool_call>{%- endfor %}<|im_end|>\n',
  "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n",
  "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}",
  '{%- endfor %}',
  "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}",
].join('')

const TOOLS = [{
  type: 'function' as const,
  function: { name: 'get_weather', description: 'Current weather of a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
}]
const ASK = [{ role: 'user' as const, content: 'What is the weather in Paris?' }]
const CALL_TEXT = 'I will look it up.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
const RESULT = '{"temperature_c": 21}'
const ANSWER = 'It is 21 C in Paris.'

const tok = new ByteLevelTokenizer()
const EOS = 2

describe('tool_choice auto (Hermes format, official client)', () => {
  let dir: string
  let srv: StartedServer
  let client: OpenAI

  before(async () => {
    // The prompts the server will render, computed with the same template code and tokenizer.
    const template = new ChatTemplate({ chat_template: HERMES_TEMPLATE })
    const askLen = tok.encode(template.render(ASK, true, { tools: TOOLS }), false).length
    const followUp: ChatMessage[] = [...ASK,
      { role: 'assistant', content: '', tool_calls: [{ id: 'call_x', type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } }] },
      { role: 'tool', content: RESULT, tool_call_id: 'call_x' }]
    const followLen = tok.encode(template.render(followUp, true, { tools: TOOLS }), false).length
    const callIds = [...tok.encode(CALL_TEXT, false), EOS]
    assert.ok(askLen + callIds.length < followLen, 'the two scripted answers do not overlap')
    const model = buildDecoder({
      ...DECODER_CONFIGS.tiny, maxPositions: 2048,
      script: [{ after: askLen, ids: callIds }, { after: followLen, ids: [...tok.encode(ANSWER, false), EOS] }],
    })
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-tools-'))
    const config = join(dir, 'config.ts')
    writeFileSync(config, "import { defineServable } from 'ms-serve'\nexport default defineServable((s) => { s.declareLlm({ file: 'model.onnx', maxTotalTokens: 2048 }) })\n")
    const sdir = writeServable(dir, 'tools', config, { 1: { 'model.onnx': model } })
    // The same model with the parser turned off in servable_config.ts.
    writeFileSync(config, "import { defineServable } from 'ms-serve'\nexport default defineServable((s) => { s.declareLlm({ file: 'model.onnx', maxTotalTokens: 2048, toolParser: 'none' }) })\n")
    const offDir = writeServable(dir, 'tools_off', config, { 1: { 'model.onnx': model } })
    rmSync(config)
    for (const d of [sdir, offDir]) writeFileSync(join(d, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', chat_template: HERMES_TEMPLATE }))
    srv = await startServer(dir, ['--devices', '0', '--no-watch'])
    client = new OpenAI({ baseURL: `${srv.rest}/v1`, apiKey: 'unused' })
  })
  after(async () => {
    await srv?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  test('non-streaming: the <tool_call> block becomes message.tool_calls, the text before it the content', async () => {
    const r = await client.chat.completions.create({ model: 'tools', messages: ASK, tools: TOOLS, temperature: 0, max_tokens: 200 })
    const ch = r.choices[0]!
    assert.equal(ch.finish_reason, 'tool_calls', JSON.stringify(r))
    assert.equal(ch.message.content, 'I will look it up.')
    assert.equal(ch.message.tool_calls!.length, 1)
    const call = ch.message.tool_calls![0]! as { id: string; type: string; function: { name: string; arguments: string } }
    assert.match(call.id, /^call_[0-9a-f]{24}$/)
    assert.equal(call.type, 'function')
    assert.equal(call.function.name, 'get_weather')
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' })
    // tool_choice "none": the same output is plain content.
    const none = await client.chat.completions.create({ model: 'tools', messages: ASK, tools: TOOLS, tool_choice: 'none', temperature: 0, max_tokens: 200 })
    assert.equal(none.choices[0]!.finish_reason, 'stop')
    assert.equal(none.choices[0]!.message.content, CALL_TEXT)
    assert.equal(none.choices[0]!.message.tool_calls ?? undefined, undefined)
    // declareLlm toolParser 'none' over the template's format: "auto" answers content too.
    const off = await client.chat.completions.create({ model: 'tools_off', messages: ASK, tools: TOOLS, temperature: 0, max_tokens: 200 })
    assert.equal(off.choices[0]!.finish_reason, 'stop')
    assert.equal(off.choices[0]!.message.content, CALL_TEXT)
  })

  test('streaming: content deltas, then one tool-call delta with id, name and arguments; the client assembles the same call', async () => {
    const s = client.chat.completions.stream({ model: 'tools', messages: ASK, tools: TOOLS, temperature: 0, max_tokens: 200 })
    const deltas: Array<Record<string, any>> = []
    s.on('chunk', (c) => { for (const ch of c.choices) deltas.push({ ...ch.delta, finish: ch.finish_reason }) })
    const final = await s.finalChatCompletion()
    const ch = final.choices[0]!
    assert.equal(ch.finish_reason, 'tool_calls')
    assert.equal(ch.message.content, 'I will look it up.')
    const call = ch.message.tool_calls![0]! as { id: string; function: { name: string; arguments: string } }
    assert.equal(call.function.name, 'get_weather')
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' })
    const toolDeltas = deltas.filter((d) => d.tool_calls)
    assert.equal(toolDeltas.length, 1)
    assert.equal(toolDeltas[0]!.tool_calls[0].id, call.id)
    assert.ok(deltas.filter((d) => typeof d.content === 'string' && d.content !== '').length > 1, 'content streamed in pieces')
    assert.ok(!deltas.some((d) => typeof d.content === 'string' && /<tool_call|\n$/.test(d.content)), 'no markup or trailing blank line as content')
    assert.equal(deltas.at(-1)!.finish, 'tool_calls')
  })

  test('streaming with logprobs and a tool parser: every text token\'s entry arrives once, in order, as in the non-streamed answer', async () => {
    const req = { model: 'tools', messages: ASK, tools: TOOLS, temperature: 0, max_tokens: 200, logprobs: true } as const
    const whole = await client.chat.completions.create(req)
    const expected = whole.choices[0]!.logprobs!.content!
    assert.ok(expected.length > 10)
    const s = client.chat.completions.stream(req)
    const streamed: Array<{ token: string; logprob: number }> = []
    let toolDeltas = 0
    s.on('chunk', (c) => {
      for (const ch of c.choices) {
        if (ch.delta.tool_calls) toolDeltas++
        for (const e of ch.logprobs?.content ?? []) streamed.push({ token: e.token, logprob: e.logprob })
      }
    })
    const final = await s.finalChatCompletion()
    assert.equal(final.choices[0]!.finish_reason, 'tool_calls')
    assert.equal(toolDeltas, 1)
    assert.deepEqual(streamed, expected.map((e) => ({ token: e.token, logprob: e.logprob })))
    assert.equal(streamed.map((e) => e.token).join(''), CALL_TEXT)
  })

  test('round trip: the call and the tool result go back in, the template renders them, the model answers', async () => {
    const first = await client.chat.completions.create({ model: 'tools', messages: ASK, tools: TOOLS, temperature: 0, max_tokens: 200 })
    const call = first.choices[0]!.message.tool_calls![0]!
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [...ASK,
      { role: 'assistant', content: '', tool_calls: [call] },
      { role: 'tool', tool_call_id: call.id, content: RESULT }]
    const second = await client.chat.completions.create({ model: 'tools', messages, tools: TOOLS, temperature: 0, max_tokens: 200 })
    assert.equal(second.choices[0]!.finish_reason, 'stop')
    assert.equal(second.choices[0]!.message.content, ANSWER)
    const streamed = await client.chat.completions.stream({ model: 'tools', messages, tools: TOOLS, temperature: 0, max_tokens: 200 }).finalChatCompletion()
    assert.equal(streamed.choices[0]!.message.content, ANSWER)
    assert.equal(streamed.choices[0]!.message.tool_calls?.length ?? 0, 0)
  })
})
