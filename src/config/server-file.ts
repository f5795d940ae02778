/**
 * Server settings from the YAML file (`ms-serve start --config server.yaml`) and the value checks
 * of the matching command-line flags. The YAML is checked key by key into a typed object before
 * anything starts: unknown keys are refused with a suggestion, values are type-checked with the key
 * path in the message. cli/main.ts merges the two (flags win).
 */
import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { CLIENT_AUTH } from './security.ts'
import { LOG_FORMATS, LOG_LEVELS } from '../log.ts'
import { parse as parseYaml } from 'yaml'
import { ServeError } from '../errors.ts'
import { ISOLATION_SETTINGS, type DeviceType, type IsolationSetting } from '../runtime/devices.ts'
import { intRange, inRange, MAX_TIMER_MS, POLICY_RANGES, type IntRange, type ServingPolicy } from '../runtime/policy.ts'
import type { HostPort, HttpLimits } from '../server.ts'
import { isOptionsObject } from './define.ts'
import { parseDeviceRef } from './device-flags.ts'
import { unknownKeyMessage, unknownKeys } from './suggest.ts'

/** Where a YAML value sits: the file (as given on the command line) and the dotted key path. */
interface KeyAt { file: string; key: string }
type Check<T> = (v: unknown, at: KeyAt) => T

function invalid(at: KeyAt, msg: string): never {
  throw new ServeError('CONFIG_INVALID', `${at.file}: ${msg}`)
}

function wrongValue(at: KeyAt, expected: string, v: unknown): never {
  invalid(at, `${at.key} must be ${expected} (got ${JSON.stringify(v)})`)
}

const MAX_MSG_MB = { min: 1, max: 512 } as const

/** Splits `HOST:PORT`; undefined when it has no such shape, `port > 65535` is left to the caller. */
function splitHostPort(text: string): HostPort | undefined {
  const m = /^(.*):(\d+)$/.exec(text.trim())
  if (!m || !m[1]) return undefined
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) }
}

function oneOf<T extends string>(choices: readonly T[]): Check<T> {
  return (v, at) => ((choices as readonly unknown[]).includes(v) ? v as T : wrongValue(at, `one of ${choices.join(', ')}`, v))
}

function intIn(min: number, max: number): Check<number> {
  return (v, at) => (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
    ? v : wrongValue(at, max === Infinity ? `an integer >= ${min}` : `an integer in ${min}..${max}`, v))
}

function ranged(r: IntRange): Check<number> {
  return (v, at) => (inRange(r, v) ? v : wrongValue(at, r.expected, v))
}

/** true or false. */
const bool: Check<boolean> = (v, at) => (typeof v === 'boolean' ? v : wrongValue(at, 'true or false', v))

/** `host:port`, or null to turn that listener off. */
const listenAddress: Check<HostPort | null> = (v, at) => {
  if (v === null) return null
  const example = `e.g. ${at.key}: 127.0.0.1:${at.key === 'grpc' ? 5500 : 1500}, or null to turn the listener off`
  const hp = typeof v === 'string' ? splitHostPort(v) : undefined
  if (!hp) wrongValue(at, `HOST:PORT (${example})`, v)
  if (hp.port > 65535) invalid(at, `${at.key}: port ${hp.port} is out of range 0..65535`)
  return hp
}

/**
 * A list of devices, a comma string "0,1" (as --devices), or one id. An entry "NAME:ID" is device ID
 * of the agent named NAME (as in --devices); such entries come back as { id, agent }, ids as numbers.
 */
