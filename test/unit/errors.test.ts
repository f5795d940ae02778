/** The error table (errors.ts): every row complete, and every family's renderer answers from it. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { status as GrpcStatus } from '@grpc/grpc-js'
import { ERROR_CODES, MS_STATUS, ServeError, errorRow, factError, type ErrorCode } from '../../src/errors.ts'
import { msText, tgiText } from '../../src/protocol/texts.ts'
import { grpcError, msRestError, openAiError, tgiError } from '../../src/protocol/error-render.ts'
import { buildRestServer } from '../../src/protocol/rest/server.ts'
import { ServableRegistry } from '../../src/runtime/registry.ts'

const CODES = Object.keys(ERROR_CODES) as ErrorCode[]
const GRPC_VALUES = new Set(Object.values(GrpcStatus).filter((v) => typeof v === 'number'))
const MS_VALUES = new Set<number>(Object.values(MS_STATUS))
const isHttp = (n: unknown) => Number.isInteger(n) && (n as number) >= 400 && (n as number) <= 599

test('every row has all columns: MindSpore REST, gRPC, MindSpore error_code, TGI, OpenAI', () => {
  for (const code of CODES) {
    const row = errorRow(code)
    assert.deepEqual(Object.keys(row).sort(), ['grpc', 'http', 'ms', 'openai', 'tgi'], code)
    assert.ok(isHttp(row.http), `${code}.http`)
    assert.ok(GRPC_VALUES.has(row.grpc) && row.grpc !== GrpcStatus.OK, `${code}.grpc`)
    assert.ok(MS_VALUES.has(row.ms) && row.ms !== MS_STATUS.SUCCESS, `${code}.ms`)
    assert.ok(isHttp(row.tgi.status), `${code}.tgi.status`)
    assert.match(row.tgi.type, /^[a-z_]+$/, `${code}.tgi.type`)
    assert.ok(row.tgi.prefix === undefined || row.tgi.prefix.endsWith(': '), `${code}.tgi.prefix`)
    assert.ok(isHttp(row.openai.status), `${code}.openai.status`)
    assert.ok(['invalid_request_error', 'server_error', 'server_overloaded'].includes(row.openai.type), `${code}.openai.type`)
    // TGI's OpenAI routes share TGI's statuses; only the body shape differs.
    assert.equal(row.openai.status, row.tgi.status, `${code}: OpenAI and TGI statuses`)
    assert.equal(row.openai.type === 'server_error', row.openai.status >= 424 && row.openai.status !== 429 && row.openai.status !== 499, `${code}.openai.type`)
  }
})

test('the classes llm-serving.md §1.7 names keep TGI statuses and types', () => {
  const tgi = (c: ErrorCode) => ERROR_CODES[c].tgi
  assert.deepEqual(tgi('VALIDATION'), { status: 422, type: 'validation', prefix: 'Input validation error: ' })
  assert.deepEqual(tgi('INVALID_REQUEST'), tgi('VALIDATION'))
  assert.deepEqual(tgi('QUEUE_FULL'), { status: 429, type: 'overloaded' })
  assert.deepEqual(tgi('INFERENCE_FAILED'), { status: 424, type: 'generation' })
  assert.deepEqual(tgi('REPLICA_CRASHED'), { status: 424, type: 'generation' })
  assert.deepEqual(tgi('INTERNAL'), { status: 500, type: 'incomplete_generation' })
  assert.equal(ERROR_CODES.SERVABLE_NOT_FOUND.openai.code, 'model_not_found')
})

for (const code of CODES) {
  test(`${code}: every renderer answers from its row`, () => {
    const row = ERROR_CODES[code]
    const e = new ServeError(code, 'bad "x" \u00e9')
    // MindSpore: the body is byte-exact whatever the status; --rest-always-200 answers 200.
    assert.deepEqual(msRestError(e), { status: row.http, body: '{"error_msg":"bad \\"x\\" \u00e9"}' })
    assert.deepEqual(msRestError(e, true), { status: 200, body: '{"error_msg":"bad \\"x\\" \u00e9"}' })
    const prefix = 'prefix' in row.tgi ? row.tgi.prefix : ''
    assert.deepEqual(tgiError(e), { status: row.tgi.status, body: { error: `${prefix}bad "x" \u00e9`, error_type: row.tgi.type } })
    const openaiCode = 'code' in row.openai ? row.openai.code : null
    const message = `${prefix}bad "x" \u00e9`
    assert.deepEqual(openAiError(e), { status: row.openai.status, body: { error: { message, type: row.openai.type, param: null, code: openaiCode } } })
    const g = grpcError(e)
    assert.equal(g.code, row.grpc)
    assert.equal(g.details, 'bad "x" \u00e9')
    assert.equal(e.httpStatus, row.http)
    assert.equal(e.grpcStatus, row.grpc)
    assert.equal(e.msStatus, row.ms)
  })
}

test('TGI prefixes: not doubled, and deserialization texts stay bare (TGI sends them so)', () => {
  assert.equal(tgiError({ code: 'VALIDATION', message: 'Input validation error: x' }).body.error, 'Input validation error: x')
  assert.equal(tgiError({ code: 'VALIDATION', message: 'Failed to deserialize the JSON body' }).body.error, 'Failed to deserialize the JSON body')
  assert.equal(openAiError({ code: 'INVALID_REQUEST', message: 'x' }).body.error.message, 'Input validation error: x')
})

test('a code from outside the table renders as INTERNAL in every family', () => {
  const e = { code: 'FST_ERR_SOMETHING', message: 'm' }
  assert.equal(errorRow('FST_ERR_SOMETHING'), ERROR_CODES.INTERNAL)
  assert.equal(errorRow('toString'), ERROR_CODES.INTERNAL)
  assert.equal(msRestError(e).status, 500)
  assert.deepEqual(tgiError(e), { status: 500, body: { error: 'm', error_type: 'incomplete_generation' } })
  assert.equal(openAiError(e).body.error.type, 'server_error')
  assert.equal(grpcError(e).code, GrpcStatus.INTERNAL)
})

test('the REST error handler answers each route family in its own shape (body too large)', async (t) => {
  // 1 KiB limit: a 2 KiB body fails in fastify before any route runs, so the error handler answers.
  const app = buildRestServer({ registry: new ServableRegistry(), maxMsgMb: 1 / 1024, always200: false })
  t.after(() => app.close())
  const big = 'x'.repeat(2048)
  const ms = await app.inject({ method: 'POST', url: '/model/add:add_common', payload: big })
  assert.equal(ms.statusCode, 413)
  assert.equal(ms.body, '{"error_msg":"http message is bigger than 1024"}')
  const tgi = await app.inject({ method: 'POST', url: '/generate', payload: big })
  assert.equal(tgi.statusCode, 413)
  assert.deepEqual(tgi.json(), { error: 'http message is bigger than 1024', error_type: 'payload_too_large' })
  const oai = await app.inject({ method: 'POST', url: '/v1/completions', payload: big })
  assert.equal(oai.statusCode, 413)
  assert.deepEqual(oai.json(), { error: { message: 'http message is bigger than 1024', type: 'invalid_request_error', param: null, code: null } })
  // --rest-always-200 is MindSpore's behaviour: the other families keep their statuses.
  const always = buildRestServer({ registry: new ServableRegistry(), maxMsgMb: 1 / 1024, always200: true })
  t.after(() => always.close())
  assert.equal((await always.inject({ method: 'POST', url: '/model/add:add_common', payload: big })).statusCode, 200)
  assert.equal((await always.inject({ method: 'POST', url: '/generate', payload: big })).statusCode, 413)
})

// Runtime raises codes with facts; protocol/texts.ts words them per route family. MindSpore's texts
// are byte-exact (its clients match them), whatever runtime's own message says.
test('facts are worded per family: MindSpore byte-exact, TGI for the LLM overload, else the message', () => {
  const cases: Array<[Parameters<typeof factError>[2], string]> = [
    [{ reason: 'servable_unavailable', servable: 'add', method: 'add_common', version: 0 }, 'Request servable(add) method(add_common) , servable is not available'],
    [{ reason: 'servable_unavailable', servable: 'add', method: 'add_common', version: 3 }, 'Request servable(add) method(add_common)  version(3) , servable is not available'],
    [{ reason: 'method_unavailable', servable: 'add', method: 'nope' }, 'Request servable(add) method(nope) , method is not available'],
    [{ reason: 'no_instances', servable: 'add', method: 'add_common' }, 'Instances count of request cannot be 0, servable: add, method: add_common'],
    [{ reason: 'input_missing', servable: 'add', method: 'add_common', input: 'x2' }, 'Cannot find input x2 in instance input , servable add, method add_common'],
    [{ reason: 'queue_full', servable: 'add', method: 'add_common', limit: 100 }, 'Serving Error: enqueued requests count exceeds the limit 100'],
    [{ reason: 'llm_overloaded', limit: 8 }, 'Model is overloaded'],
  ]
  for (const [facts, ms] of cases) {
    const e = factError('INVALID_REQUEST', 'runtime words for logs', facts)
    assert.equal(msText(e), ms)
    // Facts survive the process boundary (errors cross as { code, message, details }).
    assert.equal(msText(JSON.parse(JSON.stringify(e.toJSON()))), ms)
    assert.equal(tgiText(e), facts.reason === 'llm_overloaded' ? 'Model is overloaded' : 'runtime words for logs')
  }
  const full = factError('QUEUE_FULL', 'queue full', { reason: 'queue_full', servable: 'a', method: 'm', limit: 7 })
  assert.deepEqual(msRestError(full), { status: 429, body: '{"error_msg":"Serving Error: enqueued requests count exceeds the limit 7"}' })
  const busy = factError('QUEUE_FULL', 'engines busy', { reason: 'llm_overloaded', limit: 2 })
  assert.deepEqual(tgiError(busy), { status: 429, body: { error: 'Model is overloaded', error_type: 'overloaded' } })
  assert.equal(grpcError(busy).details, 'Model is overloaded')
  // No facts: the message as it is, in every family.
  assert.equal(msText({ message: 'Given model input 0 data type kMSI_Int32 not match' }), 'Given model input 0 data type kMSI_Int32 not match')
})
