/**
 * A synthetic byte-level BPE tokenizer (Hugging Face `tokenizer.json` format) of any vocabulary
 * size, for the bench decoders with a real-size vocabulary (src/models/decoder.ts `smol`): the
 * engine needs a tokenizer whose vocabulary matches the logits, and a model of our own has no
 * trained one. The ids keep the layout of the byte-level tokenizer (src/llm/tokenizer.ts):
 * <pad> 0, <s> 1, </s> 2, byte b at 3 + b (GPT-2's byte-to-unicode alphabet), so prompts and
 * the decoder's printable-byte logit bias mean the same in both; ids 259.. are merged tokens,
 * generated from a seeded RNG (letters appended to word-like tokens, GPT-2 style `Ġ` = space).
 * Deterministic: same size and seed, same files.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { byteToUnicode } from '../llm/tokenizer.ts'
import { mulberry32 } from './onnx-builder.ts'

const SPECIALS = ['<pad>', '<s>', '</s>'] as const

export { byteToUnicode }

/** The two files a model folder needs (`tokenizer.json`, `tokenizer_config.json`), as objects. */
export interface SyntheticTokenizer {
  tokenizer: Record<string, unknown>
  config: Record<string, unknown>
}

/** Builds a byte-level BPE tokenizer with exactly `vocabSize` ids (>= 259). */
export function buildSyntheticTokenizer(vocabSize: number, seed = 49152): SyntheticTokenizer {
  if (!Number.isInteger(vocabSize) || vocabSize < 259) throw new Error(`vocabSize must be an integer >= 259 (got ${vocabSize})`)
  const bytes = byteToUnicode()
  const vocab: Record<string, number> = {}
  SPECIALS.forEach((s, i) => { vocab[s] = i })
  bytes.forEach((ch, b) => { vocab[ch] = 3 + b })
  let size = 259
  // Word-like tokens grow by one letter per merge: "Ġ" + letters, or letters alone. Letters are
  // drawn with rough English frequencies so short, plausible pieces come first.
  const letters = 'eeeeeeeeeeeetttttttttaaaaaaaaoooooooiiiiiiinnnnnnnssssssrrrrrrhhhhhlllldddcccuuummmwwffggyyppbbvkjxqz'
  const space = bytes[32]!
  const words: string[] = [space, ...'abcdefghijklmnopqrstuvwxyz'.split('').map((c) => bytes[c.charCodeAt(0)]!)]
  const merges: Array<[string, string]> = []
  const rand = mulberry32(seed)
  while (size < vocabSize) {
    // Favour recent (longer) words a little, so lengths spread out instead of staying at 2-3.
    const r = rand()
    const left = words[Math.floor((1 - r * r) * words.length)] ?? words[0]!
    const right = bytes[letters.charCodeAt(Math.floor(rand() * letters.length))]!
    const piece = left + right
    if (piece.length > 16 || Object.hasOwn(vocab, piece)) continue
    vocab[piece] = size++
    merges.push([left, right])
    words.push(piece)
  }
  const added = SPECIALS.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }))
  const bos = { SpecialToken: { id: '<s>', type_id: 0 } }
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }
  const tokenizer = {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: {
      type: 'TemplateProcessing',
      single: [bos, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [bos, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: byteLevel,
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges,
    },
  }
  const config = {
    tokenizer_class: 'PreTrainedTokenizerFast', bos_token: '<s>', eos_token: '</s>', pad_token: '<pad>',
    add_bos_token: true, model_max_length: 2048,
  }
  return { tokenizer, config }
}

/** Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (created if missing). */
export async function writeSyntheticTokenizer(dir: string, vocabSize: number, seed?: number): Promise<void> {
  const { tokenizer, config } = buildSyntheticTokenizer(vocabSize, seed)
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer))
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2))
}
