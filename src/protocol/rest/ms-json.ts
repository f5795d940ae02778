/**
 * MindSpore Serving REST body codec (http_process.cc): a JSON reader that keeps the int/float
 * distinction, the `instances` request parser and the reply renderer. Pure functions, no I/O.
 *
 * Error texts are the reference's, byte for byte: clients and tests match them as substrings.
 * Object keys are visited in sorted (UTF-8 byte) order, as nlohmann's std::map does, so the first
 * error reported for an instance is the one the reference would report.
 */
import { Buffer } from 'node:buffer'
import { ServeError } from '../../errors.ts'
import { DTYPES, Tensor, f16BitsToF32, type NumericDType, type TypedArray, type Value } from '../../tensor.ts'

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
type FloatMark = true | number[] | Set<string> | undefined

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
export function parseJsonBody(text: string): unknown {
  return new JsonReader(text).document()
}

class JsonReader {
  private pos = 0
  private depth = 0
  // Index of the next backslash at or after the current string; caching it keeps string scanning O(n).
  private nextBackslash = -1
  private nextOpen = -1
  private nextClose = -1
  /** Kind of the number most recently returned by value(). */
  private numIsFloat = false
  constructor(private readonly s: string) {}

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
      if (row !== null) { this.depth--; return row }
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
function setOwn<T>(obj: Record<string, T>, key: string, v: T): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value: v, enumerable: true, writable: true, configurable: true })
  else obj[key] = v
}

