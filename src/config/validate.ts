/**
 * Turns a recorded ServableDefinition into a frozen ValidServable. Field checks name the option
 * path and what was expected; model-vs-method checks that need the ONNX file run in the replica
 * once the session is loaded (see runtime/pipeline.ts), reported the same way.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { ServeError } from '../errors.ts'
import { isOptionsObject, LLM_OPTION_KEYS, MODEL_OPTION_KEYS, SERVABLE_OPTION_KEYS, SESSION_OPTION_KEYS } from './define.ts'
import type { GraphOptimizationLevel, LlmOptions, ServableDefinition, ServableOptions } from './define.ts'
import { relativeSite } from './compile.ts'
import { checkOptionKeys } from './suggest.ts'
import { resolveLlmBudgets, type LlmBudgets } from '../llm/budgets.ts'
import { TOOL_PARSERS, type ToolParserName } from '../llm/tool-calls.ts'
import { inRange, POLICY_RANGES, type ServingPolicy } from '../runtime/policy.ts'

export interface ValidSession {
  intraOpThreads?: number
  interOpThreads?: number
  graphOptimizationLevel: GraphOptimizationLevel
  executionMode: 'sequential' | 'parallel'
  extra: Record<string, string>
}

export interface ValidModel {
  index: number
  name: string
  /** The ONNX file (for a staged model, its first stage's). */
  file: string
  path: string
  /** A model split into pipeline stages: the stage files in order (absent: one file). */
  stages?: { file: string; path: string }[]
  withBatchDim: boolean
  withoutBatchDimInputs: number[]
  /** null = take the model's fixed batch dim, or 32 when it is dynamic (decided in the replica). */
  maxBatchSize: number | null
  maxWaitMs: number
  maxQueueSize: number
  session: ValidSession
  site: string
}

export interface ValidStage {
  kind: 'model' | 'function'
  model?: number
  /** Index into the definition's stages of this method, to find the function again in a replica. */
  tag: string
  args: number[]
  outputs: number[]
  batchSize?: number
  site: string
}

export interface ValidMethod {
  name: string
  inputs: string[]
  inputRefs: number[]
  outputs: string[]
  outputRefs: number[]
  stages: ValidStage[]
  /** Models used by this method's stages (to derive its batch size once the replicas report them). */
  models: number[]
  site: string
}

export interface ValidLlm {
  /** The decoder file (the first stage file for a decoder given as `stages` files). */
  file: string
  path: string
  /** A decoder given as stage files (declareLlm `stages: [...]`), in order; joined at load. */
  stageFiles?: { file: string; path: string }[]
  tokenizerDir?: string
  options: Omit<LlmOptions, 'file' | 'tokenizerDir' | 'modelId' | 'toolParser' | 'stages'> & { stages?: number }
  modelId: string
  /** declareLlm toolParser; absent: detected from the chat template at load. */
  toolParser?: ToolParserName
  site: string
}

export interface ValidServable {
  name: string
  version: number
  dir: string
  versionDir: string
  configFile: string
  compiledFile: string
  models: ValidModel[]
  methods: ValidMethod[]
  llm: ValidLlm | null
  /** What its defineServable options set (the rest comes from the server; runtime/policy.ts). Set by validateServable. */
  policy?: Partial<ServingPolicy>
}

const LEVELS: GraphOptimizationLevel[] = ['disabled', 'basic', 'extended', 'all']

/** Throws CONFIG_INVALID prefixed with the config site (file:line), or the config file without one. */
export function fail(configFile: string, site: string, msg: string): never {
  throw new ServeError('CONFIG_INVALID', `${site ? relativeSite(site) : configFile}: ${msg}`)
}

function intOpt(v: unknown, path: string, min: number, configFile: string, site: string): number | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(configFile, site, `${path} must be an integer >= ${min} (got ${JSON.stringify(v)})`)
  return v
}

