/**
 * MindSpore REST bodies, part 1: body-size checks and a JSON reader that keeps the int/float
 * distinction JSON.parse loses (`2.0` stays a float), with nlohmann-style error texts.
 */
import { ServeError } from '../../errors.ts'

// ---------------------------------------------------------------------------------------------
// Body checks and the JSON reader
// ---------------------------------------------------------------------------------------------

/** The reference default for `max_msg_mb_size` (100 MiB). */
export const MS_DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024

/** Rejects an empty body (`http message invalid`) or one over the limit (`http message is bigger than N`). */
export function checkMsBodySize(byteLength: number, maxBytes: number = MS_DEFAULT_MAX_BODY_BYTES): void {
  if (byteLength === 0) throw new ServeError('INVALID_REQUEST', 'http message invalid')
  if (byteLength > maxBytes) throw new ServeError('PAYLOAD_TOO_LARGE', `http message is bigger than ${maxBytes}`)
}

/**
 * Marks numbers that parseJsonBody read as floats (`2.0`, `1e3`). A number is a float iff it is
 * marked or not an integer, so marks are needed only for integral floats. On an array the mark is
 * `true` (every number is a float) or an array of 0/1 per index; on an object, a Set of keys.
 * Plain JSON.parse output has no marks: integral values then read as ints (see isFloatAt).
 */
export const JSON_FLOAT_KINDS: unique symbol = Symbol('ms-serve.jsonFloatKinds')
export type FloatMark = true | number[] | Set<string> | undefined

const MAX_DEPTH = 1000
const TWO_53 = 9007199254740992
const POW10 = Array.from({ length: 23 }, (_, i) => Number(`1e${i}`))
const UINT64_MAX = (1n << 64n) - 1n
const INT64_MIN = -(1n << 63n)
const CTRL_RE = /[\u0000-\u001f]/
const FLOAT_CHAR_RE = /[.eE]/
const CTRL_NAMES = ['NUL', 'SOH', 'STX', 'ETX', 'EOT', 'ENQ', 'ACK', 'BEL', 'BS', 'HT', 'LF', 'VT', 'FF', 'CR', 'SO', 'SI',
  'DLE', 'DC1', 'DC2', 'DC3', 'DC4', 'NAK', 'SYN', 'ETB', 'CAN', 'EM', 'SUB', 'ESC', 'FS', 'GS', 'RS', 'US']
const CTRL_SHORT: Record<number, string> = { 8: 'b', 9: 't', 10: 'n', 12: 'f', 13: 'r' }

/**
 * Parses a request body like JSON.parse, but integers stay JS numbers (bigint beyond 2^53, as
 * nlohmann keeps int64/uint64) and floats are marked via JSON_FLOAT_KINDS on their container.
 * Malformed input throws INVALID_REQUEST `Illegal JSON format.` + an nlohmann-style detail.
 */
export function parseJsonBody(text: string, limits: JsonLimits = NO_LIMITS): unknown {
  return new JsonReader(text, limits).document()
}

/**
 * Bounds checked while reading, so a body over them fails before its tree is built (a 95 MB body
 * of 1.7 M instances would otherwise cost gigabytes and seconds first).
 */
export interface JsonLimits {
  /** Most elements of an array that is a member of the top-level object (MindSpore's `instances`). */
  maxTopArray: number
  /** The error for an array over maxTopArray. */
  tooMany?: (max: number) => Error
}
const NO_LIMITS: JsonLimits = { maxTopArray: Infinity }

class JsonReader {
  private pos = 0
  private depth = 0
  // Index of the next backslash at or after the current string; caching it keeps string scanning O(n).
  private nextBackslash = -1
  private nextOpen = -1
  private nextClose = -1
  /** Kind of the number most recently returned by value(). */
  private numIsFloat = false
  constructor(private readonly s: string, private readonly limits: JsonLimits) {}

  document(): unknown {
    if (this.s.charCodeAt(0) === 0xfeff) this.pos = 1
    this.ws()
    const v = this.value()
    this.ws()
    if (this.pos < this.s.length) this.unexpected('value', 'end of input')
    return v
  }

  private ws(): void {
    const s = this.s
    let p = this.pos
    for (;;) {
      const c = s.charCodeAt(p)
      if (c === 32 || c === 10 || c === 13 || c === 9) p++
      else break
    }
    this.pos = p
  }