/** Whether element `k` of a parsed array (or key `k` of an object) was written as a float. */
function isFloatAt(container: object, k: number | string, v: number): boolean {
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

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

// ---------------------------------------------------------------------------------------------
// Request: {"instances": ...} -> one Record<string, Value> per instance
// ---------------------------------------------------------------------------------------------

type ItemType = NumericDType | 'string' | 'bytes'
const B64_TYPES = new Map<string, ItemType>([
  ['int8', 'int8'], ['int16', 'int16'], ['int32', 'int32'], ['int64', 'int64'],
  ['uint8', 'uint8'], ['uint16', 'uint16'], ['uint32', 'uint32'], ['uint64', 'uint64'],
  ['fp16', 'float16'], ['fp32', 'float32'], ['fp64', 'float64'],
  ['float16', 'float16'], ['float32', 'float32'], ['float64', 'float64'],
  ['bool', 'bool'], ['str', 'string'], ['bytes', 'bytes'],
])
// The reference names a type by its first alias in std::map order, hence float16 rather than fp16.
const TYPE_NAMES: Record<ItemType, string> = {
  bool: 'bool', int8: 'int8', int16: 'int16', int32: 'int32', int64: 'int64', uint8: 'uint8', uint16: 'uint16',
  uint32: 'uint32', uint64: 'uint64', float16: 'float16', float32: 'float32', float64: 'float64', string: 'str', bytes: 'bytes',
}
const NOT_EQUAL = 'json array, elements type is not equal'
const NOT_SCALAR = 'json array, data should be number, bool, string or bytes'
// Above this we validate the array shape before allocating (a ragged array can imply a huge shape).
const MAX_DIRECT_ELEMENTS = 1 << 27
const K_INT = 0, K_FLOAT = 1, K_BOOL = 2, K_STR = 3, K_OBJ = 4

function bad(detail: string): never {
  throw new ServeError('INVALID_REQUEST', `Parser request failed, ${detail}`)
}

/** A string/bytes input whose shape is neither [] nor [1]: the reference rejects it after parsing. */
interface ParseCtx { shapeError: string | undefined }

/**
 * Turns a parsed body (from parseJsonBody, or plain JSON.parse with int/float guessed from the
 * value) into instances. Errors: INVALID_REQUEST `Parser request failed, <detail>`, except a
 * string/bytes input shaped other than [] or [1], which fails like the reference's tensor check.
 */
export function parseInstances(body: unknown): Record<string, Value>[] {
  if (!isObject(body) || !Object.hasOwn(body, 'instances')) bad("key 'instances' expects to exist once, but actually 0 times")
  const instances = body['instances']
  const ctx: ParseCtx = { shapeError: undefined }
  let out: Record<string, Value>[]
  if (Array.isArray(instances)) {
    if (instances.length === 0) bad('instances value is array type, but no value')
    if (!isObject(instances[0])) bad('instances no key mode is not supported')
    out = new Array(instances.length)
    for (let i = 0; i < instances.length; i++) {
      const inst: unknown = instances[i]
      if (!isObject(inst)) bad('json array, instance is not object type')
      if (Object.keys(inst).length === 0) bad('json array, instance is object type, but no value')
      out[i] = parseInstance(inst, ctx)
    }
  } else if (isObject(instances)) {
    if (Object.keys(instances).length === 0) bad('json object, value is empty')
    out = [parseInstance(instances, ctx)]
  } else bad('instances no key mode is not supported')
  if (ctx.shapeError !== undefined) throw new ServeError('INVALID_REQUEST', ctx.shapeError)
  return out
}

function parseInstance(inst: Record<string, unknown>, ctx: ParseCtx): Record<string, Value> {
  const rec: Record<string, Value> = {}
  for (const key of Object.keys(inst).sort(compareKeys)) {
    if (key === '') bad('string key is empty')
    const v = inst[key]
    let item: Value
    if (Array.isArray(v)) item = parseArrayItem(v, key, ctx)
    else if (isObject(v)) item = parseObjectItem(v, key, ctx)
    else if (typeof v === 'number') {
      item = isFloatAt(inst, key, v) ? new Tensor('float32', [], Float32Array.of(v)) : new Tensor('int32', [], Int32Array.of(v))
    } else if (typeof v === 'bigint') item = new Tensor('int32', [], Int32Array.of(Number(BigInt.asIntN(32, v))))
    else if (typeof v === 'boolean') item = new Tensor('bool', [], Uint8Array.of(v ? 1 : 0))
    else if (typeof v === 'string') item = v
    else if (v === null) bad('json value is null, it is not supported')
    else bad('json value type is unregistered')
    setOwn(rec, key, item)
  }
  return rec
}

/** `{"b64": ..., "type"?: ..., "shape"?: [...]}`: checks in the reference's order (keys sorted). */
function parseObjectItem(obj: Record<string, unknown>, key: string, ctx: ParseCtx): Value {
  const keys = Object.keys(obj).sort(compareKeys)
  if (keys.length === 0) bad('json object, value is empty')
  if (keys.length > 3) bad("json object, items size is more than 3, only support specified ['b64', 'type', 'shape']")
  let hasB64 = false
  for (const k of keys) {
    if (k === 'b64') hasB64 = true
    else if (k === 'type') {
      const t = obj[k]
      if (typeof t !== 'string') bad("json object, key is 'type', value should be string type")
      if (!B64_TYPES.has(t)) bad(`json object, specified type:'${t}' is illegal`)
    } else if (k === 'shape') checkShape(obj[k])
    else bad(`json object, key is not ['b64', 'type', 'shape'], fail key:${k}`)
  }
  if (!hasB64) bad("json object, 'b64' should be specified only one time")
  const type = objectItemType(obj)!
  const shape = Array.isArray(obj['shape']) ? obj['shape'].map((d) => (typeof d === 'bigint' ? Number(BigInt.asUintN(32, d)) : (d as number) >>> 0)) : []
  const count = shape.reduce((a, b) => a * b, 1)
  if ((type === 'string' || type === 'bytes') && count !== 1) {
    bad("json object, only support scalar when data type is string or bytes, please check 'type' or 'shape'")
  }
  const bytes = decodeB64(obj['b64'])
  if (type === 'string' || type === 'bytes') {
    if (shape.length > 1) ctx.shapeError ??= stringShapeError(key, shape)
    return type === 'bytes' ? bytes : utf8(bytes)
  }
  const size = DTYPES[type].bytes
  if (bytes.length !== count * size) {
    const nums = shape.reduce((a, b) => a * BigInt(b), 1n)
    bad(`size is not matched, decode base64 size:${bytes.length}; Given info: type:${TYPE_NAMES[type]}; type size:${size}; element nums:${nums}`)
  }
  return new Tensor(type, shape, new DTYPES[type].ctor(bytes.buffer, bytes.byteOffset, count))
}

function checkShape(shape: unknown): void {
  if (!Array.isArray(shape)) bad("json object, key is 'shape', value should be array type")
  let zeroBefore = false
  for (let i = 0; i < shape.length; i++) {
    if (zeroBefore) bad(`json object, key is 'shape', invalid shape value ${dumpJson(shape, false)}`)
    const d: unknown = shape[i]
    const unsigned = typeof d === 'bigint' ? d >= 0n : typeof d === 'number' && d >= 0 && !Object.is(d, -0) && !isFloatAt(shape, i, d)
    if (!unsigned) bad("json object, key is 'shape', array value should be unsigned integer")
    // The reference reads each dim as int32, so dims of 2^31 and above count as negative.
    const i32 = typeof d === 'bigint' ? Number(BigInt.asIntN(32, d)) : (d as number) | 0
    if (i32 < 0) bad(`json object, key is 'shape', number value should not be negative number, shape value: ${dumpJson(shape, false)}`)
    if (i32 === 0) zeroBefore = true
  }
}

/** `type` of a b64 object (bytes when absent), or undefined for an unknown/non-string type. */
function objectItemType(obj: Record<string, unknown>): ItemType | undefined {
  if (!Object.hasOwn(obj, 'type')) return 'bytes'
  const t = obj['type']
  return typeof t === 'string' ? B64_TYPES.get(t) : undefined
}

/** Standard padded base64 -> a fresh, exactly sized Uint8Array (never a slice of Buffer's pool). */
function decodeB64(b64: unknown): Uint8Array {
  if (typeof b64 !== 'string') bad('get scalar data failed, type is string, but json is not string type')
  if (b64.length % 4 !== 0) bad(`'${b64}' is illegal b64 encode string`)
  // Node's decoder skips characters outside the alphabet, so an invalid string decodes to fewer
  // bytes than its length implies; that check (plus the url-safe letters Node also accepts) is
  // much cheaper than a regex over large payloads.
  const buf = Buffer.from(b64, 'base64')
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0
  if (buf.length !== (b64.length / 4) * 3 - pad || b64.includes('-') || b64.includes('_')) bad('decode base64 failed, size is not matched.')
  if (buf.byteOffset === 0 && buf.buffer.byteLength === buf.length) return new Uint8Array(buf.buffer, 0, buf.length)
  const out = new Uint8Array(buf.length)
  out.set(buf)
  return out
}

function utf8(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')
}

function stringShapeError(key: string, shape: readonly number[]): string {
  return `Instances input ${key} check failed, detail: Instance tensor check failed: bytes or string type input `
    + ` shape can only be (1,) or empty, but given shape is [${shape.join(', ')}]`
}

/** Nested JSON array -> tensor; dtype from the first leaf, shape from the first element at each depth. */
function parseArrayItem(arr: unknown[], key: string, ctx: ParseCtx): Value {
  const shape: number[] = []
  let node: unknown = arr
  let parent: unknown[] = arr
  while (Array.isArray(node) && node.length > 0) {
    shape.push(node.length)
    parent = node
    node = node[0]
  }
  if (shape.length === 0) bad('json array, shape is empty')
  let kind = K_INT
  let type: ItemType | undefined
  if (typeof node === 'number') { kind = isFloatAt(parent, 0, node) ? K_FLOAT : K_INT; type = kind === K_FLOAT ? 'float32' : 'int32' }
  else if (typeof node === 'bigint') type = 'int32'
  else if (typeof node === 'boolean') { kind = K_BOOL; type = 'bool' }
  else if (typeof node === 'string') { kind = K_STR; type = 'string' }
  else if (isObject(node)) { kind = K_OBJ; type = objectItemType(node) }
  if (type === undefined) bad('json array, data type is unknown')
  const count = shape.reduce((a, b) => a * b, 1)
  const isTensor = type !== 'string' && type !== 'bytes'
  if (!isTensor && count !== 1) bad('json array, string or bytes type only support one item')
  if (kind === K_OBJ && isTensor) bad('json array, item is object type, object only support string or bytes type')

  const sub = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1))
  if (!isTensor) {
    const holder: Value[] = []
    fillArray(arr, 0, shape, sub, kind, type, holder, 0)
    if (shape.length !== 1) ctx.shapeError ??= stringShapeError(key, shape)
    return holder[0]!
  }
  const dtype = type as NumericDType
  if (count > MAX_DIRECT_ELEMENTS) {
    fillArray(arr, 0, shape, sub, kind, type, null, 0) // throws on the ragged part
    bad(`json array, element count ${count} is too large`)
  }
  const data = new DTYPES[dtype].ctor(count)
  fillArray(arr, 0, shape, sub, kind, type, data, 0)
  return new Tensor(dtype, shape, data)
}