const deviceIds: Check<Array<number | { id: number; agent: string }>> = (v, at) => {
  const items = typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : Array.isArray(v) ? v : [v]
  const expected = 'a list of device ids (integers >= 0) or agents\' devices ("NAME:ID"), e.g. devices: [0, 1], or a comma string "0,1"'
  if (items.length === 0) wrongValue(at, expected, v)
  const out: Array<number | { id: number; agent: string }> = []
  const seen = new Set<string>()
  for (const item of items) {
    const ref = typeof item === 'string' ? parseDeviceRef(item) : Number.isInteger(item) && (item as number) >= 0 ? { id: item as number } : null
    if (!ref) wrongValue(at, expected, v)
    const key = ref.agent ? `${ref.agent}:${ref.id}` : String(ref.id)
    if (seen.has(key)) invalid(at, `${at.key} lists device ${key} twice`)
    seen.add(key)
    out.push(ref.agent ? { id: ref.id, agent: ref.agent } : ref.id)
  }
  return out
}

const versionList: Check<number[] | 'all'> = (v, at) => {
  if (v === 'all') return 'all'
  if (!Array.isArray(v) || v.length === 0 || v.some((x) => !Number.isInteger(x) || x < 1)) {
    wrongValue(at, 'a list of version numbers (integers >= 1), e.g. versions: [1, 2], or all', v)
  }
  return v as number[]
}

/**
 * The limit keys, YAML name -> policy field: server-wide at the top level, per servable under
 * `servables.<name>`. Each is also a flag: `request_timeout_ms` is `--request-timeout-ms`.
 */
export const POLICY_KEYS = {
  request_timeout_ms: 'timeoutMs',
  max_instances_per_request: 'maxInstancesPerRequest',
  watchdog_ms: 'watchdogMs',
} as const satisfies Record<string, keyof ServingPolicy>

/** The ranges of the REST connection limits (server-wide only: `max_connections` is `--max-connections`). */
export const HTTP_RANGES: Readonly<Record<keyof HttpLimits, IntRange>> = Object.freeze({
  maxConnections: intRange(1, Infinity, 'no limit'),
  headersTimeoutMs: intRange(1, MAX_TIMER_MS),
  bodyTimeoutMs: intRange(1, MAX_TIMER_MS),
})

const POLICY_CHECKS = {
  request_timeout_ms: ranged(POLICY_RANGES.timeoutMs),
  max_instances_per_request: ranged(POLICY_RANGES.maxInstancesPerRequest),
  watchdog_ms: ranged(POLICY_RANGES.watchdogMs),
} satisfies Record<keyof typeof POLICY_KEYS, Check<number>>

/** The keys of one `servables.<name>` entry. */
export const SERVABLE_ENTRY_KEYS = {
  version: intIn(0, Infinity),
  versions: versionList,
  isolation: oneOf(ISOLATION_SETTINGS),
  ...POLICY_CHECKS,
} satisfies Record<string, Check<unknown>>

/**
 * One `servables.<name>` entry: which versions to serve (default the newest), where its replicas
 * run, and its limits over every other source (see runtime/policy.ts).
 */
export interface ServableEntry { versions?: number[] | 'all'; isolation?: IsolationSetting; policy?: Partial<ServingPolicy> }

/** The policy fields set in a checked mapping that has POLICY_KEYS' keys. */
function policyFields(e: { [K in keyof typeof POLICY_KEYS]?: number }): Partial<ServingPolicy> {
  const out: Partial<ServingPolicy> = {}
  for (const [key, field] of Object.entries(POLICY_KEYS)) {
    const v = e[key as keyof typeof POLICY_KEYS]
    if (v !== undefined) out[field] = v
  }
  return out
}

type Checked<T extends Record<string, Check<unknown>>> = { [K in keyof T]?: ReturnType<T[K]> }