  private value(): unknown {
    const c = this.s.charCodeAt(this.pos)
    if (c === 45 || (c >= 48 && c <= 57)) return this.number()
    if (c === 34) return this.string()
    if (c === 91) return this.array()
    if (c === 123) return this.object()
    if (c === 116) return this.literal('true', true)
    if (c === 102) return this.literal('false', false)
    if (c === 110) return this.literal('null', null)
    return this.unexpected('value', "'[', '{', or a literal")
  }

  private array(): unknown[] {
    const s = this.s
    this.pos++
    if (++this.depth > MAX_DEPTH) this.fail(`nesting depth exceeds ${MAX_DEPTH}`)
    const bracket = this.pos - 1
    const arr: unknown[] = []
    this.ws()
    const first = s.charCodeAt(this.pos)
    if (first === 93) { this.pos++; this.depth--; return arr }
    if (first === 45 || (first >= 48 && first <= 57)) {
      const row = this.numberRow(bracket)
      if (row !== null) {
        if (this.depth === 2 && row.length > this.limits.maxTopArray) this.tooMany()
        this.depth--
        return row
      }
    }
    let floats = 0
    let ints = 0
    let kinds: number[] | null = null // only for arrays mixing int and float numbers (rare)
    for (;;) {
      this.ws()
      const v = this.value()
      if (typeof v === 'number') {
        if (this.numIsFloat) {
          if (kinds === null && ints > 0) kinds = backfillKinds(arr, 0)
          floats++
          if (kinds !== null) kinds.push(1)
        } else {
          if (kinds === null && floats > 0) kinds = backfillKinds(arr, 1)
          ints++
          if (kinds !== null) kinds.push(0)
        }
      } else if (kinds !== null) kinds.push(0)
      arr.push(v)
      if (this.depth === 2 && arr.length > this.limits.maxTopArray) this.tooMany()
      this.ws()
      const c = s.charCodeAt(this.pos)
      if (c === 44) { this.pos++; continue }
      if (c === 93) { this.pos++; break }
      this.unexpected('array', "']'")
    }
    if (floats > 0) (arr as unknown as Record<symbol, FloatMark>)[JSON_FLOAT_KINDS] = kinds ?? true
    this.depth--
    return arr
  }

  /**
   * Fast path for an array of numbers only: native JSON.parse converts the slice up to the first
   * `]` (converting digits in JS is ~3x slower). An integer token always yields an integral value,
   * so a row without integral values is all floats and needs neither a text scan nor a mark (a
   * per-array property costs an allocation, noticeable on narrow rows). Returns null, leaving
   * pos untouched, whenever the general path must decide: non-number elements, malformed numbers
   * (reported there), possible bigints or float overflow.
   */
  private numberRow(bracket: number): unknown[] | null {
    const s = this.s
    // Cached, monotonic positions: each JSON.parse attempt covers text no other attempt covers
    // (no `[` before the `]`), so failed attempts cost O(n) in total, never O(n * depth).
    if (this.nextClose < this.pos) { const i = s.indexOf(']', this.pos); this.nextClose = i < 0 ? Infinity : i }
    if (this.nextOpen < this.pos) { const i = s.indexOf('[', this.pos); this.nextOpen = i < 0 ? Infinity : i }
    const end = this.nextClose
    if (end === Infinity || this.nextOpen < end) return null
    let arr: unknown[]
    try {
      arr = JSON.parse(s.slice(bracket, end + 1)) as unknown[]
    } catch {
      return null
    }
    let integral = 0
    for (let i = 0; i < arr.length; i++) {
      const v = arr[i]
      if (typeof v !== 'number') return null
      if (Number.isInteger(v)) integral++
      else if (v === Infinity || v === -Infinity) return null
    }
    if (integral === arr.length && !FLOAT_CHAR_RE.test(s.slice(this.pos, end))) {
      for (let i = 0; i < arr.length; i++) { const v = arr[i] as number; if (v >= TWO_53 || v <= -TWO_53) return null }
    } else if (integral > 0) {
      const kinds = this.tokenKinds(end, arr.length)
      if (kinds !== true) for (let i = 0; i < arr.length; i++) { const v = arr[i] as number; if (kinds[i] === 0 && (v >= TWO_53 || v <= -TWO_53)) return null }
      ;(arr as unknown as Record<symbol, FloatMark>)[JSON_FLOAT_KINDS] = kinds
    }
    this.pos = end + 1
    return arr
  }

