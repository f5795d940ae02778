/**
 * Trivial model over REST and gRPC against the protocol ceiling, all in one run:
 *   echo     bare fastify JSON echo and bare grpc-js Predict echo (bench/echo-servers.ts)
 *   ms-serve the add servable (add_common: one ONNX Add per batch), once per replica isolation
 *            (--isolation, default process,thread,inline: a replica process, a worker thread, or
 *            the listeners' thread), each its own server
 * each at concurrency 1 and 16 with the same load generator (`ms-serve bench`, its own process),
 * plus a wrk cross-check of the REST numbers when wrk is installed.
 *
 *   node scripts/build.mjs && node --import tsx bench/add.ts [--duration 10s] [--concurrency 1,16] [--reps 1] [--isolation process,thread,inline] [--profile 0|1]
 *
 * Before each measurement it waits until the machine is >= --quiet-idle % idle (other work shares the cores).
 * --no-spin 1 turns off ORT's intra-op spinning in the add replica (a what-if, not the default).
 * --profile 1 starts ms-serve's main process with --cpu-prof; profiles land in bench/results/prof-add/
 * (summarise with bench/cpuprofile-top.ts). Replica processes are not profiled.
 */
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { startServer } from '../src/bench/spawn-server.ts'
import type { BenchReport } from '../src/bench/types.ts'
import { BIN, build, flags, fmt, h2loadPath, level, pct, RESULTS, runBenchClean, runH2loadGrpc, runWrk, startEchoServers, tempDir, waitQuiet, wrkPath, writeResult } from './lib.ts'
import { loadMsServiceDefinition } from '../src/protocol/grpc/ms-service.ts'
import { encodeRequest } from '../src/protocol/grpc/ms-codec.ts'
import { tensor } from '../src/tensor.ts'

const f = flags({ duration: '10s', warmup: '2s', concurrency: '1,16', reps: '1', profile: '0', 'wrk-seconds': '8', 'quiet-idle': '90', floors: '1', 'no-spin': '0', isolation: 'process,thread,inline' })
const levels = f.concurrency.split(',').map((c) => `c=${c}`)
const ISOLATIONS = f.isolation.split(',')
build()

const servables = tempDir('ms-serve-bench-add-')
execFileSync(process.execPath, [BIN, 'init', 'add', '--dir', servables.dir], { stdio: 'ignore' })
if (f['no-spin'] === '1') {
  // What-if: ORT intra-op threads do not spin after each run (they otherwise hold a core on this 2-core box).
  const cfg = join(servables.dir, 'add', 'servable_config.ts')
  writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('maxWaitMs: 0 })', "maxWaitMs: 0, session: { extra: { 'session.intra_op.allow_spinning': '0' } } })"))
}

const echoAddr = await startEchoServers()

const profDir = join(RESULTS, 'prof-add')
if (f.profile === '1') mkdirSync(profDir, { recursive: true })
const servers = new Map<string, Awaited<ReturnType<typeof startServer>>>()
for (const iso of ISOLATIONS) servers.set(iso, await startServer(servables.dir, { isolation: iso, nodeArgs: f.profile === '1' ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [] }))

/**
 * Each measurement waits for a quiet machine first (--quiet-idle 0 to skip) and is repeated when
 * other processes took CPU meanwhile. The process-hop echo's child is invisible to the bench's CPU
 * accounting, so that one is not checked.
 */
