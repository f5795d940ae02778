/**
 * Structured output through xgrammar (@mlc-ai/web-xgrammar, its WASM build). A request's
 * grammar travels as a GrammarSpec (plain data, in ValidGenerate); the listener checks once per
 * distinct schema that xgrammar turns it into a grammar (checkGrammar, cached), and the engine
 * compiles it against its vocabulary (GrammarCompilerCache, LRU-bounded, per distinct schema),
 * then each constrained sequence gets a GrammarMatcher whose bitmask masks its logits row.
 *
 * The package's lib/index.js is a UMD bundle inside a `"type":"module"` package, so it is read
 * and evaluated as the CommonJS module it is (its wasm is inlined in that file).
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { ServeError } from '../errors.ts'
import { applyBitmask } from './sampler.ts'
import { BYTE_VOCAB, byteToUnicode } from './tokenizer.ts'
import type { LlmTokenizer } from './tokenizer.ts'
import type * as Xg from '@mlc-ai/web-xgrammar'

/** What a request is constrained to: any JSON value (object, OpenAI json_object) or a JSON schema (normalized JSON text). */
export type GrammarSpec = { readonly type: 'json' } | { readonly type: 'json_schema'; readonly schema: string }

type XgModule = typeof Xg
let xgModule: XgModule | undefined

/** Loads xgrammar once per process (synchronous; the wasm binding initializes on first use). */
export function xgrammar(): XgModule {
  if (xgModule) return xgModule
  const req = createRequire(import.meta.url)
  const file = req.resolve('@mlc-ai/web-xgrammar')
  const module = { exports: {} as Record<string, unknown> }
  // The package's own CommonJS bundle, run with CommonJS's module arguments.
  new Function('exports', 'require', 'module', '__filename', '__dirname', readFileSync(file, 'utf8'))(module.exports, createRequire(file), module, file, dirname(file))
  xgModule = module.exports as unknown as XgModule
  return xgModule
}

/** Key of a spec for the caches. */
export function grammarKey(g: GrammarSpec): string {
  return g.type === 'json' ? 'json' : `schema:${g.schema}`
}

/**
 * The GrammarSpec of a JSON schema given by a client (an object or boolean `true`); throws
 * VALIDATION for what is not a schema object. The text is normalized with JSON.stringify.
 */
export function jsonSchemaSpec(schema: unknown, field: string): GrammarSpec {
  if (schema === true) return { type: 'json' }
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) throw new ServeError('VALIDATION', `\`${field}\` must be a JSON schema object`)
  return { type: 'json_schema', schema: JSON.stringify(schema) }
}

/** Bounded map with least-recently-used eviction (Map keeps insertion order). */
class Lru<V> {
  private readonly m = new Map<string, V>()
  constructor(private readonly max: number, private readonly onEvict?: (v: V) => void) {}
  get(k: string): V | undefined {
    const v = this.m.get(k)
    if (v !== undefined) { this.m.delete(k); this.m.set(k, v) }
    return v
  }
  delete(k: string): void { this.m.delete(k) }
  set(k: string, v: V): void {
    this.m.delete(k)
    this.m.set(k, v)
    while (this.m.size > this.max) {
      const [oldK, oldV] = this.m.entries().next().value as [string, V]
      this.m.delete(oldK)
      this.onEvict?.(oldV)
    }
  }
}

/**
 * The EBNF grammar of a JSON schema, compact (no free whitespace). xgrammar 0.1.27 writes the
 * characters of a length-bounded string as a class that lets raw control characters
 * (invalid in JSON) through; they are excluded here, as its unbounded strings already do.
 */
export async function schemaEbnf(schema: string): Promise<string> {
  // One line, `, ` and `: ` between items (as json.dumps and OpenAI's structured outputs): xgrammar
  // indents by 2 unless told -1, which spent a newline and indentation tokens on every property.
  const ebnf = await xgrammar().Testings._jsonSchemaToEBNF(schema, false, -1)
  return ebnf.replaceAll('[^"\\\\\\r\\n]', '[^\\0-\\x1f"\\\\]')
}

const checked = new Lru<string | true>(256)

