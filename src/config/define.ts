/**
 * The servable definition API used by `servable_config.ts`. It mirrors MindSpore Serving's
 * `declare_model` + `register_method` + `add_stage`: a method body runs once at load time with
 * placeholders and records a pipeline of stages (models and TypeScript functions).
 */
import type { Value } from '../tensor.ts'
import type { LlmEngineOptions } from '../llm/engine.ts'
import type { ToolParserName } from '../llm/tool-calls.ts'
import { checkOptionKeys } from './suggest.ts'

export type GraphOptimizationLevel = 'disabled' | 'basic' | 'extended' | 'all'

/** ORT session options a model may set. Threads default to the replica's share of the cores. */
export interface SessionOptions {
  intraOpThreads?: number
  interOpThreads?: number
  graphOptimizationLevel?: GraphOptimizationLevel
  executionMode?: 'sequential' | 'parallel'
  /** Extra ORT session config entries. On CPU ms-serve sets `'session.intra_op.allow_spinning': '0'`; set it to '1' to let threads spin. */
  extra?: Record<string, string>
}

/** Dynamic batching and queueing for one model. */
export interface BatchingOptions {
  /** Largest batch run at once. Default: the model's fixed batch dim, else 32. 1 = no batching. */
  maxBatchSize?: number
  /** How long a partial batch may wait for more instances. Default 0: batches form from backlog only. */
  maxWaitMs?: number
  /** Instances allowed to wait for this model before requests are refused (MindSpore default 10000). */
  maxQueueSize?: number
}

export interface ModelOptions extends BatchingOptions {
  /** ONNX file inside the version folder, e.g. `add.onnx` (or `stages` for a model split into pipeline stages). */
  file?: string
  /**
   * A model split into pipeline stages (`ms-serve split`): the stage files in order. Stage k runs
   * on the k-th device of its pipeline (`--devices`), batches overlap across stages, and every
   * stage's inputs must be model inputs or outputs of earlier stages (checked at load).
   */
  stages?: string[]
  /** true (default): dim 0 of every input/output is the batch. false: each instance is a whole model input. */
  withBatchDim?: boolean
  /** Indices of inputs without a batch dim: the first instance's value is used for the whole batch. */
  withoutBatchDimInputs?: number[]
  session?: SessionOptions
  /** Optional name used in stats and error messages; defaults to the file name without extension. */
  name?: string
}

/**
 * An LLM (decoder-only ONNX model with the HF optimum with-past I/O). The servable then answers
 * `:generate` / `:generated_stream`, TGI's `/generate*` and OpenAI's `/v1/*` routes.
 */
export interface LlmOptions extends Omit<LlmEngineOptions, 'intraOpNumThreads' | 'executionProviders' | 'tokenizerDir' | 'kvBlock' | 'stageDevices' | 'stageThreads' | 'stages' | 'stageFiles'> {
  /** ORT intra-op threads for the decoder (default: the replica's share of the cores). */
  intraOpThreads?: number
  /** ONNX decoder inside the version folder, e.g. `model.onnx` (or `stages` with its stage files). */
  file?: string
  /**
   * Pipeline stages: a number N splits `file` at N - 1 transformer-layer boundaries at load; a list
   * of stage files (`ms-serve split` output, in order, in the version folder) serves a decoder
   * given pre-split (joined at load, then split again at layer boundaries into as many stages).
   * Stage k runs on the k-th device of its pipeline (`--devices`, which may name agents' devices).
   */
  stages?: number | string[]
  /** Folder with tokenizer.json / tokenizer_config.json, relative to the servable folder (default: next to the model, then the servable folder). */
  tokenizerDir?: string
  /** Name reported by /info and /v1/models (default: the servable name). */
  modelId?: string
  /**
   * Upper bound for TGI's `best_of` on /generate (default 2, TGI's `--max-best-of`; 1 disables
   * it). Each of a request's sequences counts as one request against maxConcurrentRequests.
   */
  maxBestOf?: number
  /**
   * How OpenAI tool_choice "auto" finds tool calls in the output: 'hermes' (`<tool_call>{...}</tool_call>`,
   * Hermes/Qwen), 'llama3_json' (a `{"name", "parameters"}` object, Llama 3.1+), 'none' (the output
   * is content). Default: read from the chat template's tool format, else 'none'.
   */
  toolParser?: ToolParserName
}

