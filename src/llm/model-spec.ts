/**
 * Discovers how to drive a decoder from an onnxruntime session's input/output metadata alone
 * (HF optimum with-past convention, llm-serving.md §4.2): layer count, KV heads, head size, KV
 * dtype, optional `position_ids` / `use_cache_branch`, and whether `present.*` carries the whole
 * sequence or only the step's new positions (after graph-rewrite.ts). Anything the engine
 * cannot serve is rejected here, at load, with a message naming the input and what was expected.
 */
import { ServeError } from '../errors.ts'

/** The subset of `InferenceSession` this module reads (so tests can fabricate one). */
export interface SessionLike {
  readonly inputNames: readonly string[]
  readonly outputNames: readonly string[]
  readonly inputMetadata: readonly SessionValueMeta[]
  readonly outputMetadata: readonly SessionValueMeta[]
}

/** One value's metadata as onnxruntime-common reports it. */
export type SessionValueMeta =
  | { readonly name: string; readonly isTensor: true; readonly type: string; readonly shape: ReadonlyArray<number | string> }
  | { readonly name: string; readonly isTensor: false }

/** Element types the KV cache may use; float16 travels as raw Uint16 bits. */
export type KvDtype = 'float32' | 'float16'

/** Everything the engine needs to know about a decoder graph. */
export interface ModelSpec {
  numLayers: number
  numKvHeads: number
  headDim: number
  kvDtype: KvDtype
  logitsDtype: KvDtype
  /** From the logits shape when static, else null (then taken from the first run). */
  vocabSize: number | null
  hasPositionIds: boolean
  hasUseCacheBranch: boolean
  pastKeyNames: string[]
  pastValueNames: string[]
  presentKeyNames: string[]
  presentValueNames: string[]
  /** 'new': present outputs hold only the step's S new positions; 'full': past+S (plain optimum). */
  presentMode: 'new' | 'full'
  logitsName: string
  /** The rewrite's per-row logit statistics (graph-rewrite.ts `addLogitStats`) are there. */
  hasLogitStats: boolean
}

/** Output names written by graph-rewrite.ts. */
export const NEW_PRESENT_PREFIX = 'present_new'

/**
 * graph-rewrite.ts's per-row logit statistics: input [B,1,1] 1/temperature of each row (1 for
 * greedy), outputs [B,1,1] the row's largest logit and the largest log-probability of
 * log_softmax(logits / T) (the most likely token's, i.e. max/T - logsumexp(logits/T)).
 */
export const LOGIT_STATS = { invTemperature: 'msserve_inv_temperature', max: 'msserve_logit_max', topLogprob: 'msserve_top_logprob' } as const

const PAST_RE = /^past_key_values\.(\d+)\.(key|value)$/
const KNOWN_INPUTS = new Set(['input_ids', 'attention_mask', 'position_ids', 'use_cache_branch', LOGIT_STATS.invTemperature])

function reject(msg: string): never {
  throw new ServeError('CONFIG_INVALID', `cannot serve this model: ${msg}`)
}