/** Checks `v`'s keys against `table` (suggesting the closest) and each value with its check. */
function checkMapping<T extends Record<string, Check<unknown>>>(v: unknown, at: KeyAt, table: T, example: string): Checked<T> {
  const known = Object.keys(table)
  const where = at.key ? `${at.key} ` : 'the file '
  if (!isOptionsObject(v)) invalid(at, `${where}must be a mapping of keys (${known.join(', ')}), e.g. ${example} (got ${JSON.stringify(v)})`)
  const prefix = at.key ? `${at.key}.` : ''
  const bad = unknownKeys(v, known)[0]
  if (bad !== undefined) invalid(at, unknownKeyMessage(`unknown key "${prefix}${bad}"`, bad, known, 'keys'))
  const out: Record<string, unknown> = {}
  for (const [k, check] of Object.entries(table)) {
    if (v[k] !== undefined) out[k] = check(v[k], { file: at.file, key: `${prefix}${k}` })
  }
  return out as Checked<T>
}

/** `servables: { <name>: { version | versions, isolation, <limits> } }`; an empty entry (`add:`) is allowed. */
const servableEntries: Check<Record<string, ServableEntry>> = (v, at) => {
  if (v === null) return {}
  if (!isOptionsObject(v)) {
    const keys = Object.keys(SERVABLE_ENTRY_KEYS).join(', ')
    wrongValue(at, `a mapping of servable names to { ${keys} }, e.g. servables: { add: { version: 2 } }`, v)
  }
  const out: Record<string, ServableEntry> = {}
  for (const [name, entry] of Object.entries(v)) {
    const key = `${at.key}.${name}`
    const e = entry === null ? {} : checkMapping(entry, { file: at.file, key }, SERVABLE_ENTRY_KEYS, `${key}: { versions: [1, 2] }`)
    if (e.version !== undefined && e.versions !== undefined) invalid(at, `${key} gives both version and versions; keep one`)
    const policy = policyFields(e)
    out[name] = {
      ...(e.versions !== undefined ? { versions: e.versions } : e.version !== undefined ? { versions: [e.version] } : {}),
      ...(e.isolation !== undefined ? { isolation: e.isolation } : {}),
      ...(Object.keys(policy).length ? { policy } : {}),
    }
  }
  return out
}

/** A file path; relative ones are resolved against the YAML file's folder. */
const filePath: Check<string> = (v, at) => {
  if (typeof v !== 'string' || v.trim() === '') wrongValue(at, 'a file path (relative to the YAML file\'s folder)', v)
  return resolve(dirname(at.file), v)
}

/** `tls: { cert, key, ca, client_auth }`. */
const TLS_KEYS = { cert: filePath, key: filePath, ca: filePath, client_auth: oneOf(CLIENT_AUTH) } satisfies Record<string, Check<unknown>>
const tlsEntry: Check<Checked<typeof TLS_KEYS>> = (v, at) => checkMapping(v, at, TLS_KEYS, 'tls: { cert: server.pem, key: server.key }')

/**
 * Every top-level key of the server YAML with the check of its value. Adding a key is one line
 * here; its type in ServerFile follows from the check.
 */
export const SERVER_FILE_KEYS = {
  grpc: listenAddress,
  rest: listenAddress,
  devices: deviceIds,
  device_type: oneOf<DeviceType>(['cpu', 'cuda']),
  isolation: oneOf(ISOLATION_SETTINGS),
  max_msg_mb: intIn(MAX_MSG_MB.min, MAX_MSG_MB.max),
  strict: bool,
  ...POLICY_CHECKS,
  max_connections: ranged(HTTP_RANGES.maxConnections),
  headers_timeout_ms: ranged(HTTP_RANGES.headersTimeoutMs),
  body_timeout_ms: ranged(HTTP_RANGES.bodyTimeoutMs),
  servables: servableEntries,
  tls: tlsEntry,
  api_key_file: filePath,
  log_level: oneOf(LOG_LEVELS),
  log_format: oneOf(LOG_FORMATS),
  access_log: bool,
} satisfies Record<string, Check<unknown>>

/** The checked server YAML; a key left out of the file is undefined (the flag's default applies). */
export type ServerFile = Checked<typeof SERVER_FILE_KEYS>