export interface StageOptions {
  /** TS function stages: undefined = called per instance; 0 = batched up to the model batch size; K = batched up to K. */
  batchSize?: number
  /** Shown in errors, e.g. `Call Preprocess Failed`. Defaults to the function name. */
  tag?: string
}

/**
 * Serving limits of the whole servable (`defineServable(build, options)`), over the server-wide
 * flags and YAML; the server YAML's `servables.<name>.*` still wins (see runtime/policy.ts).
 */
export interface ServableOptions {
  /** Longest a request may take, arrival to answer (504); 0 = no limit. A request may ask for less. */
  requestTimeoutMs?: number
  /** Most instances in one predict request, checked while the body is read. */
  maxInstancesPerRequest?: number
  /** A replica silent this long is killed and restarted; 0 = off. Raise it for batches that run long. */
  watchdogMs?: number
}

/** The keys of an options type, in the order messages list them; the Record type keeps the list complete. */
function optionKeys<T>(all: Record<keyof T, true>): readonly string[] {
  return Object.freeze(Object.keys(all))
}

/** Every declareModel option; an option added to ModelOptions does not compile until it is listed here. */
export const MODEL_OPTION_KEYS = optionKeys<ModelOptions>({
  file: true, stages: true, maxBatchSize: true, maxWaitMs: true, maxQueueSize: true, withBatchDim: true, withoutBatchDimInputs: true, session: true, name: true,
})
export const SESSION_OPTION_KEYS = optionKeys<SessionOptions>({
  intraOpThreads: true, interOpThreads: true, graphOptimizationLevel: true, executionMode: true, extra: true,
})
export const LLM_OPTION_KEYS = optionKeys<LlmOptions>({
  file: true, maxBatchSize: true, maxTotalTokens: true, maxInputTokens: true, maxBatchPrefillTokens: true, maxBatchTotalTokens: true,
  maxConcurrentRequests: true, maxWaitingTokens: true, waitingServedRatio: true, maxConsecutivePrefills: true, maxStopSequences: true,
  maxTopNTokens: true, maxBestOf: true, stages: true, microBatches: true, toolParser: true, prefixCacheTokens: true, prefixBlockTokens: true, kvMode: true, allowSpinning: true, logitStats: true, intraOpThreads: true, tokenizerDir: true, modelId: true,
})
export const SERVABLE_OPTION_KEYS = optionKeys<ServableOptions>({ requestTimeoutMs: true, maxInstancesPerRequest: true, watchdogMs: true })
export const METHOD_SPEC_KEYS = optionKeys<{ inputs: unknown; outputs: unknown }>({ inputs: true, outputs: true })
export const STAGE_OPTION_KEYS = optionKeys<StageOptions & { outputs?: number }>({ outputs: true, batchSize: true, tag: true })

/** Whether `v` can be an options object (not null, an array, or a primitive passed by mistake). */
export function isOptionsObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** A per-instance function stage: receives one instance's values, returns one value or a tuple. */
export type InstanceStageFn = (...args: Value[]) => Value | Value[] | Promise<Value | Value[]>
/** A batched function stage: receives a list of instances (each a tuple) and returns one result per instance. */
export type BatchStageFn = (instances: Value[][]) => Array<Value | Value[]> | Promise<Array<Value | Value[]>>

export class Placeholder {
  constructor(readonly id: number, readonly label: string) {}
}

export class ModelRef {
  constructor(readonly index: number, readonly options: ModelOptions, readonly site: string) {}
}

export interface StageDecl {
  kind: 'model' | 'function'
  model?: number
  fn?: InstanceStageFn | BatchStageFn
  tag: string
  args: number[]
  outputs: number[]
  batchSize?: number
  site: string
}

export interface MethodDecl {
  name: string
  inputs: string[]
  inputRefs: number[]
  outputs: string[]
  outputRefs: number[]
  stages: StageDecl[]
  site: string
}

export interface ServableDefinition {
  readonly kind: 'ms-serve.servable'
  readonly models: ModelRef[]
  readonly methods: MethodDecl[]
  readonly llm: { options: LlmOptions; site: string } | null
  /** The second argument of defineServable (checked by the validator), where it was called. */
  readonly servableOptions: { options: ServableOptions; site: string } | null
  /** Problems found while recording (reported with the config's file and line by the validator). */
  readonly problems: { message: string; site: string }[]
}