type Sink = TypedArray | Value[] | null

function fillArray(node: unknown, depth: number, shape: number[], sub: number[], kind: number, type: ItemType, out: Sink, offset: number): void {
  if (!Array.isArray(node)) bad('invalid json array: json type is not array')
  if (node.length !== shape[depth]) bad(`invalid json array: json size is ${node.length}, the dim ${depth} expected to be ${shape[depth]}`)
  if (depth + 1 < shape.length) {
    const step = sub[depth]!
    for (let k = 0; k < node.length; k++) fillArray(node[k], depth + 1, shape, sub, kind, type, out, offset + step * k)
    return
  }
  if (kind === K_FLOAT) fillFloats(node, out as Float32Array | null, offset)
  else if (kind === K_INT) fillInts(node, out as Int32Array | null, offset)
  else if (kind === K_BOOL) {
    for (let k = 0; k < node.length; k++) {
      const v: unknown = node[k]
      if (typeof v !== 'boolean') leafMismatch(v)
      if (out !== null) (out as Uint8Array)[offset + k] = v ? 1 : 0
    }
  } else if (kind === K_STR) {
    for (const v of node as unknown[]) {
      if (typeof v !== 'string') leafMismatch(v)
      ;(out as Value[]).push(v)
    }
  } else {
    for (const v of node as unknown[]) {
      const t = isObject(v) ? objectItemType(v) : undefined
      if (t !== 'string' && t !== 'bytes') bad('json array, object type only support string or bytes type')
      if (t !== type) bad(NOT_EQUAL)
      const bytes = decodeB64((v as Record<string, unknown>)['b64'])
      ;(out as Value[]).push(t === 'bytes' ? bytes : utf8(bytes))
    }
  }
}

