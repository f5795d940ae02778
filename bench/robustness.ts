/**
 * Issue 8 measurements: (1) other clients' latency and the server's RSS while one 95 MB predict
 * body (1.7 M instances) is processed; (2) how fast queue-full 429s come back under a flood.
 * `--bin PATH` runs another checkout's bin/ms-serve.js (the "before" column).
 *
 *   node --import tsx bench/robustness.ts [--bin ../before/bin/ms-serve.js] [--instances 1700000]
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { Agent, request } from 'undici'
import { BIN, build, tempDir } from './lib.ts'
import { addServable, FIXTURE_SERVABLES, floatJson, X2 } from '../test/helpers/fixtures.ts'

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1]! : def
}
if (process.argv.includes('--help')) {
  console.log('usage: node --import tsx bench/robustness.ts [--bin PATH/bin/ms-serve.js] [--instances N (1700000)]\n'
    + '  big body: 4 closed-loop clients on small requests, alone for 2 s, then while one N-instance REST body is sent;\n'
    + '  the listener\'s RSS is sampled every 20 ms. flood: 64 clients on a full queue for 3 s.')
  process.exit(0)
}
const bin = arg('--bin', BIN)
const numInstances = Number(arg('--instances', '1700000'))
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function start(dir: string, extra: string[]): Promise<{ proc: ChildProcess; rest: string }> {
  const proc = spawn(process.execPath, [bin, 'start', dir, '--grpc', '127.0.0.1:0', '--rest', '127.0.0.1:0', '--no-watch', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout!.on('data', (d) => { out += d })
  proc.stderr!.on('data', (d) => { out += d })
  for (let i = 0; i < 600; i++) {
    const m = /RESTful server start success, listening on ([^\s"]+)/.exec(out)
    if (m) return { proc, rest: `http://${m[1]}` }
    if (proc.exitCode !== null) throw new Error(out)
    await sleep(50)
  }
  throw new Error(`no start:\n${out}`)
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : 0
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}

const SMALL = floatJson({ instances: [{ x1: [[1, 2], [3, 4]], x2: X2 }] })

/** 4 closed-loop clients on small requests; returns their latencies (ms) while `during` runs. */
async function otherClients(url: string, during: () => Promise<unknown>): Promise<{ lat: number[]; errors: number; ms: number }> {
  const agent = new Agent({ connections: 4 })
  const lat: number[] = []
  let errors = 0
  let stop = false
  const loop = async () => {
    while (!stop) {
      const t0 = performance.now()
      try {
        const r = await request(url, { method: 'POST', body: SMALL, dispatcher: agent })
        await r.body.text()
        if (r.statusCode !== 200) errors++
      } catch { errors++ }
      lat.push(performance.now() - t0)
    }
  }
  const loops = Array.from({ length: 4 }, loop)
  await sleep(300)
  const t0 = performance.now()
  await during()
  const ms = performance.now() - t0
  stop = true
  await Promise.all(loops)
  await agent.close()
  return { lat, errors, ms }
}

async function bigBody(): Promise<void> {
  const { dir, remove } = tempDir('ms-serve-robust-')
  addServable(dir)
  const srv = await start(dir, [])
  const url = `${srv.rest}/model/add:add_common`
  const inst = '{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[5.0,6.0],[7.0,8.0]]}'
  const body = `{"instances":[${new Array(numInstances).fill(inst).join(',')}]}`
  process.stderr.write(`big body: ${(body.length / 1e6).toFixed(1)} MB, ${numInstances} instances\n`)
  const base = await otherClients(url, () => sleep(2000))
  let peak = rssMb(srv.proc.pid!)
  const sampler = setInterval(() => { peak = Math.max(peak, rssMb(srv.proc.pid!)) }, 20)
  let status = 0
  let answerMs = 0
  const withBig = await otherClients(url, async () => {
    const t0 = performance.now()
    const r = await request(url, { method: 'POST', body, headersTimeout: 600_000, bodyTimeout: 600_000 })
    await r.body.text()
    status = r.statusCode
    answerMs = performance.now() - t0
  })
  clearInterval(sampler)
  srv.proc.kill('SIGKILL')
  remove()
  const row = (name: string, x: { lat: number[]; errors: number }) => `${name}: ${x.lat.length} requests, p50 ${pct(x.lat, 50).toFixed(2)} ms, p99 ${pct(x.lat, 99).toFixed(2)} ms, max ${Math.max(...x.lat).toFixed(1)} ms, errors ${x.errors}`
  console.log(row('other clients, no big body', base))
  console.log(row(`other clients while the big body is processed (${(withBig.ms / 1000).toFixed(2)} s)`, withBig))
  console.log(`big body: HTTP ${status} after ${answerMs.toFixed(0)} ms; listener RSS peak ${peak.toFixed(0)} MB = ${(peak / (body.length / 2 ** 20)).toFixed(2)}x the body`)
}

async function flood(): Promise<void> {
  const { dir, remove } = tempDir('ms-serve-robust-')
  FIXTURE_SERVABLES['stall']!(dir)
  const srv = await start(dir, [])
  const url = `${srv.rest}/model/stall:wait`
  const wait = (ms: number) => floatJson({ instances: [{ x1: [[ms, 0], [0, 0]], x2: X2 }] })
  // 2 in flight + 2 queued (the queue limit): every further request is refused.
  const held = Array.from({ length: 4 }, () => request(url, { method: 'POST', body: wait(8000) }).then((r) => r.body.text()))
  await sleep(500)
  const agent = new Agent({ connections: 64 })
  const lat: number[] = []
  const codes = new Map<number, number>()
  const end = performance.now() + 3000
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now()
      const r = await request(url, { method: 'POST', body: wait(1), dispatcher: agent })
      await r.body.text()
      lat.push(performance.now() - t0)
      codes.set(r.statusCode, (codes.get(r.statusCode) ?? 0) + 1)
    }
  }))
  await agent.close()
  srv.proc.kill('SIGKILL')
  await Promise.allSettled(held)
  remove()
  console.log(`flood of 64 clients on a full queue, 3 s: ${lat.length} answers ${JSON.stringify(Object.fromEntries(codes))}, p50 ${pct(lat, 50).toFixed(2)} ms, p99 ${pct(lat, 99).toFixed(2)} ms`)
}

if (bin === BIN) build()
console.log(`server: ${bin}`)
await bigBody()
await flood()
