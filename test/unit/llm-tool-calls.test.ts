// Tool-call readers (src/llm/tool-calls.ts): the same output read whole or in any split gives the
// same content and calls; calls stream as OpenAI deltas; what is not a call stays content.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import {
  detectToolParser, hermesReader, llama3JsonReader, namedCallReader, readAll, requiredCallReader,
  type ToolCallReader, type ToolEvent,
} from '../../src/llm/tool-calls.ts'
import { mulberry32 } from '../../src/models/onnx-builder.ts'

let n = 0
const ids = () => `call_${n++}`

/** Feeds `pieces` one by one, checks the delta rules, and merges the events into content and calls. */
function feed(reader: ToolCallReader, pieces: readonly string[]): { content: string; calls: Array<{ id: string; name: string; arguments: string }> } {
  const evs: ToolEvent[] = []
  for (const p of pieces) evs.push(...reader.push(p))
  evs.push(...reader.end())
  let content = ''
  const calls: Array<{ id: string; name: string; arguments: string }> = []
  for (const ev of evs) {
    if ('content' in ev) {
      assert.notEqual(ev.content.trim(), '', 'no whitespace-only content delta')
      content += ev.content
      continue
    }
    const d = ev.call
    if (d.id !== undefined) {
      assert.equal(d.index, calls.length, 'a new call takes the next index')
      assert.equal(typeof d.name, 'string')
      calls.push({ id: d.id, name: d.name!, arguments: d.arguments })
    } else {
      assert.equal(d.index, calls.length - 1, 'argument pieces belong to the open call')
      calls[d.index]!.arguments += d.arguments
    }
  }
  assert.equal(reader.calls, calls.length)
  return { content, calls }
}

/** Random splits of `text`, and one piece per character. */
function splits(text: string, seed: number): string[][] {
  const rnd = mulberry32(seed)
  const out: string[][] = [[...text]]
  for (let k = 0; k < 20; k++) {
    const parts: string[] = []
    let i = 0
    while (i < text.length) { const len = 1 + Math.floor(rnd() * 7); parts.push(text.slice(i, i + len)); i += len }
    out.push(parts)
  }
  return out
}

function sameInEverySplit(make: () => ToolCallReader, text: string) {
  const whole = feed(make(), [text])
  for (const parts of splits(text, text.length)) {
    const got = feed(make(), parts)
    assert.equal(got.content, whole.content, JSON.stringify(parts))
    assert.deepEqual(got.calls.map(({ name, arguments: a }) => [name, a]), whole.calls.map(({ name, arguments: a }) => [name, a]))
  }
  return whole
}

const HERMES = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>'

describe('hermes reader', () => {
  test('text then two calls: content before them, each call with its name and arguments, in any split', () => {
    const r = sameInEverySplit(() => hermesReader(ids), HERMES)
    assert.equal(r.content, 'Let me check.')
    assert.deepEqual(r.calls.map((c) => [c.name, JSON.parse(c.arguments)]), [['get_weather', { city: 'Paris', unit: 'c' }], ['get_time', { tz: 'CET' }]])
    const all = readAll(hermesReader(ids), HERMES)
    assert.equal(all.content, 'Let me check.')
    assert.equal(all.calls.length, 2)
    assert.match(all.calls[0]!.id, /^call_/)
  })

  test('only a call: content is null; an unclosed call at the end still counts', () => {
    const only = readAll(hermesReader(), '<tool_call>{"name": "f", "arguments": {}}</tool_call>\n')
    assert.equal(only.content, null)
    assert.deepEqual(only.calls.map((c) => [c.name, c.arguments]), [['f', '{}']])
    const open = sameInEverySplit(() => hermesReader(ids), 'ok <tool_call>{"name": "g", "arguments": {"a": [1, 2]}}')
    assert.equal(open.content, 'ok')
    assert.deepEqual(open.calls.map((c) => [c.name, JSON.parse(c.arguments)]), [['g', { a: [1, 2] }]])
  })

  test('what is not a call stays content: plain text, a "<tool" that is no marker, a block that is not JSON', () => {
    for (const text of ['Hello, no tools here.', 'a <tool> b <tool_ c', 'x <tool_call>not json</tool_call> y', '<tool_call>{"arguments": {}}</tool_call>']) {
      const r = sameInEverySplit(() => hermesReader(ids), text)
      assert.equal(r.calls.length, 0, text)
      assert.equal(r.content, text.trimEnd())
    }
  })

  test('a piece that ends inside the marker is held, not streamed as content', () => {
    const reader = hermesReader(ids)
    assert.deepEqual(reader.push('Sure <tool_'), [{ content: 'Sure' }])
    assert.deepEqual(reader.push('call>{"name": "f", '), [])
    const evs = reader.push('"arguments": {"x": 1}}</tool_call>')
    assert.equal(evs.length, 1)
    assert.deepEqual((evs[0] as { call: unknown }).call, { index: 0, id: 'call_' + (n - 1), name: 'f', arguments: '{"x":1}' })
  })
})