/** Validates a definition against its version folder; throws CONFIG_INVALID with file:line and fix. */
export function validateServable(def: ServableDefinition, ctx: { name: string; version: number; dir: string; versionDir: string; configFile: string; compiledFile: string }): ValidServable {
  const { configFile } = ctx
  if (def.problems.length) {
    const p = def.problems[0]!
    fail(configFile, p.site, p.message)
  }
  const models: ValidModel[] = def.models.map((m, i) => {
    const o = m.options
    const site = m.site
    // Unknown keys first: a misspelt `fille` is better reported as a typo than as a missing file.
    const badKey = checkOptionKeys(o, MODEL_OPTION_KEYS, 'declareModel option')
    if (badKey) fail(configFile, site, badKey)
    if (o.stages !== undefined && o.file !== undefined) fail(configFile, site, `declareModel takes { file } or { stages }, not both`)
    if (o.stages !== undefined && (!Array.isArray(o.stages) || o.stages.length < 2 || o.stages.some((f) => typeof f !== 'string' || !f))) {
      fail(configFile, site, `declareModel({ stages }) needs the stage files in order, at least 2, e.g. { stages: ['stage1.onnx', 'stage2.onnx'] } (make them with npx ms-serve split MODEL --stages 2)`)
    }
    const files = o.stages ?? [o.file]
    if (files.length === 1 && (typeof o.file !== 'string' || !o.file)) fail(configFile, site, `declareModel({ file }) needs the ONNX file name inside the version folder, e.g. { file: 'model.onnx' }`)
    for (const f of files as string[]) {
      if (!existsSync(join(ctx.versionDir, f))) {
        fail(configFile, site, `model file "${f}" not found in ${ctx.versionDir}. Put the ONNX file there, or fix the file name${ctx.name === 'add' || ctx.name === 'image' || ctx.name === 'llm' ? ` (or regenerate the example: npx ms-serve init ${ctx.name} --dir ${ctx.dir.replace(/\/[^/]+$/, '')})` : ''}.`)
      }
    }
    const file = files[0] as string
    const path = join(ctx.versionDir, file)
    const s = o.session ?? {}
    if (!isOptionsObject(s as unknown)) {
      fail(configFile, site, `session must be an object, e.g. session: { intraOpThreads: 2 } (got ${JSON.stringify(s)})`)
    }
    const badSessionKey = checkOptionKeys(s, SESSION_OPTION_KEYS, 'declareModel session option')
    if (badSessionKey) fail(configFile, site, badSessionKey)
    const extra: unknown = s.extra ?? {}
    if (!isOptionsObject(extra) || Object.values(extra).some((v) => typeof v !== 'string')) {
      const example = `{ 'session.intra_op.allow_spinning': '1' }`
      fail(configFile, site, `session.extra must map ORT config keys to string values, e.g. ${example} (got ${JSON.stringify(s.extra)})`)
    }
    if (o.withBatchDim !== undefined && typeof o.withBatchDim !== 'boolean') {
      fail(configFile, site, `withBatchDim must be true or false (got ${JSON.stringify(o.withBatchDim)})`)
    }
    if (o.name !== undefined && (typeof o.name !== 'string' || !o.name)) {
      fail(configFile, site, `name must be a non-empty string (got ${JSON.stringify(o.name)})`)
    }
    const level = s.graphOptimizationLevel ?? 'all'
    if (!LEVELS.includes(level)) fail(configFile, site, `session.graphOptimizationLevel must be one of ${LEVELS.join(', ')} (got ${JSON.stringify(level)})`)
    const mode = s.executionMode ?? 'sequential'
    if (mode !== 'sequential' && mode !== 'parallel') fail(configFile, site, `session.executionMode must be 'sequential' or 'parallel' (got ${JSON.stringify(mode)})`)
    const wob = o.withoutBatchDimInputs ?? []
    if (!Array.isArray(wob) || wob.some((x) => !Number.isInteger(x) || x < 0)) fail(configFile, site, `withoutBatchDimInputs must be a list of input indices (integers >= 0)`)
    const maxWaitMs = o.maxWaitMs ?? 0
    if (typeof maxWaitMs !== 'number' || !(maxWaitMs >= 0) || maxWaitMs > 60_000) fail(configFile, site, `maxWaitMs must be a number of milliseconds in [0, 60000] (got ${JSON.stringify(o.maxWaitMs)})`)
    const withBatchDim = o.withBatchDim ?? true
    const maxBatchSize = intOpt(o.maxBatchSize, 'maxBatchSize', 1, configFile, site) ?? null
    if (!withBatchDim && maxBatchSize !== null && maxBatchSize !== 1) fail(configFile, site, `maxBatchSize is ${maxBatchSize} but withBatchDim is false: a model without a batch dim runs one instance at a time. Remove maxBatchSize or set withBatchDim: true`)
    return {
      index: i,
      name: o.name ?? file.replace(/\.onnx$/i, ''),
      file,
      path,
      ...(o.stages ? { stages: o.stages.map((f) => ({ file: f, path: join(ctx.versionDir, f) })) } : {}),
      withBatchDim,
      withoutBatchDimInputs: wob,
      maxBatchSize: withBatchDim ? maxBatchSize : 1,
      maxWaitMs,
      maxQueueSize: intOpt(o.maxQueueSize, 'maxQueueSize', 1, configFile, site) ?? 10000,
      session: {
        intraOpThreads: intOpt(s.intraOpThreads, 'session.intraOpThreads', 1, configFile, site),
        interOpThreads: intOpt(s.interOpThreads, 'session.interOpThreads', 1, configFile, site),
        graphOptimizationLevel: level,
        executionMode: mode,
        extra: { ...(extra as Record<string, string>) },
      },
      site,
    }
  })
  const names = new Set<string>()
  const methods: ValidMethod[] = def.methods.map((m) => {
    const site = m.site
    if (!/^[A-Za-z_][\w.-]*$/.test(m.name)) fail(configFile, site, `method name ${JSON.stringify(m.name)} must start with a letter or _ and use letters, digits, _ . -`)
    if (names.has(m.name)) fail(configFile, site, `method "${m.name}" is registered twice; method names must be unique`)
    names.add(m.name)
    if (m.inputs.length === 0) fail(configFile, site, `method "${m.name}" has no inputs; list them in { inputs: [...] }`)
    for (const list of [m.inputs, m.outputs]) {
      const seen = new Set<string>()
      for (const n of list) {
        if (typeof n !== 'string' || !n) fail(configFile, site, `method "${m.name}": input and output names must be non-empty strings`)
        if (seen.has(n)) fail(configFile, site, `method "${m.name}": name "${n}" is listed twice`)
        seen.add(n)
      }
    }
    if (m.outputs.length === 0) fail(configFile, site, `method "${m.name}" has no outputs; list them in { outputs: [...] }`)
    const usedModels = new Set<number>()
    const stages: ValidStage[] = m.stages.map((st) => {
      if (st.kind === 'model') usedModels.add(st.model!)
      if (st.batchSize !== undefined) intOpt(st.batchSize, 'addStage batchSize', 0, configFile, st.site)
      return { kind: st.kind, model: st.model, tag: st.tag, args: st.args, outputs: st.outputs, batchSize: st.batchSize, site: st.site }
    })
    return { name: m.name, inputs: m.inputs, inputRefs: m.inputRefs, outputs: m.outputs, outputRefs: m.outputRefs, stages, models: [...usedModels], site }
  })
  const llm = def.llm ? validateLlm(def.llm.options, def.llm.site, ctx) : null
  if (methods.length === 0 && !llm) fail(configFile, '', `no methods registered. Add s.registerMethod('predict', { inputs: [...], outputs: [...] }, (x) => ({ ... })), or s.declareLlm({ file: 'model.onnx' }) for an LLM`)
  if (llm && methods.some((m) => m.name === 'generate' || m.name === 'generated_stream')) fail(configFile, llm.site, 'methods "generate" and "generated_stream" are provided by declareLlm(); rename your method')
  const policy = validateServableOptions(def.servableOptions, configFile)
  return deepFreeze({ name: ctx.name, version: ctx.version, dir: ctx.dir, versionDir: ctx.versionDir, configFile, compiledFile: ctx.compiledFile, models, methods, llm, policy })
}