function bench(args: string[], check = true): Promise<BenchReport> {
  return runBenchClean(args, { quietIdle: Number(f['quiet-idle']), maxOther: check ? 0.3 : 0 })
}
const common = ['--servable', 'add', '--method', 'add_common', '--concurrency', f.concurrency, '--duration', f.duration, '--warmup', f.warmup]
const runs: Record<string, BenchReport[]> = { 'rest-echo': [], 'grpc-echo': [], 'rest-process-hop': [], 'rest-worker-hop': [] }
for (const iso of ISOLATIONS) for (const proto of ['rest', 'grpc']) runs[`${proto}-ms-serve-${iso}`] = []
const wrk: Record<string, { reqPerSec: number; latency: string }> = {}
const h2: Record<string, { reqPerSec: number; latency: string }> = {}
try {
  for (let rep = 0; rep < Number(f.reps); rep++) {
    process.stderr.write(`rep ${rep + 1}: REST echo\n`)
    runs['rest-echo']!.push(await bench([...common, '--url', `http://${echoAddr.rest}`, '--server-pid', String(echoAddr.pid)]))
    for (const [iso, server] of servers) {
      process.stderr.write(`rep ${rep + 1}: REST ms-serve (${iso})\n`)
      runs[`rest-ms-serve-${iso}`]!.push(await bench([...common, '--url', server.restOrigin, '--server-pid', String(server.pid)]))
    }
    process.stderr.write(`rep ${rep + 1}: gRPC echo\n`)
    runs['grpc-echo']!.push(await bench([...common, '--grpc', echoAddr.grpc, '--server-pid', String(echoAddr.pid)]))
    for (const [iso, server] of servers) {
      process.stderr.write(`rep ${rep + 1}: gRPC ms-serve (${iso})\n`)
      runs[`grpc-ms-serve-${iso}`]!.push(await bench([...common, '--grpc', server.grpcAddress, '--url', server.restOrigin, '--server-pid', String(server.pid)]))
    }
    if (f.floors === '1') {
      process.stderr.write(`rep ${rep + 1}: REST echo behind a process hop, behind a worker hop\n`)
      runs['rest-process-hop']!.push(await bench([...common, '--url', `http://${echoAddr.restProcessHop}`, '--server-pid', String(echoAddr.pid)], false))
      runs['rest-worker-hop']!.push(await bench([...common, '--url', `http://${echoAddr.restWorkerHop}`, '--server-pid', String(echoAddr.pid)]))
    }
  }
  if (wrkPath()) {
    const body = '{"instances":[{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[5.0,6.0],[7.0,8.0]]}]}'
    for (const c of f.concurrency.split(',').map(Number)) {
      process.stderr.write(`wrk -t1 -c${c}: echo, ms-serve\n`)
      if (Number(f['quiet-idle']) > 0) await waitQuiet(Number(f['quiet-idle']))
      wrk[`rest-echo c=${c}`] = runWrk(`http://${echoAddr.rest}/model/add:add_common`, body, c, Number(f['wrk-seconds']))
      for (const [iso, server] of servers) wrk[`rest-ms-serve (${iso}) c=${c}`] = runWrk(`${server.restOrigin}/model/add:add_common`, body, c, Number(f['wrk-seconds']))
    }
  } else {
    process.stderr.write('wrk is not installed: no independent cross-check (apt-get install -y wrk)\n')
  }
  if (h2loadPath()) {
    // The same Predict call as the grpc-js client sends, as one length-prefixed gRPC frame.
    const predict = loadMsServiceDefinition()['Predict']!
    const msg = predict.requestSerialize(encodeRequest('add', 'add_common', 0, [{ x1: tensor('float32', [2, 2], [1, 2, 3, 4]), x2: tensor('float32', [2, 2], [5, 6, 7, 8]) }]))
    const frame = Buffer.alloc(5 + msg.length)
    frame.writeUInt32BE(msg.length, 1)
    msg.copy(frame, 5)
    for (const c of f.concurrency.split(',').map(Number)) {
      process.stderr.write(`h2load 1 connection x ${c} streams: gRPC echo, ms-serve\n`)
      if (Number(f['quiet-idle']) > 0) await waitQuiet(Number(f['quiet-idle']))
      h2[`grpc-echo c=${c}`] = runH2loadGrpc(echoAddr.grpc, '/mindspore.serving.proto.MSService/Predict', frame, c, Number(f['wrk-seconds']))
      for (const [iso, server] of servers) h2[`grpc-ms-serve (${iso}) c=${c}`] = runH2loadGrpc(server.grpcAddress, '/mindspore.serving.proto.MSService/Predict', frame, c, Number(f['wrk-seconds']))
    }
  } else {
    process.stderr.write('h2load is not installed: no independent gRPC cross-check (apt-get install -y nghttp2-client)\n')
  }
} catch (e) {
  for (const [iso, server] of servers) process.stderr.write(`ms-serve (${iso}) output:\n${server.output()}\n`)
  throw e
} finally {
  await Promise.all([...servers.values()].map((server) => server.stop()))
  echoAddr.proc.kill('SIGTERM')
  servables.remove()
}