function fillFloats(row: unknown[], out: Float32Array | null, offset: number): void {
  const mark = (row as unknown as Record<symbol, FloatMark>)[JSON_FLOAT_KINDS]
  for (let k = 0; k < row.length; k++) {
    const v: unknown = row[k]
    if (typeof v !== 'number') leafMismatch(v)
    if (mark !== true && Number.isInteger(v) && !(mark !== undefined && (mark as number[])[k] === 1)) bad(NOT_EQUAL)
    if (out !== null) out[offset + k] = v
  }
}

function fillInts(row: unknown[], out: Int32Array | null, offset: number): void {
  const hasFloats = (row as unknown as Record<symbol, FloatMark>)[JSON_FLOAT_KINDS] !== undefined
  for (let k = 0; k < row.length; k++) {
    const v: unknown = row[k]
    let x: number
    if (typeof v === 'number') {
      if (!Number.isInteger(v) || (hasFloats && isFloatAt(row, k, v))) bad(NOT_EQUAL)
      x = v
    } else if (typeof v === 'bigint') x = Number(BigInt.asIntN(32, v))
    else leafMismatch(v)
    if (out !== null) out[offset + k] = x // Int32Array stores truncate modulo 2^32, like the reference's cast
  }
}

function leafMismatch(v: unknown): never {
  const t = typeof v
  return bad(t === 'number' || t === 'bigint' || t === 'boolean' || t === 'string' ? NOT_EQUAL : NOT_SCALAR)
}

