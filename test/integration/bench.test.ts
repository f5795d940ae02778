/**
 * `ms-serve bench` end to end: against a server it starts itself (predict over REST), and in
 * generate mode against a small fake SSE server speaking the TGI and OpenAI stream formats. These
 * check that a well-formed report comes out; they assert nothing about speed.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import { once } from 'node:events'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { runCli, tempServables } from '../helpers/server.ts'
import { SseParser } from '../../src/client/sse.ts'
import { interpretEvent } from '../../src/bench/sse.ts'
import { isStable } from '../../src/bench/recorder.ts'
import type { BenchReport, LatencySummary } from '../../src/bench/types.ts'

function checkLatency(s: LatencySummary, what: string): void {
  assert.ok(s.count > 0, `${what}: no samples`)
  assert.ok(s.min > 0 && s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.max, `${what}: percentiles out of order ${JSON.stringify(s)}`)
}

test('bench --servables: starts a server, sweeps concurrency, writes JSON and HTML', { timeout: 180_000 }, async (t) => {
  const dir = tempServables(t)
  const init = await runCli(['init', 'add', '--dir', dir])
  assert.equal(init.code, 0, init.stderr)
  const json = join(dir, 'out.json')
  const html = join(dir, 'out.html')
  const r = await runCli(['bench', '--servables', dir, '--servable', 'add', '--method', 'add_common', '--duration', '2s', '--concurrency', '1,2', '--isolation', 'thread', '--json', json, '--html', html])
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`)
  assert.match(r.stdout, /level\s+req\/s\s+items\/s\s+p50 ms/)
  assert.match(r.stdout, /\(server started by bench\); 1 replica\(s\): cpu:0 thread/, 'the started server got --isolation thread')

  const report = JSON.parse(readFileSync(json, 'utf8')) as BenchReport
  assert.equal(report.tool, 'ms-serve bench')
  assert.equal(report.target.servable, 'add')
  assert.equal(report.target.method, 'add_common')
  assert.equal(report.target.protocol, 'rest')
  assert.equal(report.target.startedServer, true)
  assert.deepEqual(report.target.replicas, [{ device: 'cpu:0', isolation: 'thread' }])
  assert.equal(report.load.mode, 'closed')
  assert.ok(report.machine.cpus >= 1 && report.machine.node.startsWith('v'))
  assert.deepEqual(report.levels.map((l) => l.label), ['c=1', 'c=2'])
  for (const l of report.levels) {
    assert.equal(l.numErrors, 0, JSON.stringify(l.errors))
    assert.ok(l.requests > 0 && l.reqPerSec > 0 && l.itemsPerSec === l.reqPerSec)
    assert.ok(l.windows.length >= 1 && l.durationMs > 0)
    checkLatency(l.latencyMs, l.label)
    assert.ok(l.server, `${l.label}: no server breakdown from /stats`)
    assert.ok(l.server!.executions > 0 && l.server!.inferences >= l.server!.executions)
    assert.ok(l.server!.avgBatchSize >= 1)
    assert.ok(Object.keys(l.server!.batchSizes).length > 0)
  }
  assert.ok(report.notes.some((n) => /same \d+ core/.test(n)))

  const page = readFileSync(html, 'utf8')
  assert.match(page, /^<!doctype html>/)
  assert.match(page, /<svg[^>]*>[\s\S]*Latency vs throughput[\s\S]*<\/svg>/)
  assert.match(page, /Executed batch sizes/)
  assert.ok(page.trimEnd().endsWith('</html>'))
  assert.doesNotMatch(page, /<script/)
})

test('bench: tells the user what to do when there is nothing to benchmark', async () => {
  const r = await runCli(['bench', '--servable', 'add'])
  assert.equal(r.code, 2)
  assert.match(r.stderr, /--servables DIR/)
  assert.match(r.stderr, /--url/)
})

/** A fake LLM server: TGI /generate_stream and OpenAI /v1/completions, one token every `gapMs`. */
async function fakeSseServer(gapMs: number): Promise<{ origin: string; server: Server }> {
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d) => { body += d })
    req.on('end', async () => {
      const j = JSON.parse(body || '{}')
      const tgi = req.url === '/generate_stream'
      const n = tgi ? j.parameters?.max_new_tokens ?? 4 : j.max_tokens ?? 4
      if (req.url !== '/generate_stream' && req.url !== '/v1/completions') { res.writeHead(404).end('{"error":"not found"}'); return }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      res.write(': keep-alive\n\n')
      let text = ''
      for (let i = 1; i <= n; i++) {
        await new Promise((r) => setTimeout(r, gapMs))
        text += ` t${i}`
        if (tgi) {
          const last = i === n
          // Split one event over two writes to exercise the client's parser.
          const ev = JSON.stringify({ index: i, token: { id: i, text: ` t${i}`, logprob: -0.1, special: false }, generated_text: last ? text : null, details: last ? { finish_reason: 'length', generated_tokens: n, seed: null, input_length: 3 } : null })
          res.write(`data: ${ev.slice(0, 10)}`)
          res.write(`${ev.slice(10)}\n\n`)
        } else {
          res.write(`data: ${JSON.stringify({ id: 'x', object: 'text_completion', created: 0, model: j.model, choices: [{ index: 0, text: ` t${i}`, logprobs: null, finish_reason: i === n ? 'length' : null }] })}\r\n\r\n`)
        }
      }
      if (!tgi) {
        res.write(`data: ${JSON.stringify({ id: 'x', object: 'text_completion', choices: [], usage: { prompt_tokens: 3, completion_tokens: n, total_tokens: n + 3 } })}\n\n`)
        res.write('data: [DONE]\n\n')
      }
      res.end()
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const addr = server.address() as { port: number }
  return { origin: `http://127.0.0.1:${addr.port}`, server }
}

for (const route of ['tgi', 'openai'] as const) {
  test(`bench --generate --route ${route}: TTFT, TPOT, ITL, E2EL, tokens/s and goodput against a fake SSE server`, { timeout: 60_000 }, async (t) => {
    const { origin, server } = await fakeSseServer(3)
    t.after(() => server.close())
    const dir = tempServables(t)
    const json = join(dir, 'gen.json')
    const html = join(dir, 'gen.html')
    const r = await runCli(['bench', '--url', origin, '--servable', 'llm', '--generate', '--route', route, '--concurrency', '1,4', '--duration', '1s', '--warmup', '200ms',
      '--max-new-tokens', '8', '--goodput', 'ttft:1000,tpot:1000', '--baseline', 'raw', '--json', json, '--html', html, '--no-progress'])
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`)
    assert.match(r.stdout, /out tok\/s\s+TTFT p50/)
    const report = JSON.parse(readFileSync(json, 'utf8')) as BenchReport
    assert.equal(report.target.protocol, 'generate')
    assert.equal(report.target.route, route)
    assert.equal(report.levels.length, 2)
    for (const l of report.levels) {
      assert.equal(l.numErrors, 0, JSON.stringify(l.errors))
      const g = l.generate!
      assert.ok(g, 'generate summary missing')
      assert.equal(g.outputTokens, l.requests * 8)
      checkLatency(g.ttftMs, 'ttft')
      checkLatency(g.e2elMs, 'e2el')
      checkLatency(g.itlMs, 'itl')
      assert.equal(g.tpotMs.count, l.requests)
      assert.ok(g.ttftMs.p50 >= 2, `TTFT ${g.ttftMs.p50} ms is below the fake server's first-token delay`)
      assert.ok(g.ttftMs.p50 < g.e2elMs.p50)
      assert.ok(g.tpotMs.p50 >= 2 && g.tpotMs.p50 < 100, `TPOT ${g.tpotMs.p50}`)
      assert.equal(g.goodputRequests, l.requests, 'every request meets a 1 s SLO')
      assert.ok(g.outputTokensPerSec > 0 && l.server === null)
    }
    // Against --url there is no servable folder to read the decoder from: the report says so instead of failing.
    assert.equal(report.baseline, null)
    assert.ok(report.notes.some((n) => /--baseline raw for --generate was skipped: .*needs --servables DIR/.test(n)))
    assert.ok(existsSync(html))
  })
}