/** defineServable option -> the policy field it sets. */
const SERVABLE_POLICY_FIELDS = {
  requestTimeoutMs: 'timeoutMs',
  maxInstancesPerRequest: 'maxInstancesPerRequest',
  watchdogMs: 'watchdogMs',
} as const satisfies Record<keyof ServableOptions, keyof ServingPolicy>

function validateServableOptions(given: ServableDefinition['servableOptions'], configFile: string): Partial<ServingPolicy> {
  // Definitions compiled by an older ms-serve have no servableOptions at all.
  if (!given) return {}
  const { options, site } = given
  const badKey = checkOptionKeys(options, SERVABLE_OPTION_KEYS, 'defineServable option')
  if (badKey) fail(configFile, site, badKey)
  const policy: Partial<ServingPolicy> = {}
  for (const [key, field] of Object.entries(SERVABLE_POLICY_FIELDS)) {
    const v = options[key as keyof ServableOptions]
    if (v === undefined) continue
    const range = POLICY_RANGES[field]
    if (!inRange(range, v)) fail(configFile, site, `defineServable option ${key} must be ${range.expected} (got ${JSON.stringify(v)})`)
    policy[field] = v
  }
  return policy
}

/** declareLlm's integer options and their minimum, in the order they are checked. */
const LLM_INT_OPTIONS = {
  intraOpThreads: 1, maxBatchSize: 1, maxTotalTokens: 1, maxInputTokens: 1, maxBatchPrefillTokens: 1, maxBatchTotalTokens: 1,
  maxConcurrentRequests: 1, maxWaitingTokens: 1, maxStopSequences: 1, maxBestOf: 1, maxConsecutivePrefills: 0, maxTopNTokens: 0,
  prefixCacheTokens: 0, prefixBlockTokens: 1, stages: 1, microBatches: 1,
} as const

