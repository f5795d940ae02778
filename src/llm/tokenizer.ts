/**
 * Tokenizers for the engine: an HF `tokenizer.json` (via @huggingface/tokenizers) when the model
 * directory has one, else the byte-level tokenizer our generated decoder uses. Plus incremental
 * detokenization that holds back text ending in an unfinished UTF-8 sequence (TGI's
 * prefix/read offsets, llm-serving.md §2.7).
 */
import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { Tokenizer } from '@huggingface/tokenizers'

/** What the engine needs from a tokenizer. */
export interface LlmTokenizer {
  readonly kind: 'hf' | 'byte-level'
  readonly vocabSize: number
  readonly bosTokenId: number | null
  readonly eosTokenIds: readonly number[]
  readonly padTokenId: number
  /**
   * The tokenizer_config.json (special token strings, add_bos_token), if any, with `chat_template`
   * resolved from the template files as transformers does (see readChatTemplate).
   */
  readonly config: Record<string, unknown>
  /** The folder the tokenizer files came from and the file the chat template came from, if any (for load messages). */
  readonly source?: TokenizerSource
  encode(text: string, addSpecialTokens?: boolean): number[]
  decode(ids: readonly number[], skipSpecialTokens?: boolean): string
  isSpecial(id: number): boolean
  /** The token's own surface text (special tokens included, e.g. "</s>"). */
  tokenText(id: number): string
}

/** Where a tokenizer's files were found. */
export interface TokenizerSource {
  dir: string
  /** chat_template.jinja, chat_template.json or tokenizer_config.json; undefined when there is none. */
  chatTemplateFile?: string
}

/** Byte-level vocabulary: PAD 0, BOS 1, EOS 2, byte b at 3 + b (259 ids). */
export const BYTE_VOCAB = { PAD: 0, BOS: 1, EOS: 2, OFFSET: 3, SIZE: 259 } as const

const SPECIAL_TEXT = ['<pad>', '<s>', '</s>']

/** GPT-2's reversible byte -> printable character map (printable Latin-1 bytes map to themselves):
 * how byte-level BPE vocabularies (tokenizer.json with a ByteLevel decoder) spell bytes. */
export function byteToUnicode(): string[] {
  const direct: number[] = []
  for (let b = 0x21; b <= 0x7e; b++) direct.push(b)
  for (let b = 0xa1; b <= 0xac; b++) direct.push(b)
  for (let b = 0xae; b <= 0xff; b++) direct.push(b)
  const map = new Array<string>(256)
  const isDirect = new Set(direct)
  let shifted = 0
  for (let b = 0; b < 256; b++) map[b] = String.fromCodePoint(isDirect.has(b) ? b : 256 + shifted++)
  return map
}

/** Tokenizer for src/models/decoder.ts models: one id per UTF-8 byte. */
export class ByteLevelTokenizer implements LlmTokenizer {
  readonly kind = 'byte-level' as const
  readonly vocabSize = BYTE_VOCAB.SIZE
  readonly bosTokenId = BYTE_VOCAB.BOS
  readonly eosTokenIds: readonly number[] = [BYTE_VOCAB.EOS]
  readonly padTokenId = BYTE_VOCAB.PAD
  readonly config: Record<string, unknown> = { bos_token: '<s>', eos_token: '</s>', pad_token: '<pad>' }
  source?: TokenizerSource
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
  /** What encode() wraps text in when tokenizer_config.json sets add_bos_token / add_eos_token; null: the post-processor decides. */
  private readonly wrap: { bos: number | null; eos: number | null } | null

  constructor(private readonly tok: Tokenizer, readonly config: Record<string, unknown>, modelConfig: Record<string, unknown> = {}, readonly source?: TokenizerSource) {
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
    const flag = (k: string): boolean | undefined => typeof config[k] === 'boolean' ? config[k] as boolean : undefined
    const addBos = flag('add_bos_token')
    const addEos = flag('add_eos_token')
    const eosId = idOf('eos_token')
    if (addBos && this.bosTokenId === null) throw new Error('tokenizer_config.json sets add_bos_token but its bos_token is not in the vocabulary')
    if (addEos && eosId === null) throw new Error('tokenizer_config.json sets add_eos_token but its eos_token is not in the vocabulary')
    if (addBos !== undefined || addEos !== undefined) {
      // transformers then rebuilds the post-processor as `[bos] $A [eos]` (update_post_processor); a
      // flag left out keeps what tokenizer.json's post-processor does with that token.
      const empty = tok.encode('', { add_special_tokens: true }).ids
      const bos = (addBos ?? empty[0] === this.bosTokenId) ? this.bosTokenId : null
      const eos = (addEos ?? (eosId !== null && empty.at(-1) === eosId)) ? eosId : null
      this.wrap = { bos, eos }
    } else this.wrap = null
  }