  /** Per-token kinds (1 = has `.`/`e`/`E`) of the `count` number tokens from pos to `end`, or true if all are floats. */
  private tokenKinds(end: number, count: number): true | number[] {
    const s = this.s
    const kinds = new Array<number>(count)
    let i = 0
    let tokenFloat = 0
    let floats = 0
    // Tokens are short, so a char loop beats indexOf here.
    for (let p = this.pos; p < end; p++) {
      const c = s.charCodeAt(p)
      if (c === 44) { kinds[i++] = tokenFloat; floats += tokenFloat; tokenFloat = 0 }
      else if (c === 46 || c === 101 || c === 69) tokenFloat = 1
    }
    kinds[i] = tokenFloat
    floats += tokenFloat
    return floats === count ? true : kinds
  }

  private object(): Record<string, unknown> {
    const s = this.s
    this.pos++
    if (++this.depth > MAX_DEPTH) this.fail(`nesting depth exceeds ${MAX_DEPTH}`)
    const obj: Record<string, unknown> = {}
    let floatKeys: Set<string> | null = null
    this.ws()
    if (s.charCodeAt(this.pos) === 125) { this.pos++; this.depth--; return obj }
    for (;;) {
      this.ws()
      if (s.charCodeAt(this.pos) !== 34) this.unexpected('object key', 'string literal')
      const key = this.string()
      this.ws()
      if (s.charCodeAt(this.pos) !== 58) this.unexpected('object separator', "':'")
      this.pos++
      this.ws()
      const v = this.value()
      setOwn(obj, key, v) // duplicate keys: last one wins, as in nlohmann
      if (typeof v === 'number' && this.numIsFloat && Number.isInteger(v)) (floatKeys ??= new Set()).add(key)
      else if (floatKeys !== null) floatKeys.delete(key)
      this.ws()
      const c = s.charCodeAt(this.pos)
      if (c === 44) { this.pos++; continue }
      if (c === 125) { this.pos++; break }
      this.unexpected('object', "'}'")
    }
    if (floatKeys !== null && floatKeys.size > 0) (obj as Record<symbol, FloatMark>)[JSON_FLOAT_KINDS] = floatKeys
    this.depth--
    return obj
  }

  private literal<T>(word: string, v: T): T {
    if (this.s.startsWith(word, this.pos)) { this.pos += word.length; return v }
    let i = 0
    while (this.s.charCodeAt(this.pos + i) === word.charCodeAt(i)) i++
    return this.lexError('value', 'invalid literal', this.pos, this.pos + i)
  }

  private number(): number | bigint {
    const s = this.s
    const start = this.pos
    let p = start
    let c = s.charCodeAt(p)
    const neg = c === 45
    if (neg) {
      c = s.charCodeAt(++p)
      if (!(c >= 48 && c <= 57)) this.lexError('value', "invalid number; expected digit after '-'", start, p)
    }
    // Accumulating in a double is exact while mantissa < 2^53; that is checked before use.
    let mant = 0
    if (c === 48) c = s.charCodeAt(++p)
    else while (c >= 48 && c <= 57) { mant = mant * 10 + (c - 48); c = s.charCodeAt(++p) }
    let isFloat = false
    let exp = 0
    if (c === 46) {
      isFloat = true
      c = s.charCodeAt(++p)
      if (!(c >= 48 && c <= 57)) this.lexError('value', "invalid number; expected digit after '.'", start, p)
      while (c >= 48 && c <= 57) { mant = mant * 10 + (c - 48); exp--; c = s.charCodeAt(++p) }
    }
    if (c === 101 || c === 69) {
      isFloat = true
      c = s.charCodeAt(++p)
      let eneg = false
      if (c === 43 || c === 45) {
        eneg = c === 45
        c = s.charCodeAt(++p)
        if (!(c >= 48 && c <= 57)) this.lexError('value', 'invalid number; expected digit after exponent sign', start, p)
      } else if (!(c >= 48 && c <= 57)) {
        this.lexError('value', "invalid number; expected '+', '-', or digit after exponent", start, p)
      }
      let e = 0
      while (c >= 48 && c <= 57) { if (e < 100000) e = e * 10 + (c - 48); c = s.charCodeAt(++p) }
      exp += eneg ? -e : e
    }
    this.pos = p
    if (!isFloat) {
      this.numIsFloat = false
      if (mant < TWO_53) return neg ? -mant : mant // "-0" stays -0: nlohmann keeps it a signed integer
      const big = BigInt(s.slice(start, p))
      if (big >= INT64_MIN && big <= UINT64_MAX) return big
      isFloat = true // like nlohmann: integers beyond int64/uint64 become floats
    }
    this.numIsFloat = true
    let v: number
    // Clinger's fast path: exact mantissa and power of ten give a correctly rounded quotient/product.
    if (mant < TWO_53 && exp >= -22 && exp <= 22) v = exp < 0 ? mant / POW10[-exp]! : mant * POW10[exp]!
    else v = mant === 0 ? 0 : Math.abs(Number(s.slice(start, p)))
    if (v === Infinity) this.fail(`[json.exception.out_of_range.406] number overflow parsing '${s.slice(start, p)}'`)
    return neg ? -v : v
  }

