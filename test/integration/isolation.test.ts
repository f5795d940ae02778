// `--isolation thread` and `--isolation inline`: replicas in worker threads or on the listeners'
// thread serve the same answers as replica processes (REST and gRPC, batching, splitting, fixed
// batch padding, per-instance errors), report where they run in /stats, stop cleanly, and an LLM
// servable asked to run inline runs in a thread. A thread that ends is restarted like a process.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { postJson, servableStats, runCli, startServer, tempServables, type StartedServer } from '../helpers/server.ts'
import { addServable, assertClose, FIXTURE_SERVABLES, floatJson, kInstance, kRequest as one, kSum as sumOf, X2 } from '../helpers/fixtures.ts'
import { Client } from '../../src/client/index.ts'
import { byRunTime } from '../../src/runtime/auto-isolation.ts'
import { tensor } from '../../src/tensor.ts'

interface ReplicaStats { device: string; isolation: string; pid: number; state: string; batchesDone: number }
interface ServableStats { name: string; restarts: number; replicas: ReplicaStats[]; models: Array<{ inferences: number; executions: number; padded: number; batchSizes: Record<string, number> }> }

for (const isolation of ['thread', 'inline'] as const) {
  describe(`--isolation ${isolation}`, () => {
    let dir = ''
    let server: StartedServer
    let client: Client

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), `ms-serve-iso-${isolation}-`))
      addServable(dir)
      for (const name of ['batching', 'fixed4', 'errors', 'constant', ...(isolation === 'thread' ? ['crashy'] : [])]) FIXTURE_SERVABLES[name]!(dir)
      const r = await runCli(['init', 'llm', '--dir', dir])
      assert.equal(r.code, 0, r.stderr)
      server = await startServer(dir, ['--devices', '0,1', '--isolation', isolation, '--no-watch'])
      client = new Client({ grpc: server.grpc })
    })

    after(async () => {
      await client?.close()
      await server?.stop()
      if (dir) rmSync(dir, { recursive: true, force: true })
    })

    const stats = (name: string) => servableStats<ServableStats>(server.rest, name)

    test('replicas run inside the server process; the LLM never runs inline', async () => {
      const add = await stats('add')
      assert.deepEqual(add.replicas.map((r) => [r.device, r.isolation, r.state]), [['cpu:0', isolation, 'ready'], ['cpu:1', isolation, 'ready']])
      assert.ok(add.replicas.every((r) => r.pid === server.proc.pid), `pids ${add.replicas.map((r) => r.pid)} vs server ${server.proc.pid}`)
      const llm = await stats('llm')
      assert.deepEqual(llm.replicas.map((r) => r.isolation), ['thread', 'thread'])
      assert.match(server.output(), new RegExp(`servable add version 1: 2 replica\\(s\\) on cpu:0,1 ready in \\d+ ms \\(isolation: ${isolation}\\)`))
      assert.match(server.output(), /servable llm version 1: 2 replica\(s\) on cpu:0,1 ready in \d+ ms \(isolation: thread\)/)
    })

    test('REST and gRPC predict give the right sums under concurrent load, spread over both replicas', async () => {
      const replies = await Promise.all(Array.from({ length: 40 }, (_, k) => postJson(`${server.rest}/model/add:add_common`, one(k))))
      replies.forEach((r, k) => assertClose(r.json, { instances: [{ y: sumOf(k) }] }))
      const grpc = await Promise.all(Array.from({ length: 10 }, (_, k) => client.predict('add', 'add_common', [{ x1: tensor('float32', [2, 2], [k, k, k, k]), x2: tensor('float32', [2, 2], [5, 6, 7, 8]) }])))
      grpc.forEach((r, k) => {
        assert.ok(r[0]!.outputs, r[0]!.error)
        assert.deepEqual(Array.from((r[0]!.outputs['y'] as { data: Float32Array }).data), sumOf(k).flat())
      })
      const s = await stats('add')
      assert.ok(s.replicas.every((r) => r.batchesDone > 0), JSON.stringify(s.replicas))
    })

    test('dynamic batching, splitting over maxBatchSize, and fixed-batch padding work as with processes', async () => {
      const replies = await Promise.all(Array.from({ length: 16 }, (_, k) => postJson(`${server.rest}/model/batching:add_common`, one(k))))
      replies.forEach((r, k) => assertClose(r.json, { instances: [{ y: sumOf(k) }] }))
      let m = (await stats('batching')).models[0]!
      assert.ok(Object.keys(m.batchSizes).map(Number).some((b) => b > 1), JSON.stringify(m.batchSizes))
      const instances = Array.from({ length: 20 }, (_, k) => kInstance(k))
      const before = m.executions
      const big = await postJson(`${server.rest}/model/batching:add_common`, floatJson({ instances }))
      assertClose(big.json, { instances: instances.map((_, k) => ({ y: sumOf(k) })) })
      m = (await stats('batching')).models[0]!
      assert.equal(m.executions - before, 3, '8 + 8 + 4')
      const three = await postJson(`${server.rest}/model/fixed4:add_common`, floatJson({ instances: [0, 1, 2].map(kInstance) }))
      assertClose(three.json, { instances: [0, 1, 2].map((k) => ({ y: sumOf(k) })) })
      assert.equal((await stats('fixed4')).models[0]!.padded, 1)
    })

    test('a stage returning a tensor its config keeps answers every request the same', async () => {
      for (let k = 0; k < 3; k++) {
        const r = await postJson(`${server.rest}/model/constant:add_k`, one(k))
        assert.equal(r.status, 200, r.text)
        assertClose(r.json, { instances: [{ k: [1, 2], y: sumOf(k) }] })
      }
    })

    test('a failing stage fails only its instance; the replica keeps serving', async () => {
      const r = await postJson(`${server.rest}/model/errors:checked`, floatJson({ instances: [{ x1: [[1, 1], [1, 1]], x2: X2 }, { x1: [[-1, 1], [1, 1]], x2: X2 }] }))
      assert.equal(r.status, 200, r.text)
      assertClose(r.json.instances[0], { y: sumOf(1) })
      assert.match(r.json.instances[1].error_msg, /x1 must be non-negative, got -1/)
      assertClose((await postJson(`${server.rest}/model/add:add_common`, one(3))).json, { instances: [{ y: sumOf(3) }] })
    })

    test('the LLM servable generates', async () => {
      const r = await postJson(`${server.rest}/model/llm:generate`, { instances: { prompt: 'Hi', max_new_tokens: 5, ignore_eos: true } })
      assert.equal(r.status, 200, r.text)
      assert.equal(r.json.instances[0].generated_tokens, 5)
    })

    if (isolation === 'thread') {
      test('a replica thread that ends fails its request with REPLICA_CRASHED and is restarted; the server lives on', async () => {
        const crash = await postJson(`${server.rest}/model/crashy:add_or_exit`, one(666))
        assert.equal(crash.status, 503, crash.text)
        assert.match(crash.json.error_msg, /^replica crashy@1 cpu:\d exited \(thread exit code 7\) while running this request$/)
        const deadline = Date.now() + 20_000
        for (;;) {
          const s = await stats('crashy')
          if (s.restarts === 1 && s.replicas.every((r) => r.state === 'ready')) break
          assert.ok(Date.now() < deadline, `not restarted: ${JSON.stringify(s)}`)
          await new Promise((res) => setTimeout(res, 100))
        }
        const replies = await Promise.all([1, 2, 3, 4].map((k) => postJson(`${server.rest}/model/crashy:add_or_exit`, one(k))))
        replies.forEach((r, i) => assertClose(r.json, { instances: [{ y: sumOf(i + 1) }] }))
        assertClose((await postJson(`${server.rest}/model/add:add_common`, one(2))).json, { instances: [{ y: sumOf(2) }] })
      })
    }

    test('SIGTERM drains and the server exits 0', async () => {
      const inflight = Array.from({ length: 8 }, (_, k) => postJson(`${server.rest}/model/add:add_common`, one(k)))
      const replies = await Promise.all(inflight)
      replies.forEach((r, k) => assertClose(r.json, { instances: [{ y: sumOf(k) }] }))
      server.proc.kill('SIGTERM')
      const code = await new Promise<number | null>((res) => server.proc.once('exit', (c) => res(c)))
      assert.equal(code, 0, server.output())
    })
  })
}

