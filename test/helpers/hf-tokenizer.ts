/**
 * A small real Hugging Face tokenizer for tests: a byte-level BPE `tokenizer.json` (GPT-2's byte to
 * unicode alphabet, a few merges, added special tokens, a TemplateProcessing post-processor that
 * adds BOS as Llama's tokenizer.json does) in the format `tokenizers` saves, and a
 * tokenizer_config.json. Generated here rather than committed so the vocabulary and the decoder
 * built for it (vocabSize = HF_VOCAB_SIZE) cannot drift apart.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest map to 256 + n. */
function byteAlphabet(): string[] {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
  const out: string[] = []
  let n = 0
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(keep(b) ? b : 256 + n++))
  return out
}

const MERGES: Array<[string, string]> = [
  ['h', 'e'], ['l', 'l'], ['he', 'll'], ['hell', 'o'], ['Ġ', 'w'], ['o', 'r'], ['Ġw', 'or'], ['l', 'd'], ['Ġwor', 'ld'],
]

/** Added tokens after the byte and merge tokens, in id order. */
export const HF_SPECIALS = ['<s>', '</s>', '<pad>', '<|im_start|>', '<|im_end|>'] as const

const BASE = 256 + MERGES.length
/** Ids of the special tokens. */
export const HF_IDS = { bos: BASE, eos: BASE + 1, pad: BASE + 2, imStart: BASE + 3, imEnd: BASE + 4 } as const
/** Every id of the vocabulary (the decoder built for this tokenizer has this many logits). */
export const HF_VOCAB_SIZE = BASE + HF_SPECIALS.length

/** The tokenizer.json text. */
export function hfTokenizerJson(): string {
  const vocab: Record<string, number> = {}
  byteAlphabet().forEach((c, i) => { vocab[c] = i })
  MERGES.forEach(([a, b], i) => { vocab[a + b] = 256 + i })
  const added = HF_SPECIALS.map((content, i) => ({ id: BASE + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }))
  return JSON.stringify({
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [HF_IDS.bos], tokens: ['<s>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: MERGES.map(([a, b]) => `${a} ${b}`) },
  })
}

/** Writes tokenizer.json and tokenizer_config.json (bos/eos/pad, add_bos_token, plus `config`) into `dir`. */
export function writeHfTokenizer(dir: string, config: Record<string, unknown> = {}): void {
  writeFileSync(join(dir, 'tokenizer.json'), hfTokenizerJson())
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: '<s>',
    eos_token: '</s>',
    pad_token: '<pad>',
    add_bos_token: true,
    add_eos_token: false,
    model_max_length: 512,
    ...config,
  }))
}

/**
 * A ChatML template in the style of Qwen2.5's (Hermes tool format): tools listed in the system turn
 * as JSON, an assistant's tool calls as `<tool_call>` JSON, tool results as `<tool_response>` in a
 * user turn. It starts with bos_token, so the rendered prompt must not get a second BOS.
 */
export const CHATML_TOOLS_TEMPLATE = [
  '{{- bos_token }}',
  '{%- if tools %}',
  "{{- '<|im_start|>system\\n# Tools\\n' }}",
  "{%- for tool in tools %}{{- tool | tojson }}{{- '\\n' }}{%- endfor %}",
  "{{- '<|im_end|>\\n' }}",
  '{%- endif %}',
  '{%- for message in messages %}',
  "{%- if message.role == 'tool' %}",
  "{{- '<|im_start|>user\\n<tool_response id=\"' + message.tool_call_id + '\" name=\"' + message.name + '\">' + message.content + '</tool_response><|im_end|>\\n' }}",
  "{%- elif message.role == 'assistant' and message.tool_calls %}",
  "{{- '<|im_start|>assistant\\n' + message.content }}",
  "{%- for tc in message.tool_calls %}{{- '<tool_call>{\"name\": \"' + tc.function.name + '\", \"arguments\": ' + (tc.function.arguments | tojson) + '}</tool_call>' }}{%- endfor %}",
  "{{- '<|im_end|>\\n' }}",
  '{%- else %}',
  "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
  '{%- endif %}',
  '{%- endfor %}',
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
].join('')
