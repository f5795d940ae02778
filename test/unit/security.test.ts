// TLS files, API keys and the ops YAML keys: checked before anything starts, errors name the flag or
// key and the fix; the key check is a Bearer match against every configured key.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ApiKeys, collectApiKeys, isOpenGrpcPath, isOpenRestPath, loadTls } from '../../src/config/security.ts'
import { readServerFile, validateServerFile } from '../../src/config/server-file.ts'
import { acceptedRequestId } from '../../src/protocol/request-id.ts'

const invalid = (message: RegExp) => ({ code: 'CONFIG_INVALID', message })
const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'

test('ApiKeys: Bearer (any case) with one of the keys; anything else is refused', () => {
  const keys = new ApiKeys(['alpha', 'beta-2'])
  for (const ok of ['Bearer alpha', 'bearer beta-2', 'BEARER  alpha ']) assert.equal(keys.check(ok), true, ok)
  for (const no of [undefined, '', 'alpha', 'Basic alpha', 'Bearer', 'Bearer alph', 'Bearer alphaa', 'Bearer beta']) assert.equal(keys.check(no), false, String(no))
})

test('collectApiKeys: flags, a key file (comments, blank lines) and MS_SERVE_API_KEY add up; bad sources name themselves', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ms-serve-keys-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'k.txt'), '# ops\nfile-1\n\n  file-2  \n')
  assert.deepEqual(collectApiKeys(['flag'], [{ path: join(dir, 'k.txt'), from: '--api-key-file' }], 'env-1, env-2,flag'), ['flag', 'file-1', 'file-2', 'env-1', 'env-2'])
  assert.deepEqual(collectApiKeys([], [], undefined), [])
  assert.throws(() => collectApiKeys(['has space'], [], undefined), invalid(/^--api-key: an API key must be a non-empty string without spaces$/))
  assert.throws(() => collectApiKeys([], [{ path: join(dir, 'nope'), from: '--api-key-file' }], undefined), invalid(/^--api-key-file .*nope: cannot read the API key file/))
  writeFileSync(join(dir, 'empty.txt'), '# nothing\n')
  assert.throws(() => collectApiKeys([], [{ path: join(dir, 'empty.txt'), from: 'server.yaml: api_key_file' }], undefined), invalid(/^server\.yaml: api_key_file .*empty\.txt: the file holds no API key/))
})

test('loadTls: both cert and key, readable PEM files; the message names the flag or YAML key', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ms-serve-tls-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const pem = join(dir, 'a.pem')
  writeFileSync(pem, PEM)
  writeFileSync(join(dir, 'der.bin'), Buffer.from([0x30, 0x82, 0x01]))
  assert.equal(loadTls({}), null)
  assert.throws(() => loadTls({ cert: { path: pem, from: '--tls-cert' } }), invalid(/add --tls-key FILE \(YAML tls\.key\)/))
  assert.throws(() => loadTls({ cert: { path: pem, from: '--tls-cert' }, key: { path: join(dir, 'missing.key'), from: 'server.yaml: tls.key' } }), invalid(/^server\.yaml: tls\.key .*missing\.key: cannot read the private key/))
  assert.throws(() => loadTls({ cert: { path: join(dir, 'der.bin'), from: '--tls-cert' }, key: { path: pem, from: '--tls-key' } }), invalid(/--tls-cert .*der\.bin: not a PEM file/))
  const m = loadTls({ cert: { path: pem, from: '--tls-cert' }, key: { path: pem, from: '--tls-key' }, ca: { path: pem, from: '--tls-ca' } })!
  assert.equal(m.clientAuth, 'both')
  assert.equal(m.ca!.toString(), PEM)
})