export interface ServableBuilder {
  /** Declares an ONNX model of this servable (MindSpore `declare_model`). */
  declareModel(options: ModelOptions): ModelRef
  /** Declares this servable's LLM (at most one); see LlmOptions. */
  declareLlm(options: LlmOptions): void
  /**
   * Registers a method (MindSpore `register_method`): `body` runs once with placeholders for the
   * inputs, calls `addStage`, and returns one placeholder per output name.
   */
  registerMethod<I extends string, O extends string>(
    name: string,
    spec: { inputs: readonly I[]; outputs: readonly O[] },
    body: (inputs: { [K in I]: Placeholder }) => { [K in O]: Placeholder },
  ): void
  /** Adds a stage (MindSpore `add_stage`); returns one placeholder, or `outputs` of them when given. */
  addStage(target: ModelRef | InstanceStageFn | BatchStageFn, args: Placeholder[], options?: StageOptions & { outputs?: undefined }): Placeholder
  addStage(target: ModelRef | InstanceStageFn | BatchStageFn, args: Placeholder[], options: StageOptions & { outputs: number }): Placeholder[]
}

/** Where the caller of an API function sits in servable_config.ts (`file:line`), from the stack. */
function callSite(): string {
  const stack = new Error().stack?.split('\n') ?? []
  for (const line of stack.slice(3)) {
    const m = /\(?((?:file:\/\/)?[^()\s]+):(\d+):(\d+)\)?$/.exec(line.trim())
    if (m && !m[1]!.includes('/dist/') && !m[1]!.includes('/src/config/') && !m[1]!.includes('node:')) {
      return `${m[1]!.replace(/^file:\/\//, '')}:${m[2]}`
    }
  }
  return ''
}

/**
 * Defines a servable. `servable_config.ts` does `export default defineServable((s) => { ... })`,
 * optionally with the servable's limits: `defineServable((s) => { ... }, { requestTimeoutMs: 5000 })`.
 */