/**
 * Listener-side check that xgrammar can build a grammar from the spec (no vocabulary needed);
 * cached per distinct schema text. Throws VALIDATION with `Input validation error`-ready text.
 */
export async function checkGrammar(g: GrammarSpec): Promise<void> {
  if (g.type === 'json') return
  const key = grammarKey(g)
  let r = checked.get(key)
  if (r === undefined) {
    try {
      const grammar = await xgrammar().Grammar.fromEBNF(await schemaEbnf(g.schema))
      grammar.dispose()
      r = true
    } catch {
      // xgrammar aborts with a generic error (its reason goes to stderr), so the text is ours.
      r = 'the JSON schema is not supported by the grammar compiler (xgrammar could not compile it)'
    }
    checked.set(key, r)
  }
  if (r !== true) throw new ServeError('VALIDATION', `\`grammar\`: ${r}`)
}

/**
 * The vocabulary as xgrammar's TokenizerInfo wants it: the tokens as the tokenizer stores them
 * plus how to decode them. The byte-level tokenizer's byte tokens are written `<0xXX>` (vocab
 * type byte_fallback), so each maps to its one byte. An HF tokenizer's raw tokens come from its
 * tokenizer.json (`model.vocab` and `added_tokens`), with the type its decoder implies (ByteLevel:
 * byte_level, ByteFallback: byte_fallback); ids it does not list, or a tokenizer without the file,
 * are given decoded (raw), which is exact for tokens that decode to whole characters.
 */
export function encodedVocab(tok: LlmTokenizer): { vocab: string[]; type: string } {
  const vocab: string[] = []
  if (tok.kind === 'byte-level') {
    for (let id = 0; id < tok.vocabSize; id++) {
      vocab.push(tok.isSpecial(id) ? tok.tokenText(id) : `<0x${(id - BYTE_VOCAB.OFFSET).toString(16).toUpperCase().padStart(2, '0')}>`)
    }
    return { vocab, type: 'byte_fallback' }
  }
  const raw = hfRawVocab(tok)
  for (let id = 0; id < tok.vocabSize; id++) vocab.push(raw?.tokens[id] ?? tok.tokenText(id))
  return { vocab, type: raw?.type ?? 'raw' }
}

function hfRawVocab(tok: LlmTokenizer): { tokens: Array<string | undefined>; type: string } | null {
  const dir = tok.source?.dir
  if (!dir) return null
  let j: { model?: { vocab?: unknown }; added_tokens?: Array<{ id?: unknown; content?: unknown }>; decoder?: unknown }
  try { j = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as typeof j } catch { return null }
  const tokens: Array<string | undefined> = []
  const v = j.model?.vocab
  if (Array.isArray(v)) v.forEach((e, id) => { if (Array.isArray(e) && typeof e[0] === 'string') tokens[id] = e[0] })
  else if (v && typeof v === 'object') for (const [t, id] of Object.entries(v)) if (typeof id === 'number') tokens[id] = t
  for (const a of j.added_tokens ?? []) if (typeof a.id === 'number' && typeof a.content === 'string') tokens[a.id] = a.content
  const dec = JSON.stringify(j.decoder ?? null)
  const type = dec.includes('"ByteLevel"') ? 'byte_level' : dec.includes('"ByteFallback"') ? 'byte_fallback' : 'raw'
  // Raw tokens only mean something with a known decoding; a plain vocabulary is given decoded.
  return type === 'raw' ? null : { tokens, type }
}

/** A constrained sequence's matcher: the mask for its next token, then the token it took. */
export interface SequenceGrammar {
  /** Sets every token the grammar does not allow next to -Infinity in `row`. */
  mask(row: Float32Array): Promise<void>
  /** Advances the matcher; false if the token was not allowed (cannot happen after mask). */
  accept(id: number): boolean
  readonly terminated: boolean
  dispose(): void
}

/** Engine-side: one TokenizerInfo + compiler per engine, compiled grammars cached per distinct spec. */
export class GrammarCompilerCache {
  private compiler: Promise<Xg.GrammarCompiler> | undefined
  private readonly compiled: Lru<Promise<Xg.CompiledGrammar>>

