// Big MindSpore bodies: read into one buffer of their Content-Length (no chunk list + copy),
// refused from a prefix when far over their instance limit, their bytes dropped once decoded.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { OFFLOAD_BYTES, parseMsBody, type ParseTask } from '../../src/protocol/body-parse.ts'
import { parseJsonBody } from '../../src/protocol/rest/ms-json-reader.ts'
import { readBody } from '../../src/protocol/rest/server.ts'

function read(chunks: Array<string | Buffer>, contentLength: string | undefined, limit = 1 << 20): Promise<Buffer> {
  const s = new PassThrough()
  const p = new Promise<Buffer>((resolve, reject) => readBody(s, contentLength, limit, (err, body) => (err ? reject(err) : resolve(body!))))
  for (const c of chunks) s.write(typeof c === 'string' ? Buffer.from(c) : c)
  s.end()
  return p
}

test('readBody: one buffer of Content-Length (owning its memory above OFFLOAD_BYTES: transferable); chunked bodies are collected', async () => {
  const body = await read(['{"instances":', '[1,', '2]}'], '19')
  assert.equal(body.toString(), '{"instances":[1,2]}')
  // A small body in one chunk is that chunk (no copy).
  const one = Buffer.from('{"instances":[1]}')
  assert.equal(await read([one], String(one.length)), one)
  // Big enough for the parse worker: one buffer that owns its memory, so it can be transferred.
  const half = 'x'.repeat(OFFLOAD_BYTES / 2 + 1)
  const big = await read([half, half], String(half.length * 2))
  assert.equal(big.toString(), half + half)
  assert.equal(big.byteOffset, 0)
  assert.equal(big.buffer.byteLength, half.length * 2, 'not a view into the shared pool')
  assert.equal((await read(['ab', 'cd'], undefined)).toString(), 'abcd')
  assert.equal((await read([], '0')).length, 0)
})

test('readBody: over the limit (declared or streamed) is fastify\'s too-large error; a length mismatch is a 400', async () => {
  await assert.rejects(read(['x'], '2000', 1000), { code: 'FST_ERR_CTP_BODY_TOO_LARGE' })
  await assert.rejects(read(['x'.repeat(600), 'y'.repeat(600)], undefined, 1000), { code: 'FST_ERR_CTP_BODY_TOO_LARGE' })
  await assert.rejects(read(['abc'], '5'), { code: 'INVALID_REQUEST', message: 'request body size does not match its Content-Length (5)' })
  await assert.rejects(read(['abcdef'], '5'), { code: 'INVALID_REQUEST' })
})

const limits = (max: number) => ({ fallback: max, byName: {} })
const task = (text: string, max: number): ParseTask => ({ kind: 'ms-json', body: new Uint8Array(Buffer.from(text)), limits: limits(max), servable: 'add' })
const inst = '{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[5.0,6.0],[7.0,8.0]]}'
/** The verdict of the reader on the whole text, without the prefix probe. */
function fullVerdict(text: string, max: number): string {
  try {
    parseJsonBody(text, { maxTopArray: max, tooMany: (m) => new Error(`tooMany ${m}`) })
    return 'ok'
  } catch (e) { return (e as Error).message }
}
function verdict(t: ParseTask): string {
  try {
    return `${parseMsBody(t).instances.length} instances`
  } catch (e) { return (e as Error).message }
}

test('a body far over its instance limit is refused from a prefix, with the whole body\'s verdict; the probe never changes one', () => {
  const many = `{"instances":[${new Array(200_000).fill(inst).join(',')}]}` // 11 MB, limit 3
  assert.match(verdict(task(many, 3)), /^request has more than 3 instances, the limit of servable add; /)
  assert.equal(fullVerdict(many, 3), 'tooMany 3')
  // A syntax error before the limit is reached stays that syntax error.
  const broken = `{"instances":[${inst},${inst.replace('2.0', '2.0.')},${new Array(200_000).fill(inst).join(',')}]}`
  assert.equal(verdict(task(broken, 3)), fullVerdict(broken, 3))
  assert.match(verdict(task(broken, 3)), /^Illegal JSON format\./)
  // Garbage right after the (limit+1)-th instance: tooMany either way (it is complete first).
  const tail = `{"instances":[${inst},${inst},${inst},${inst}, oops ${' '.repeat(10_000_000)}]}`
  assert.equal(fullVerdict(tail, 3), 'tooMany 3')
  assert.match(verdict(task(tail, 3)), /more than 3 instances/)
  // Large instances within the limit: the prefix ends mid-document and decides nothing.
  const wide = `{"instances":[${Array.from({ length: 3 }, () => `{"x1":[${new Array(600_000).fill('[1.5]').join(',')}]}`).join(',')}]}`
  assert.ok(wide.length > 8 * ((1 << 20) + 4 * 128))
  assert.equal(verdict(task(wide, 3)), '3 instances')
})

test('parseMsBody drops the bytes of a task it owns once decoded, and leaves a borrowed task alone', () => {
  const text = `{"instances":[${inst}]}`
  const owned = task(text, 10)
  assert.equal(parseMsBody(owned, undefined, true).instances.length, 1)
  assert.equal(owned.body.byteLength, 0)
  const borrowed = task(text, 10)
  parseMsBody(borrowed)
  assert.equal(borrowed.body.byteLength, text.length)
})
