// servable_config.ts -> esbuild -> import -> validateServable: every config error names the file,
// the line where possible, and the fix; a good config becomes a frozen ValidServable.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { compileServableConfig } from '../../src/config/compile.ts'
import { validateServable, type ValidServable } from '../../src/config/validate.ts'
import { chooseVersions, scanServables } from '../../src/config/scan.ts'
import { isServeError } from '../../src/errors.ts'

// The CLI turns these on too: stack sites in compiled configs map back to servable_config.ts lines.
process.setSourceMapsEnabled(true)

const root = mkdtempSync(join(tmpdir(), 'ms-serve-config-'))
after(() => rmSync(root, { recursive: true, force: true }))

let seq = 0
/** Writes DIR/<name>/servable_config.ts (+ version 1 with the given model files); returns its paths. */
function servable(source: string, files: string[] = ['add.onnx']): { name: string; dir: string; configFile: string; versionDir: string } {
  const name = `s${++seq}`
  const dir = join(root, 'servables', name)
  const versionDir = join(dir, '1')
  mkdirSync(versionDir, { recursive: true })
  for (const f of files) writeFileSync(join(versionDir, f), 'not really onnx')
  const configFile = join(dir, 'servable_config.ts')
  writeFileSync(configFile, source)
  return { name, dir, configFile, versionDir }
}

async function load(source: string, files?: string[]): Promise<ValidServable> {
  const s = servable(source, files)
  const { definition, compiledFile } = await compileServableConfig(s.configFile)
  return validateServable(definition, { name: s.name, version: 1, dir: s.dir, versionDir: s.versionDir, configFile: s.configFile, compiledFile })
}

/** Asserts `p` rejects with CONFIG_INVALID and returns the message. */
async function configError(p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (e) {
    assert.ok(isServeError(e), `expected a ServeError, got ${e}`)
    assert.equal(e.code, 'CONFIG_INVALID')
    return e.message
  }
  assert.fail('expected CONFIG_INVALID')
}

const HEADER = `import { defineServable } from 'ms-serve'\n`
const ADD = `${HEADER}export default defineServable((s) => {
  const add = s.declareModel({ file: 'add.onnx', maxWaitMs: 5 })
  s.registerMethod('add_common', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x1, x2 }) => {
    const y = s.addStage(add, [x1, x2])
    return { y }
  })
})
`

test('a good config becomes a frozen ValidServable with defaults filled in', async () => {
  const v = await load(ADD)
  assert.ok(Object.isFrozen(v) && Object.isFrozen(v.models[0]) && Object.isFrozen(v.methods[0]!.stages))
  const m = v.models[0]!
  assert.equal(m.name, 'add')
  assert.equal(m.withBatchDim, true)
  assert.equal(m.maxBatchSize, null, 'decided in the replica from the model')
  assert.equal(m.maxWaitMs, 5)
  assert.equal(m.maxQueueSize, 10000)
  assert.equal(m.session.graphOptimizationLevel, 'all')
  assert.equal(m.site, `${v.configFile}:3`, 'the stack site maps back to the real file')
  assert.equal(v.methods[0]!.stages[0]!.site, `${v.configFile}:5`)
  const method = v.methods[0]!
  assert.deepEqual([method.name, method.inputs, method.outputs, method.models], ['add_common', ['x1', 'x2'], ['y'], [0]])
  assert.deepEqual(method.stages.map((s) => [s.kind, s.args.length, s.outputs.length]), [['model', 2, 1]])
})

test('a syntax error names file:line and is CONFIG_INVALID', async () => {
  const s = servable(`${HEADER}export default defineServable((s) => {\n  const add = s.declareModel({ file: 'add.onnx' }\n})\n`)
  const msg = await configError(compileServableConfig(s.configFile))
  assert.ok(msg.startsWith(`${s.configFile} does not compile:\n${s.configFile}:4:1: Expected ")" but found "}"`), msg)
  assert.match(msg, /Fix the TypeScript error above and start again\.$/)
})

