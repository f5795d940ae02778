/**
 * The protocol ceilings for bench/add.ts: a bare fastify JSON echo and a bare grpc-js echo of
 * MSService.Predict, in one process of their own (so they do not share the load generator's event
 * loop). Each parses the request and answers `{y: x1}` per instance, the shape ms-serve's add
 * servable returns, with no model, batcher or replica behind it.
 *
 * Two more REST echoes put a hand-off between the listener and the "model", to separate the cost
 * of ms-serve's architecture from the cost of its code:
 *   restProcessHop  the instances go to a child process over Node IPC (advanced serialization, as
 *                   ms-serve's replicas) and back, one message each way per request;
 *   restWorkerHop   the same through a worker_thread's postMessage.
 *
 *   node --import tsx bench/echo-servers.ts      # prints {"rest":"127.0.0.1:P","grpc":...,"restProcessHop":...,"restWorkerHop":...}
 */
import { spawn } from 'node:child_process'
import { Worker } from 'node:worker_threads'
import Fastify, { type FastifyInstance } from 'fastify'
import * as grpc from '@grpc/grpc-js'
import { loadMsServiceDefinition, msServerOptions } from '../src/protocol/grpc/ms-service.ts'
import type { WirePredictReply, WirePredictRequest } from '../src/protocol/grpc/ms-codec.ts'

const TEN = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
type Hop = { send(msg: unknown): void; onMessage(fn: (m: { id: number; o: unknown }) => void): void }
const ECHO_JS = `(m) => ({ id: m.id, o: m.i })`

/**
 * A fastify JSON echo with the same listener settings as src/protocol/rest/server.ts (body as text,
 * parsed by the route); with a hop, the answer comes back from another process or thread.
 */
async function echoServer(hop?: Hop): Promise<number> {
  const pending = new Map<number, (o: unknown) => void>()
  let next = 0
  hop?.onMessage((m) => { const r = pending.get(m.id)!; pending.delete(m.id); r(m.o) })
  const app = Fastify({ logger: false, keepAliveTimeout: 65_000, bodyLimit: 100 * 1024 * 1024 })
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body))
  app.post('/model/*', async (req, reply) => {
    const body = JSON.parse(req.body as string) as { instances: Array<Record<string, unknown>> }
    // The add servable's answer is its x1; other request shapes (the MLP's x) get a 10-float y, the MLP's output.
    const out = body.instances.map((i) => ({ y: i['x1'] ?? TEN }))
    const answer = hop ? await new Promise((resolve) => { const id = ++next; pending.set(id, resolve); hop.send({ id, i: out }) }) : out
    return reply.code(200).type('application/json').send(JSON.stringify({ instances: answer }))
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  apps.push(app)
  return (app.server.address() as { port: number }).port
}
const apps: FastifyInstance[] = []
const restPort = await echoServer()
const child = spawn(process.execPath, ['-e', `const f = ${ECHO_JS}; process.on('message', (m) => process.send(f(m))); process.on('disconnect', () => process.exit(0))`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' })
const processHopPort = await echoServer({ send: (m) => child.send(m as object), onMessage: (fn) => child.on('message', fn as (m: unknown) => void) })
const worker = new Worker(`const { parentPort } = require('node:worker_threads'); const f = ${ECHO_JS}; parentPort.on('message', (m) => parentPort.postMessage(f(m)))`, { eval: true })
const workerHopPort = await echoServer({ send: (m) => worker.postMessage(m), onMessage: (fn) => worker.on('message', fn) })

const server = new grpc.Server(msServerOptions())
server.addService(loadMsServiceDefinition(), {
  Predict: (call: grpc.ServerUnaryCall<WirePredictRequest, WirePredictReply>, cb: grpc.sendUnaryData<WirePredictReply>) => {
    const req = call.request
    cb(null, { servable_spec: req.servable_spec ?? null, instances: (req.instances ?? []).map((i) => ({ items: { y: i.items!['x1']! } })) })
  },
})
const grpcPort = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))))

process.stdout.write(JSON.stringify({ rest: `127.0.0.1:${restPort}`, grpc: `127.0.0.1:${grpcPort}`, restProcessHop: `127.0.0.1:${processHopPort}`, restWorkerHop: `127.0.0.1:${workerHopPort}`, pid: process.pid }) + '\n')
const stop = () => { server.forceShutdown(); child.kill(); void worker.terminate(); void Promise.all(apps.map((a) => a.close())).then(() => process.exit(0)) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