test('server YAML: tls paths resolve against the file\'s folder; api_key_file, log_level and log_format are checked', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ms-serve-yaml-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const yaml = join(dir, 'server.yaml')
  writeFileSync(yaml, 'tls: { cert: certs/s.pem, key: /abs/s.key, client_auth: grpc }\napi_key_file: keys.txt\nlog_level: debug\nlog_format: pretty\n')
  const f = readServerFile(yaml)
  assert.deepEqual(f.tls, { cert: join(dir, 'certs', 's.pem'), key: '/abs/s.key', client_auth: 'grpc' })
  assert.equal(f.api_key_file, join(dir, 'keys.txt'))
  assert.equal(f.log_level, 'debug')
  assert.equal(f.log_format, 'pretty')
  assert.throws(() => validateServerFile({ tls: { cert: 'a', keys: 'b' } }, 's.yaml'), invalid(/unknown key "tls\.keys"; did you mean "key"\?/))
  assert.throws(() => validateServerFile({ tls: { client_auth: 'rest' } }, 's.yaml'), invalid(/tls\.client_auth must be one of both, grpc/))
  assert.throws(() => validateServerFile({ log_level: 'verbose' }, 's.yaml'), invalid(/log_level must be one of fatal, error, warn, info, debug, trace, silent/))
  assert.throws(() => validateServerFile({ api_key_file: 3 }, 's.yaml'), invalid(/api_key_file must be a file path/))
})

test('open routes: health, readiness and /metrics on REST; health and reflection on gRPC; request ids kept only when plain', () => {
  for (const p of ['/health', '/metrics', '/v2/health/live', '/v2/health/ready', '/v2/models/add/ready', '/v2/models/add/versions/2/ready', '/metrics?x=1', '/console', '/console/app.js', '/console/app.css']) assert.equal(isOpenRestPath(p), true, p)
  for (const p of ['/model/add:add_common', '/v1/models', '/info', '/stats', '/generate', '/v2/models/add/infer', '/v2/models/add/ready/x', '/console/stream', '/console/other.js', '/servables']) assert.equal(isOpenRestPath(p), false, p)
  assert.equal(isOpenGrpcPath('/grpc.health.v1.Health/Check'), true)
  assert.equal(isOpenGrpcPath('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo'), true)
  assert.equal(isOpenGrpcPath('/mindspore.serving.proto.MSService/Predict'), false)
  assert.equal(acceptedRequestId('abc-123_x.y:z'), 'abc-123_x.y:z')
  for (const bad of ['', 'has space', 'x'.repeat(129), 'new\nline', undefined, ['a']]) assert.equal(acceptedRequestId(bad), undefined, String(bad))
})

test('accessWriter writes the line pino would write for the same fields (json), and pino-pretty reads it', async () => {
  const { PassThrough } = await import('node:stream')
  const { accessWriter, createLogger, flushAccessLines } = await import('../../src/log.ts')
  const lines = (s: InstanceType<typeof PassThrough>) => String(s.read() ?? '').split('\n').filter(Boolean)
  const out = new PassThrough()
  const logger = createLogger({ destination: out }, { replica: 'r@1 "q"' })
  const fields = { event: 'access', request_id: 'a"b\\c', peer: '127.0.0.1:5000', servable: 'café', ctl: 'tab\there', status: 200, duration_ms: 1.25, ok: true, skipped: undefined }
  accessWriter(logger, 'request')!(fields)
  assert.equal(out.read(), null, 'gathered, not written yet')
  flushAccessLines(logger)
  logger.info(fields, 'request')
  const [mine, theirs] = lines(out).map((l) => JSON.parse(l))
  assert.equal(typeof mine.time, 'string')
  assert.deepEqual({ ...mine, time: 0 }, { ...theirs, time: 0 })
  assert.equal(mine.request_id, 'a"b\\c')
  assert.equal(accessWriter(createLogger({ level: 'warn', destination: out }), 'request'), null, 'off below info')
  const pretty = new PassThrough()
  const prettyLogger = createLogger({ format: 'pretty', destination: pretty })
  accessWriter(prettyLogger, 'request')!({ event: 'access', status: 201 })
  flushAccessLines(prettyLogger)
  const text = String(pretty.read())
  assert.match(text, /INFO.*request/)
  assert.match(text, /status: 201/)
})
