// The server YAML is checked whole before anything starts: unknown keys get a "did you mean", values
// are type-checked with the key path; the same suggestion helper serves the servable_config.ts options.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  HTTP_RANGES, parseHostPort, parseIntFlag, parseMaxMsgMb, readServerFile, SERVER_FILE_KEYS, timeoutOrderProblem, unknownServableWarnings, validateServerFile,
} from '../../src/config/server-file.ts'
import { editDistance, suggestName } from '../../src/config/suggest.ts'
import { DEFAULT_POLICY, instanceLimits, policyFor, POLICY_RANGES, requestTimeoutMs } from '../../src/runtime/policy.ts'
import { limitOf } from '../../src/protocol/body-parse.ts'

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
  // The same words in another style: camelCase, snake_case and flag spelling agree.
  assert.equal(suggestName('maxInstancesPerRequest', ['max_connections', 'max_instances_per_request']), 'max_instances_per_request')
  assert.equal(suggestName('request_timeout_ms', ['requestTimeoutMs', 'watchdogMs']), 'requestTimeoutMs')
  assert.equal(suggestName('--watchdog-ms', ['watchdog_ms']), 'watchdog_ms')
})

test('an unknown top-level YAML key is refused with a suggestion and the known keys', () => {
  assert.throws(() => validateServerFile({ devcies: [0, 1] }, 'server.yaml'), invalid(`server.yaml: unknown key "devcies"; did you mean "devices"? Known keys: ${KNOWN}`))
  assert.throws(() => validateServerFile({ MAX_MSG_MB: 10 }, 'server.yaml'), invalid(/unknown key "MAX_MSG_MB"; did you mean "max_msg_mb"\?/))
  assert.throws(() => validateServerFile({ colour: 'red' }, 'server.yaml'), invalid(`server.yaml: unknown key "colour". Known keys: ${KNOWN}`))
})

test('an unknown servables.<name> key is refused with its path and a suggestion', () => {
  assert.throws(() => validateServerFile({ servables: { add: { verison: 2 } } }, 's.yaml'), invalid('s.yaml: unknown key "servables.add.verison"; did you mean "version"? Known keys: version, versions, isolation, request_timeout_ms, max_instances_per_request, watchdog_ms'))
  assert.throws(() => validateServerFile({ servables: { add: { version: 2, versions: [1] } } }, 's.yaml'), invalid('s.yaml: servables.add gives both version and versions; keep one'))
})

