/**
 * The one REST listener. Route families register on it: MindSpore predict (`/model/...`),
 * health and statistics; later LLM (TGI, OpenAI) routes join the same instance.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { ERROR_CODES, ServeError, toServeError } from '../../errors.ts'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { registerMindSporeRoutes } from './mindspore.ts'
import { renderError } from './ms-render.ts'
import { renderLlmPrometheus, renderPrometheus } from './metrics.ts'
import { registerTgiRoutes } from './tgi.ts'
import { registerOpenAiRoutes } from './openai.ts'

export interface RestOptions { registry: ServableRegistry; maxMsgMb: number; always200: boolean }

export function buildRestServer(opts: RestOptions): FastifyInstance {
  const bodyLimit = opts.maxMsgMb * 1024 * 1024
  const app = Fastify({ bodyLimit, logger: false, keepAliveTimeout: 65_000, return503OnClosing: true })
  // MindSpore does not check Content-Type: every body arrives as text and each route family parses it.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit }, (_req, body, done) => done(null, body))
  // Once close() begins, a keep-alive connection whose response is still being computed would sit
  // idle afterwards until keepAliveTimeout (65 s) and hold up shutdown: ask the client to close it.
  let closing = false
  app.addHook('preClose', (done) => { closing = true; done() })
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (closing) void reply.header('connection', 'close')
    done(null, payload)
  })

  app.setErrorHandler((err, req, reply) => {
    const e = (err as { code?: string }).code === 'FST_ERR_CTP_BODY_TOO_LARGE'
      ? new ServeError('PAYLOAD_TOO_LARGE', `http message is bigger than ${bodyLimit}`)
      : toServeError(err)
    const status = opts.always200 ? 200 : ERROR_CODES[e.code].http
    if (req.url.startsWith('/model') || req.url.startsWith('/version')) void reply.code(status).type('application/json').send(renderError(e.message))
    else void reply.code(status).send({ error: e.message, error_type: e.code.toLowerCase() })
  })

  // Unknown paths: say which routes exist, in both error shapes (MindSpore's error_msg and TGI's error).
  app.setNotFoundHandler((req, reply) => {
    const msg = `no route ${req.method} ${req.url.split('?')[0]}: predict with POST /model/{name}[/version/{n}]:{method}; LLMs also answer POST /generate, /generate_stream, /v1/completions, /v1/chat/completions; GET /health, /stats, /metrics`
    void reply.code(opts.always200 ? 200 : 404).send({ error_msg: 'please check url, the keyword:[model] must contain.', error: msg, error_type: 'not_found' })
  })

  registerMindSporeRoutes(app, opts)
  registerTgiRoutes(app, opts.registry)
  registerOpenAiRoutes(app, opts.registry)

  const healthy = () => opts.registry.all().length > 0 && opts.registry.all().every((s) => s.ready)
  app.get('/health', async (_req, reply) => (healthy() ? reply.code(200).send({}) : reply.code(503).send({ error: 'unhealthy', error_type: 'healthcheck' })))
  app.get('/v2/health/live', async () => ({ live: true }))
  app.get('/v2/health/ready', async (_req, reply) => reply.code(healthy() ? 200 : 503).send({ ready: healthy() }))
  app.get('/stats', async () => ({ servables: opts.registry.all().map((s) => s.stats()), llms: await Promise.all(opts.registry.llms().map((l) => l.stats())) }))
  app.get('/metrics', async (_req, reply) => reply.type('text/plain; version=0.0.4').send(renderPrometheus(opts.registry) + (await renderLlmPrometheus(opts.registry))))
  return app
}