export function defineServable(build: (s: ServableBuilder) => void, options?: ServableOptions): ServableDefinition {
  const models: ModelRef[] = []
  const methods: MethodDecl[] = []
  const problems: { message: string; site: string }[] = []
  let servableOptions: ServableDefinition['servableOptions'] = null
  if (options !== undefined) {
    const site = callSite()
    if (!isOptionsObject(options)) {
      problems.push({ message: `defineServable's second argument takes an options object, e.g. { requestTimeoutMs: 5000 } (got ${JSON.stringify(options)})`, site })
    } else servableOptions = { options: { ...options }, site }
  }
  let llm: { options: LlmOptions; site: string } | null = null
  let current: { stages: StageDecl[]; known: Set<number>; name: string } | null = null
  let nextId = 0

  const builder: ServableBuilder = {
    declareModel(options) {
      const site = callSite()
      if (!isOptionsObject(options)) {
        problems.push({ message: `declareModel() takes an options object, e.g. declareModel({ file: 'model.onnx' }) (got ${JSON.stringify(options)})`, site })
      }
      const ref = new ModelRef(models.length, { ...(isOptionsObject(options) ? options : {}) } as ModelOptions, site)
      models.push(ref)
      return ref
    },
    declareLlm(options) {
      const site = callSite()
      if (!isOptionsObject(options)) {
        problems.push({ message: `declareLlm() takes an options object, e.g. declareLlm({ file: 'model.onnx' }) (got ${JSON.stringify(options)})`, site })
      } else if (llm) problems.push({ message: 'declareLlm() was called twice; a servable serves one LLM', site })
      else llm = { options: { ...options }, site }
    },
    registerMethod(name, spec, body) {
      const site = callSite()
      if (current) {
        problems.push({ message: `registerMethod("${name}") was called inside the body of method "${current.name}"; register methods at the top level`, site })
        return
      }
      // Checked here, not in validate.ts: the spec object itself is not recorded.
      if (!isOptionsObject(spec)) {
        problems.push({ message: `registerMethod("${name}") needs { inputs: [...], outputs: [...] } as its second argument`, site })
        return
      }
      const badKey = checkOptionKeys(spec, METHOD_SPEC_KEYS, `registerMethod("${name}") option`)
      if (badKey) problems.push({ message: badKey, site })
      for (const k of ['inputs', 'outputs'] as const) {
        if (Array.isArray(spec[k])) continue
        problems.push({ message: `registerMethod("${name}") ${k} must be a list of names, e.g. { ${k}: ['x'] } (got ${JSON.stringify(spec[k])})`, site })
      }
      const inputs = Array.isArray(spec.inputs) ? [...spec.inputs] as string[] : []
      const outputs = Array.isArray(spec.outputs) ? [...spec.outputs] as string[] : []
      const phs: Record<string, Placeholder> = {}
      const known = new Set<number>()
      for (const n of inputs) {
        const p = new Placeholder(nextId++, `input ${n}`)
        phs[n] = p
        known.add(p.id)
      }
      current = { stages: [], known, name }
      let result: Record<string, Placeholder> = {}
      try {
        result = (body(phs as never) ?? {}) as Record<string, Placeholder>
      } catch (e) {
        problems.push({ message: `the body of method "${name}" threw: ${(e as Error).message}`, site })
      }
      const stages = current.stages
      current = null
      const outputRefs: number[] = []
      for (const o of outputs) {
        const p = result[o]
        if (!(p instanceof Placeholder)) {
          problems.push({ message: `method "${name}" declares output "${o}" but its body returned ${p === undefined ? 'nothing' : 'a non-placeholder'} for it; return { ${o}: <placeholder from addStage or an input> }`, site })
          outputRefs.push(-1)
        } else outputRefs.push(p.id)
      }
      for (const k of Object.keys(result)) {
        if (!outputs.includes(k)) problems.push({ message: `method "${name}" returned "${k}", which is not in its outputs [${outputs.join(', ')}]`, site })
      }
      methods.push({ name, inputs, inputRefs: inputs.map((n) => phs[n]!.id), outputs, outputRefs, stages, site })
    },
    addStage(target: ModelRef | InstanceStageFn | BatchStageFn, args: Placeholder[], options: StageOptions & { outputs?: number } = {}): never {
      const site = callSite()
      if (!isOptionsObject(options)) {
        problems.push({ message: `addStage options must be an object, e.g. { outputs: 2, tag: 'Preprocess' } (got ${JSON.stringify(options)})`, site })
        options = {}
      }
      const badKey = checkOptionKeys(options, STAGE_OPTION_KEYS, 'addStage option')
      if (badKey) problems.push({ message: badKey, site })
      if (options.tag !== undefined && typeof options.tag !== 'string') {
        problems.push({ message: `addStage tag must be a string (got ${JSON.stringify(options.tag)})`, site })
      }
      const n = options.outputs ?? 1
      const outs = Array.from({ length: Math.max(0, n) }, (_, i) => new Placeholder(nextId++, `stage output ${i}`))
      if (!current) {
        problems.push({ message: 'addStage() was called outside a registerMethod body', site })
        return (options.outputs === undefined ? outs[0] : outs) as never
      }
      const argIds: number[] = []
      args.forEach((a, i) => {
        if (!(a instanceof Placeholder)) problems.push({ message: `addStage argument ${i} is not a placeholder (use method inputs or outputs of earlier stages)`, site })
        else if (!current!.known.has(a.id)) problems.push({ message: `addStage argument ${i} (${a.label}) does not come from this method's inputs or earlier stages`, site })
        argIds.push(a instanceof Placeholder ? a.id : -1)
      })
      if (!Number.isInteger(n) || n < 1) problems.push({ message: `addStage outputs must be an integer >= 1 (got ${options.outputs})`, site })
      const stage: StageDecl = { kind: target instanceof ModelRef ? 'model' : 'function', tag: options.tag ?? '', args: argIds, outputs: outs.map((o) => o.id), site }
      if (target instanceof ModelRef) stage.model = target.index
      else if (typeof target === 'function') {
        stage.fn = target
        stage.tag = options.tag ?? (target.name || 'function')
        if (options.batchSize !== undefined) stage.batchSize = options.batchSize
      } else problems.push({ message: 'addStage target must be a model from declareModel() or a function', site })
      for (const o of outs) current.known.add(o.id)
      current.stages.push(stage)
      return (options.outputs === undefined ? outs[0] : outs) as never
    },
  }
  build(builder)
  return { kind: 'ms-serve.servable', models, methods, llm, servableOptions, problems }
}
