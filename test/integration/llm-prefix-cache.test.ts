/**
 * Prefix caching in a real server with two LLM replicas (`--devices 0,1`): requests sharing a
 * system prompt answer the same greedy text whichever replica runs them, each replica keeps its
 * own cache (a prefix first seen on the other replica is simply recomputed), and /metrics shows
 * each replica's cached positions, lookups and hits. A servable with `prefixCacheTokens: 0` has none.
 */
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { postJson, runCli, startServer, type StartedServer } from '../helpers/server.ts'

const SYSTEM = 'You are a careful assistant who answers briefly and politely. '.repeat(3)

function series(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const l of text.split('\n')) {
    if (!l.startsWith(name + '{')) continue
    const device = /device="([^"]+)"/.exec(l)?.[1] ?? ''
    out.set(device, Number(l.split(' ').at(-1)))
  }
  return out
}

async function metrics(rest: string): Promise<string> {
  return (await fetch(`${rest}/metrics`)).text()
}

describe('prefix cache across replicas', () => {
  let dir: string
  let srv: StartedServer
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-prefix-'))
    assert.equal((await runCli(['init', 'llm', '--dir', dir])).code, 0)
    srv = await startServer(dir, ['--devices', '0,1'])
  })
  after(async () => {
    await srv?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  // 48 new tokens: a request is still running when its twin arrives, so the dispatcher (fewest
  // active first) puts the twins on different replicas; with 8 the first could finish before the
  // second was dispatched and both land on the same replica.
  const gen = async (inputs: string) => {
    const r = await postJson(`${srv.rest}/generate`, { inputs, parameters: { max_new_tokens: 48, ignore_eos: true } })
    assert.equal(r.status, 200, r.text)
    return r.json.generated_text as string
  }

  test('same greedy text on either replica, each replica reuses only what it computed itself', async () => {
    // Two at once: the dispatcher puts them on different replicas (fewest active first); both miss.
    const [a, b] = await Promise.all([gen(SYSTEM + 'Question one?'), gen(SYSTEM + 'Question one?')])
    assert.equal(a, b)
    let text = await metrics(srv.rest)
    const lookups = series(text, 'msserve_llm_prefix_cache_lookup_tokens_total')
    assert.equal(lookups.size, 2, 'one series per replica')
    assert.ok([...lookups.values()].every((v) => v > 0), `both replicas looked up (${[...lookups]})`)
    assert.deepEqual([...series(text, 'msserve_llm_prefix_cache_hit_tokens_total').values()], [0, 0], 'neither had the prefix')
    assert.ok([...series(text, 'msserve_llm_prefix_cache_tokens').values()].every((v) => v >= 64), 'both cached the prompt blocks')
    assert.ok([...series(text, 'msserve_llm_prefix_cache_bytes').values()].every((v) => v > 0))

    // Again two at once with another question: each replica hits the system prompt it cached.
    const [c, d] = await Promise.all([gen(SYSTEM + 'Question two?'), gen(SYSTEM + 'Question two?')])
    assert.equal(c, d)
    text = await metrics(srv.rest)
    const hits = [...series(text, 'msserve_llm_prefix_cache_hit_tokens_total').values()]
    assert.ok(hits.length === 2 && hits.every((v) => v >= 64), `both replicas hit (${hits})`)
    assert.ok(series(text, 'msserve_llm_prefix_cache_evictions_total').size === 2)
  })

  test('prefixCacheTokens: 0 turns it off (a reload with the option): same text, no hits', async () => {
    const before = await gen(SYSTEM + 'Question three?')
    const cfg = join(dir, 'llm', 'servable_config.ts')
    writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('s.declareLlm({', 's.declareLlm({ prefixCacheTokens: 0,'))
    // The server watches its folder: wait until version 1 serves again from the new config.
    const deadline = Date.now() + 30_000
    let off = false
    while (Date.now() < deadline && !off) {
      await new Promise((r) => setTimeout(r, 300))
      const text = await metrics(srv.rest)
      const held = series(text, 'msserve_llm_prefix_cache_tokens')
      off = held.size > 0 && [...held.values()].every((v) => v === 0)
    }
    assert.ok(off, 'the reloaded replicas hold no prefix cache')
    assert.equal(await gen(SYSTEM + 'Question three?'), before)
    const hits = series(await metrics(srv.rest), 'msserve_llm_prefix_cache_hit_tokens_total')
    assert.ok([...hits.values()].every((v) => v === 0), `no hits with the cache off (${[...hits]})`)
  })
})
