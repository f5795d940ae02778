// GET /metrics of a real server after predict (REST and gRPC) and LLM traffic: prom-client's text
// passes `promtool check metrics` (Debian's prometheus package; required under CI=1 and .ci/run)
// and the series moved by the right counts.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client } from '../../src/client/index.ts'
import { ADD_BODY, addServable, X1, X2 } from '../helpers/fixtures.ts'
import { tensor } from '../../src/tensor.ts'
import { postJson as post, runCli, startServer, type StartedServer } from '../helpers/server.ts'

const hasPromtool = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0
const mustHavePromtool = process.env.CI === '1' || process.env.CI === 'true' || process.env.MS_SERVE_CI === '1'

/** The value of the one sample of `name` whose labels include every `labels` pair. */
function sample(text: string, name: string, labels: Record<string, string>): number {
  const found = text.split('\n').filter((l) => l.startsWith(name + '{') && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)))
  assert.equal(found.length, 1, `one sample of ${name} ${JSON.stringify(labels)}; got:\n${found.join('\n')}`)
  return Number(found[0]!.split(' ').at(-1))
}

describe('/metrics', () => {
  let dir: string
  let srv: StartedServer
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-metrics-'))
    const r = await runCli(['init', 'llm', '--dir', dir])
    assert.equal(r.code, 0, r.stderr)
    addServable(dir)
    srv = await startServer(dir, ['--devices', '0'])
  })
  after(async () => {
    await srv?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  test('after predict and LLM traffic: promtool passes and the series count it', { skip: !hasPromtool && !mustHavePromtool ? 'promtool not installed (apt-get install prometheus)' : false }, async () => {
    assert.ok(hasPromtool, 'promtool is required in CI: .ci/run installs Debian\'s prometheus package')
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${srv.rest}/model/add:add_common`, { method: 'POST', body: ADD_BODY })
      assert.equal(res.status, 200, await res.text())
    }
    const bad = await fetch(`${srv.rest}/model/add:add_common`, { method: 'POST', body: '{"instances":[{"x1":1}]}' })
    assert.notEqual(bad.status, 200)
    const client = new Client({ grpc: srv.grpc })
    try {
      const [out] = await client.predict('add', 'add_common', { x1: tensor('float32', [2, 2], X1.flat()), x2: tensor('float32', [2, 2], X2.flat()) })
      assert.ok(out?.outputs, out?.error)
    } finally {
      await client.close()
    }
    const gen = await post(`${srv.rest}/generate`, { inputs: 'Hello', parameters: { max_new_tokens: 5, ignore_eos: true } })
    assert.equal(gen.status, 200, JSON.stringify(gen.json))

    const res = await fetch(`${srv.rest}/metrics`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
    const text = await res.text()
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
    assert.equal(check.status, 0, `promtool check metrics:\n${check.stdout}${check.stderr}`)
    assert.doesNotMatch(text, /_ms[{ ]/, 'no millisecond names')

    const add = { servable: 'add', version: '1', method: 'add_common' }
    assert.equal(sample(text, 'msserve_requests_total', { ...add, protocol: 'rest', outcome: 'success' }), 3)
    assert.equal(sample(text, 'msserve_requests_total', { ...add, protocol: 'grpc', outcome: 'success' }), 1)
    assert.ok(text.split('\n').some((l) => l.startsWith('msserve_requests_total{') && l.includes('protocol="rest"') && !l.includes('outcome="success"')), 'the bad request is counted with its error')
    assert.equal(sample(text, 'msserve_request_duration_seconds_count', { ...add, protocol: 'rest' }), 4, 'the refused request too')
    assert.equal(sample(text, 'msserve_queue_duration_seconds_count', add), 4)
    assert.equal(sample(text, 'msserve_batch_size_sum', { servable: 'add', version: '1' }), 4)
    assert.equal(sample(text, 'msserve_compute_duration_seconds_count', { servable: 'add', version: '1' }), 4)
    assert.equal(sample(text, 'msserve_queue_depth', add), 0)
    assert.equal(sample(text, 'msserve_replicas_ready', { servable: 'add', version: '1' }), 1)
    assert.equal(sample(text, 'msserve_replica_restarts_total', { servable: 'add', version: '1' }), 0)

    const llm = { servable: 'llm' }
    assert.equal(sample(text, 'msserve_llm_requests_total', { ...llm, outcome: 'success' }), 1)
    assert.equal(sample(text, 'msserve_llm_request_duration_seconds_count', llm), 1)
    assert.equal(sample(text, 'msserve_llm_time_to_first_token_seconds_count', llm), 1)
    assert.equal(sample(text, 'msserve_llm_time_per_output_token_seconds_count', llm), 4, '5 tokens, 4 gaps')
    assert.equal(sample(text, 'msserve_llm_request_generated_tokens_sum', llm), 5)
    assert.equal(sample(text, 'msserve_llm_request_queue_duration_seconds_count', llm), 1)
    assert.ok(sample(text, 'msserve_llm_request_input_length_sum', llm) >= 1)
    assert.equal(sample(text, 'msserve_llm_generated_tokens_total', { ...llm, device: 'cpu:0' }), 5)
    assert.equal(sample(text, 'msserve_llm_queue_size', llm), 0)
    assert.equal(sample(text, 'msserve_llm_batch_current_size', llm), 0)
    assert.ok(sample(text, 'msserve_llm_kv_cache_bytes', llm) > 0)
    const prefills = sample(text, 'msserve_llm_prefill_steps_total', { ...llm, device: 'cpu:0' })
    assert.ok(prefills >= 1)
    assert.equal(sample(text, 'msserve_llm_prefill_step_duration_seconds_count', llm), prefills)
    assert.equal(sample(text, 'msserve_llm_prefill_step_duration_seconds_bucket', { ...llm, le: '+Inf' }), prefills)
    assert.equal(sample(text, 'msserve_llm_decode_step_duration_seconds_count', llm), sample(text, 'msserve_llm_decode_steps_total', llm))
    // /stats is unchanged: the snapshot JSON.
    const stats = await (await fetch(`${srv.rest}/stats`)).json() as { servables: Array<{ name: string; methods: Record<string, { requests: number }> }> }
    assert.equal(stats.servables.find((s) => s.name === 'add')?.methods['add_common']?.requests, 4)
  })
})
