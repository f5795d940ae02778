/**
 * TLS and API keys, from the flags and the server YAML, checked before anything starts (a file that
 * cannot be read is a config error naming the flag or key and the fix). The keys are compared in
 * constant time and never logged.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { ServeError } from '../errors.ts'
import { isConsoleAsset } from '../protocol/rest/console.ts'

/** Where client certificates are required when a CA is given: both listeners, or gRPC only (MindSpore's SSLConfig). */
export const CLIENT_AUTH = ['both', 'grpc'] as const
export type ClientAuth = typeof CLIENT_AUTH[number]

/** PEM contents for both listeners. With `ca`, clients must present a certificate it signed. */
export interface TlsMaterial {
  cert: Buffer
  key: Buffer
  ca?: Buffer
  /** With `ca`: where client certificates are required (default both). */
  clientAuth: ClientAuth
}

/** The files as given (flags or YAML, paths already resolved) and, for messages, where each came from. */
export interface TlsPaths {
  cert?: { path: string; from: string }
  key?: { path: string; from: string }
  ca?: { path: string; from: string }
  clientAuth?: ClientAuth
}

function readPem(p: { path: string; from: string }, what: string): Buffer {
  let b: Buffer
  try {
    b = readFileSync(p.path)
  } catch (e) {
    throw new ServeError('CONFIG_INVALID', `${p.from} ${p.path}: cannot read the ${what}: ${(e as Error).message}. Give the path of a PEM file`)
  }
  if (!b.toString('latin1').includes('-----BEGIN ')) throw new ServeError('CONFIG_INVALID', `${p.from} ${p.path}: not a PEM file (no "-----BEGIN" line); give the ${what} in PEM form`)
  return b
}

/** Reads the TLS files; null when none is given. A key without a certificate (or the reverse) is an error. */
export function loadTls(p: TlsPaths): TlsMaterial | null {
  if (!p.cert && !p.key && !p.ca) return null
  if (!p.cert || !p.key) {
    const missing = p.cert ? 'key' : 'cert'
    throw new ServeError('CONFIG_INVALID', `TLS needs both a certificate and its private key: add --tls-${missing} FILE (YAML tls.${missing})`)
  }
  return {
    cert: readPem(p.cert, 'certificate'),
    key: readPem(p.key, 'private key'),
    ...(p.ca ? { ca: readPem(p.ca, 'CA certificate') } : {}),
    clientAuth: p.clientAuth ?? 'both',
  }
}

/** Fixed-size digests: timingSafeEqual needs equal lengths, and the digest hides the key's length. */
const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest()

/** The server's API keys; `check` compares a presented one with each of them in constant time. */
export class ApiKeys {
  private readonly digests: Buffer[]
  constructor(keys: readonly string[]) {
    this.digests = keys.map(digest)
  }

  /** The checker of `keys`; null when there are none (every route is then open). */
  static of(keys: readonly string[] | undefined): ApiKeys | null {
    return keys && keys.length > 0 ? new ApiKeys(keys) : null
  }

  /** Whether `authorization` (a header value) is `Bearer <one of the keys>`. */
  check(authorization: string | undefined): boolean {
    if (authorization === undefined) return false
    const m = /^Bearer\s+(\S.*)$/i.exec(authorization)
    if (!m) return false
    const d = digest(m[1]!.trim())
    let ok = false
    // Every key is compared: the time does not tell which one matched.
    for (const k of this.digests) ok = timingSafeEqual(d, k) || ok
    return ok
  }
}

/** The message of a refused request (it never echoes what was sent). */
export function unauthenticated(presented: boolean): ServeError {
  return new ServeError('UNAUTHENTICATED', presented
    ? 'the API key is not valid: send Authorization: Bearer <key> with a key the server was started with'
    : 'this server requires an API key: send Authorization: Bearer <key>')
}

/**
 * The keys from `--api-key` (repeatable), `--api-key-file` (one per line; blank lines and `#`
 * comments skipped) and MS_SERVE_API_KEY (comma-separated). Empty keys are refused.
 */
export function collectApiKeys(flags: readonly string[], files: ReadonlyArray<{ path: string; from: string }>, env: string | undefined): string[] {
  const keys: string[] = []
  const add = (k: string, from: string) => {
    const t = k.trim()
    if (t === '' || /\s/.test(t)) throw new ServeError('CONFIG_INVALID', `${from}: an API key must be a non-empty string without spaces`)
    if (!keys.includes(t)) keys.push(t)
  }
  for (const k of flags) add(k, '--api-key')
  for (const f of files) {
    let text: string
    try {
      text = readFileSync(f.path, 'utf8')
    } catch (e) {
      throw new ServeError('CONFIG_INVALID', `${f.from} ${f.path}: cannot read the API key file: ${(e as Error).message}`)
    }
    const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
    if (lines.length === 0) throw new ServeError('CONFIG_INVALID', `${f.from} ${f.path}: the file holds no API key (one per line)`)
    for (const l of lines) add(l, `${f.from} ${f.path}`)
  }
  if (env !== undefined && env.trim() !== '') for (const k of env.split(',')) add(k, 'MS_SERVE_API_KEY')
  return keys
}

/**
 * REST routes open without a key: liveness, readiness and /metrics (Prometheus scrapes without
 * credentials by default). Everything else (inference, /info, /v1/models, /stats) needs one.
 */
export function isOpenRestPath(url: string): boolean {
  const path = url.split('?', 1)[0]!
  return path === '/health' || path === '/metrics' || isConsoleAsset(path) || path.startsWith('/v2/health/') || /^\/v2\/models\/[^/]+(\/[^/]+)?(\/versions\/[^/]+)?\/ready$/.test(path)
}

/** gRPC services open without a key: health checking and server reflection. */
export function isOpenGrpcPath(path: string): boolean {
  return path.startsWith('/grpc.health.v1.') || path.startsWith('/grpc.reflection.')
}