/** Reads the session metadata into a ModelSpec or throws CONFIG_INVALID explaining why not. */
export function describeModel(s: SessionLike): ModelSpec {
  const meta = new Map(s.inputMetadata.map((m) => [m.name, m]))
  const outMeta = new Map(s.outputMetadata.map((m) => [m.name, m]))
  if (!s.inputNames.includes('input_ids')) reject('no `input_ids` input (expected an HF optimum decoder export)')
  if (!s.inputNames.includes('attention_mask')) reject('no `attention_mask` input; the engine batches rows of different lengths and needs a mask')
  if (!s.outputNames.includes('logits')) reject(`no \`logits\` output (outputs: ${s.outputNames.join(', ')})`)
  const fused = s.inputNames.find((n) => /^past_key_values\.\d+\.key_value$/.test(n))
  if (fused) reject(`fused key/value cache input \`${fused}\` (gpt_bigcode/MQA layout) is not supported`)
  const unknown = s.inputNames.filter((n) => !KNOWN_INPUTS.has(n) && !PAST_RE.test(n))
  if (unknown.length) reject(`unsupported inputs: ${unknown.join(', ')} (supported: input_ids, attention_mask, position_ids, use_cache_branch, past_key_values.{i}.key/value)`)

  const layers = new Set<number>()
  for (const n of s.inputNames) { const m = PAST_RE.exec(n); if (m) layers.add(Number(m[1])) }
  if (layers.size === 0) reject('no `past_key_values.{i}.key/value` inputs; export the model "with past" (text-generation-with-past)')
  const numLayers = layers.size
  for (let i = 0; i < numLayers; i++) {
    if (!layers.has(i)) reject(`past_key_values layers are not numbered 0..${numLayers - 1} (missing ${i})`)
  }
  const newMode = s.outputNames.includes(`${NEW_PRESENT_PREFIX}.0.key`)
  const prefix = newMode ? NEW_PRESENT_PREFIX : 'present'
  const spec: ModelSpec = {
    numLayers, numKvHeads: 0, headDim: 0, kvDtype: 'float32', logitsDtype: 'float32', vocabSize: null,
    hasPositionIds: s.inputNames.includes('position_ids'), hasUseCacheBranch: s.inputNames.includes('use_cache_branch'),
    pastKeyNames: [], pastValueNames: [], presentKeyNames: [], presentValueNames: [],
    presentMode: newMode ? 'new' : 'full', logitsName: 'logits',
    hasLogitStats: s.inputNames.includes(LOGIT_STATS.invTemperature) && s.outputNames.includes(LOGIT_STATS.max) && s.outputNames.includes(LOGIT_STATS.topLogprob),
  }
  for (let i = 0; i < numLayers; i++) {
    for (const kind of ['key', 'value'] as const) {
      const name = `past_key_values.${i}.${kind}`
      const out = `${prefix}.${i}.${kind}`
      const m = meta.get(name)
      if (!m) reject(`missing input ${name}`)
      if (!s.outputNames.includes(out)) reject(`missing output ${out} for input ${name}`)
      if (!m.isTensor) reject(`${name} is not a tensor`)
      if (m.type !== 'float32' && m.type !== 'float16') reject(`${name} has dtype ${m.type}; only float32 and float16 KV caches are supported`)
      if (m.shape.length !== 4) reject(`${name} has rank ${m.shape.length}; expected [batch, num_kv_heads, past_sequence_length, head_dim] (BLOOM-style 3-D caches are not supported)`)
      const [, kv, , hd] = m.shape
      if (typeof kv !== 'number' || typeof hd !== 'number') reject(`${name} has symbolic num_kv_heads/head_dim (${String(kv)}, ${String(hd)}); re-export with static head dims`)
      if (i === 0 && kind === 'key') { spec.numKvHeads = kv; spec.headDim = hd; spec.kvDtype = m.type }
      else if (kv !== spec.numKvHeads || hd !== spec.headDim || m.type !== spec.kvDtype) reject(`${name} has [${kv}, ${hd}] ${m.type}, unlike layer 0 [${spec.numKvHeads}, ${spec.headDim}] ${spec.kvDtype}`)
      ;(kind === 'key' ? spec.pastKeyNames : spec.pastValueNames).push(name)
      ;(kind === 'key' ? spec.presentKeyNames : spec.presentValueNames).push(out)
    }
  }
  for (const n of ['input_ids', 'attention_mask', 'position_ids']) {
    const m = meta.get(n)
    if (m && m.isTensor && m.type !== 'int64') reject(`${n} has dtype ${m.type}; expected int64`)
  }
  // HF optimum merged decoder (decoder_model_merged.onnx): one `If` on use_cache_branch, the
  // then-branch with past, the else-branch without (it ignores past_key_values). The runner feeds
  // [false] with empty [B,KV,0,hd] pasts at prefill and [true] with the cache at decode, as
  // optimum does; present.* and logits are If outputs, which graph-rewrite.ts slices after the If.
  const ucb = meta.get('use_cache_branch')
  if (ucb && ucb.isTensor) {
    if (ucb.type !== 'bool') reject(`use_cache_branch has dtype ${ucb.type}; expected bool (optimum merged decoder)`)
    const d = ucb.shape
    if (d.length !== 1 || (typeof d[0] === 'number' && d[0] !== 1)) reject(`use_cache_branch has shape [${d.join(', ')}]; expected [1] (optimum merged decoder)`)
  }
  const lm = outMeta.get('logits')
  if (lm && lm.isTensor) {
    if (lm.type !== 'float32' && lm.type !== 'float16') reject(`logits has dtype ${lm.type}; expected float32 or float16`)
    spec.logitsDtype = lm.type
    const v = lm.shape[lm.shape.length - 1]
    if (typeof v === 'number') spec.vocabSize = v
  }
  return spec
}