/** Checks a parsed server YAML (`doc`) read from `file`; throws CONFIG_INVALID naming the file and key. */
export function validateServerFile(doc: unknown, file: string): ServerFile {
  if (doc === null || doc === undefined) return {}
  const f = checkMapping(doc, { file, key: '' }, SERVER_FILE_KEYS, 'devices: [0, 1]')
  if (f.headers_timeout_ms !== undefined && f.body_timeout_ms !== undefined) {
    const headers = { ms: f.headers_timeout_ms, name: 'headers_timeout_ms' }
    const problem = timeoutOrderProblem(headers, { ms: f.body_timeout_ms, name: 'body_timeout_ms' })
    if (problem) invalid({ file, key: '' }, problem)
  }
  return Object.freeze(f)
}

/** Reads and checks the server YAML at `path`. */
export function readServerFile(path: string): ServerFile {
  let doc: unknown
  try {
    doc = parseYaml(readFileSync(path, 'utf8'))
  } catch (e) {
    throw new ServeError('CONFIG_INVALID', `cannot read server config ${path}: ${(e as Error).message}`)
  }
  return validateServerFile(doc, path)
}

/** Parses the `--grpc` / `--rest` flag value `HOST:PORT` (port 0 = any free port). */
export function parseHostPort(flag: string, text: string): HostPort {
  const hp = splitHostPort(text)
  const example = `${flag} 127.0.0.1:${flag === '--grpc' ? 5500 : 1500}`
  if (!hp) throw new ServeError('INVALID_REQUEST', `${flag} expects HOST:PORT, e.g. ${example} (got "${text}")`)
  if (hp.port > 65535) throw new ServeError('INVALID_REQUEST', `${flag}: port ${hp.port} is out of range 0..65535`)
  return hp
}

/** Parses the `--max-msg-mb` flag value (the same range as the YAML's max_msg_mb). */
export function parseMaxMsgMb(text: string): number {
  const n = Number(text)
  if (!Number.isInteger(n) || n < MAX_MSG_MB.min || n > MAX_MSG_MB.max) {
    throw new ServeError('INVALID_REQUEST', `--max-msg-mb must be an integer in ${MAX_MSG_MB.min}..${MAX_MSG_MB.max} (got ${text})`)
  }
  return n
}

/** Parses an integer flag value (`--watchdog-ms 2000`) against its range, naming the flag. */
export function parseIntFlag(flag: string, text: string, r: IntRange): number {
  const n = text.trim() === '' ? NaN : Number(text)
  if (!inRange(r, n)) throw new ServeError('INVALID_REQUEST', `${flag} must be ${r.expected} (got ${text})`)
  return n
}

/** A timeout and where it was set, for messages: `--body-timeout-ms`, `body_timeout_ms`, or a default. */
export interface NamedMs { ms: number; name: string; isDefault?: boolean }

/**
 * The cross-field check of the REST timeouts: null, or what to change. Node's http server refuses
 * a headers timeout over the request (body) timeout, since both count from the request's start.
 */
export function timeoutOrderProblem(headers: NamedMs, body: NamedMs): string | null {
  if (headers.ms <= body.ms) return null
  const show = (t: NamedMs) => `${t.name} (${t.ms}${t.isDefault ? ', the default' : ''})`
  return `${show(headers)} > ${show(body)}: the body timeout counts from the request's start, headers included; `
    + `raise ${body.name} or lower ${headers.name}`
}

/**
 * Warnings for `servables.<name>` entries that name no servable folder (`found`). Not errors: a
 * servable may appear later by hot reload, and its entry applies then.
 */
export function unknownServableWarnings(f: ServerFile, path: string, found: readonly string[]): string[] {
  const lead = (name: string) => `${path}: servables.${name} names no servable in the servable directory (it applies if one of that name appears)`
  return Object.keys(f.servables ?? {}).filter((name) => !found.includes(name)).map((name) => unknownKeyMessage(lead(name), name, found, 'servables'))
}
