/**
 * `ms-serve predict` values: `--input NAME=VALUE` text -> Value (with --dtype and the servable's
 * declared dtypes), and outputs -> a readable table or JSON. Pure; no I/O but reading `@file`s.
 */
import { readFileSync } from 'node:fs'
import { Buffer } from 'node:buffer'
import { ServeError } from '../errors.ts'
import { DTYPES, f16BitsToF32, f32ToF16Bits, NUMERIC_DTYPES, Tensor, type DType, type NumericDType, type Value } from '../tensor.ts'
import { isFloatAt, isObject, parseJsonBody } from '../protocol/rest/ms-json-reader.ts'
import { flattenNested } from '../client/rest-codec.ts'
import type { InstanceResult } from '../client/types.ts'

const usage = (msg: string): never => { throw new ServeError('INVALID_REQUEST', msg) }

export const VALUE_DTYPES: readonly DType[] = [...NUMERIC_DTYPES, 'string', 'bytes']

/** `NAME=VALUE` flags (repeatable) -> entries; the name is the text before the first `=`. */
export function splitAssignments(flag: string, list: readonly string[], example: string): Array<[string, string]> {
  return list.map((a) => {
    const eq = a.indexOf('=')
    if (eq <= 0) usage(`${flag} expects NAME=VALUE, e.g. ${flag} ${example} (got "${a}")`)
    return [a.slice(0, eq), a.slice(eq + 1)]
  })
}

/** `--dtype x1=float32` flags -> name -> dtype. */
export function parseDtypes(list: readonly string[]): Map<string, DType> {
  const out = new Map<string, DType>()
  for (const [name, t] of splitAssignments('--dtype', list, 'x1=float32')) {
    if (!(VALUE_DTYPES as readonly string[]).includes(t)) usage(`--dtype ${name}=${t}: unknown dtype; use one of ${VALUE_DTYPES.join(', ')}`)
    out.set(name, t as DType)
  }
  return out
}

/** VALUE as given, or the file it names with `@file`; `label` names the flag in messages (`--input x1=`). */
function readArg(label: string, text: string): { raw: Buffer | null; text: string; from: string } {
  if (!text.startsWith('@')) return { raw: null, text, from: label.replace(/[= ]$/, '') }
  const path = text.slice(1)
  let raw: Buffer
  try { raw = readFileSync(path) } catch (e) { return usage(`${label}@${path}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`) }
  return { raw, text: raw.toString('utf8'), from: `${label}@${path}` }
}

function parseJson(text: string, from: string, hint: string): unknown {
  try {
    return parseJsonBody(text)
  } catch (e) {
    return usage(`${from}: not JSON (${(e as Error).message.replace(/^Illegal JSON format\.\s*/, '')}). ${hint}`)
  }
}

/**
 * One `--input NAME=VALUE`: VALUE is JSON (or `@file` holding JSON). A string becomes a string, a
 * (nested) array of numbers or bools a tensor, `{"b64", "type", "shape"}` MindSpore's typed tensor.
 * `dtype` (from --dtype) decides how numbers are stored; `declared` is the servable's input dtype.
 * With dtype string/bytes, VALUE is taken as raw text or (with @file) the file's text / bytes.
 */
export function inputValue(name: string, text: string, dtype: DType | undefined, declared: DType | null | undefined): Value {
  const arg = readArg(`--input ${name}=`, text)
  if (dtype === 'bytes' && arg.raw) return new Uint8Array(arg.raw.buffer, arg.raw.byteOffset, arg.raw.byteLength)
  if (dtype === 'string' || dtype === 'bytes') {
    let v: unknown
    try { v = parseJsonBody(arg.text) } catch { v = undefined }
    if (typeof v === 'string') return dtype === 'string' ? v : new Uint8Array(Buffer.from(v, 'utf8'))
    if (isObject(v) && typeof v['b64'] === 'string') return toValue({ v }, 'v', dtype, undefined, arg.from)
    return dtype === 'string' ? arg.text : new Uint8Array(Buffer.from(arg.text, 'utf8'))
  }
  const hint = `Strings are JSON strings: --input ${name}='"text"' (or --dtype ${name}=string for raw text)`
  return toValue({ v: parseJson(arg.text, arg.from, hint) }, 'v', dtype, declared, arg.from)
}