describe('isolation in the server YAML', () => {
  test('a per-servable isolation overrides the server-wide one; a bad value exits 2 naming the key', async (t) => {
    const dir = tempServables(t)
    const servables = join(dir, 'servables')
    addServable(servables)
    FIXTURE_SERVABLES['batching']!(servables)
    writeFileSync(join(dir, 'server.yaml'), 'isolation: thread\nservables:\n  add: { isolation: inline }\n')
    const server = await startServer(servables, ['--config', join(dir, 'server.yaml'), '--no-watch'])
    try {
      const all = await (await fetch(`${server.rest}/stats`)).json() as { servables: ServableStats[] }
      const where = Object.fromEntries(all.servables.map((s) => [s.name, s.replicas.map((r) => r.isolation)]))
      assert.deepEqual(where, { add: ['inline'], batching: ['thread'] })
      assertClose((await postJson(`${server.rest}/model/add:add_common`, one(4))).json, { instances: [{ y: sumOf(4) }] })
      assertClose((await postJson(`${server.rest}/model/batching:add_common`, one(5))).json, { instances: [{ y: sumOf(5) }] })
    } finally {
      await server.stop()
    }
    writeFileSync(join(dir, 'bad.yaml'), 'servables:\n  add: { isolation: fiber }\n')
    const r = await runCli(['start', servables, '--config', join(dir, 'bad.yaml'), '--grpc', '127.0.0.1:0', '--rest', '127.0.0.1:0'])
    assert.equal(r.code, 2, r.stdout + r.stderr)
    assert.match(r.stderr, /servables\.add\.isolation must be one of auto, process, thread, inline \(got "fiber"\)/)
  })
})