test('bench parsers: SSE split anywhere, event meanings, perf_analyzer stability rule', () => {
  const p = new SseParser()
  const text = ': ping\r\n\r\ndata: {"a":1}\r\n\r\ndata: [DONE]\n\n'
  const got: string[] = []
  for (const ch of text) got.push(...p.push(ch))
  got.push(...p.end())
  assert.deepEqual(got, ['{"a":1}', '[DONE]'])

  assert.deepEqual(interpretEvent('tgi', '{"index":1,"token":{"id":5,"text":"a"},"generated_text":null,"details":null}'), { kind: 'token', count: 1, final: false })
  assert.deepEqual(interpretEvent('tgi', '{"index":2,"token":{"id":6,"text":"b"},"generated_text":"ab","details":{"generated_tokens":2}}'), { kind: 'token', count: 1, final: true, finalTokens: 2 })
  assert.deepEqual(interpretEvent('tgi', '{"error":"Model is overloaded","error_type":"overloaded"}'), { kind: 'error', errorKind: 'stream_overloaded', message: 'Model is overloaded' })
  assert.deepEqual(interpretEvent('openai', '{"choices":[],"usage":{"completion_tokens":7}}'), { kind: 'token', count: 0, final: true, finalTokens: 7 })
  assert.deepEqual(interpretEvent('openai', '[DONE]'), { kind: 'done' })

  const w = (throughput: number, lat: number) => ({ durationMs: 1000, requests: 10, errors: 0, throughput, meanLatencyMs: lat })
  assert.equal(isStable([w(100, 1), w(105, 1.05)], 10), false)
  assert.equal(isStable([w(50, 1), w(100, 1), w(105, 1.05), w(98, 0.97)], 10), true)
  assert.equal(isStable([w(100, 1), w(130, 1), w(100, 1)], 10), false)
  assert.equal(isStable([w(100, 1), w(100, 1), w(100, 1)], 0), false)
})