describe('llama3_json reader', () => {
  test('a JSON call (parameters or arguments), after <|python_tag|>, several joined by ";"', () => {
    const one = sameInEverySplit(() => llama3JsonReader(ids), '{"name": "get_weather", "parameters": {"city": "Oslo"}}')
    assert.equal(one.content, '')
    assert.deepEqual(one.calls.map((c) => [c.name, JSON.parse(c.arguments)]), [['get_weather', { city: 'Oslo' }]])
    const two = sameInEverySplit(() => llama3JsonReader(ids), '<|python_tag|>{"name": "a", "arguments": {"s": "};{"}}; {"name": "b", "parameters": {}}')
    assert.deepEqual(two.calls.map((c) => [c.name, JSON.parse(c.arguments)]), [['a', { s: '};{' }], ['b', {}]])
  })

  test('the usual key order streams: the name at the head, the arguments as they come, text after the calls is content', () => {
    const reader = llama3JsonReader(ids)
    assert.deepEqual(reader.push('<|python_tag|>{"name": "get_'), [])
    const head = reader.push('weather", "parameters": {"ci')
    assert.equal(head.length, 2)
    assert.equal(('call' in head[0]! && head[0].call.name), 'get_weather')
    assert.deepEqual(head[1], { call: { index: 0, arguments: '{"ci' } })
    assert.deepEqual(reader.push('ty": "Oslo"}'), [{ call: { index: 0, arguments: 'ty": "Oslo"}' } }])
    assert.deepEqual(reader.push('}'), [])
    assert.equal(reader.calls, 1)
    const after = sameInEverySplit(() => llama3JsonReader(ids), '{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}} then some words')
    assert.deepEqual(after.calls.map((c) => [c.name, JSON.parse(c.arguments)]), [['a', { x: 1 }], ['b', {}]])
    assert.equal(after.content, 'then some words')
    // Cut off mid-arguments (max_tokens): a call with the arguments so far, as vLLM streams it.
    const cut = sameInEverySplit(() => llama3JsonReader(ids), '{"name": "f", "parameters": {"q": "ab')
    assert.deepEqual(cut.calls.map((c) => [c.name, c.arguments]), [['f', '{"q": "ab']])
  })

  test('text, broken JSON and JSON that is not a call stay content (text streams at once)', () => {
    for (const text of ['The weather is fine.', '{"name": "f", "param', '{"answer": 42}', '  {"name": "f"} trailing', '{"parameters": {}, "name": 3}']) {
      const r = sameInEverySplit(() => llama3JsonReader(ids), text)
      assert.equal(r.calls.length, 0, text)
      assert.equal(r.content, text.trimEnd())
    }
    const reader = llama3JsonReader(ids)
    assert.deepEqual(reader.push('Hi'), [{ content: 'Hi' }])
  })
})

describe('forced readers (tool_choice required / named)', () => {
  test('required: the name opens the call and the arguments stream up to their end, in any split', () => {
    const text = '{"name": "ping", "arguments": {"s": "}{\\"", "n": [1, {"m": 2}]}}'
    const r = sameInEverySplit(() => requiredCallReader('call_r'), text)
    assert.deepEqual(r.calls, [{ id: 'call_r', name: 'ping', arguments: '{"s": "}{\\"", "n": [1, {"m": 2}]}' }])
    assert.deepEqual(JSON.parse(r.calls[0]!.arguments), { s: '}{"', n: [1, { m: 2 }] })
    // Arguments stream before the output ends.
    const reader = requiredCallReader('call_r')
    assert.deepEqual(reader.push('{"name": "ping", "arguments": {"n'), [{ call: { index: 0, id: 'call_r', name: 'ping', arguments: '' } }, { call: { index: 0, arguments: '{"n' } }])
  })

  test('required in another key order is read at the end; named streams the output as the arguments', () => {
    const other = readAll(requiredCallReader('x'), '{"arguments": {"a": 1}, "name": "f"}')
    assert.deepEqual(other.calls, [{ id: 'x', name: 'f', arguments: '{"a":1}' }])
    const named = sameInEverySplit(() => namedCallReader('get_person', 'call_n'), '{"name": "Ann", "age": 3}')
    assert.deepEqual(named.calls, [{ id: 'call_n', name: 'get_person', arguments: '{"name": "Ann", "age": 3}' }])
    assert.deepEqual(namedCallReader('f', 'c').push('{'), [{ call: { index: 0, id: 'c', name: 'f', arguments: '' } }, { call: { index: 0, arguments: '{' } }])
  })
})

test('detectToolParser: the template\'s tool format picks the parser', () => {
  const qwen = '{%- if tools %}<tools>{{ tool | tojson }}</tools> ... <tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call>{%- endif %}'
  const llama = "{{- 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}{{- '<|python_tag|>' }}"
  assert.equal(detectToolParser([qwen]), 'hermes')
  assert.equal(detectToolParser(['{{ messages }}', llama]), 'llama3_json')
  assert.equal(detectToolParser(['{% for m in messages %}{{ m.content }}{% endfor %}']), 'none')
})