/** nlohmann dump() of a parsed value (compact, sorted keys), for error texts that echo input. */
function dumpJson(v: unknown, isFloat: boolean): string {
  if (typeof v === 'number') return isFloat ? formatDouble(v) : String(v)
  if (typeof v === 'bigint' || typeof v === 'boolean') return String(v)
  if (typeof v === 'string') return JSON.stringify(v)
  if (v === null || v === undefined) return 'null'
  if (Array.isArray(v)) return `[${v.map((x, i) => dumpJson(x, typeof x === 'number' && isFloatAt(v, i, x))).join(',')}]`
  const o = v as Record<string, unknown>
  const keys = Object.keys(o).sort(compareKeys)
  return `{${keys.map((k) => `${JSON.stringify(k)}:${dumpJson(o[k], typeof o[k] === 'number' && isFloatAt(o, k, o[k] as number))}`).join(',')}}`
}

// ---------------------------------------------------------------------------------------------
// Reply: results -> {"instances":[...]} / {"error_msg":"..."}
// ---------------------------------------------------------------------------------------------

/** One request instance's outcome, in request order. */
export type MsReplyEntry = { outputs: Record<string, Value> } | { error: string }

class ReplyError extends Error {}

/** `{"error_msg":"<message>"}`, the whole-request error body. */
export function renderError(message: string): string {
  return `{"error_msg":${JSON.stringify(message)}}`
}

/**
 * Renders a reply as the reference's compact, key-sorted JSON. If every instance failed with the
 * same message the reply collapses to renderError(message), as the master does; mixed outcomes give
 * per-instance `{"error_msg":...}` objects. An unrenderable value yields `Failed to construct the response: ...`.
 */
export function renderReply(results: readonly MsReplyEntry[]): string {
  const first = results[0]
  if (first !== undefined && 'error' in first && results.every((r) => 'error' in r && r.error === first.error)) {
    return renderError(first.error)
  }
  try {
    const parts = new Array<string>(results.length)
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!
      parts[i] = 'error' in r ? renderError(r.error) : renderOutputs(r.outputs)
    }
    return `{"instances":[${parts.join(',')}]}`
  } catch (e) {
    if (e instanceof ReplyError) return renderError(`Failed to construct the response: ${e.message}`)
    throw e
  }
}

function renderOutputs(outputs: Record<string, Value>): string {
  const keys = Object.keys(outputs).sort(compareKeys)
  if (keys.length === 0) throw new ReplyError('reply instance items is empty')
  const parts = new Array<string>(keys.length)
  for (let i = 0; i < keys.length; i++) parts[i] = `${JSON.stringify(keys[i])}:${renderValue(outputs[keys[i]!]!)}`
  return `{${parts.join(',')}}`
}

/** Renders one output value: tensors as (nested) numbers, strings as JSON strings, bytes as {"b64":...}. */
export function renderValue(v: Value): string {
  if (v instanceof Tensor) return renderTensor(v)
  if (typeof v === 'string') return JSON.stringify(v)
  if (v instanceof Uint8Array) return `{"b64":"${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64')}"}`
  throw new ReplyError('reply data type is unknown')
}

