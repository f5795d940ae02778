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
import { BYTE_VOCAB } from './tokenizer.ts'
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
  const ebnf = await xgrammar().Testings._jsonSchemaToEBNF(schema, false)
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

  private getCompiler(): Promise<Xg.GrammarCompiler> {
    this.compiler ??= (async () => {
      const xg = xgrammar()
      const { vocab, type } = encodedVocab(this.tok)
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
    const utf8 = this.tok.kind === 'byte-level' ? new Utf8Guard() : null
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
 * xgrammar checks UTF-8 structure only (lead byte + continuation bytes), so with one token per
 * byte it lets overlong forms, surrogates and code points past U+10FFFF through (they decode to
 * U+FFFD and break maxLength/enum). On the byte-level vocabulary this masks every byte that cannot
 * come next in valid UTF-8 (RFC 3629 table), on top of the grammar's mask.
 */
class Utf8Guard {
  /** Continuation bytes still due, and the range the next one must fall in. */
  private need = 0
  private lo = 0x80
  private hi = 0xbf

  mask(row: Float32Array): void {
    const o = BYTE_VOCAB.OFFSET
    if (this.need === 0) {
      for (let b = 0x80; b <= 0xc1; b++) row[o + b] = -Infinity
      for (let b = 0xf5; b <= 0xff; b++) row[o + b] = -Infinity
    } else {
      for (let id = 0; id < o; id++) row[id] = -Infinity
      for (let b = 0; b <= 0xff; b++) if (b < this.lo || b > this.hi) row[o + b] = -Infinity
    }
  }

  accept(id: number): void {
    const b = id - BYTE_VOCAB.OFFSET
    if (b < 0) return
    let need = 0, lo = 0x80, hi = 0xbf
    if (this.need > 0) need = this.need - 1
    else if (b >= 0xc2 && b <= 0xdf) need = 1
    else if (b === 0xe0) { need = 2; lo = 0xa0 } else if (b === 0xed) { need = 2; hi = 0x9f } else if (b >= 0xe1 && b <= 0xef) need = 2
    else if (b === 0xf0) { need = 3; lo = 0x90 } else if (b === 0xf4) { need = 3; hi = 0x8f } else if (b >= 0xf1 && b <= 0xf3) need = 3
    this.need = need; this.lo = lo; this.hi = hi
  }
}