test('an import that cannot be resolved is a compile error naming the line', async () => {
  const s = servable(`${HEADER}import { helper } from './helper.ts'\nexport default defineServable(() => helper())\n`)
  const msg = await configError(compileServableConfig(s.configFile))
  assert.match(msg, new RegExp(`${s.configFile.replaceAll('/', '\\/')}:2:\\d+: Could not resolve "./helper.ts"`))
})

test('a config that throws while loading names the line', async () => {
  const s = servable(`${HEADER}const n: number = 1\nif (n === 1) throw new Error('bad config')\nexport default defineServable(() => {})\n`)
  const msg = await configError(compileServableConfig(s.configFile))
  assert.equal(msg, `${s.configFile}:3: loading the config threw: bad config`)
})

test('the default export missing', async () => {
  const s = servable(`${HEADER}export const servable = defineServable(() => {})\n`)
  const msg = await configError(compileServableConfig(s.configFile))
  assert.equal(msg, `${s.configFile}: the default export is not a servable definition. Write \`export default defineServable((s) => { ... })\` with defineServable imported from 'ms-serve'.`)
})

test('a missing model file names the file, the folder and the fix', async () => {
  const msg = await configError(load(ADD, []))
  assert.match(msg, /servable_config\.ts:3: model file "add\.onnx" not found in \S+\/1\. Put the ONNX file there, or fix the file name\.$/)
})

test('a method registered twice', async () => {
  const msg = await configError(load(`${HEADER}export default defineServable((s) => {
  const add = s.declareModel({ file: 'add.onnx' })
  s.registerMethod('m', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x1, x2 }) => ({ y: s.addStage(add, [x1, x2]) }))
  s.registerMethod('m', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x1, x2 }) => ({ y: s.addStage(add, [x1, x2]) }))
})
`))
  assert.match(msg, /servable_config\.ts:5: method "m" is registered twice; method names must be unique$/)
})

test('a declared output the body does not return', async () => {
  const msg = await configError(load(`${HEADER}export default defineServable((s) => {
  const add = s.declareModel({ file: 'add.onnx' })
  s.registerMethod('m', { inputs: ['x1', 'x2'], outputs: ['y', 'z'] }, ({ x1, x2 }) => {
    const y = s.addStage(add, [x1, x2])
    return { y } as never
  })
})
`))
  assert.match(msg, /servable_config\.ts:4: method "m" declares output "z" but its body returned nothing for it; return \{ z: <placeholder from addStage or an input> \}$/)
})

test('addStage outside a registerMethod body', async () => {
  const msg = await configError(load(`${HEADER}export default defineServable((s) => {
  const add = s.declareModel({ file: 'add.onnx' })
  const early = s.addStage(add, [])
  s.registerMethod('m', { inputs: ['x1'], outputs: ['y'] }, () => ({ y: early }))
})
`))
  assert.match(msg, /servable_config\.ts:4: addStage\(\) was called outside a registerMethod body$/)
})

