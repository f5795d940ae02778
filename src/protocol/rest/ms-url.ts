/**
 * MindSpore Serving REST URL grammar: `POST /model/{name}[/version/{n}]:{method}`.
 *
 * The reference parser (restful_request.cc) is substring-based, not a router: the name follows the
 * first `model/`, a `version/` segment may appear anywhere (`/version/0/model/add:add_common` works),
 * and the method is everything after the first `:`. We keep that grammar and its error texts, with
 * two deliberate fixes: keywords must be whole path segments (so a servable called `conversion` is
 * not mistaken for a version keyword), and components are percent-decoded after splitting.
 */
import { ServeError } from '../../errors.ts'

/** Where a MindSpore REST request is addressed. `version` 0 means "latest running". */
export interface MsTarget { name: string; version: number; method: string }

const MSG_METHOD = 'http message only support POST right now'
const MSG_NO_MODEL = 'please check url, the keyword:[model] must contain.'
const MSG_NO_METHOD = 'please check url, the keyword:[service method] must contain.'
const MSG_VERSION_RANGE = 'please check url, version number range failed, request version number '
const MSG_VERSION_VALUE = 'please check url, the keyword:[version] value invalid, request version number '

// Versions are uint32 on the master side; the reference rejects v >= UINT32_MAX (exclusive bound).
const UINT32_MAX = 4294967295
const INT64_MAX = (1n << 63n) - 1n
const INT64_MIN = -(1n << 63n)

/** Throws METHOD_NOT_ALLOWED unless the HTTP method is POST (the reference's first check). */
export function checkMsMethod(method: string): void {
  if (method !== 'POST') throw new ServeError('METHOD_NOT_ALLOWED', MSG_METHOD)
}

/**
 * Parses method + request-target into a servable address, throwing the reference's error texts.
 * Order of checks follows the reference: method, name, version, service method.
 */
export function parseMsUrl(method: string, url: string): MsTarget {
  checkMsMethod(method)
  const path = stripTarget(url)

  const nameSeg = keywordValue(path, 'model', -1)
  const name = nameSeg === undefined ? '' : decode(nameSeg.value)
  if (name === '') throw new ServeError('INVALID_REQUEST', MSG_NO_MODEL)

  let version = 0
  // A servable may itself be called "version": never read the name segment as the keyword.
  const versionSeg = keywordValue(path, 'version', nameSeg!.start)
  if (versionSeg !== undefined) version = parseVersion(decode(versionSeg.value))

  const colon = path.indexOf(':')
  const serviceMethod = colon < 0 ? '' : decode(path.slice(colon + 1))
  if (serviceMethod === '') throw new ServeError('INVALID_REQUEST', MSG_NO_METHOD)
  return { name, version, method: serviceMethod }
}

/** Drops the query string, fragment and (for absolute-form targets) scheme + authority. */
function stripTarget(url: string): string {
  let end = url.length
  const q = url.indexOf('?')
  if (q >= 0) end = q
  const h = url.indexOf('#')
  if (h >= 0 && h < end) end = h
  let path = url.slice(0, end)
  const abs = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/]*/.exec(path)
  if (abs) path = path.slice(abs[0].length)
  return path
}

/**
 * Value (and its start index) of the first `/keyword/VALUE` segment pair, VALUE running to the
 * next `/` or `:`; undefined if the keyword is not a segment. A bare `keyword` segment ending the
 * path or followed by `:` yields '' so that `/model/add/version:m` still fails like the reference.
 */
function keywordValue(path: string, keyword: string, skipAt: number): { value: string; start: number } | undefined {
  let from = 0
  for (;;) {
    const at = path.indexOf(keyword, from)
    if (at < 0) return undefined
    from = at + 1
    const before = at === 0 ? '/' : path[at - 1]
    if (before !== '/' || at === skipAt) continue
    const after = at + keyword.length
    if (after === path.length || path[after] === ':') return { value: '', start: after }
    if (path[after] !== '/') continue
    const start = after + 1
    let stop = path.length
    for (let i = start; i < path.length; i++) {
      const c = path.charCodeAt(i)
      if (c === 47 /* / */ || c === 58 /* : */) { stop = i; break }
    }
    return { value: path.slice(start, stop), start }
  }
}

/** std::stol semantics: optional leading whitespace and sign, then a leading run of digits. */
function parseVersion(text: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?)(\d+)/.exec(text)
  if (!m) throw new ServeError('INVALID_REQUEST', MSG_VERSION_VALUE + text)
  const value = BigInt(m[1] === '-' ? '-' + m[2] : m[2]!)
  if (value > INT64_MAX || value < INT64_MIN || value < 0n || value >= BigInt(UINT32_MAX)) {
    throw new ServeError('INVALID_REQUEST', MSG_VERSION_RANGE + text)
  }
  return Number(value)
}

/** Percent-decodes one component; malformed escapes are kept verbatim rather than rejected. */
function decode(s: string): string {
  if (s.indexOf('%') < 0) return s
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}