  private string(): string {
    const s = this.s
    const start = this.pos + 1
    const end = s.indexOf('"', start)
    if (end < 0) return this.lexError('value', 'invalid string: missing closing quote', this.pos, s.length - 1)
    if (this.nextBackslash < start && this.nextBackslash !== Infinity) {
      const b = s.indexOf('\\', start)
      this.nextBackslash = b < 0 ? Infinity : b
    }
    if (this.nextBackslash > end) {
      const str = s.slice(start, end)
      if (CTRL_RE.test(str)) return this.stringSlow(start)
      this.pos = end + 1
      return str
    }
    return this.stringSlow(start)
  }

  private stringSlow(start: number): string {
    const s = this.s
    const parts: string[] = []
    let chunk = start
    let i = start
    for (;;) {
      if (i >= s.length) return this.lexError('value', 'invalid string: missing closing quote', start - 1, s.length - 1)
      const c = s.charCodeAt(i)
      if (c === 34) break
      if (c < 0x20) {
        const hex = c.toString(16).toUpperCase().padStart(4, '0')
        const alt = CTRL_SHORT[c] ? ` or \\${CTRL_SHORT[c]}` : ''
        this.lexError('value', `invalid string: control character U+${hex} (${CTRL_NAMES[c]}) must be escaped to \\u${hex}${alt}`, start - 1, i)
      }
      if (c !== 92) { i++; continue }
      parts.push(s.slice(chunk, i))
      const e = s.charCodeAt(i + 1)
      const simple = e === 34 ? '"' : e === 92 ? '\\' : e === 47 ? '/' : e === 98 ? '\b' : e === 102 ? '\f'
        : e === 110 ? '\n' : e === 114 ? '\r' : e === 116 ? '\t' : undefined
      if (simple !== undefined) { parts.push(simple); i += 2 }
      else if (e === 117) {
        const hi = this.hex4(start, i + 2)
        i += 6
        if (hi >= 0xd800 && hi <= 0xdbff) {
          if (s.charCodeAt(i) !== 92 || s.charCodeAt(i + 1) !== 117) this.lexError('value', 'invalid string: surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF', start - 1, i)
          const lo = this.hex4(start, i + 2)
          if (lo < 0xdc00 || lo > 0xdfff) this.lexError('value', 'invalid string: surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF', start - 1, i + 5)
          parts.push(String.fromCharCode(hi, lo))
          i += 6
        } else if (hi >= 0xdc00 && hi <= 0xdfff) {
          this.lexError('value', 'invalid string: surrogate U+DC00..U+DFFF must follow U+D800..U+DBFF', start - 1, i - 1)
        } else parts.push(String.fromCharCode(hi))
      } else this.lexError('value', 'invalid string: forbidden character after backslash', start - 1, i + 1)
      chunk = i
    }
    parts.push(s.slice(chunk, i))
    this.pos = i + 1
    return parts.join('')
  }