/** Median over reps of a level's req/s (the report of that rep is kept for latencies). */
function pick(key: string, label: string) {
  const list = runs[key]!.map((r) => level(r, label)).sort((a, b) => a.reqPerSec - b.reqPerSec)
  return list[Math.floor(list.length / 2)]!
}
const rows: Array<Record<string, string | number>> = []
const lines = ['| protocol | c | isolation | echo req/s | ms-serve req/s | ms-serve / echo | ms-serve p50 ms | p99 ms | echo p50 ms | p99 ms | avg batch |', '|---|---|---|---|---|---|---|---|---|---|---|']
for (const proto of ['rest', 'grpc']) {
  for (const label of levels) {
    const e = pick(`${proto}-echo`, label)
    for (const iso of ISOLATIONS) {
      const m = pick(`${proto}-ms-serve-${iso}`, label)
      const ratio = m.reqPerSec / e.reqPerSec
      rows.push({ protocol: proto, level: label, isolation: iso, echoReqPerSec: e.reqPerSec, msServeReqPerSec: m.reqPerSec, ratio, msServeP50: m.latencyMs.p50, msServeP99: m.latencyMs.p99, echoP50: e.latencyMs.p50, echoP99: e.latencyMs.p99, avgBatch: m.server?.avgBatchSize ?? 0 })
      lines.push(`| ${proto === 'rest' ? 'REST' : 'gRPC'} | ${label.slice(2)} | ${iso} | ${fmt(e.reqPerSec)} | ${fmt(m.reqPerSec)} | **${pct(ratio)}** | ${m.latencyMs.p50.toFixed(2)} | ${m.latencyMs.p99.toFixed(2)} | ${e.latencyMs.p50.toFixed(2)} | ${e.latencyMs.p99.toFixed(2)} | ${(m.server?.avgBatchSize ?? 0).toFixed(1)} |`)
    }
  }
}
if (f.floors === '1') {
  // Each isolation against the echo with the same hop: how much of its own ceiling ms-serve reaches.
  lines.push('', '| REST, c | echo | echo + process hop | echo + worker hop | ms-serve process / process-hop echo | ms-serve thread / worker-hop echo |', '|---|---|---|---|---|---|')
  for (const label of levels) {
    const e = pick('rest-echo', label).reqPerSec
    const p = pick('rest-process-hop', label).reqPerSec
    const w = pick('rest-worker-hop', label).reqPerSec
    const mp = runs['rest-ms-serve-process'] ? pick('rest-ms-serve-process', label).reqPerSec : NaN
    const mt = runs['rest-ms-serve-thread'] ? pick('rest-ms-serve-thread', label).reqPerSec : NaN
    rows.push({ protocol: 'rest-floors', level: label, echoReqPerSec: e, processHopReqPerSec: p, workerHopReqPerSec: w, msServeProcessReqPerSec: mp, msServeThreadReqPerSec: mt })
    lines.push(`| ${label.slice(2)} | ${fmt(e)} | ${fmt(p)} (${pct(p / e)}) | ${fmt(w)} (${pct(w / e)}) | ${Number.isNaN(mp) ? '-' : pct(mp / p)} | ${Number.isNaN(mt) ? '-' : pct(mt / w)} |`)
  }
}
if (Object.keys(wrk).length) {
  lines.push('', '| wrk -t1 (POST, keep-alive) | req/s | latency |', '|---|---|---|')
  for (const [k, v] of Object.entries(wrk)) lines.push(`| ${k} | ${fmt(v.reqPerSec)} | ${v.latency} |`)
}
if (Object.keys(h2).length) {
  lines.push('', '| h2load -c1 -m C (gRPC Predict) | req/s | time for request |', '|---|---|---|')
  for (const [k, v] of Object.entries(h2)) lines.push(`| ${k} | ${fmt(v.reqPerSec)} | ${v.latency} |`)
}
const file = writeResult(f['no-spin'] === '1' ? 'add-nospin' : 'add', { args: f, rows, wrk, h2load: h2, reports: runs })
process.stdout.write(lines.join('\n') + `\n\nGoal: ms-serve >= 70% of the echo over REST and gRPC.\nwrote ${file}\n`)
