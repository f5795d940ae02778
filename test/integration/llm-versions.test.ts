// An LLM servable served at two versions (different seeded weights, so greedy text tells them
// apart): the REST version in the URL and gRPC Generate's version_number pick the version.
import { generateClient, type GenerateClient } from '../helpers/grpc-generate.ts'
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { ROOT, postJson as post, runCli, startServer, type StartedServer } from '../helpers/server.ts'
import { buildDecoder, DECODER_CONFIGS } from '../../src/models/decoder.ts'

const INSTANCE = { prompt: 'Hello', max_new_tokens: 8, ignore_eos: true }

describe('LLM versions', () => {
  let dir: string
  let srv: StartedServer
  let client: GenerateClient | undefined
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ms-serve-llmv-'))
    const servables = join(dir, 'servables')
    const r = await runCli(['init', 'llm', '--dir', servables])
    assert.equal(r.code, 0, r.stderr)
    // Version 2: the same architecture with other weights.
    mkdirSync(join(servables, 'llm', '2'))
    writeFileSync(join(servables, 'llm', '2', 'model.onnx'), buildDecoder({ ...DECODER_CONFIGS.tiny, seed: 99 }))
    writeFileSync(join(dir, 'server.yaml'), 'servables:\n  llm: { versions: [1, 2] }\n')
    srv = await startServer(servables, ['--devices', '0', '--config', join(dir, 'server.yaml'), '--no-watch'])
    client = generateClient(srv.grpc)
  })
  after(async () => {
    client?.close()
    await srv?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  const generate = (req: object) => client!.generate(req)

  test('REST /model/llm/version/N:generate runs version N; a version not served is not available', async () => {
    const text = async (url: string) => {
      const r = await post(url, { instances: INSTANCE })
      assert.equal(r.status, 200, r.text)
      return r.json.instances[0].text as string
    }
    const v1 = await text(`${srv.rest}/model/llm/version/1:generate`)
    const v2 = await text(`${srv.rest}/model/llm/version/2:generate`)
    assert.notEqual(v1, v2, 'the two versions have different weights')
    assert.equal(await text(`${srv.rest}/model/llm:generate`), v2, 'no version: the newest')
    assert.equal(await text(`${srv.rest}/model/llm/version/0:generate`), v2, 'version 0: the newest')
    assert.equal(await text(`${srv.rest}/model/llm/version/1:generate`), v1, 'greedy: version 1 again gives its text')
    for (const method of ['generate', 'generated_stream']) {
      const missing = await post(`${srv.rest}/model/llm/version/3:${method}`, { instances: { ...INSTANCE, stop: ['a', 'b'], temperature: 0.5 } })
      assert.equal(missing.status, 404)
      assert.equal(missing.text, `{"error_msg":"Request servable(llm) method(${method})  version(3) , servable is not available"}`)
    }
  })

  test('gRPC Generate honours version_number; a version not served is NOT_FOUND', async () => {
    const ids = async (req: object) => (await generate({ servable: 'llm', prompt: 'Hello', max_new_tokens: 8, do_sample: false, ...req })).map((e) => e.token_id)
    const v1 = await ids({ version_number: 1 })
    const v2 = await ids({ version_number: 2 })
    assert.notDeepEqual(v1, v2)
    assert.deepEqual(await ids({}), v2, 'version_number 0: the newest')
    assert.deepEqual(await ids({ version_number: 1 }), v1)
    // The same version over REST gives the same tokens (greedy).
    const rest = await post(`${srv.rest}/model/llm/version/1:generated_stream`, { instances: { prompt: 'Hello', max_new_tokens: 8 } })
    assert.deepEqual(rest.text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)).token_id), v1)
    await assert.rejects(generate({ servable: 'llm', prompt: 'Hello', version_number: 3 }), (e: any) => {
      assert.equal(e.code, grpc.status.NOT_FOUND)
      assert.equal(e.details, 'servable llm has no version 3 (running versions: 1, 2)')
      return true
    })
  })

  test('gRPC ServerInfo reports both versions and the package version', async () => {
    const info = await client!.serverInfo()
    assert.equal(info.server_version, JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version)
    assert.deepEqual(info.servables.find((s: any) => s.name === 'llm').versions, [1, 2])
  })
})