  private hex4(tokenStart: number, at: number): number {
    const h = this.s.slice(at, at + 4)
    if (!/^[0-9a-fA-F]{4}$/.test(h)) {
      let j = 0
      while (j < h.length && /[0-9a-fA-F]/.test(h[j]!)) j++
      this.lexError('value', "invalid string: '\\u' must be followed by 4 hex digits", tokenStart - 1, at + j)
    }
    return parseInt(h, 16)
  }

  /** nlohmann "unexpected <token>; expected <x>" error for the token at pos. */
  private unexpected(context: string, expected: string): never {
    const s = this.s
    const c = s.charCodeAt(this.pos)
    let token: string
    if (this.pos >= s.length) token = 'end of input'
    else if ('[]{}:,'.includes(s[this.pos]!)) token = `'${s[this.pos]}'`
    else if (c === 34) token = 'string literal'
    else if (c === 45 || (c >= 48 && c <= 57)) token = 'number literal'
    else if (s.startsWith('true', this.pos) || s.startsWith('false', this.pos) || s.startsWith('null', this.pos)) token = `${s.slice(this.pos, s.startsWith('false', this.pos) ? this.pos + 5 : this.pos + 4)} literal`
    else return this.lexError(context, 'invalid literal', this.pos, this.pos)
    if (s.length === 0) this.fail('[json.exception.parse_error.101] parse error at line 1, column 1: attempting to parse an empty input; check that your input string or stream contains the expected JSON')
    return this.syntax(context, `unexpected ${token}; expected ${expected}`, this.pos + 1)
  }

  private lexError(context: string, message: string, tokenStart: number, failAt: number): never {
    // The reference cuts everything after "invalid literal" (it would echo raw bytes back).
    // nlohmann shows control characters of the token as <U+XXXX>.
    const lastRead = this.s.slice(tokenStart, failAt + 1).replace(/[\u0000-\u001f]/g, (c) => `<U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}>`)
    const detail = message === 'invalid literal' ? message : `${message}; last read: '${lastRead}'`
    return this.syntax(context, detail, failAt + 1)
  }

  private syntax(context: string, detail: string, consumed: number): never {
    // nlohmann counts the end-of-input read as a character too, hence no clamping of `consumed`.
    const before = this.s.slice(0, consumed)
    const line = before.split('\n').length
    const column = consumed - (before.lastIndexOf('\n') + 1)
    return this.fail(`[json.exception.parse_error.101] parse error at line ${line}, column ${column}: syntax error while parsing ${context} - ${detail}`)
  }

  private tooMany(): never {
    const { maxTopArray, tooMany } = this.limits
    throw tooMany ? tooMany(maxTopArray) : new ServeError('INVALID_REQUEST', `array has more than ${maxTopArray} elements`)
  }

  private fail(detail: string): never {
    throw new ServeError('INVALID_REQUEST', `Illegal JSON format.${detail}`)
  }
}

function backfillKinds(arr: unknown[], prevFloat: number): number[] {
  const kinds = new Array<number>(arr.length)
  for (let i = 0; i < arr.length; i++) kinds[i] = typeof arr[i] === 'number' ? prevFloat : 0
  return kinds
}

/** Assigns an own property even for `__proto__`, which plain assignment would turn into a prototype swap. */
export function setOwn<T>(obj: Record<string, T>, key: string, v: T): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value: v, enumerable: true, writable: true, configurable: true })
  else obj[key] = v
}

/** Whether element `k` of a parsed array (or key `k` of an object) was written as a float. */
export function isFloatAt(container: object, k: number | string, v: number): boolean {
  const mark = (container as Record<symbol, FloatMark>)[JSON_FLOAT_KINDS]
  if (mark === true) return true
  if (mark !== undefined) {
    if (Array.isArray(mark)) { if (mark[k as number] === 1) return true }
    else if ((mark as Set<string>).has(k as string)) return true
  }
  // Non-integral values are floats marked or not; parseJsonBody marks only integral floats.
  return !Number.isInteger(v)
}

/** nlohmann's byte-wise std::map key order, i.e. code point order (differs from `<` on surrogates). */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i)
    let y = b.charCodeAt(i)
    if (x === y) continue
    if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000
    if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000
    return x - y
  }
  return a.length - b.length
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