  /**
   * `addSpecialTokens` false is transformers' add_special_tokens=False (what apply_chat_template
   * encodes the rendered prompt with); true adds what tokenizer.json's post-processor adds, or, when
   * tokenizer_config.json sets add_bos_token / add_eos_token, just BOS / EOS as those say.
   */
  encode(text: string, addSpecialTokens = true): number[] {
    if (!addSpecialTokens || this.wrap === null) return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids
    const ids = this.tok.encode(text, { add_special_tokens: false }).ids
    if (this.wrap.bos !== null) ids.unshift(this.wrap.bos)
    if (this.wrap.eos !== null) ids.push(this.wrap.eos)
    return ids
  }

  decode(ids: readonly number[], skipSpecialTokens = true): string {
    // @huggingface/tokenizers refuses an empty list (a stream without left context starts with one).
    if (ids.length === 0) return ''
    return this.tok.decode([...ids], { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false })
  }

  isSpecial(id: number): boolean { return this.special.has(id) }

  tokenText(id: number): string { return this.decode([id], false) }
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  if (!existsSync(path)) return {}
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`)
  }
}

/** A chat template as transformers holds it: one string, or named templates ("default", "tool_use", ...). */
export type ChatTemplateSpec = string | Record<string, string>

/**
 * The chat template of the tokenizer folder `dir`, in transformers' order: `chat_template.jinja`
 * (transformers >= 4.43; named extras in `additional_chat_templates/<name>.jinja`), then
 * `chat_template.json` (`{"chat_template": ...}`, the processors' file), then tokenizer_config.json's
 * `chat_template` (a string or the saved list form `[{name, template}]`). Undefined when none has one.
 */
export async function readChatTemplate(dir: string, tokenizerConfig: Record<string, unknown>): Promise<{ template: ChatTemplateSpec; file: string } | undefined> {
  const jinja = join(dir, 'chat_template.jinja')
  if (existsSync(jinja)) {
    const named: Record<string, string> = { default: await readFile(jinja, 'utf8') }
    const extra = join(dir, 'additional_chat_templates')
    if (existsSync(extra)) {
      for (const f of (await readdir(extra)).sort()) if (f.endsWith('.jinja')) named[basename(f, '.jinja')] = await readFile(join(extra, f), 'utf8')
    }
    return { template: Object.keys(named).length === 1 ? named.default! : named, file: jinja }
  }
  const json = join(dir, 'chat_template.json')
  const fromJson = normalizeChatTemplate((await readJson(json)).chat_template)
  if (fromJson !== undefined) return { template: fromJson, file: json }
  const fromConfig = normalizeChatTemplate(tokenizerConfig.chat_template)
  if (fromConfig !== undefined) return { template: fromConfig, file: join(dir, 'tokenizer_config.json') }
  return undefined
}

/** A `chat_template` value as saved (string, list of `{name, template}`, or a name -> template map); undefined if empty or of another type. */
export function normalizeChatTemplate(v: unknown): ChatTemplateSpec | undefined {
  if (typeof v === 'string') return v.length > 0 ? v : undefined
  const named: Record<string, string> = {}
  if (Array.isArray(v)) {
    for (const t of v) {
      const { name, template } = (t ?? {}) as { name?: unknown; template?: unknown }
      if (typeof name === 'string' && typeof template === 'string') named[name] = template
    }
  } else if (v && typeof v === 'object') {
    for (const [name, template] of Object.entries(v)) if (typeof template === 'string') named[name] = template
  }
  return Object.keys(named).length > 0 ? named : undefined
}

/** Puts the folder's resolved chat template into `config.chat_template` (what ChatTemplate reads) and says where it came from. */
async function withChatTemplate(dir: string, config: Record<string, unknown>): Promise<TokenizerSource> {
  const found = await readChatTemplate(dir, config)
  if (found) config.chat_template = found.template
  else delete config.chat_template
  return { dir, chatTemplateFile: found?.file }
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
    const source = await withChatTemplate(d, cfg)
    return new HfTokenizer(new Tokenizer(await readJson(tj), cfg), cfg, modelCfg, source)
  }
  const TEMPLATE_FILES = ['tokenizer_config.json', 'chat_template.jinja', 'chat_template.json']
  const byteDir = candidates.find((d) => TEMPLATE_FILES.some((f) => existsSync(join(d, f)))) ?? candidates[0]!
  const bt = new ByteLevelTokenizer()
  Object.assign(bt.config, await readJson(join(byteDir, 'tokenizer_config.json')))
  bt.source = await withChatTemplate(byteDir, bt.config)
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