function renderTensor(t: Tensor): string {
  const shape = t.shape
  let n = 1
  for (const d of shape) n *= d
  if (t.data.length < n) throw new ReplyError(`reply tensor data size ${t.data.length} is less than the ${n} elements of shape [${shape.join(',')}]`)
  if (shape.length === 0) return renderScalar(t)
  // Any zero dim: nested empty arrays down to it (the reference prints null for a zero non-last dim).
  if (n === 0) return renderEmpty(shape, 0)
  const w = shape[shape.length - 1]!
  let level = new Array<string>(n / w)
  for (let r = 0; r < level.length; r++) level[r] = renderRow(t, r * w, w)
  for (let d = shape.length - 2; d >= 0; d--) {
    const g = shape[d]!
    const next = new Array<string>(level.length / g)
    for (let j = 0; j < next.length; j++) next[j] = `[${level.slice(j * g, j * g + g).join(',')}]`
    level = next
  }
  return level[0]!
}

function renderEmpty(shape: readonly number[], d: number): string {
  if (shape[d] === 0) return '[]'
  const inner = renderEmpty(shape, d + 1)
  return `[${new Array<string>(shape[d]!).fill(inner).join(',')}]`
}

function renderScalar(t: Tensor): string {
  const v = t.data[0]!
  if (t.dtype === 'float16') return formatDouble(f16BitsToF32(v as number))
  if (t.dtype === 'float32' || t.dtype === 'float64') return formatDouble(v as number)
  if (t.dtype === 'bool') return v ? 'true' : 'false'
  return String(v)
}

/** `count` elements from `offset` as one bracketed JSON array. */
function renderRow(t: Tensor, offset: number, count: number): string {
  const data = t.data
  switch (t.dtype) {
    case 'float32':
    case 'float64':
    case 'float16':
      return renderFloatRow(data as Float32Array | Uint16Array, t.dtype === 'float16', offset, count)
    case 'bool': {
      const b = data as Uint8Array
      const parts = new Array<string>(count)
      for (let k = 0; k < count; k++) parts[k] = b[offset + k] ? 'true' : 'false'
      return `[${parts.join(',')}]`
    }
    default:
      // Integer typed arrays (incl. BigInt64/BigUint64) join natively to exact decimal text.
      return `[${(data as Int32Array).subarray(offset, offset + count).join(',')}]`
  }
}

const INTEGRAL_TOKEN_RE = /(?<=[[,])(-?\d+)(?=[,\]])/g

/**
 * Native JSON.stringify already prints shortest round-trip digits and `null` for NaN/Infinity,
 * like nlohmann; only integral values (`11` -> `11.0`) differ inside 1e-4 <= |x| < 1e15. Rows
 * with -0 or values outside that range take the per-element formatDouble path.
 */
function renderFloatRow(data: Float32Array | Uint16Array, half: boolean, offset: number, count: number): string {
  const values = new Array<number>(count)
  let integral = false
  let special = false
  for (let k = 0; k < count; k++) {
    const v = half ? f16BitsToF32(data[offset + k]!) : data[offset + k]!
    values[k] = v
    const a = v < 0 ? -v : v
    if (a >= 1e-4 && a < 1e15) { if (Number.isInteger(v)) integral = true }
    else if (v === 0) { if (1 / v < 0) special = true; else integral = true }
    else if (v === v && a !== Infinity) special = true
  }
  if (special) return `[${values.map(formatDouble).join(',')}]`
  const text = JSON.stringify(values)
  return integral ? text.replace(INTEGRAL_TOKEN_RE, '$1.0') : text
}

/**
 * nlohmann's number_float text: shortest round-trip digits; fixed notation for 1e-4 <= |x| < 1e15
 * with integral values as `11.0`; otherwise `d.ddde+XX` (two-digit minimum exponent); `-0.0`.
 * NaN and ±Infinity are not JSON: nlohmann dumps them as `null`, and so do we.
 */
export function formatDouble(x: number): string {
  const a = x < 0 ? -x : x
  if (a >= 1e-4 && a < 1e15) {
    const s = '' + x
    return Number.isInteger(x) ? s + '.0' : s
  }
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0'
  if (a !== a || a === Infinity) return 'null'
  const s = x.toExponential()
  const e = s.indexOf('e')
  const digits = s.slice(e + 2)
  return `${s.slice(0, e + 2)}${digits.length < 2 ? '0' : ''}${digits}`
}