test('a stage argument that does not come from the method', async () => {
  const msg = await configError(load(`${HEADER}export default defineServable((s) => {
  const add = s.declareModel({ file: 'add.onnx' })
  let leaked: any
  s.registerMethod('a', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x1, x2 }) => { leaked = x1; return { y: s.addStage(add, [x1, x2]) } })
  s.registerMethod('b', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x2 }) => ({ y: s.addStage(add, [leaked, x2]) }))
})
`))
  assert.match(msg, /servable_config\.ts:6: addStage argument 0 \(input x1\) does not come from this method's inputs or earlier stages$/)
})

test('bad maxBatchSize / maxWaitMs / withBatchDim combinations name the option', async () => {
  const model = (opts: string) => `${HEADER}export default defineServable((s) => {
  const add = s.declareModel({ file: 'add.onnx', ${opts} })
  s.registerMethod('m', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x1, x2 }) => ({ y: s.addStage(add, [x1, x2]) }))
})
`
  assert.match(await configError(load(model('maxBatchSize: 0'))), /servable_config\.ts:3: maxBatchSize must be an integer >= 1 \(got 0\)$/)
  assert.match(await configError(load(model('maxBatchSize: 2.5'))), /maxBatchSize must be an integer >= 1 \(got 2\.5\)$/)
  assert.match(await configError(load(model('maxWaitMs: -1'))), /maxWaitMs must be a number of milliseconds in \[0, 60000\] \(got -1\)$/)
  assert.match(await configError(load(model('withBatchDim: false, maxBatchSize: 4'))), /maxBatchSize is 4 but withBatchDim is false: a model without a batch dim runs one instance at a time\. Remove maxBatchSize or set withBatchDim: true$/)
  assert.match(await configError(load(model(`session: { graphOptimizationLevel: 'max' as never }`))), /session\.graphOptimizationLevel must be one of disabled, basic, extended, all \(got "max"\)$/)
})

test('no methods, or a method without inputs', async () => {
  assert.match(await configError(load(`${HEADER}export default defineServable((s) => { s.declareModel({ file: 'add.onnx' }) })\n`)), /no methods registered\. Add s\.registerMethod/)
  assert.match(await configError(load(`${HEADER}import { tensor } from 'ms-serve'
export default defineServable((s) => {
  s.registerMethod('m', { inputs: [], outputs: ['y'] }, () => ({ y: s.addStage(() => tensor('float32', [], [1]), []) }))
})
`)), /servable_config\.ts:4: method "m" has no inputs; list them in \{ inputs: \[\.\.\.\] \}$/)
})

test('scanServables and chooseVersions', () => {
  const dir = join(root, 'scan')
  mkdirSync(join(dir, 'a', '1'), { recursive: true })
  mkdirSync(join(dir, 'a', '2'))
  mkdirSync(join(dir, 'a', '010'))
  mkdirSync(join(dir, 'not-a-servable'))
  writeFileSync(join(dir, 'a', 'servable_config.ts'), ADD)
  const found = scanServables(dir)
  assert.deepEqual(found.map((f) => [f.name, f.versions]), [['a', [1, 2]]])
  assert.deepEqual(chooseVersions(found[0]!), [2], 'newest by default')
  assert.deepEqual(chooseVersions(found[0]!, [0]), [2], '0 = newest')
  assert.deepEqual(chooseVersions(found[0]!, 'all'), [1, 2])
  assert.deepEqual(chooseVersions(found[0]!, [1]), [1])
  assert.throws(() => chooseVersions(found[0]!, [3]), { code: 'CONFIG_INVALID', message: /servable a: version 3 was asked for but \S+ has versions \[1, 2\]/ })
  assert.throws(() => scanServables(join(root, 'nope')), { code: 'CONFIG_INVALID', message: `servable directory ${join(root, 'nope')} does not exist. Create one with: npx ms-serve init add --dir ${join(root, 'nope')}` })
  assert.throws(() => scanServables(join(dir, 'not-a-servable')), { code: 'CONFIG_INVALID', message: /no servable found in .*expected .*\/<name>\/servable_config\.ts/ })
})

test('declareLlm: scheduler options are checked and kept (maxConsecutivePrefills, waitingServedRatio, budgets)', async () => {
  const llm = (opts: string) => `${HEADER}export default defineServable((s) => {
  s.declareLlm({ file: 'model.onnx', ${opts} })
})
`
  const ok = await load(llm('maxConsecutivePrefills: 0, waitingServedRatio: 1.2, maxBatchSize: 8'), ['model.onnx'])
  assert.equal(ok.llm?.options.maxConsecutivePrefills, 0, '0 = no limit is allowed')
  assert.equal(ok.llm?.options.waitingServedRatio, 1.2)
  assert.equal(ok.llm?.options.maxBatchSize, 8)
  assert.match(await configError(load(llm('maxConsecutivePrefills: -1'), ['model.onnx'])), /servable_config\.ts:3: declareLlm maxConsecutivePrefills must be an integer >= 0 \(got -1\)$/)
  assert.match(await configError(load(llm('maxConsecutivePrefills: 1.5'), ['model.onnx'])), /declareLlm maxConsecutivePrefills must be an integer >= 0 \(got 1\.5\)$/)
  assert.match(await configError(load(llm('waitingServedRatio: -0.5'), ['model.onnx'])), /declareLlm waitingServedRatio must be a number >= 0 \(got -0\.5\)$/)
  assert.equal((await load(llm('maxTopNTokens: 0'), ['model.onnx'])).llm?.options.maxTopNTokens, 0, 'top_n_tokens can be disabled')
  assert.equal((await load(llm('maxTopNTokens: 20'), ['model.onnx'])).llm?.options.maxTopNTokens, 20)
  assert.match(await configError(load(llm('maxTopNTokens: -1'), ['model.onnx'])), /declareLlm maxTopNTokens must be an integer >= 0 \(got -1\)$/)
  assert.equal((await load(llm('maxBestOf: 3'), ['model.onnx'])).llm?.options.maxBestOf, 3)
  assert.equal((await load(llm('maxBestOf: 1'), ['model.onnx'])).llm?.options.maxBestOf, 1, 'best_of can be disabled')
  assert.match(await configError(load(llm('maxBestOf: 0'), ['model.onnx'])), /declareLlm maxBestOf must be an integer >= 1 \(got 0\)$/)
  assert.equal((await load(llm("toolParser: 'llama3_json'"), ['model.onnx'])).llm?.toolParser, 'llama3_json')
  assert.equal((await load(llm('maxBestOf: 2'), ['model.onnx'])).llm?.toolParser, undefined, 'absent: read from the chat template at load')
  assert.match(await configError(load(llm("toolParser: 'mistral'"), ['model.onnx'])), /declareLlm toolParser must be one of 'hermes', 'llama3_json', 'none' \(got "mistral"\); leave it out to read it from the chat template$/)
  assert.equal((await load(llm('logitStats: false'), ['model.onnx'])).llm?.options.logitStats, false)
  assert.match(await configError(load(llm("logitStats: 'no'"), ['model.onnx'])), /declareLlm logitStats must be true or false \(got "no"\)$/)
})

test('an unknown declareModel option or session option is refused with a suggestion and the known options', async () => {
  const model = (opts: string) => `${HEADER}export default defineServable((s) => {
  const add = s.declareModel({ file: 'add.onnx', ${opts} })
  s.registerMethod('m', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x1, x2 }) => ({ y: s.addStage(add, [x1, x2]) }))
})
`
  assert.match(await configError(load(model('maxBatchsize: 32'))), /servable_config\.ts:3: declareModel option "maxBatchsize" is unknown; did you mean "maxBatchSize"\? Known options: file, stages, maxBatchSize, maxWaitMs, maxQueueSize, withBatchDim, withoutBatchDimInputs, session, name$/)
  assert.match(await configError(load(model('maxWiatMs: 1'))), /declareModel option "maxWiatMs" is unknown; did you mean "maxWaitMs"\?/)
  assert.match(await configError(load(model('colour: 1'))), /declareModel option "colour" is unknown\. Known options: file, /)
  assert.match(await configError(load(model('session: { intraOpThread: 2 }'))), /servable_config\.ts:3: declareModel session option "intraOpThread" is unknown; did you mean "intraOpThreads"\? Known options: intraOpThreads, interOpThreads, graphOptimizationLevel, executionMode, extra$/)
  assert.match(await configError(load(model(`withBatchDim: 'yes'`))), /servable_config\.ts:3: withBatchDim must be true or false \(got "yes"\)$/)
  assert.match(await configError(load(model('session: { extra: { a: 1 } }'))), /session\.extra must map ORT config keys to string values/)
})

test('unknown registerMethod and addStage options are refused with a suggestion', async () => {
  const msg = await configError(load(`${HEADER}export default defineServable((s) => {
  const add = s.declareModel({ file: 'add.onnx' })
  s.registerMethod('m', { inputs: ['x1', 'x2'], outputs: ['y'], input: [] }, ({ x1, x2 }) => ({ y: s.addStage(add, [x1, x2]) }))
})
`))
  assert.match(msg, /servable_config\.ts:4: registerMethod\("m"\) option "input" is unknown; did you mean "inputs"\? Known options: inputs, outputs$/)
  const stage = await configError(load(`${HEADER}export default defineServable((s) => {
  s.registerMethod('m', { inputs: ['x'], outputs: ['y'] }, ({ x }) => ({ y: s.addStage((v) => v, [x], { batchsize: 0 }) }))
})
`))
  assert.match(stage, /servable_config\.ts:3: addStage option "batchsize" is unknown; did you mean "batchSize"\? Known options: outputs, batchSize, tag$/)
})

test('import.meta in a config and the files it imports names their own place, not the compiled bundle', async () => {
  const s = servable('')
  mkdirSync(join(s.dir, 'lib'))
  writeFileSync(join(s.dir, 'labels.json'), '["a"]')
  writeFileSync(join(s.dir, 'lib', 'prefix.txt'), 'm_\n')
  writeFileSync(join(s.dir, 'lib', 'names.ts'), `import { readFileSync } from 'node:fs'
export const prefix = (): string => readFileSync(new URL('./prefix.txt', import.meta.url), 'utf8').trim()
`)
  writeFileSync(s.configFile, `import { readFileSync } from 'node:fs'
import { defineServable } from 'ms-serve'
import { prefix } from './lib/names.ts'
const labels: string[] = JSON.parse(readFileSync(new URL('./labels.json', import.meta.url), 'utf8'))
const where = import.meta.dirname === ${JSON.stringify(s.dir)} && import.meta.filename === ${JSON.stringify(s.configFile)} ? 'here' : 'elsewhere'
export default defineServable((s) => {
  s.registerMethod(prefix() + labels[0] + '_' + where, { inputs: ['x'], outputs: ['y'] }, ({ x }) => ({ y: s.addStage((v) => v, [x]) }))
})
`)
  const { definition, compiledFile } = await compileServableConfig(s.configFile)
  const v = validateServable(definition, { name: s.name, version: 1, dir: s.dir, versionDir: s.versionDir, configFile: s.configFile, compiledFile })
  assert.deepEqual(v.methods.map((m) => m.name), ['m_a_here'])
})

test('an unknown declareLlm option is refused with a suggestion', async () => {
  const msg = await configError(load(`${HEADER}export default defineServable((s) => {
  s.declareLlm({ file: 'model.onnx', maxTotalToken: 256 })
})
`, ['model.onnx']))
  assert.match(msg, /servable_config\.ts:3: declareLlm option "maxTotalToken" is unknown; did you mean "maxTotalTokens"\? Known options: file, maxBatchSize, maxTotalTokens, /)
})

test('declareLlm token budgets that contradict each other are refused at load, before any replica starts', async () => {
  const llm = (opts: string) => `${HEADER}export default defineServable((s) => {
  s.declareLlm({ file: 'model.onnx', ${opts} })
})
`
  // model.onnx is not a model at all: these are refused by validateServable alone, never by the engine.
  assert.match(await configError(load(llm('maxInputTokens: 2000'), ['model.onnx'])), /servable_config\.ts:3: declareLlm maxInputTokens \(2000\) must be < maxTotalTokens \(1024, the default\): raise maxTotalTokens or lower maxInputTokens$/)
  assert.match(await configError(load(llm('maxTotalTokens: 256, maxInputTokens: 256'), ['model.onnx'])), /declareLlm maxInputTokens \(256\) must be < maxTotalTokens \(256\)/)
  assert.match(await configError(load(llm('maxTotalTokens: 256, maxBatchPrefillTokens: 100'), ['model.onnx'])), /declareLlm maxBatchPrefillTokens \(100\) < maxInputTokens \(255, the default\): raise maxBatchPrefillTokens or lower maxInputTokens$/)
  assert.match(await configError(load(llm('maxTotalTokens: 256, maxBatchTotalTokens: 200'), ['model.onnx'])), /declareLlm maxBatchTotalTokens \(200\) < maxTotalTokens \(256\): raise maxBatchTotalTokens or lower maxTotalTokens$/)
  assert.match(await configError(load(llm('maxTotalTokens: 0'), ['model.onnx'])), /declareLlm maxTotalTokens must be an integer >= 1 \(got 0\)$/)
  assert.match(await configError(load(llm('stages: 2, microBatches: 0'), ['model.onnx'])), /declareLlm microBatches must be an integer >= 1 \(got 0\)$/)
  assert.match(await configError(load(llm(`modelId: ''`), ['model.onnx'])), /declareLlm modelId must be a non-empty string \(got ""\)$/)
  const ok = await load(llm('maxTotalTokens: 256, maxInputTokens: 200, maxBatchPrefillTokens: 200'), ['model.onnx'])
  assert.equal(ok.llm?.options.maxInputTokens, 200)
})

test('declareLlm stages as files: the stage files in order, not with file, each present; stages becomes their count', async () => {
  const staged = (opts: string) => `${HEADER}export default defineServable((s) => {
  s.declareLlm({ ${opts} })
})
`
  const ok = await load(staged(`stages: ['s1.onnx', 's2.onnx']`), ['s1.onnx', 's2.onnx'])
  assert.deepEqual(ok.llm?.stageFiles?.map((f) => f.file), ['s1.onnx', 's2.onnx'])
  assert.equal(ok.llm?.options.stages, 2)
  assert.equal(ok.llm?.file, 's1.onnx')
  assert.match(await configError(load(staged(`file: 'model.onnx', stages: ['s1.onnx', 's2.onnx']`), ['model.onnx', 's1.onnx', 's2.onnx'])), /declareLlm takes \{ file \} or \{ stages: \[files\] \}, not both/)
  assert.match(await configError(load(staged(`stages: ['s1.onnx']`), ['s1.onnx'])), /needs the stage files in order, at least 2/)
  assert.match(await configError(load(staged(`stages: ['s1.onnx', 'nope.onnx']`), ['s1.onnx'])), /LLM stage file "nope\.onnx" not found in .*npx ms-serve split model\.onnx --stages 2/)
  assert.match(await configError(load(staged(`maxBatchSize: 4`), [])), /declareLlm\(\{ file \}\) needs the ONNX decoder file .* \(or \{ stages: \['stage1\.onnx', 'stage2\.onnx'\] \}/)
})

test('scanServables on a servable folder, a version folder or a file names what was given and the command to run', () => {
  const dir = join(root, 'levels')
  mkdirSync(join(dir, 'add', '1'), { recursive: true })
  writeFileSync(join(dir, 'add', 'servable_config.ts'), ADD)
  writeFileSync(join(dir, 'add', '1', 'add.onnx'), 'x')
  writeFileSync(join(dir, 'notes.txt'), 'x')
  const sdir = join(dir, 'add')
  assert.throws(() => scanServables(sdir), { code: 'CONFIG_INVALID', message: `${sdir} is a servable folder itself (it holds servable_config.ts); start its parent: ms-serve start ${dir}` })
  assert.throws(() => scanServables(join(sdir, '1')), { code: 'CONFIG_INVALID', message: `${sdir}/1 is a folder inside servable folder add, not a servable directory; start the folder that holds the servable folders: ms-serve start ${dir}` })
  assert.throws(() => scanServables(join(sdir, 'servable_config.ts')), { code: 'CONFIG_INVALID', message: new RegExp(`is a file inside servable folder add, not a servable directory; start the folder that holds the servable folders: ms-serve start ${dir}$`) })
  assert.throws(() => scanServables(join(dir, 'notes.txt')), { code: 'CONFIG_INVALID', message: `${dir}/notes.txt is a file, not a servable directory. Start a directory holding servable folders (DIR/<name>/servable_config.ts), e.g. ms-serve start servables; create one with: npx ms-serve init add --dir servables` })
  assert.deepEqual(scanServables(dir).map((f) => f.name), ['add'], 'the parent is what to start')
})

test('defineServable options: the servable\'s limits are range-checked and kept as policy fields; unknown keys get a suggestion', async () => {
  const withOptions = (opts: string) => `${HEADER}export default defineServable((s) => {
  const add = s.declareModel({ file: 'add.onnx' })
  s.registerMethod('m', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x1, x2 }) => ({ y: s.addStage(add, [x1, x2]) }))
}, ${opts})
`
  const v = await load(withOptions('{ requestTimeoutMs: 5000, maxInstancesPerRequest: 64, watchdogMs: 0 }'))
  assert.deepEqual(v.policy, { timeoutMs: 5000, maxInstancesPerRequest: 64, watchdogMs: 0 })
  assert.ok(Object.isFrozen(v.policy))
  assert.deepEqual((await load(ADD)).policy, {}, 'without options every limit comes from the server')
  assert.deepEqual((await load(withOptions('{}'))).policy, {})
  // The YAML spelling and a near miss are both pointed at the option.
  assert.match(await configError(load(withOptions('{ request_timeout_ms: 5 }'))),
    /servable_config\.ts:2: defineServable option "request_timeout_ms" is unknown; did you mean "requestTimeoutMs"\? Known options: requestTimeoutMs, maxInstancesPerRequest, watchdogMs$/)
  assert.match(await configError(load(withOptions('{ maxInstancePerRequest: 5 }'))), /defineServable option "maxInstancePerRequest" is unknown; did you mean "maxInstancesPerRequest"\?/)
  assert.match(await configError(load(withOptions('{ requestTimeoutMs: -1 }'))),
    /servable_config\.ts:2: defineServable option requestTimeoutMs must be 0 \(no limit\) or an integer in 1\.\.2147483647 \(got -1\)$/)
  assert.match(await configError(load(withOptions('{ maxInstancesPerRequest: 0 }'))), /defineServable option maxInstancesPerRequest must be an integer >= 1 \(got 0\)$/)
  assert.match(await configError(load(withOptions(`{ watchdogMs: '2s' }`))), /defineServable option watchdogMs must be 0 \(off\) or an integer in 1000\.\.2147483647 \(got "2s"\)$/)
  assert.match(await configError(load(withOptions('5'))), /servable_config\.ts:2: defineServable's second argument takes an options object, e.g\. \{ requestTimeoutMs: 5000 \} \(got 5\)$/)
})

test('declareModel({ stages }): the stage files in order, each present; not with file', async () => {
  const model = (opts: string) => `${HEADER}export default defineServable((s) => {
  const m = s.declareModel({ ${opts} })
  s.registerMethod('m', { inputs: ['x'], outputs: ['y'] }, ({ x }) => ({ y: s.addStage(m, [x]) }))
})
`
  const ok = await load(model(`stages: ['s1.onnx', 's2.onnx']`), ['s1.onnx', 's2.onnx'])
  assert.deepEqual(ok.models[0]!.stages!.map((x) => x.file), ['s1.onnx', 's2.onnx'])
  assert.equal(ok.models[0]!.file, 's1.onnx')
  assert.equal(ok.models[0]!.name, 's1')
  assert.equal((await load(model(`file: 's1.onnx'`), ['s1.onnx'])).models[0]!.stages, undefined)
  assert.match(await configError(load(model(`stages: ['s1.onnx', 's2.onnx']`), ['s1.onnx'])), /model file "s2\.onnx" not found in /)
  assert.match(await configError(load(model(`stages: ['s1.onnx']`), ['s1.onnx'])), /declareModel\(\{ stages \}\) needs the stage files in order, at least 2.*ms-serve split MODEL --stages 2/)
  assert.match(await configError(load(model(`file: 's1.onnx', stages: ['s1.onnx', 's2.onnx']`), ['s1.onnx', 's2.onnx'])), /declareModel takes \{ file \} or \{ stages \}, not both/)
})