/** Every instance of `--instances`: MindSpore's `{"instances": [...]}` (or one instance object), from JSON or `@file`. */
export function instancesValue(text: string, dtypes: Map<string, DType>, declared: (input: string) => DType | null | undefined): Record<string, Value>[] {
  const arg = readArg('--instances ', text)
  const from = arg.from
  const body = parseJson(arg.text, from, 'Give MindSpore\'s form: {"instances":[{"x1":[[1.0,2.0]]}]}')
  const list = isObject(body) ? body['instances'] : undefined
  const items = Array.isArray(list) ? list : isObject(list) ? [list] : usage(`${from}: expected {"instances": [{...}, ...]}, as MindSpore's REST body`)
  if (items.length === 0) usage(`${from}: "instances" is empty`)
  return items.map((inst, i) => {
    if (!isObject(inst)) return usage(`${from}: instances[${i}] is not an object of input name -> value`)
    const out: Record<string, Value> = {}
    for (const k of Object.keys(inst)) out[k] = toValue(inst, k, dtypes.get(k), declared(k), `${from} instances[${i}].${k}`)
    return out
  })
}

/** A parsed JSON value (`container[key]`, whose float marks tell `1.0` from `1`) -> Value. */
function toValue(container: Record<string, unknown>, key: string, dtype: DType | undefined, declared: DType | null | undefined, from: string): Value {
  const v = container[key]
  if (typeof v === 'string') return dtype === 'bytes' ? new Uint8Array(Buffer.from(v, 'utf8')) : v
  if (isObject(v)) return b64Value(v, from)
  const numeric = (d: DType | null | undefined) => (d && d !== 'string' && d !== 'bytes' ? d : undefined)
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') {
    const leaves = [v]
    const float = typeof v === 'number' && isFloatAt(container, key, v)
    return buildTensor(numeric(dtype) ?? numeric(declared) ?? defaultDtype(leaves, float), [], leaves, from)
  }
  if (Array.isArray(v)) {
    const { shape, leaves, float } = flatten(v, from)
    return buildTensor(numeric(dtype) ?? numeric(declared) ?? defaultDtype(leaves, float), shape, leaves, from)
  }
  return usage(`${from}: ${v === null ? 'null' : typeof v} is not a value; give a number, a (nested) array, a string or {"b64": ...}`)
}

const B64_TYPES: Record<string, DType> = { fp16: 'float16', fp32: 'float32', fp64: 'float64', str: 'string' }

function b64Value(o: Record<string, unknown>, from: string): Value {
  if (typeof o['b64'] !== 'string') return usage(`${from}: an object value must be {"b64": "...", "type"?: ..., "shape"?: [...]}`)
  const bytes = Buffer.from(o['b64'], 'base64')
  const t = o['type'] === undefined ? 'bytes' : B64_TYPES[String(o['type'])] ?? String(o['type'])
  if (t === 'bytes') return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (t === 'string') return bytes.toString('utf8')
  if (!(NUMERIC_DTYPES as readonly string[]).includes(t)) return usage(`${from}: unknown "type" ${JSON.stringify(o['type'])}; use one of ${VALUE_DTYPES.join(', ')}`)
  const shape = Array.isArray(o['shape']) ? o['shape'].map(Number) : []
  const n = shape.reduce((a, b) => a * b, 1)
  const size = DTYPES[t as NumericDType].bytes
  if (bytes.byteLength !== n * size) usage(`${from}: ${bytes.byteLength} bytes of base64 for ${n} ${t} values (${n * size} bytes)`)
  const copy = new Uint8Array(bytes)
  return new Tensor(t as NumericDType, shape, new DTYPES[t as NumericDType].ctor(copy.buffer, 0, n))
}