describe('--isolation auto (the default)', () => {
  test('each servable runs where the rule puts it for its probed run time, LLMs in a process; the reason is logged and in /stats', async (t) => {
    const dir = tempServables(t)
    const servables = join(dir, 'servables')
    addServable(servables)
    assert.equal((await runCli(['init', 'llm', '--dir', servables])).code, 0)
    const server = await startServer(servables, ['--no-watch'])
    try {
      const all = await (await fetch(`${server.rest}/stats`)).json() as { servables: Array<ServableStats & { isolationReason?: string }> }
      const add = all.servables.find((s) => s.name === 'add')!
      const ms = Number(/^auto: ([\d.]+) ms a run at the largest batch/.exec(add.isolationReason ?? '')?.[1])
      assert.ok(Number.isFinite(ms), `add was probed: ${add.isolationReason}`)
      assert.equal(add.replicas[0]!.isolation, byRunTime(ms).isolation, `${ms} ms -> ${byRunTime(ms).isolation}`)
      assertClose((await postJson(`${server.rest}/model/add:add_common`, one(3))).json, { instances: [{ y: sumOf(3) }] })
      const llm = all.servables.find((s) => s.name === 'llm')!
      assert.deepEqual(llm.replicas.map((r) => r.isolation), ['process'])
      assert.equal(llm.isolationReason, 'auto: an LLM: the engine loop runs off the listeners')
      assert.match(server.output(), /servable add version 1: 1 replica\(s\) on cpu:0 ready in \d+ ms \(isolation: \w+; auto: [\d.]+ ms a run at the largest batch/)
    } finally {
      await server.stop()
    }
    // Named isolation: no probe, no reason.
    const named = await startServer(servables, ['--no-watch', '--isolation', 'process'])
    try {
      const all = await (await fetch(`${named.rest}/stats`)).json() as { servables: Array<ServableStats & { isolationReason?: string }> }
      assert.deepEqual(all.servables.map((s) => [s.name, s.replicas[0]!.isolation, s.isolationReason]).sort(), [['add', 'process', undefined], ['llm', 'process', undefined]])
    } finally {
      await named.stop()
    }
  })
})