  constructor(private readonly tok: LlmTokenizer, private readonly logitsVocab: number, maxEntries = 64) {
    this.compiled = new Lru(maxEntries, (p) => { void p.then((c) => c.dispose(), () => undefined) })
  }

  /** The UTF-8 guard's table for this vocabulary (null when tokens are given decoded), with the compiler. */
  private utf8: Utf8Table | null = null

  private getCompiler(): Promise<Xg.GrammarCompiler> {
    this.compiler ??= (async () => {
      const xg = xgrammar()
      const encoded = encodedVocab(this.tok)
      const { vocab, type } = encoded
      const bytes = vocabBytes(this.tok, encoded)
      this.utf8 = bytes ? new Utf8Table(bytes) : null
      const info = await xg.TokenizerInfo.createTokenizerInfo(vocab, type, false, Math.max(this.logitsVocab, vocab.length), [...this.tok.eosTokenIds])
      return xg.GrammarCompiler.createGrammarCompiler(info, true)
    })()
    return this.compiler
  }

  /** The compiled grammar for a spec (compiled on the first request for it). */
  compile(g: GrammarSpec): Promise<Xg.CompiledGrammar> {
    const key = grammarKey(g)
    let p = this.compiled.get(key)
    if (p === undefined) {
      p = (async () => {
        const c = await this.getCompiler()
        return g.type === 'json' ? c.compileBuiltinJSONGrammar() : c.compileGrammar(await schemaEbnf(g.schema))
      })()
      this.compiled.set(key, p)
      // A failed compile is not kept (the next request for it tries again).
      p.catch(() => this.compiled.delete(key))
    }
    return p
  }

  /** A fresh matcher for one sequence. */
  async matcher(g: GrammarSpec): Promise<SequenceGrammar> {
    const compiled = await this.compile(g)
    const m = await xgrammar().GrammarMatcher.createGrammarMatcher(compiled)
    const utf8 = this.utf8 ? new Utf8Guard(this.utf8) : null
    return {
      async mask(row: Float32Array): Promise<void> {
        applyBitmask(row, await m.getNextTokenBitmask())
        utf8?.mask(row)
      },
      accept: (id: number) => { const ok = m.acceptToken(id); if (ok) utf8?.accept(id); return ok },
      get terminated() { return m.isTerminated() },
      dispose: () => m.dispose(),
    }
  }
}

/**
 * UTF-8 decoder states between tokens (RFC 3629 table): 0 = at a character boundary; the others
 * = continuation bytes still due and the range the next one must fall in (narrower after E0, ED,
 * F0, F4: no overlong forms, surrogates or code points past U+10FFFF).
 */
const U8_STATES: ReadonlyArray<readonly [need: number, lo: number, hi: number]> = [
  [0, 0x80, 0xbf], [1, 0x80, 0xbf], [2, 0x80, 0xbf], [2, 0xa0, 0xbf], [2, 0x80, 0x9f], [3, 0x90, 0xbf], [3, 0x80, 0xbf], [3, 0x80, 0x8f],
]
const u8State = (need: number, lo: number, hi: number): number => U8_STATES.findIndex(([n, l, h]) => n === need && l === lo && h === hi)

/** The state after byte `b` in state `st`, or -1 where `b` cannot come next in valid UTF-8. */
function u8Step(st: number, b: number): number {
  const [need, lo, hi] = U8_STATES[st]!
  if (need > 0) return b >= lo && b <= hi ? u8State(need - 1, 0x80, 0xbf) : -1
  if (b < 0x80) return 0
  if (b >= 0xc2 && b <= 0xdf) return 1
  if (b === 0xe0) return 3
  if (b === 0xed) return 4
  if (b >= 0xe1 && b <= 0xef) return 2
  if (b === 0xf0) return 5
  if (b >= 0xf1 && b <= 0xf3) return 6
  if (b === 0xf4) return 7
  return -1
}

/**
 * Per vocabulary, built once per engine: each token's state transitions and, per state, which
 * tokens may come next. State 0 lists the few tokens that may not (they start with a continuation
 * byte or hold an invalid sequence); the mid-character states list the few that may (tokens
 * without bytes, the special ones, only at a character boundary).
 */
