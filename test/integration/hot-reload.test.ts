// Hot reload through the real CLI: a changed config is swapped in, a broken one keeps the old
// version serving, a new version folder takes over version 0, and requests in flight during a
// swap all succeed.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli, startServer, postJson, type StartedServer } from '../helpers/server.ts'
import { ADD_BODY as body } from '../helpers/fixtures.ts'

async function waitFor(srv: StartedServer, re: RegExp, from: number, timeoutMs = 30_000): Promise<string> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const m = re.exec(srv.output().slice(from))
    if (m) return m[0]
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`no ${re} in server output:\n${srv.output().slice(from)}`)
}

describe('hot reload', () => {
  let dir: string
  let srv: StartedServer
  let cfgPath: string
  let original: string
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-reload-'))
    assert.equal((await runCli(['init', 'add', '--dir', dir])).code, 0)
    cfgPath = join(dir, 'add', 'servable_config.ts')
    original = readFileSync(cfgPath, 'utf8')
    srv = await startServer(dir, ['--devices', '0'])
  })
  after(async () => {
    await srv?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('an edited config adds a method without a restart', async () => {
    const mark = srv.output().length
    const edited = original.replace(/\}\)\s*$/, `
  s.registerMethod('add_twice', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x1, x2 }) => {
    const once = s.addStage(add, [x1, x2])
    return { y: s.addStage(add, [once, x2]) }
  })
})
`)
    assert.notEqual(edited, original)
    writeFileSync(cfgPath, edited)
    await waitFor(srv, /servable add reloaded: version\(s\) 1/, mark)
    const r = await postJson(`${srv.rest}/model/add:add_twice`, body)
    assert.equal(r.status, 200, r.text)
    assert.deepEqual(r.json.instances[0].y, [[11, 14], [17, 20]])
    assert.equal((await postJson(`${srv.rest}/model/add:add_common`, body)).status, 200)
  })

  test('a broken config is refused and the old version keeps serving', async () => {
    const mark = srv.output().length
    writeFileSync(cfgPath, original.replace('defineServable((s) => {', 'defineServable((s) => { const = ;'))
    const line = await waitFor(srv, /reload of servable add failed; still serving version\(s\) 1: [\s\S]*servable_config\.ts:\d+/, mark)
    assert.match(line, /does not compile/)
    const r = await postJson(`${srv.rest}/model/add:add_twice`, body)
    assert.equal(r.status, 200, 'the previous (edited) version is still served')
  })

  test('a new version folder takes over version 0 while requests keep succeeding', async () => {
    writeFileSync(cfgPath, original)
    const mark = srv.output().length
    await waitFor(srv, /servable add reloaded: version\(s\) 1/, mark)
    let stop = false
    const statuses: number[] = []
    const load = (async () => {
      while (!stop) {
        const rs = await Promise.all(Array.from({ length: 4 }, () => postJson(`${srv.rest}/model/add:add_common`, body)))
        for (const r of rs) statuses.push(r.status)
      }
    })()
    const mark2 = srv.output().length
    mkdirSync(join(dir, 'add', '2'))
    copyFileSync(join(dir, 'add', '1', 'add.onnx'), join(dir, 'add', '2', 'add.onnx'))
    await waitFor(srv, /servable add reloaded: version\(s\) 2/, mark2)
    await new Promise((r) => setTimeout(r, 300))
    stop = true
    await load
    assert.ok(statuses.length > 20, `load ran during the swap (${statuses.length} requests)`)
    assert.deepEqual([...new Set(statuses)], [200], 'no request failed during the swap')
    assert.equal((await postJson(`${srv.rest}/model/add/version/2:add_common`, body)).status, 200)
    const v1 = await postJson(`${srv.rest}/model/add/version/1:add_common`, body)
    assert.equal(v1.json.error_msg, 'Request servable(add) method(add_common)  version(1) , servable is not available')
    const stats = await (await fetch(`${srv.rest}/stats`)).json() as { servables: Array<{ name: string; version: number }> }
    assert.deepEqual(stats.servables.map((s) => `${s.name}@${s.version}`), ['add@2'])
  })
})
