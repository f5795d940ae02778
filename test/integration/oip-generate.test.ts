// Triton's generate extension on LLM servables (POST /v2/models/{m}/generate and /generate_stream)
// against the real server with the `init llm` decoder: greedy text equal to TGI's /generate, the
// stream's pieces adding up to it, Triton's parameter names, metadata and errors.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { runCli, startServer, tempServables, postJson, type StartedServer } from '../helpers/server.ts'

let srv: StartedServer
const cleanups: Array<() => void> = []

before(async () => {
  const dir = tempServables({ after: (fn) => cleanups.push(fn) })
  const r = await runCli(['init', 'llm', '--dir', dir])
  assert.equal(r.code, 0, r.stderr)
  srv = await startServer(dir, ['--no-watch'])
})

after(async () => {
  await srv?.stop()
  for (const c of cleanups) c()
})

const url = (p: string) => `${srv.rest}${p}`

async function stream(body: unknown): Promise<{ status: number; events: any[] }> {
  const res = await fetch(url('/v2/models/llm/generate_stream'), { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } })
  // The whole stream, then its `data:` lines (one JSON event each).
  const text = await res.text()
  const events = text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)))
  return { status: res.status, events }
}

test('generate: greedy text equals TGI /generate; Triton names (max_tokens) and TGI names both work', async () => {
  const tgi = await postJson(url('/generate'), { inputs: 'Hello', parameters: { max_new_tokens: 12, do_sample: false } })
  assert.equal(tgi.status, 200)
  const a = await postJson(url('/v2/models/llm/generate'), { text_input: 'Hello', parameters: { max_tokens: 12, temperature: 0 } })
  assert.equal(a.status, 200, a.text)
  assert.deepEqual(Object.keys(a.json).sort(), ['finish_reason', 'model_name', 'model_version', 'text_output'])
  assert.equal(a.json.model_name, 'llm')
  assert.equal(a.json.model_version, '1')
  assert.equal(a.json.text_output, tgi.json.generated_text)
  // Top-level sampling fields, as Triton accepts them, and the version in the path.
  const b = await postJson(url('/v2/models/llm/versions/1/generate'), { text_input: 'Hello', max_new_tokens: 12, do_sample: false })
  assert.equal(b.json.text_output, tgi.json.generated_text)
})

test('generate_stream: one event per token, pieces add up to the whole text, the last has finish_reason', async () => {
  const whole = await postJson(url('/v2/models/llm/generate'), { text_input: 'Once', parameters: { max_tokens: 10, temperature: 0 } })
  const s = await stream({ text_input: 'Once', parameters: { max_tokens: 10, temperature: 0 } })
  assert.equal(s.status, 200)
  assert.equal(s.events.length, 10)
  assert.equal(s.events.map((e) => e.text_output).join(''), whole.json.text_output)
  assert.equal(s.events.at(-1).finish_reason, 'length')
  assert.equal(s.events[0].finish_reason, undefined)
})

test('metadata shows text_input -> text_output; infer on an LLM and bad requests get {"error"}', async () => {
  const meta = await (await fetch(url('/v2/models/llm'))).json() as any
  assert.deepEqual(meta, { name: 'llm', versions: ['1'], platform: 'ms-serve_llm', inputs: [{ name: 'text_input', datatype: 'BYTES', shape: [1] }], outputs: [{ name: 'text_output', datatype: 'BYTES', shape: [1] }] })
  const inf = await postJson(url('/v2/models/llm/infer'), { inputs: [{ name: 'text_input', shape: [1], datatype: 'BYTES', data: ['x'] }] })
  assert.equal(inf.status, 404)
  assert.match(inf.json.error, /LLM servable: use POST \/v2\/models\/llm\/generate/)
  const cases: Array<[string, unknown, number, RegExp]> = [
    ['/v2/models/llm/generate', { parameters: {} }, 400, /needs "text_input"/],
    ['/v2/models/llm/generate', { text_input: 'x', parameters: { max_tokens: -1 } }, 400, /max_new_tokens/],
    ['/v2/models/llm/generate', { text_input: 'x', parameters: { temperature: 'hot' } }, 400, /temperature: expected a number/],
    ['/v2/models/nosuch/generate', { text_input: 'x' }, 404, /no LLM model nosuch; generate serves LLM servables \(loaded: llm\)/],
    ['/v2/models/llm/versions/4/generate', { text_input: 'x' }, 404, /no LLM model llm version 4/],
  ]
  for (const [path, body, status, re] of cases) {
    const r = await postJson(url(path), body)
    assert.equal(r.status, status, `${path} ${JSON.stringify(body)}: ${r.text}`)
    assert.deepEqual(Object.keys(r.json), ['error'])
    assert.match(r.json.error, re)
  }
  const server = await (await fetch(url('/v2'))).json() as any
  assert.deepEqual(server.extensions, ['binary_tensor_data', 'generate'])
})
