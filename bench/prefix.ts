/**
 * Prefix caching (issue 11 goal 4), in one run on the 25.4M-parameter decoder: requests that share
 * a system prompt of S tokens followed by a user turn of U tokens of their own, N concurrent
 * streams in a closed loop over TGI /generate_stream, against two servers in turn: the prefix cache
 * on (the default) and off (`prefixCacheTokens: 0`). Reports TTFT / TPOT / tok/s of both and their
 * ratio, the cache's hit share from /metrics, and checks that both servers return the same greedy
 * text for every request.
 *
 *   node --import tsx bench/prefix.ts [--system 512] [--user 32] [--new 32] [--streams 4] [--rounds 4] [--isolation process]
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { startServer } from '../src/bench/spawn-server.ts'
import { benchDecoder, llmServables, quantile } from './lib.ts'

const { values: args } = parseArgs({ options: {
  system: { type: 'string', default: '512' }, user: { type: 'string', default: '32' }, new: { type: 'string', default: '32' },
  streams: { type: 'string', default: '4' }, rounds: { type: 'string', default: '4' }, stagger: { type: 'string', default: '40' },
  isolation: { type: 'string', default: 'process' }, out: { type: 'string' },
} })
const S = Number(args.system), U = Number(args.user), N = Number(args.new), STREAMS = Number(args.streams), ROUNDS = Number(args.rounds), STAGGER = Number(args.stagger)
const decoder = await benchDecoder('small')
const servableDir = (label: string, cacheTokens: number | null): string =>
  llmServables(`prefix-${label}`, decoder, { maxBatchSize: 16, maxTotalTokens: S + U + N + 8, maxConcurrentRequests: 256, ...(cacheTokens === null ? {} : { prefixCacheTokens: cacheTokens }) })

// Byte-level vocabulary: one token per ASCII character (+ BOS). The system prompt is S-1 bytes.
const system = Array.from({ length: S - 1 }, (_, i) => String.fromCharCode(97 + ((i * 7) % 26))).join('')
const user = (k: number): string => Array.from({ length: U }, (_, i) => String.fromCharCode(65 + ((i * 3 + k * 11) % 26))).join('')

interface Req { k: number; ttft: number; e2e: number; tokens: number; text: string }

async function streamOnce(url: string, k: number): Promise<Req> {
  const t0 = performance.now()
  const res = await fetch(`${url}/generate_stream`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: system + user(k), parameters: { max_new_tokens: N, ignore_eos: true, do_sample: false } }) })
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`)
  let ttft = 0, tokens = 0, buf = '', text = ''
  const dec = new TextDecoder()
  for await (const chunk of res.body!) {
    buf += dec.decode(chunk as Uint8Array, { stream: true })
    let i: number
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i)
      buf = buf.slice(i + 2)
      if (!ev.startsWith('data:')) continue
      if (ttft === 0) ttft = performance.now() - t0
      tokens++
      const j = JSON.parse(ev.slice(5)) as { generated_text?: string | null }
      if (j.generated_text) text = j.generated_text
    }
  }
  return { k, ttft, e2e: performance.now() - t0, tokens, text }
}

const pct = quantile

async function measure(url: string): Promise<{ row: Record<string, number>; texts: Map<number, string> }> {
  const reqs: Req[] = []
  let first = Infinity, last = 0
  await Promise.all(Array.from({ length: STREAMS }, async (_, c) => {
    await new Promise((r) => setTimeout(r, c * STAGGER))
    await streamOnce(url, 1000 + c) // warm-up, not counted
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now()
      reqs.push(await streamOnce(url, c * ROUNDS + r))
      first = Math.min(first, t0)
      last = Math.max(last, performance.now())
    }
  }))
  const tpot = reqs.map((r) => (r.e2e - r.ttft) / Math.max(1, r.tokens - 1))
  const tokens = reqs.reduce((a, r) => a + r.tokens, 0)
  return {
    row: { requests: reqs.length, outputTokPerS: tokens * 1000 / (last - first), ttftP50: pct(reqs.map((r) => r.ttft), 50), ttftP99: pct(reqs.map((r) => r.ttft), 99), tpotP50: pct(tpot, 50), e2eP50: pct(reqs.map((r) => r.e2e), 50) },
    texts: new Map(reqs.map((r) => [r.k, r.text])),
  }
}

function metric(text: string, name: string): number {
  return text.split('\n').filter((l) => l.startsWith(name + '{')).reduce((a, l) => a + Number(l.split(' ').at(-1)), 0)
}

process.stderr.write(`system prompt ${S} tokens, user turns ${U}, ${N} new tokens, ${STREAMS} streams x ${ROUNDS} rounds\n`)
const out: Record<string, unknown> = { systemTokens: S, userTokens: U, newTokens: N, streams: STREAMS, rounds: ROUNDS, isolation: args.isolation }
const texts: Record<string, Map<number, string>> = {}
for (const [label, cache] of [['on', null], ['off', 0]] as const) {
  const srv = await startServer(servableDir(label, cache), { devices: '0', isolation: args.isolation!, timeoutMs: 120_000 })
  process.stderr.write(`prefix cache ${label}...\n`)
  const m = await measure(srv.restOrigin)
  const mt = await (await fetch(`${srv.restOrigin}/metrics`)).text()
  out[label] = { ...m.row, lookupTokens: metric(mt, 'msserve_llm_prefix_cache_lookup_tokens_total'), hitTokens: metric(mt, 'msserve_llm_prefix_cache_hit_tokens_total'), cachedTokens: metric(mt, 'msserve_llm_prefix_cache_tokens'), cachedBytes: metric(mt, 'msserve_llm_prefix_cache_bytes') }
  texts[label] = m.texts
  await srv.stop()
}
const on = out.on as Record<string, number>, off = out.off as Record<string, number>
const same = [...texts.on!].every(([k, t]) => texts.off!.get(k) === t)
out.identical = same
const f = (x: number, d = 1) => x.toFixed(d)
console.log(`\n| prefix cache | req | output tok/s | TTFT p50 / p99 ms | TPOT p50 ms | E2E p50 ms | prompt tokens from the cache | cached tokens (MiB) |`)
console.log('|---|---|---|---|---|---|---|---|')
for (const [label, r] of [['on', on], ['off', off]] as const) {
  console.log(`| ${label} | ${r.requests} | ${f(r.outputTokPerS!, 0)} | ${f(r.ttftP50!)} / ${f(r.ttftP99!)} | ${f(r.tpotP50!, 2)} | ${f(r.e2eP50!, 0)} | ${r.lookupTokens ? f((100 * r.hitTokens!) / r.lookupTokens!, 0) : '0'}% | ${r.cachedTokens} (${f(r.cachedBytes! / 2 ** 20)}) |`)
}
console.log(`\nTTFT p50 on / off: ${f(on.ttftP50! / off.ttftP50!, 2)}x; output tok/s on / off: ${f(on.outputTokPerS! / off.outputTokPerS!, 2)}x; greedy texts identical: ${same}`)
const resDir = join(import.meta.dirname, 'results')
mkdirSync(resDir, { recursive: true })
const file = args.out ?? join(resDir, `prefix-${new Date().toISOString().replace(/[:.]/g, '-')}.json`)
writeFileSync(file, JSON.stringify(out, null, 2))
console.log(`wrote ${file}`)
if (!same) process.exit(1)