export class Utf8Table {
  /** next[id * S + st]: the state after token id from st (-1: invalid). */
  private readonly next: Int8Array
  private readonly lists: Int32Array[]
  /** Room for the kept values of the longest mid-character list (mask is synchronous: one per table). */
  private readonly keep: Float32Array
  constructor(tokenBytes: ReadonlyArray<Uint8Array | null>) {
    const S = U8_STATES.length, v = tokenBytes.length
    this.next = new Int8Array(v * S)
    const lists: number[][] = U8_STATES.map(() => [])
    for (let id = 0; id < v; id++) {
      const bytes = tokenBytes[id]
      for (let st = 0; st < S; st++) {
        let cur = bytes ? st : (st === 0 ? 0 : -1)
        if (bytes) for (let i = 0; i < bytes.length && cur >= 0; i++) cur = u8Step(cur, bytes[i]!)
        this.next[id * S + st] = cur
        if ((st === 0) === (cur < 0)) lists[st]!.push(id)
      }
    }
    this.lists = lists.map((l) => Int32Array.from(l))
    this.keep = new Float32Array(Math.max(0, ...lists.slice(1).map((l) => l.length)))
  }
  /** Masks what cannot come next from state `st` (row past the table's vocabulary is left alone). */
  mask(row: Float32Array, st: number): void {
    const list = this.lists[st]!
    if (st === 0) { for (let k = 0; k < list.length; k++) row[list[k]!] = -Infinity; return }
    const keep = this.keep
    for (let k = 0; k < list.length; k++) keep[k] = row[list[k]!]!
    row.fill(-Infinity)
    for (let k = 0; k < list.length; k++) row[list[k]!] = keep[k]!
  }
  step(st: number, id: number): number {
    const n = id >= 0 && id * U8_STATES.length < this.next.length ? this.next[id * U8_STATES.length + st]! : 0
    return n < 0 ? 0 : n
  }
}

/**
 * Each token's bytes as the model's vocabulary spells them (null: no bytes, a special token), for
 * the UTF-8 guard: our byte vocabulary; HF byte-level BPE (GPT-2's byte-to-character map); byte
 * fallback vocabularies (`<0xNN>` pieces, `▁` for space). null for a vocabulary given decoded.
 */
export function vocabBytes(tok: LlmTokenizer, encoded: { vocab: string[]; type: string }): Array<Uint8Array | null> | null {
  const utf8 = new TextEncoder()
  if (tok.kind === 'byte-level') {
    return encoded.vocab.map((_, id) => (tok.isSpecial(id) || id < BYTE_VOCAB.OFFSET ? null : Uint8Array.of(id - BYTE_VOCAB.OFFSET)))
  }
  if (encoded.type === 'byte_level') {
    const inverse = new Map(byteToUnicode().map((ch, b) => [ch, b]))
    return encoded.vocab.map((t, id) => {
      if (tok.isSpecial(id)) return null
      const out = new Uint8Array(t.length)
      let n = 0
      for (const ch of t) {
        const b = inverse.get(ch)
        if (b === undefined) return utf8.encode(t) // an added token, written as plain text
        out[n++] = b
      }
      return out.subarray(0, n)
    })
  }
  if (encoded.type === 'byte_fallback') {
    return encoded.vocab.map((t, id) => {
      if (tok.isSpecial(id)) return null
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(t)
      return m ? Uint8Array.of(parseInt(m[1]!, 16)) : utf8.encode(t.replace(/\u2581/g, ' '))
    })
  }
  return null
}

/**
 * xgrammar checks UTF-8 structure only (lead byte + continuation bytes), so where tokens are bytes
 * or end mid-character it lets overlong forms, surrogates and code points past U+10FFFF through
 * (they decode to U+FFFD and break maxLength/enum). This masks every token that cannot come next in
 * valid UTF-8 after the sequence's bytes so far, on top of the grammar's mask.
 */
class Utf8Guard {
  private st = 0
  constructor(private readonly table: Utf8Table) {}
  mask(row: Float32Array): void { this.table.mask(row, this.st) }
  accept(id: number): void { this.st = this.table.step(this.st, id) }
}
