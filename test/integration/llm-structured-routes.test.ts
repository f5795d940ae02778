// Structured output through the server (listener validates, the replica's engine masks):
// OpenAI response_format (official client) and TGI's `grammar`, on the tiny decoder of `init llm`.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import OpenAI from 'openai'
import { postJson as post, runCli, startServer, type StartedServer } from '../helpers/server.ts'

const SCHEMA = {
  type: 'object',
  properties: { name: { type: 'string', maxLength: 6 }, age: { type: 'integer', minimum: 0, maximum: 120 }, ok: { type: 'boolean' }, color: { enum: ['red', 'green'] } },
  required: ['name', 'age', 'ok', 'color'],
  additionalProperties: false,
}

function checkPerson(text: string): void {
  const v = JSON.parse(text) as Record<string, unknown>
  assert.deepEqual(Object.keys(v).sort(), ['age', 'color', 'name', 'ok'], text)
  assert.ok(typeof v.name === 'string' && [...v.name].length <= 6, text)
  assert.ok(Number.isInteger(v.age) && (v.age as number) >= 0 && (v.age as number) <= 120, text)
  assert.equal(typeof v.ok, 'boolean', text)
  assert.ok(v.color === 'red' || v.color === 'green', text)
}

describe('structured output routes', () => {
  let dir: string
  let srv: StartedServer
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-structured-'))
    const r = await runCli(['init', 'llm', '--dir', dir])
    assert.equal(r.code, 0, r.stderr)
    srv = await startServer(dir, ['--devices', '0'])
  })
  after(async () => {
    await srv?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('OpenAI response_format json_schema and json_object (official client): the content follows the schema', async () => {
    const client = new OpenAI({ baseURL: `${srv.rest}/v1`, apiKey: 'unused' })
    for (const seed of [1, 2, 3]) {
      const chat = await client.chat.completions.create({
        model: 'llm', messages: [{ role: 'user', content: 'Who?' }], max_tokens: 300, temperature: 1, seed,
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema: SCHEMA, strict: true } },
      })
      assert.equal(chat.choices[0]!.finish_reason, 'stop')
      checkPerson(chat.choices[0]!.message.content!)
    }
    const comp = await post(`${srv.rest}/v1/completions`, { model: 'llm', prompt: 'P', max_tokens: 300, response_format: { type: 'json_schema', json_schema: { name: 'p', schema: SCHEMA } } })
    assert.equal(comp.status, 200, comp.text)
    checkPerson(comp.json.choices[0].text)
    const obj = await client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'Any' }], max_tokens: 300, temperature: 0, response_format: { type: 'json_object' } })
    assert.equal(typeof JSON.parse(obj.choices[0]!.message.content!), 'object')
    await assert.rejects(client.chat.completions.create({
      model: 'llm', messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'json_schema', json_schema: { name: 'bad', schema: { type: 'object', properties: { a: { type: 'no-such-type' } } } } },
    }), (e: any) => e.status === 422 && /grammar/.test(e.error.message))
  })

  test('TGI grammar json: generated_text follows the schema; uncompilable schema and regex are 422', async () => {
    for (const seed of [4, 5]) {
      const r = await post(`${srv.rest}/generate`, { inputs: 'Person:', parameters: { max_new_tokens: 300, do_sample: true, seed, grammar: { type: 'json', value: SCHEMA } } })
      assert.equal(r.status, 200, r.text)
      checkPerson(r.json.generated_text)
    }
    const bad = await post(`${srv.rest}/generate`, { inputs: 'x', parameters: { grammar: { type: 'json', value: { type: 'object', properties: { a: { type: 'no-such-type' } } } } } })
    assert.equal(bad.status, 422)
    assert.match(bad.json.error, /^Input validation error: `grammar`/)
    const regex = await post(`${srv.rest}/generate`, { inputs: 'x', parameters: { grammar: { type: 'regex', value: '[a-z]+' } } })
    assert.equal(regex.status, 422)
    assert.match(regex.json.error, /regex/)
    // The server keeps serving after xgrammar refused a schema.
    const again = await post(`${srv.rest}/generate`, { inputs: 'P', parameters: { max_new_tokens: 300, grammar: { type: 'json', value: SCHEMA } } })
    assert.equal(again.status, 200)
    checkPerson(again.json.generated_text)
  })

  test('tool_choice "required" and a named function (official client): message.tool_calls with arguments following the parameters schema, streaming and not', async () => {
    const client = new OpenAI({ baseURL: `${srv.rest}/v1`, apiKey: 'unused' })
    const tools = [
      { type: 'function' as const, function: { name: 'get_person', description: 'Look a person up', parameters: SCHEMA } },
      { type: 'function' as const, function: { name: 'ping', parameters: { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['n'], additionalProperties: false } } },
    ]
    const named = await client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'Who?' }], max_tokens: 300, temperature: 1, seed: 9, tools, tool_choice: { type: 'function', function: { name: 'get_person' } } })
    const ch = named.choices[0]!
    assert.equal(ch.finish_reason, 'tool_calls')
    assert.equal(ch.message.content, null)
    const [call] = ch.message.tool_calls!
    assert.equal(call!.type, 'function')
    assert.match(call!.id, /^call_/)
    assert.equal((call as any).function.name, 'get_person')
    checkPerson((call as any).function.arguments)
    for (const seed of [1, 2, 3, 4]) {
      const req = await client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'Call' }], max_tokens: 300, temperature: 1, seed, tools, tool_choice: 'required' })
      const c = req.choices[0]!
      assert.equal(c.finish_reason, 'tool_calls')
      const fn = (c.message.tool_calls![0] as any).function as { name: string; arguments: string }
      assert.ok(fn.name === 'get_person' || fn.name === 'ping', fn.name)
      if (fn.name === 'get_person') checkPerson(fn.arguments)
      else { const a = JSON.parse(fn.arguments) as { n: number }; assert.ok(Number.isInteger(a.n) && a.n >= 0 && a.n <= 9, fn.arguments) }
    }
    // Streamed, the same seeds give the same calls: the name first, the arguments in pieces as they are generated.
    for (const [seed, choice] of [[9, { type: 'function' as const, function: { name: 'get_person' } }], [2, 'required' as const]] as const) {
      const body = { model: 'llm', messages: [{ role: 'user' as const, content: seed === 9 ? 'Who?' : 'Call' }], max_tokens: 300, temperature: 1, seed, tools, tool_choice: choice }
      const whole = await client.chat.completions.create(body)
      const s = client.chat.completions.stream(body)
      let pieces = 0
      s.on('chunk', (c) => { if (c.choices[0]?.delta.tool_calls?.[0]?.function?.arguments) pieces++ })
      const streamed = await s.finalChatCompletion()
      assert.equal(streamed.choices[0]!.finish_reason, 'tool_calls')
      const [a, b] = [whole, streamed].map((r) => (r.choices[0]!.message.tool_calls![0] as any).function as { name: string; arguments: string })
      assert.equal(b!.name, a!.name)
      assert.deepEqual(JSON.parse(b!.arguments), JSON.parse(a!.arguments))
      assert.ok(pieces > 3, `arguments streamed in ${pieces} pieces`)
    }
    await assert.rejects(client.chat.completions.create({ model: 'llm', messages: [{ role: 'user', content: 'x' }], tools, tool_choice: { type: 'function', function: { name: 'nope' } } }),
      (e: any) => e.status === 422 && /nope/.test(e.error.message))
  })
})