test('YAML values of the wrong type name the key path and what is expected', () => {
  const bad = (doc: unknown, message: string | RegExp) => assert.throws(() => validateServerFile(doc, 'server.yaml'), invalid(message))
  bad({ max_msg_mb: 'big' }, 'server.yaml: max_msg_mb must be an integer in 1..512 (got "big")')
  bad({ max_msg_mb: 1000 }, 'server.yaml: max_msg_mb must be an integer in 1..512 (got 1000)')
  bad({ devices: [0, 'x'] }, 'server.yaml: devices must be a list of device ids (integers >= 0) or agents\' devices ("NAME:ID"), e.g. devices: [0, 1], or a comma string "0,1" (got [0,"x"])')
  bad({ devices: ['b:0', 'b:0'] }, 'server.yaml: devices lists device b:0 twice')
  bad({ devices: '0,a' }, /^server\.yaml: devices must be a list of device ids/)
  bad({ devices: [1, 1] }, 'server.yaml: devices lists device 1 twice')
  bad({ device_type: 'tpu' }, 'server.yaml: device_type must be one of cpu, cuda (got "tpu")')
  bad({ isolation: 'vm' }, 'server.yaml: isolation must be one of auto, process, thread, inline (got "vm")')
  bad({ grpc: 5500 }, 'server.yaml: grpc must be HOST:PORT (e.g. grpc: 127.0.0.1:5500, or null to turn the listener off) (got 5500)')
  bad({ rest: 'h:70000' }, 'server.yaml: rest: port 70000 is out of range 0..65535')
  bad({ servables: { add: { versions: [0] } } }, 'server.yaml: servables.add.versions must be a list of version numbers (integers >= 1), e.g. versions: [1, 2], or all (got [0])')
  bad({ servables: { add: { isolation: 'vm' } } }, 'server.yaml: servables.add.isolation must be one of auto, process, thread, inline (got "vm")')
  bad({ servables: { add: 2 } }, /^server\.yaml: servables\.add must be a mapping of keys \(version, versions, isolation, request_timeout_ms, /)
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
  assert.deepEqual(validateServerFile({ devices: '0, hostb:1' }, 'x').devices, [0, { id: 1, agent: 'hostb' }])
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

test('limit keys: a camelCase or flag spelling is pointed at the YAML key; a misspelt one gets the closest', () => {
  assert.throws(() => validateServerFile({ requestTimeoutMs: 5 }, 'server.yaml'), invalid(/^server\.yaml: unknown key "requestTimeoutMs"; did you mean "request_timeout_ms"\? Known keys: /))
  assert.throws(() => validateServerFile({ 'max-connections': 5 }, 'server.yaml'), invalid(/unknown key "max-connections"; did you mean "max_connections"\?/))
  assert.throws(() => validateServerFile({ servables: { add: { maxInstancesPerRequest: 2 } } }, 's.yaml'),
    invalid('s.yaml: unknown key "servables.add.maxInstancesPerRequest"; did you mean "max_instances_per_request"? '
      + 'Known keys: version, versions, isolation, request_timeout_ms, max_instances_per_request, watchdog_ms'))
  assert.throws(() => validateServerFile({ servables: { add: { watchdog_mss: 2000 } } }, 's.yaml'), invalid(/unknown key "servables\.add\.watchdog_mss"; did you mean "watchdog_ms"\?/))
  // Server-wide only: the connection limits are not per servable.
  assert.throws(() => validateServerFile({ servables: { add: { max_connections: 2 } } }, 's.yaml'), invalid(/^s\.yaml: unknown key "servables\.add\.max_connections"\. Known keys: /))
})

test('limit values are range-checked with the key path, the range and what 0 means', () => {
  const bad = (doc: unknown, message: string | RegExp) => assert.throws(() => validateServerFile(doc, 'server.yaml'), invalid(message))
  bad({ request_timeout_ms: -1 }, 'server.yaml: request_timeout_ms must be 0 (no limit) or an integer in 1..2147483647 (got -1)')
  // setTimeout fires at once past 2^31 - 1 ms: such a "limit" would time out every request.
  bad({ request_timeout_ms: 2 ** 31 }, 'server.yaml: request_timeout_ms must be 0 (no limit) or an integer in 1..2147483647 (got 2147483648)')
  bad({ request_timeout_ms: 1.5 }, /request_timeout_ms must be .* \(got 1\.5\)$/)
  bad({ max_instances_per_request: 0 }, 'server.yaml: max_instances_per_request must be an integer >= 1 (got 0)')
  // Shorter than a few heartbeats, a watchdog would kill healthy replicas.
  bad({ watchdog_ms: 500 }, 'server.yaml: watchdog_ms must be 0 (off) or an integer in 1000..2147483647 (got 500)')
  bad({ max_connections: -1 }, 'server.yaml: max_connections must be 0 (no limit) or an integer >= 1 (got -1)')
  bad({ headers_timeout_ms: 0 }, 'server.yaml: headers_timeout_ms must be an integer in 1..2147483647 (got 0)')
  bad({ body_timeout_ms: '60s' }, 'server.yaml: body_timeout_ms must be an integer in 1..2147483647 (got "60s")')
  bad({ strict: 'yes' }, 'server.yaml: strict must be true or false (got "yes")')
  bad({ servables: { add: { request_timeout_ms: -5 } } }, 'server.yaml: servables.add.request_timeout_ms must be 0 (no limit) or an integer in 1..2147483647 (got -5)')
  bad({ servables: { add: { watchdog_ms: 10 } } }, 'server.yaml: servables.add.watchdog_ms must be 0 (off) or an integer in 1000..2147483647 (got 10)')
  bad({ headers_timeout_ms: 20_000, body_timeout_ms: 5000 }, 'server.yaml: headers_timeout_ms (20000) > body_timeout_ms (5000): the body timeout counts '
    + 'from the request\'s start, headers included; raise body_timeout_ms or lower headers_timeout_ms')
})

test('limits in a good YAML: server-wide keys typed, per-servable ones as policy fields', () => {
  const f = validateServerFile({
    strict: true, request_timeout_ms: 30_000, max_instances_per_request: 64, watchdog_ms: 0, max_connections: 100, headers_timeout_ms: 5000, body_timeout_ms: 5000,
    servables: { add: { request_timeout_ms: 200, max_instances_per_request: 2, watchdog_ms: 8000, isolation: 'thread' }, image: { version: 1 } },
  }, 'server.yaml')
  assert.deepEqual(f, {
    strict: true, request_timeout_ms: 30_000, max_instances_per_request: 64, watchdog_ms: 0, max_connections: 100, headers_timeout_ms: 5000, body_timeout_ms: 5000,
    servables: { add: { isolation: 'thread', policy: { timeoutMs: 200, maxInstancesPerRequest: 2, watchdogMs: 8000 } }, image: { versions: [1] } },
  })
})

test('policy precedence: default < server-wide < servable_config.ts < YAML servables.<name>; the body parser limit by own name only', () => {
  const server = { timeoutMs: 1000, maxInstancesPerRequest: 50, watchdogMs: 4000 }
  const yaml = { add: { timeoutMs: 300 } }
  assert.deepEqual(policyFor('image', {}, yaml), DEFAULT_POLICY)
  assert.deepEqual(policyFor('image', server, yaml), server)
  assert.deepEqual(policyFor('image', server, yaml, { timeoutMs: 9000, watchdogMs: 0 }), { timeoutMs: 9000, maxInstancesPerRequest: 50, watchdogMs: 0 })
  assert.deepEqual(policyFor('add', server, yaml, { timeoutMs: 9000, maxInstancesPerRequest: 8 }), { timeoutMs: 300, maxInstancesPerRequest: 8, watchdogMs: 4000 })
  // A request may ask for less than its servable's limit, never more.
  const p = policyFor('add', server, yaml)
  assert.equal(requestTimeoutMs(p, 100), 100)
  assert.equal(requestTimeoutMs(p, 5000), 300)
  const limits = instanceLimits(server, { add: { maxInstancesPerRequest: 2 } })
  assert.equal(limitOf(limits, 'add'), 2)
  assert.equal(limitOf(limits, 'image'), 50)
  assert.equal(limitOf(limits, 'constructor'), 50, 'an inherited property is no limit')
  assert.equal(limitOf(limits, '__proto__'), 50)
})

test('flag values of the limits are checked against the same ranges, naming the flag', () => {
  assert.equal(parseIntFlag('--watchdog-ms', '0', POLICY_RANGES.watchdogMs), 0)
  assert.equal(parseIntFlag('--watchdog-ms', '1000', POLICY_RANGES.watchdogMs), 1000)
  assert.throws(() => parseIntFlag('--watchdog-ms', '999', POLICY_RANGES.watchdogMs),
    { code: 'INVALID_REQUEST', message: '--watchdog-ms must be 0 (off) or an integer in 1000..2147483647 (got 999)' })
  assert.throws(() => parseIntFlag('--request-timeout-ms', '', POLICY_RANGES.timeoutMs), { code: 'INVALID_REQUEST', message: /^--request-timeout-ms must be 0 \(no limit\)/ })
  assert.throws(() => parseIntFlag('--max-connections', 'many', HTTP_RANGES.maxConnections), { code: 'INVALID_REQUEST', message: '--max-connections must be 0 (no limit) or an integer >= 1 (got many)' })
  assert.equal(timeoutOrderProblem({ ms: 10_000, name: '--headers-timeout-ms', isDefault: true }, { ms: 60_000, name: '--body-timeout-ms', isDefault: true }), null)
  assert.equal(timeoutOrderProblem({ ms: 10_000, name: '--headers-timeout-ms', isDefault: true }, { ms: 5000, name: 'server.yaml: body_timeout_ms' }),
    '--headers-timeout-ms (10000, the default) > server.yaml: body_timeout_ms (5000): the body timeout counts from the request\'s start, headers included; '
    + 'raise server.yaml: body_timeout_ms or lower --headers-timeout-ms')
})

test('a servables.<name> entry naming no loaded servable is a warning (it may appear by hot reload), with a suggestion', () => {
  const f = validateServerFile({ servables: { add: { watchdog_ms: 0 }, imgae: { request_timeout_ms: 5 }, later: null } }, 'server.yaml')
  assert.deepEqual(unknownServableWarnings(f, 'server.yaml', ['add', 'image']), [
    'server.yaml: servables.imgae names no servable in the servable directory (it applies if one of that name appears); did you mean "image"? Known servables: add, image',
    'server.yaml: servables.later names no servable in the servable directory (it applies if one of that name appears). Known servables: add, image',
  ])
  assert.deepEqual(unknownServableWarnings(f, 'server.yaml', ['add', 'imgae', 'later']), [])
})
