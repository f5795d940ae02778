/**
 * Pipeline stages on another host (issue 13, `--devices 0,NAME:ID`): the same 2-stage servables
 * with both stages here (`--devices 0,1`) and with stage 2 on an agent (`--devices 0,st:0`, the
 * agent a separate `ms-serve agent` process on loopback), in one run. On one machine this measures
 * what the remote path costs: each stage message goes replica -> master -> agent (IPC, then the
 * agent's gRPC stream) and back, instead of a transfer between two threads of the replica.
 *   mlp   a deep MLP (1024-8x1024-16) split by ms-serve split: items/s and p50 at each concurrency
 *   llm   the llm-distributed template's decoder (declareLlm stages 2): generated tokens/s, TTFT and TPOT p50
 *
 * `--isolation thread` runs the replicas (the pipeline's, here) in worker threads. `--spin false` turns the LLM stages' ORT spinning off (declareLlm allowSpinning); `--only llm|mlp`.
 *
 *   node scripts/build.mjs && node --import tsx bench/remote-stages.ts [--duration 5s] [--concurrency 1,8] [--streams 1,4] [--spin false] [--only llm]
 */
import { spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { once } from 'node:events'
import { buildDeepMlp } from '../src/models/mlp.ts'
import { splitModel } from '../src/models/split.ts'
import { ortTyper } from '../src/models/split-check.ts'
import { startServer } from '../src/bench/spawn-server.ts'
import { BIN, build, flags, fmt, runBenchClean, tempDir, writeResult } from './lib.ts'

const f = flags({ duration: '5s', warmup: '1s', concurrency: '1,8', streams: '1,4', 'quiet-idle': '80', 'max-new-tokens': '64', spin: 'true', only: 'mlp,llm', isolation: 'process' })
build()
const root = tempDir('ms-serve-bench-remote-stages-')
const dir = join(root.dir, 'servables')
const split = await splitModel(buildDeepMlp({ layers: 8, width: 1024, inputDim: 1024, outputDim: 16 }), { stages: 2 }, ortTyper)
mkdirSync(join(dir, 'mlp', '1'), { recursive: true })
split.stages.forEach((s, k) => writeFileSync(join(dir, 'mlp', '1', `stage${k + 1}.onnx`), s.bytes))
writeFileSync(join(dir, 'mlp', 'servable_config.ts'), `import { defineServable } from 'ms-serve'
export default defineServable((s) => {
  const m = s.declareModel({ stages: ['stage1.onnx', 'stage2.onnx'], maxBatchSize: 32 })
  s.registerMethod('predict', { inputs: ['x'], outputs: ['y'] }, ({ x }) => ({ y: s.addStage(m, [x]) }))
})
`)
{
  const init = spawn(process.execPath, [BIN, 'init', 'llm-distributed', '--dir', dir], { stdio: 'inherit' })
  const [code] = await once(init, 'exit')
  if (code !== 0) throw new Error('ms-serve init llm-distributed failed')
  if (f.spin === 'false') {
    const cfg = join(dir, 'llm-distributed', 'servable_config.ts')
    writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('s.declareLlm({', 's.declareLlm({\n    allowSpinning: false,'))
  }
}
const only = new Set(f.only.split(','))

interface Row { config: string; kind: 'mlp' | 'llm'; level: number; rate: number; p50: number; tpot?: number }
const rows: Row[] = []

async function run(config: string, devices: string, remote: boolean): Promise<void> {
  const server = await startServer(dir, { devices, isolation: f.isolation, extra: remote ? ['--agents-listen', '127.0.0.1:0'] : [] })
  let agent: ReturnType<typeof spawn> | null = null
  try {
    if (remote) {
      const address = /agents link start success, listening on ([^\s"]+)/.exec(server.output())![1]!
      agent = spawn(process.execPath, [BIN, 'agent', '--master', address, '--devices', '0', '--name', 'st', '--cache-dir', join(root.dir, 'cache')], { stdio: 'ignore' })
    }
    for (const name of ['mlp', 'llm-distributed']) {
      const deadline = Date.now() + 120_000
      while ((await fetch(`${server.restOrigin}/v2/models/${name}/ready`)).status !== 200) {
        if (Date.now() > deadline) throw new Error(`${name} not ready:\n${server.output()}`)
        await new Promise((r) => setTimeout(r, 200))
      }
    }
    const common = ['--duration', f.duration, '--warmup', f.warmup, '--servables', dir, '--url', server.restOrigin, '--server-pid', String(server.pid)]
    for (const c of only.has('mlp') ? f.concurrency.split(',') : []) {
      const r = await runBenchClean(['--servable', 'mlp', '--method', 'predict', '--concurrency', c, ...common], { quietIdle: Number(f['quiet-idle']), maxOther: 0.3 })
      const lv = r.levels[0]!
      rows.push({ config, kind: 'mlp', level: Number(c), rate: lv.itemsPerSec, p50: lv.latencyMs.p50 })
      process.stderr.write(`${config} mlp C=${c}: ${fmt(lv.itemsPerSec)} items/s, p50 ${lv.latencyMs.p50.toFixed(1)} ms\n`)
    }
    for (const c of only.has('llm') ? f.streams.split(',') : []) {
      const r = await runBenchClean(['--generate', '--servable', 'llm-distributed', '--max-new-tokens', f['max-new-tokens'], '--concurrency', c, ...common], { quietIdle: Number(f['quiet-idle']), maxOther: 0.3 })
      const g = r.levels[0]!.generate!
      rows.push({ config, kind: 'llm', level: Number(c), rate: g.outputTokensPerSec, p50: g.ttftMs.p50, tpot: g.tpotMs.p50 })
      process.stderr.write(`${config} llm streams=${c}: ${fmt(g.outputTokensPerSec)} tok/s, TTFT p50 ${g.ttftMs.p50.toFixed(1)} ms, TPOT p50 ${g.tpotMs.p50.toFixed(2)} ms\n`)
    }
  } finally {
    if (agent && agent.exitCode === null) { agent.kill('SIGKILL'); await once(agent, 'exit') }
    await server.stop()
  }
}

try {
  await run('both stages here', '0,1', false)
  await run('stage 2 on an agent', '0,st:0', true)
} finally {
  root.remove()
}
const lines = ['| workload | level | both stages here | stage 2 on an agent | agent / here |', '|---|---|---|---|---|']
for (const r of rows.filter((x) => x.config === 'both stages here')) {
  const o = rows.find((x) => x.config !== r.config && x.kind === r.kind && x.level === r.level)!
  const show = (x: Row) => (x.kind === 'mlp' ? `${fmt(x.rate)} items/s (p50 ${x.p50.toFixed(1)} ms)` : `${fmt(x.rate)} tok/s (TTFT ${x.p50.toFixed(1)}, TPOT ${x.tpot!.toFixed(2)} ms)`)
  lines.push(`| ${r.kind === 'mlp' ? 'MLP, clients' : 'LLM, streams'} | ${r.level} | ${show(r)} | ${show(o)} | ${(o.rate / r.rate).toFixed(2)}x |`)
}
const file = writeResult('remote-stages', { args: f, rows })
process.stdout.write(lines.join('\n') + `\nwrote ${file}\n`)
