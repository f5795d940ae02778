/**
 * Tokenizers for the engine: an HF `tokenizer.json` (via @huggingface/tokenizers) when the model
 * directory has one, else the byte-level tokenizer our generated decoder uses. Plus incremental
 * detokenization that holds back text ending in an unfinished UTF-8 sequence (TGI's
 * prefix/read offsets, llm-serving.md §2.7).
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { Tokenizer } from '@huggingface/tokenizers'

/** What the engine needs from a tokenizer. */
export interface LlmTokenizer {
  readonly kind: 'hf' | 'byte-level'
  readonly vocabSize: number
  readonly bosTokenId: number | null
  readonly eosTokenIds: readonly number[]
  readonly padTokenId: number
  /** The raw tokenizer_config.json (chat template, special token strings), if any. */
  readonly config: Record<string, unknown>
  encode(text: string, addSpecialTokens?: boolean): number[]
  decode(ids: readonly number[], skipSpecialTokens?: boolean): string
  isSpecial(id: number): boolean
  /** The token's own surface text (special tokens included, e.g. "</s>"). */
  tokenText(id: number): string
}

/** Byte-level vocabulary: PAD 0, BOS 1, EOS 2, byte b at 3 + b (259 ids). */
export const BYTE_VOCAB = { PAD: 0, BOS: 1, EOS: 2, OFFSET: 3, SIZE: 259 } as const

const SPECIAL_TEXT = ['<pad>', '<s>', '</s>']

/** Tokenizer for src/models/decoder.ts models: one id per UTF-8 byte. */
export class ByteLevelTokenizer implements LlmTokenizer {
  readonly kind = 'byte-level' as const
  readonly vocabSize = BYTE_VOCAB.SIZE
  readonly bosTokenId = BYTE_VOCAB.BOS
  readonly eosTokenIds: readonly number[] = [BYTE_VOCAB.EOS]
  readonly padTokenId = BYTE_VOCAB.PAD
  readonly config: Record<string, unknown> = { bos_token: '<s>', eos_token: '</s>', pad_token: '<pad>' }
  private readonly enc = new TextEncoder()
  private readonly dec = new TextDecoder('utf-8', { fatal: false })

  encode(text: string, addSpecialTokens = true): number[] {
    const ids: number[] = addSpecialTokens ? [BYTE_VOCAB.BOS] : []
    for (const b of this.enc.encode(text)) ids.push(b + BYTE_VOCAB.OFFSET)
    return ids
  }

  decode(ids: readonly number[], skipSpecialTokens = true): string {
    let out = ''
    const bytes: number[] = []
    const flush = (): void => { if (bytes.length) { out += this.dec.decode(Uint8Array.from(bytes)); bytes.length = 0 } }
    for (const id of ids) {
      if (id >= BYTE_VOCAB.OFFSET && id < BYTE_VOCAB.SIZE) bytes.push(id - BYTE_VOCAB.OFFSET)
      else if (!skipSpecialTokens) { flush(); out += SPECIAL_TEXT[id] ?? '' }
    }
    flush()
    return out
  }

  isSpecial(id: number): boolean { return id < BYTE_VOCAB.OFFSET }

  tokenText(id: number): string { return this.isSpecial(id) ? SPECIAL_TEXT[id] ?? '' : this.decode([id]) }
}

/** A special token's string from tokenizer_config.json: plain, or an AddedToken's `content`; null if absent. */
export function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content
  return null
}

/** Wraps @huggingface/tokenizers with eos/bos/pad resolved from the config files. */
export class HfTokenizer implements LlmTokenizer {
  readonly kind = 'hf' as const
  readonly vocabSize: number
  readonly bosTokenId: number | null
  readonly eosTokenIds: readonly number[]
  readonly padTokenId: number
  private readonly special: Set<number>

  constructor(private readonly tok: Tokenizer, readonly config: Record<string, unknown>, modelConfig: Record<string, unknown> = {}) {
    this.vocabSize = tok.get_vocab(true).size
    this.special = new Set([...tok.get_added_tokens_decoder().values()].filter((t) => t.special).map((t) => t.id))
    const idOf = (key: string): number | null => {
      const s = tokenString(config[key])
      const id = s === null ? undefined : tok.token_to_id(s)
      return id ?? null
    }
    const eos = new Set<number>()
    const fromCfg = idOf('eos_token')
    if (fromCfg !== null) eos.add(fromCfg)
    for (const v of [modelConfig.eos_token_id].flat()) if (typeof v === 'number') eos.add(v)
    this.eosTokenIds = [...eos]
    this.bosTokenId = idOf('bos_token') ?? (typeof modelConfig.bos_token_id === 'number' ? modelConfig.bos_token_id : null)
    this.padTokenId = idOf('pad_token') ?? this.eosTokenIds[0] ?? 0
  }

  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids
  }

  decode(ids: readonly number[], skipSpecialTokens = true): string {
    return this.tok.decode([...ids], { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false })
  }

  isSpecial(id: number): boolean { return this.special.has(id) }

  tokenText(id: number): string { return this.decode([id], false) }
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  return existsSync(path) ? JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown> : {}
}

/**
 * Loads the tokenizer for a model: `tokenizer.json` from `dir` (or the model file's directory,
 * then its parent); without one, the byte-level fallback.
 */
export async function loadTokenizer(modelPath: string, dir?: string): Promise<LlmTokenizer> {
  const candidates = dir ? [dir] : [dirname(modelPath), dirname(dirname(modelPath))]
  for (const d of candidates) {
    const tj = join(d, 'tokenizer.json')
    if (!existsSync(tj)) continue
    const cfg = await readJson(join(d, 'tokenizer_config.json'))
    const modelCfg = { ...(await readJson(join(d, 'config.json'))), ...(await readJson(join(d, 'generation_config.json'))) }
    return new HfTokenizer(new Tokenizer(await readJson(tj), cfg), cfg, modelCfg)
  }
  const byteCfg = candidates.map((d) => join(d, 'tokenizer_config.json')).find((f) => existsSync(f))
  const bt = new ByteLevelTokenizer()
  if (byteCfg) Object.assign(bt.config, await readJson(byteCfg))
  return bt
}

/**
 * Incremental detokenizer for one sequence. Decodes a sliding window so tokenizers that
 * depend on context (SentencePiece leading spaces, multi-token UTF-8) stream correctly.
 */
export class DetokenizeStream {
  private ids: number[]
  private prefixOffset = 0
  private readOffset: number

  /** `context` = the last few prompt ids, decoded only as left context. */
  constructor(private readonly tok: LlmTokenizer, context: readonly number[] = []) {
    this.ids = context.slice(-5)
    this.readOffset = this.ids.length
  }

  /** Adds a token; returns the newly complete text ("" while a UTF-8 sequence is unfinished). */
  push(id: number, flush = false): string {
    this.ids.push(id)
    const prefix = this.tok.decode(this.ids.slice(this.prefixOffset, this.readOffset))
    const full = this.tok.decode(this.ids.slice(this.prefixOffset))
    if (full.length > prefix.length && (flush || !full.endsWith('\uFFFD'))) {
      const text = full.slice(prefix.length)
      this.prefixOffset = this.readOffset
      this.readOffset = this.ids.length
      return text
    }
    return ''
  }
}
