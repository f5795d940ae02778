/**
 * What the master lets an agent fetch (runtime/agent-files.ts, issue 13): serveFile answers only
 * for listed files (others, and traversal, get an error chunk naming the path), in 1 MiB chunks
 * with the sha256 on the last; servableFiles lists a model's external data and an LLM's tokenizer
 * and chat-template files and the data files beside a config, so an agent gets everything the load
 * reads; a cached file's digest is kept beside it across agent restarts.
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CHUNK_BYTES, externalDataFiles, serveFile, servableFiles, type FileChunk } from '../../src/runtime/agent-files.ts'
import { cachedPath, cachedSha256 } from '../../src/runtime/agent-cache.ts'
import { writeExternalDataModel } from '../../src/models/external-data.ts'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'
import type { ValidServable } from '../../src/config/validate.ts'

const dir = mkdtempSync(join(tmpdir(), 'agent-files-'))
after(() => rmSync(dir, { recursive: true, force: true }))

const serve = async (allowed: string[], path: string) => {
  const chunks: FileChunk[] = []
  await serveFile(new Set(allowed), 7, path, async (c) => { chunks.push(c); return true })
  return chunks
}

test('serveFile streams a listed file in CHUNK_BYTES pieces, in order, with its sha256 on the last', async () => {
  const f = join(dir, 'big.bin')
  const bytes = randomBytes(2 * CHUNK_BYTES + 12345)
  writeFileSync(f, bytes)
  const chunks = await serve([f], f)
  assert.deepEqual(chunks.map((c) => [c.offset, c.data.length, c.last]), [[0, CHUNK_BYTES, false], [CHUNK_BYTES, CHUNK_BYTES, false], [2 * CHUNK_BYTES, 12345, true]])
  assert.ok(chunks.every((c) => c.request === 7 && c.path === f && c.size === bytes.length && !c.error))
  assert.deepEqual(Buffer.concat(chunks.map((c) => c.data)), bytes)
  assert.equal(chunks.at(-1)!.sha256, createHash('sha256').update(bytes).digest('hex'))
  const empty = join(dir, 'empty')
  writeFileSync(empty, '')
  assert.deepEqual((await serve([empty], empty)).map((c) => [c.data.length, c.last, c.error]), [[0, true, '']])
})

test('serveFile refuses a file not assigned to the agent, and paths that climb out of a listed folder', async () => {
  const listed = join(dir, 'add.onnx')
  writeFileSync(listed, 'model')
  const secret = join(dir, 'secret')
  writeFileSync(secret, 'secret')
  for (const path of [secret, `${dir}/sub/../secret`, 'secret', '/etc/passwd']) {
    const chunks = await serve([listed], path)
    assert.equal(chunks.length, 1, path)
    assert.equal(chunks[0]!.last, true)
    assert.equal(chunks[0]!.data.length, 0)
    assert.equal(chunks[0]!.error, `${path} is not a file of any servable assigned to this agent; the master serves only those`)
  }
  // Listed but gone: the read error is reported in the chunk, nothing throws.
  const gone = join(dir, 'gone.onnx')
  const chunks = await serve([gone], gone)
  assert.match(chunks[0]!.error, /the master cannot read .*gone\.onnx: ENOENT/)
})

test('the agent caches only plain absolute paths under its root', () => {
  assert.equal(cachedPath('/cache/m', '/srv/a/1/add.onnx'), '/cache/m/srv/a/1/add.onnx')
  for (const bad of ['/srv/../../etc/passwd', 'relative/x', '/srv/./x']) assert.throws(() => cachedPath('/cache/m', bad), /not an absolute normalized path/)
})

test('servableFiles lists external data beside models and an LLM\'s tokenizer and chat-template files', async () => {
  const sdir = join(dir, 'llm')
  mkdirSync(join(sdir, '1'), { recursive: true })
  const model = join(sdir, '1', 'model.onnx')
  await writeExternalDataModel(model, buildDecoder(DECODER_CONFIGS.tiny))
  assert.deepEqual(externalDataFiles(model), [join(sdir, '1', 'model.onnx_data')])
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'generation_config.json']) writeFileSync(join(sdir, '1', f), '{}')
  writeFileSync(join(sdir, 'config.json'), '{}')
  writeFileSync(join(sdir, 'servable_config.ts'), 'export default 1')
  // Data files the config may open itself travel too; an ONNX file it does not declare (and its data) and hidden files do not.
  writeFileSync(join(sdir, 'labels.json'), '["a","b"]')
  writeFileSync(join(sdir, '1', 'notes.txt'), 'x')
  writeFileSync(join(sdir, '.env'), 'SECRET=1')
  mkdirSync(join(sdir, 'lib'))
  writeFileSync(join(sdir, 'lib', 'names.ts'), 'export const x = 1')
  mkdirSync(join(sdir, '2'))
  writeFileSync(join(sdir, '2', 'other-version.txt'), 'not served')
  await writeExternalDataModel(join(sdir, '1', 'unused.onnx'), buildDecoder(DECODER_CONFIGS.tiny))
  const s = { dir: sdir, versionDir: join(sdir, '1'), configFile: join(sdir, 'servable_config.ts'), models: [], llm: { path: model } } as unknown as ValidServable
  assert.deepEqual(servableFiles(s).sort(), [
    join(sdir, '1', 'chat_template.jinja'), join(sdir, '1', 'generation_config.json'), join(sdir, '1', 'model.onnx'), join(sdir, '1', 'model.onnx_data'),
    join(sdir, '1', 'tokenizer.json'), join(sdir, '1', 'tokenizer_config.json'), join(sdir, 'config.json'), join(sdir, 'servable_config.ts'),
    join(sdir, 'labels.json'), join(sdir, '1', 'notes.txt'), join(sdir, 'lib', 'names.ts'),
  ].sort())
  // A model without external data lists none; a file that is not a model lists none either.
  const inline = join(sdir, 'inline.onnx')
  writeFileSync(inline, buildDecoder(DECODER_CONFIGS.tiny))
  assert.deepEqual(externalDataFiles(inline), [])
  assert.deepEqual(externalDataFiles(join(sdir, 'config.json')), [])
})

test('a cached file\'s sha256 is kept beside it: trusted while its size and mtime match, computed again when they change', async () => {
  const f = join(dir, 'cached.bin')
  writeFileSync(f, 'model bytes')
  const real = createHash('sha256').update('model bytes').digest('hex')
  assert.equal(await cachedSha256(f), real)
  const digest = JSON.parse(readFileSync(`${f}.ms-serve-sha256`, 'utf8'))
  assert.equal(digest.sha256, real)
  // A restarted agent reads the digest instead of hashing: shown by a digest that lies.
  writeFileSync(`${f}.ms-serve-sha256`, JSON.stringify({ ...digest, sha256: 'f'.repeat(64) }))
  assert.equal(await cachedSha256(f), 'f'.repeat(64))
  // Changed content (size and mtime): hashed again, digest rewritten.
  writeFileSync(f, 'other model bytes')
  const other = createHash('sha256').update('other model bytes').digest('hex')
  assert.equal(await cachedSha256(f), other)
  assert.equal(JSON.parse(readFileSync(`${f}.ms-serve-sha256`, 'utf8')).sha256, other)
  assert.equal(await cachedSha256(join(dir, 'absent.bin')), null)
})