function validateLlm(o: LlmOptions, site: string, ctx: { name: string; dir: string; versionDir: string; configFile: string }): ValidLlm {
  const { configFile } = ctx
  const badKey = checkOptionKeys(o, LLM_OPTION_KEYS, 'declareLlm option')
  if (badKey) fail(configFile, site, badKey)
  const stageList = Array.isArray(o.stages) ? o.stages : undefined
  if (stageList) {
    if (o.file !== undefined) fail(configFile, site, `declareLlm takes { file } or { stages: [files] }, not both (with file, stages is a number: how many stages to split it into)`)
    if (stageList.length < 2 || stageList.some((f) => typeof f !== 'string' || !f)) fail(configFile, site, `declareLlm({ stages }) as files needs the stage files in order, at least 2, e.g. { stages: ['stage1.onnx', 'stage2.onnx'] } (make them with npx ms-serve split model.onnx --stages 2)`)
    for (const f of stageList) {
      if (!existsSync(join(ctx.versionDir, f))) fail(configFile, site, `LLM stage file "${f}" not found in ${ctx.versionDir}. Put the stage files there (npx ms-serve split model.onnx --stages ${stageList.length} --out ${ctx.versionDir}), or fix the file name.`)
    }
  } else {
    if (typeof o.file !== 'string' || !o.file) fail(configFile, site, `declareLlm({ file }) needs the ONNX decoder file inside the version folder, e.g. { file: 'model.onnx' } (or { stages: ['stage1.onnx', 'stage2.onnx'] } for a decoder in stage files)`)
  }
  const file = stageList ? stageList[0]! : o.file!
  const path = join(ctx.versionDir, file)
  if (!existsSync(path)) fail(configFile, site, `LLM file "${file}" not found in ${ctx.versionDir}. Put the ONNX decoder there, or fix the file name${ctx.name === 'llm' ? ` (or regenerate the example: npx ms-serve init llm --dir ${ctx.dir.replace(/\/[^/]+$/, '')})` : ''}.`)
  const options: ValidLlm['options'] = {}
  for (const [k, min] of Object.entries(LLM_INT_OPTIONS) as Array<[keyof typeof LLM_INT_OPTIONS, number]>) {
    if (k === 'stages' && stageList) { options.stages = stageList.length; continue }
    const v = intOpt(o[k], `declareLlm ${k}`, min, configFile, site)
    if (v !== undefined) options[k] = v
  }
  if (o.waitingServedRatio !== undefined) {
    if (typeof o.waitingServedRatio !== 'number' || !(o.waitingServedRatio >= 0)) fail(configFile, site, `declareLlm waitingServedRatio must be a number >= 0 (got ${JSON.stringify(o.waitingServedRatio)})`)
    options.waitingServedRatio = o.waitingServedRatio
  }
  if (o.allowSpinning !== undefined) {
    if (typeof o.allowSpinning !== 'boolean') fail(configFile, site, `declareLlm allowSpinning must be true or false (got ${JSON.stringify(o.allowSpinning)})`)
    options.allowSpinning = o.allowSpinning
  }
  if (o.logitStats !== undefined) {
    if (typeof o.logitStats !== 'boolean') fail(configFile, site, `declareLlm logitStats must be true or false (got ${JSON.stringify(o.logitStats)})`)
    options.logitStats = o.logitStats
  }
  if (o.kvMode !== undefined) {
    if (o.kvMode !== 'new' && o.kvMode !== 'full') fail(configFile, site, `declareLlm kvMode must be 'new' or 'full' (got ${JSON.stringify(o.kvMode)})`)
    options.kvMode = o.kvMode
  }
  checkLlmBudgets(options, configFile, site)
  if (o.tokenizerDir !== undefined && (typeof o.tokenizerDir !== 'string' || !o.tokenizerDir)) {
    fail(configFile, site, `declareLlm tokenizerDir must be a folder path relative to the servable folder (got ${JSON.stringify(o.tokenizerDir)})`)
  }
  if (o.modelId !== undefined && (typeof o.modelId !== 'string' || !o.modelId)) {
    fail(configFile, site, `declareLlm modelId must be a non-empty string (got ${JSON.stringify(o.modelId)})`)
  }
  if (o.toolParser !== undefined && !(TOOL_PARSERS as readonly unknown[]).includes(o.toolParser)) {
    fail(configFile, site, `declareLlm toolParser must be one of ${TOOL_PARSERS.map((t) => `'${t}'`).join(', ')} (got ${JSON.stringify(o.toolParser)}); leave it out to read it from the chat template`)
  }
  const tokenizerDir = o.tokenizerDir === undefined ? undefined : join(ctx.dir, o.tokenizerDir)
  if (tokenizerDir && !existsSync(tokenizerDir)) {
    fail(configFile, site, `declareLlm tokenizerDir ${tokenizerDir} does not exist; create it or fix the path (it is relative to ${ctx.dir})`)
  }
  return { file, path, ...(stageList ? { stageFiles: stageList.map((f) => ({ file: f, path: join(ctx.versionDir, f) })) } : {}), ...(tokenizerDir ? { tokenizerDir } : {}), options, modelId: o.modelId ?? ctx.name, ...(o.toolParser ? { toolParser: o.toolParser } : {}), site }
}