function flatten(arr: unknown[], from: string): { shape: number[]; leaves: unknown[]; float: boolean } {
  return flattenNested(arr, (path, depth, shape) => usage(depth < shape.length
    ? `${from}: ragged array at ${path}: expected ${shape[depth]} elements along dim ${depth} (shape [${shape.join(',')}])`
    : `${from}: ragged array at ${path}: expected a number`))
}

/** Without --dtype or a declared dtype: bools -> bool, any float (`1.0`, `1.5`) -> float32, else int64. */
function defaultDtype(leaves: readonly unknown[], float: boolean): NumericDType {
  if (leaves.length > 0 && typeof leaves[0] === 'boolean') return 'bool'
  return float ? 'float32' : 'int64'
}

const INT_RANGES: Partial<Record<NumericDType, [bigint, bigint]>> = {
  int8: [-128n, 127n], uint8: [0n, 255n], int16: [-32768n, 32767n], uint16: [0n, 65535n],
  int32: [-(2n ** 31n), 2n ** 31n - 1n], uint32: [0n, 2n ** 32n - 1n], int64: [-(2n ** 63n), 2n ** 63n - 1n], uint64: [0n, 2n ** 64n - 1n],
}

function buildTensor(dtype: NumericDType, shape: number[], leaves: readonly unknown[], from: string): Tensor {
  const data = new DTYPES[dtype].ctor(leaves.length)
  const range = INT_RANGES[dtype]
  for (let i = 0; i < leaves.length; i++) {
    const x = leaves[i]
    if (dtype === 'bool') {
      if (typeof x !== 'boolean' && x !== 0 && x !== 1) usage(`${from}: ${String(x)} is not a bool (true, false, 0 or 1)`)
      ;(data as Uint8Array)[i] = x ? 1 : 0
    } else if (typeof x === 'boolean') {
      usage(`${from}: ${x} among ${dtype} numbers`)
    } else if (range) {
      if (!(typeof x === 'bigint' || (typeof x === 'number' && Number.isInteger(x)))) usage(`${from}: ${JSON.stringify(x)} is not an integer, but the dtype is ${dtype} (pass --dtype NAME=float32 for floats)`)
      const b = BigInt(x as number | bigint)
      if (b < range[0] || b > range[1]) usage(`${from}: ${b} is out of ${dtype}'s range [${range[0]}, ${range[1]}]`)
      if (dtype === 'int64' || dtype === 'uint64') (data as BigInt64Array)[i] = b
      else (data as Int32Array)[i] = Number(b)
    } else {
      if (typeof x !== 'number' && typeof x !== 'bigint') usage(`${from}: ${JSON.stringify(x)} is not a number`)
      const n = Number(x)
      ;(data as Float64Array)[i] = dtype === 'float16' ? f32ToF16Bits(n) : n
    }
  }
  return new Tensor(dtype, shape, data)
}

// ---- output ----

/** The shortest decimal that reads back as the same float32 / float16 value. */
function shortFloat(v: number, dtype: NumericDType): string {
  if (!Number.isFinite(v)) return String(v)
  if (dtype === 'float64') return String(v)
  const same = (s: string) => (dtype === 'float16' ? f32ToF16Bits(Number(s)) === f32ToF16Bits(v) : Math.fround(Number(s)) === v)
  for (let p = 1; p < 17; p++) {
    const s = String(Number(v.toPrecision(p)))
    if (same(s)) return s
  }
  return String(v)
}

/** Each element as text (JSON-compatible: exact integers, shortest floats, NaN as null with `json`). */
function elementTexts(t: Tensor, json: boolean): string[] {
  const out = new Array<string>(t.data.length)
  for (let i = 0; i < t.data.length; i++) {
    const x = t.data[i]!
    if (t.dtype === 'bool') out[i] = x ? 'true' : 'false'
    else if (t.dtype === 'float16' || t.dtype === 'float32' || t.dtype === 'float64') {
      const v = t.dtype === 'float16' ? f16BitsToF32(x as number) : (x as number)
      out[i] = json && !Number.isFinite(v) ? 'null' : shortFloat(v, t.dtype)
    } else out[i] = String(x)
  }
  return out
}