test('bench --generate --baseline raw: the real LLM servable against its plain decode loop', { timeout: 180_000 }, async (t) => {
  const dir = tempServables(t)
  assert.equal((await runCli(['init', 'llm', '--dir', dir])).code, 0)
  const json = join(dir, 'gen.json')
  const r = await runCli(['bench', '--servables', dir, '--servable', 'llm', '--generate', '--concurrency', '1,2', '--duration', '2s', '--warmup', '500ms', '--max-new-tokens', '8', '--baseline', 'raw', '--json', json, '--no-progress'])
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`)
  const report = JSON.parse(readFileSync(json, 'utf8')) as BenchReport
  assert.equal(report.baseline?.kind, 'raw-decode')
  assert.deepEqual(report.baseline!.rows.map((x) => x.batch), [1, 2])
  for (const row of report.baseline!.rows) assert.ok(row.itemsPerSec > 0 && row.runs >= 3)
  for (const l of report.levels) {
    assert.equal(l.numErrors, 0, JSON.stringify(l.errors))
    assert.ok(l.generate!.outputTokensPerSec > 0)
    assert.ok(l.ratioToRaw! > 0 && Math.abs(l.ratioToRaw! - l.generate!.outputTokensPerSec / report.baseline!.best!.itemsPerSec) < 1e-9)
  }
  assert.match(r.stdout, /baseline raw-decode .*plain optimum decode loop/)
  assert.match(r.stdout, /ms-serve best [\d,]+ tok\/s \(c=\d\) = \d+% of raw/)
})