/**
 * declareLlm's token budgets against each other, with the engine's defaults filled in (TGI's
 * startup checks). Runs at load, so a bad combination never reaches a replica; says what to change.
 */
function checkLlmBudgets(given: Partial<LlmBudgets>, configFile: string, site: string): void {
  const b = resolveLlmBudgets(given)
  const show = (k: keyof LlmBudgets) => `${k} (${b[k]}${given[k] === undefined ? ', the default' : ''})`
  if (b.maxInputTokens >= b.maxTotalTokens) {
    fail(configFile, site, `declareLlm ${show('maxInputTokens')} must be < ${show('maxTotalTokens')}: raise maxTotalTokens or lower maxInputTokens`)
  }
  if (b.maxBatchPrefillTokens < b.maxInputTokens) {
    fail(configFile, site, `declareLlm ${show('maxBatchPrefillTokens')} < ${show('maxInputTokens')}: raise maxBatchPrefillTokens or lower maxInputTokens`)
  }
  if (b.maxBatchTotalTokens < b.maxTotalTokens) {
    fail(configFile, site, `declareLlm ${show('maxBatchTotalTokens')} < ${show('maxTotalTokens')}: raise maxBatchTotalTokens or lower maxTotalTokens`)
  }
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o)
    for (const v of Object.values(o)) deepFreeze(v)
  }
  return o
}