function nest(items: readonly string[], shape: readonly number[], sep: string): string {
  if (shape.length === 0) return items[0] ?? ''
  if (shape.length === 1) return `[${items.join(sep)}]`
  const [d, ...rest] = shape
  const step = rest.reduce((a, b) => a * b, 1)
  const parts: string[] = []
  for (let i = 0; i < d!; i++) parts.push(nest(items.slice(i * step, (i + 1) * step), rest, sep))
  return `[${parts.join(sep)}]`
}

/** Up to this many elements are printed whole; larger tensors show their first and last ones. */
const MAX_SHOWN = 24

function valueText(v: Value): string {
  if (typeof v === 'string') return JSON.stringify(v)
  if (!(v instanceof Tensor)) {
    const hex = Buffer.from(v.buffer, v.byteOffset, Math.min(v.byteLength, 16)).toString('hex').replace(/(..)(?=.)/g, '$1 ')
    return `${v.byteLength} bytes${v.byteLength ? `: ${hex}${v.byteLength > 16 ? ' …' : ''}` : ''}`
  }
  const items = elementTexts(v, false)
  if (items.length <= MAX_SHOWN) return nest(items, v.shape, ', ')
  return `[${items.slice(0, 8).join(', ')}, …, ${items.slice(-4).join(', ')}] (${items.length} values, shown flat)`
}

const dtypeOf = (v: Value): string => (typeof v === 'string' ? 'string' : v instanceof Tensor ? v.dtype : 'bytes')
const shapeOf = (v: Value): string => (v instanceof Tensor ? `[${v.shape.join(',')}]` : typeof v === 'string' ? '[]' : '[]')

/** A table per instance: output, dtype, shape, values (large tensors abbreviated); errors as `error: ...`. */
export function renderResultsTable(results: readonly InstanceResult[]): string {
  const lines: string[] = []
  results.forEach((r, i) => {
    const head = results.length > 1 ? `instance ${i}` : ''
    if (r.error !== undefined) {
      lines.push(`${head ? `${head}: ` : ''}error: ${r.error}${r.msStatus !== undefined ? ` (MindSpore status ${r.msStatus})` : ''}`)
      return
    }
    if (head) lines.push(head)
    const rows = Object.keys(r.outputs).sort().map((k) => [k, dtypeOf(r.outputs[k]!), shapeOf(r.outputs[k]!), valueText(r.outputs[k]!)])
    const table = [['output', 'dtype', 'shape', 'values'], ...rows]
    const widths = [0, 1, 2].map((c) => Math.max(...table.map((row) => row[c]!.length)))
    const indent = head ? '  ' : ''
    for (const row of table) lines.push(indent + row.map((cell, c) => (c < 3 ? cell.padEnd(widths[c]!) : cell)).join('  ').trimEnd())
  })
  return lines.join('\n') + '\n'
}

function valueJson(v: Value): string {
  if (typeof v === 'string') return `{"dtype":"string","value":${JSON.stringify(v)}}`
  if (!(v instanceof Tensor)) return `{"dtype":"bytes","b64":"${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64')}"}`
  return `{"dtype":"${v.dtype}","shape":[${v.shape.join(',')}],"data":${nest(elementTexts(v, true), v.shape, ',')}}`
}

/**
 * `{"instances":[{"outputs":{"y":{"dtype","shape","data"}}}, {"error": "...", "ms_status": 2}]}`:
 * data nested by shape, int64 exact, floats in their shortest exact decimal; strings `{"dtype":"string","value"}`,
 * bytes `{"dtype":"bytes","b64"}`.
 */
export function renderResultsJson(results: readonly InstanceResult[]): string {
  const parts = results.map((r) => {
    if (r.error !== undefined) return `{"error":${JSON.stringify(r.error)}${r.msStatus !== undefined ? `,"ms_status":${r.msStatus}` : ''}}`
    return `{"outputs":{${Object.keys(r.outputs).sort().map((k) => `${JSON.stringify(k)}:${valueJson(r.outputs[k]!)}`).join(',')}}}`
  })
  return `{"instances":[${parts.join(',')}]}\n`
}
