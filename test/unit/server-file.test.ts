// The server YAML is checked whole before anything starts: unknown keys get a "did you mean", values
// are type-checked with the key path; the same suggestion helper serves the servable_config.ts options.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseHostPort, parseMaxMsgMb, readServerFile, SERVER_FILE_KEYS, validateServerFile } from '../../src/config/server-file.ts'
import { editDistance, suggestName } from '../../src/config/suggest.ts'

const KNOWN = Object.keys(SERVER_FILE_KEYS).join(', ')
const invalid = (message: string | RegExp) => ({ code: 'CONFIG_INVALID', message })

test('suggestName: case-insensitive match, then at most 2 edits (a transposition is one), never for short unrelated names', () => {
  assert.equal(editDistance('devcies', 'devices'), 1)
  assert.equal(editDistance('kitten', 'sitting'), 3)
  assert.equal(suggestName('maxBatchsize', ['file', 'maxBatchSize']), 'maxBatchSize')
  assert.equal(suggestName('devcies', ['grpc', 'devices', 'device_type']), 'devices')
  assert.equal(suggestName('verison', ['version', 'versions']), 'version')
  assert.equal(suggestName('tga', ['tag', 'outputs']), 'tag')
  assert.equal(suggestName('ab', ['tag']), undefined)
  assert.equal(suggestName('colour', ['file', 'name']), undefined)
})

test('an unknown top-level YAML key is refused with a suggestion and the known keys', () => {
  assert.throws(() => validateServerFile({ devcies: [0, 1] }, 'server.yaml'), invalid(`server.yaml: unknown key "devcies"; did you mean "devices"? Known keys: ${KNOWN}`))
  assert.throws(() => validateServerFile({ MAX_MSG_MB: 10 }, 'server.yaml'), invalid(/unknown key "MAX_MSG_MB"; did you mean "max_msg_mb"\?/))
  assert.throws(() => validateServerFile({ colour: 'red' }, 'server.yaml'), invalid(`server.yaml: unknown key "colour". Known keys: ${KNOWN}`))
})

test('an unknown servables.<name> key is refused with its path and a suggestion', () => {
  assert.throws(() => validateServerFile({ servables: { add: { verison: 2 } } }, 's.yaml'), invalid('s.yaml: unknown key "servables.add.verison"; did you mean "version"? Known keys: version, versions, isolation'))
  assert.throws(() => validateServerFile({ servables: { add: { version: 2, versions: [1] } } }, 's.yaml'), invalid('s.yaml: servables.add gives both version and versions; keep one'))
})

test('YAML values of the wrong type name the key path and what is expected', () => {
  const bad = (doc: unknown, message: string | RegExp) => assert.throws(() => validateServerFile(doc, 'server.yaml'), invalid(message))
  bad({ max_msg_mb: 'big' }, 'server.yaml: max_msg_mb must be an integer in 1..512 (got "big")')
  bad({ max_msg_mb: 1000 }, 'server.yaml: max_msg_mb must be an integer in 1..512 (got 1000)')
  bad({ devices: [0, 'x'] }, 'server.yaml: devices must be a list of device ids (integers >= 0), e.g. devices: [0, 1], or a comma string "0,1" (got [0,"x"])')
  bad({ devices: '0,a' }, /^server\.yaml: devices must be a list of device ids/)
  bad({ devices: [1, 1] }, 'server.yaml: devices lists device 1 twice')
  bad({ device_type: 'tpu' }, 'server.yaml: device_type must be one of cpu, cuda (got "tpu")')
  bad({ isolation: 'vm' }, 'server.yaml: isolation must be one of process, thread, inline (got "vm")')
  bad({ grpc: 5500 }, 'server.yaml: grpc must be HOST:PORT (e.g. grpc: 127.0.0.1:5500, or null to turn the listener off) (got 5500)')
  bad({ rest: 'h:70000' }, 'server.yaml: rest: port 70000 is out of range 0..65535')
  bad({ servables: { add: { versions: [0] } } }, 'server.yaml: servables.add.versions must be a list of version numbers (integers >= 1), e.g. versions: [1, 2], or all (got [0])')
  bad({ servables: { add: { isolation: 'vm' } } }, 'server.yaml: servables.add.isolation must be one of process, thread, inline (got "vm")')
  bad({ servables: { add: 2 } }, /^server\.yaml: servables\.add must be a mapping of keys \(version, versions, isolation\)/)
  bad({ servables: ['add'] }, /^server\.yaml: servables must be a mapping of servable names/)
  bad(['devices'], /^server\.yaml: the file must be a mapping of keys \(grpc, rest, /)
})

test('a good YAML becomes a typed object: addresses parsed, devices a list, version folded into versions', () => {
  const f = validateServerFile({
    grpc: null, rest: '[::1]:1500', devices: '0, 2', device_type: 'cpu', isolation: 'thread', max_msg_mb: 8,
    servables: { add: { version: 2 }, image: { versions: 'all', isolation: 'inline' }, llm: null },
  }, 'server.yaml')
  assert.deepEqual(f, {
    grpc: null, rest: { host: '::1', port: 1500 }, devices: [0, 2], device_type: 'cpu', isolation: 'thread', max_msg_mb: 8,
    servables: { add: { versions: [2] }, image: { versions: 'all', isolation: 'inline' }, llm: {} },
  })
  assert.deepEqual(validateServerFile({ devices: [1, 0] }, 'x').devices, [1, 0])
  assert.deepEqual(validateServerFile({ devices: 3 }, 'x').devices, [3])
  assert.deepEqual(validateServerFile(null, 'x'), {}, 'an empty file is allowed')
})

test('readServerFile reads, parses and checks; a parse error names the file', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ms-serve-yaml-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const p = join(dir, 'server.yaml')
  writeFileSync(p, 'devices: [0, 1]\nservables:\n  add: { versions: [1, 2] }\n')
  assert.deepEqual(readServerFile(p), { devices: [0, 1], servables: { add: { versions: [1, 2] } } })
  writeFileSync(p, 'devcies: [0]\n')
  assert.throws(() => readServerFile(p), invalid(`${p}: unknown key "devcies"; did you mean "devices"? Known keys: ${KNOWN}`))
  writeFileSync(p, 'servables: [\n')
  assert.throws(() => readServerFile(p), invalid(new RegExp(`^cannot read server config ${p}: `)))
})

test('flag values are checked with the flag in the message', () => {
  assert.deepEqual(parseHostPort('--grpc', '127.0.0.1:0'), { host: '127.0.0.1', port: 0 })
  assert.throws(() => parseHostPort('--grpc', 'nohost'), { code: 'INVALID_REQUEST', message: '--grpc expects HOST:PORT, e.g. --grpc 127.0.0.1:5500 (got "nohost")' })
  assert.throws(() => parseHostPort('--rest', 'h:99999'), { code: 'INVALID_REQUEST', message: '--rest: port 99999 is out of range 0..65535' })
  assert.equal(parseMaxMsgMb('100'), 100)
  assert.throws(() => parseMaxMsgMb('0'), { code: 'INVALID_REQUEST', message: '--max-msg-mb must be an integer in 1..512 (got 0)' })
})
