/**
 * The one REST listener. Route families register on it: MindSpore predict (`/model/...`),
 * health and statistics; later LLM (TGI, OpenAI) routes join the same instance.
 */
import Fastify, { errorCodes, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { createServer, type RequestListener, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { Server as NetServer, type Socket } from 'node:net'
import type { Readable } from 'node:stream'
import { OFFLOAD_BYTES, type BodyParser, type InstanceLimits } from '../body-parse.ts'
import type { HttpLimits } from '../../server.ts'
import { ServeError, toServeError } from '../../errors.ts'
import type { ServableRegistry } from '../../runtime/registry.ts'
import { registerMindSporeRoutes } from './mindspore.ts'
import { msRestError, oipError, openAiError, tgiError } from '../error-render.ts'
import { renderPrometheus } from './metrics.ts'
import { serverSnapshot } from '../../runtime/snapshot.ts'
import { describeServables } from '../../runtime/describe.ts'
import { registerTgiRoutes } from './tgi.ts'
import { registerOpenAiRoutes } from './openai.ts'
import { registerOipRoutes } from '../oip/rest.ts'
import { registerConsoleRoutes } from './console.ts'
import { registryReady } from '../oip/infer.ts'
import { isOpenRestPath, unauthenticated, type ApiKeys, type TlsMaterial } from '../../config/security.ts'
import { accessWriter, silentLogger, type Logger } from '../../log.ts'
import { acceptedRequestId, newRequestId } from '../request-id.ts'

export interface RestOptions {
  registry: ServableRegistry
  maxMsgMb: number
  always200: boolean
  /** Parses MindSpore bodies (large ones off this thread); absent: inline, no instance limit. */
  bodies?: BodyParser
  limits?: InstanceLimits
  http?: HttpLimits
  /** HTTPS with these (and client certificates when `ca` is set and clientAuth is 'both'). */
  tls?: TlsMaterial | null
  /** Every route but health, readiness and /metrics needs `Authorization: Bearer <key>`. */
  keys?: ApiKeys | null
  /** Access lines (info) go here; default none. */
  logger?: Logger
  /** false: no access lines (each costs ~11 µs of listener CPU; see README Operations). */
  accessLog?: boolean
  /** false: no web console at /console (default true). */
  console?: boolean
}

/** What the access line says of a request beside method, URL, status and duration; routes fill it in. */
export interface AccessFields {
  servable?: string
  version?: number
  method?: string
  instances?: number
  input_tokens?: number
  generated_tokens?: number
  finish_reason?: string
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by routes for the access line (see AccessFields). */
    access: AccessFields | null
  }
}

/** The route family a URL belongs to (the access line's `family`, and whose error shape a 401 takes). */
export function routeFamily(url: string): 'mindspore' | 'openai' | 'tgi' | 'oip' | 'ops' {
  if (isMsRoute(url)) return 'mindspore'
  if (url === '/v2' || url.startsWith('/v2/') || url.startsWith('/v2?')) return 'oip'
  if (url.startsWith('/v1/')) return 'openai'
  if (url.startsWith('/generate') || url.startsWith('/info') || url.startsWith('/tokenize') || url === '/' || url.startsWith('/?')) return 'tgi'
  return 'ops'
}

export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000
export const DEFAULT_BODY_TIMEOUT_MS = 60_000
/** On shutdown, a keep-alive connection idle this long is closed (a busy one closes after its answer). */
const IDLE_GRACE_MS = 300
const DRAIN_TIMEOUT_MS = 30_000

/** OIP routes keep their body as bytes too: the binary tensor extension follows the JSON header. */
export function isOipRoute(url: string): boolean {
  return url.startsWith('/v2/')
}

/** MindSpore routes keep their body as bytes (parsed, maybe off-thread, by BodyParser); the others get text. */
export function isMsRoute(url: string): boolean {
  return url.startsWith('/model') || url.startsWith('/version')
}

/**
 * Reads a request body. With a Content-Length, into one buffer of that size, allocated when the
 * first bytes arrive: no chunk list plus a concatenated copy, so a 95 MB body costs 95 MB here, and
 * a body big enough for the parse worker owns its memory (not the shared pool), so BodyParser can
 * transfer it without a copy. A small body that arrives in one chunk is that chunk. Without one (chunked), chunks are collected up to `limit`. Errors are
 * fastify's (`FST_ERR_CTP_BODY_TOO_LARGE` for the error handler) or a 400.
 */
export function readBody(
  payload: Readable, contentLength: string | undefined, limit: number, done: (err: Error | null, body?: Buffer) => void,
): void {
  const declared = contentLength === undefined ? NaN : Number(contentLength)
  if (declared > limit) return done(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE())
  const expected = Number.isSafeInteger(declared) && declared >= 0 ? declared : -1
  let buf: Buffer | null = null
  const chunks: Buffer[] = []
  let received = 0
  const finish = (err: Error | null, body?: Buffer) => {
    payload.removeListener('data', onData)
    payload.removeListener('end', onEnd)
    payload.removeListener('error', onEnd)
    done(err, body)
  }
  function onData(chunk: Buffer): void {
    if (received + chunk.length > (expected >= 0 ? expected : limit)) {
      finish(expected >= 0 ? lengthMismatch(expected) : new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE())
      return
    }
    if (expected < 0) chunks.push(chunk)
    else if (buf === null && chunk.length === expected && expected <= OFFLOAD_BYTES) buf = chunk // the usual small body: one chunk, no copy
    else {
      // Bodies the parse worker takes own their memory (transferable); small ones use the pool.
      buf ??= expected > OFFLOAD_BYTES ? Buffer.allocUnsafeSlow(expected) : Buffer.allocUnsafe(expected)
      buf.set(chunk, received)
    }
    received += chunk.length
  }
  function onEnd(err?: Error): void {
    if (err) {
      // A client that went away mid-body, as fastify reports it.
      const e = err as Error & { statusCode?: number }
      if (typeof e.statusCode !== 'number') e.statusCode = 400
      finish(e)
      return
    }
    if (expected >= 0 && received !== expected) { finish(lengthMismatch(expected)); return }
    finish(null, expected < 0 ? Buffer.concat(chunks, received) : buf ?? Buffer.alloc(0))
  }
  payload.on('data', onData)
  payload.on('end', onEnd)
  payload.on('error', onEnd)
  payload.resume()
}

function lengthMismatch(expected: number): ServeError {
  return new ServeError('INVALID_REQUEST', `request body size does not match its Content-Length (${expected})`)
}

/** A REST connection: requests in flight, since when it has been idle, and the answer being made (for shutdown). */
interface ConnState { active: number; idleSince: number; res: ServerResponse | null }

/** A REST listener that can shut down without resetting keep-alive clients (see closeRest). */
export type RestServer = FastifyInstance & { closeGracefully(): Promise<void> }

export function buildRestServer(opts: RestOptions): RestServer {
  const bodyLimit = opts.maxMsgMb * 1024 * 1024
  const http = opts.http ?? {}
  const conns = new Map<Socket, ConnState>()
  // From shutdown on, every answer asks its client to close the connection: a keep-alive client
  // then opens no new request on it, and Node closes it once the answer is written. Set on the raw
  // response (no fastify onSend hook, which would run for every reply).
  let closing = false
  const serverFactory = (handler: RequestListener): Server => {
    const serverOpts = {
      keepAliveTimeout: 65_000,
      // Slow clients: headers and the whole body must arrive in bounded time (408, then closed);
      // checked every second instead of Node's 30 s, so a slowloris is cut close to the limit.
      headersTimeout: http.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS,
      requestTimeout: http.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS,
      connectionsCheckingInterval: 1000,
    }
    const server = opts.tls
      ? createHttpsServer({
        ...serverOpts,
        cert: opts.tls.cert,
        key: opts.tls.key,
        ...(opts.tls.ca ? { ca: opts.tls.ca, requestCert: opts.tls.clientAuth === 'both', rejectUnauthorized: opts.tls.clientAuth === 'both' } : {}),
      }, handler) as unknown as Server
      : createServer(serverOpts, handler)
    if (http.maxConnections) server.maxConnections = http.maxConnections
    server.on('connection', (sock: Socket) => {
      conns.set(sock, { active: 0, idleSince: performance.now(), res: null })
      sock.once('close', () => conns.delete(sock))
    })
    server.on('request', (req: { socket: Socket }, res: ServerResponse) => {
      if (closing) res.shouldKeepAlive = false
      const st = conns.get(req.socket)
      if (!st) return
      st.active++
      st.res = res
      res.once('close', () => { st.active--; st.idleSince = performance.now(); if (st.res === res) st.res = null })
    })
    return server
  }
  // fastify's own logger stays off: its per-request child loggers cost more than the one access
  // line written below, on the server's pino logger.
  const app = Fastify({
    bodyLimit, logger: false, return503OnClosing: true, serverFactory,
    genReqId: (req) => acceptedRequestId(req.headers['x-request-id']) ?? newRequestId(),
  })
  app.decorateRequest('access', null)
  const logger = opts.logger ?? silentLogger()
  const keys = opts.keys ?? null
  // One hook: the request id goes back on every answer; the API key is checked before the body is read.
  app.addHook('onRequest', (req, reply, done) => {
    void reply.header('x-request-id', req.id)
    if (keys && !isOpenRestPath(req.url)) {
      const auth = req.headers.authorization
      if (!keys.check(auth)) {
        const e = unauthenticated(auth !== undefined)
        const family = routeFamily(req.url)
        const { status, body } = family === 'mindspore' ? msRestError(e, opts.always200) : family === 'openai' ? openAiError(e) : family === 'oip' ? oipError(e) : tgiError(e)
        void reply.code(status).header('www-authenticate', 'Bearer').type('application/json').send(body)
        return
      }
    }
    done()
  })
  const access = opts.accessLog === false ? null : accessWriter(logger, 'request')
  if (access) {
    app.addHook('onResponse', (req, reply, done) => {
      access({
        event: 'access', protocol: 'rest', request_id: req.id, family: routeFamily(req.url), http_method: req.method, url: req.url,
        status: reply.statusCode, duration_ms: Math.round(reply.elapsedTime * 1000) / 1000, ...req.access,
      })
      done()
    })
  }
  // MindSpore does not check Content-Type: every body is read as bytes and each route family parses it.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (req, payload, done) => {
    readBody(payload, req.headers['content-length'], bodyLimit, (err, body) => {
      if (err) done(err, undefined)
      else done(null, isMsRoute(req.url) || isOipRoute(req.url) ? body : body!.toString('utf8'))
    })
  })

  app.setErrorHandler((err, req, reply) => {
    const e = (err as { code?: string }).code === 'FST_ERR_CTP_BODY_TOO_LARGE'
      ? new ServeError('PAYLOAD_TOO_LARGE', `http message is bigger than ${bodyLimit}`)
      : toServeError(err)
    // Each family's body and status from the error table; --rest-always-200 is MindSpore's behaviour only.
    if (isMsRoute(req.url)) {
      const { status, body } = msRestError(e, opts.always200)
      void reply.code(status).type('application/json').send(body)
      return
    }
    const { status, body } = req.url.startsWith('/v1/') ? openAiError(e) : isOipRoute(req.url) ? oipError(e) : tgiError(e)
    void reply.code(status).send(body)
  })

  // Unknown paths: say which routes exist, in both error shapes (MindSpore's error_msg and TGI's error).
  app.setNotFoundHandler((req, reply) => {
    const msg = `no route ${req.method} ${req.url.split('?')[0]}: predict with POST /model/{name}[/version/{n}]:{method}; Open Inference Protocol: GET /v2, /v2/models/{model}, POST /v2/models/{model}/infer; LLMs also answer POST /generate, /generate_stream, /v1/completions, /v1/chat/completions; GET /health, /servables, /stats, /metrics`
    void reply.code(opts.always200 ? 200 : 404).send({ error_msg: 'please check url, the keyword:[model] must contain.', error: msg, error_type: 'not_found' })
  })

  registerMindSporeRoutes(app, opts)
  registerTgiRoutes(app, opts.registry)
  registerOpenAiRoutes(app, opts.registry)
  if (opts.console !== false) registerConsoleRoutes(app, opts.registry)

  const healthy = () => opts.registry.all().length > 0 && opts.registry.all().every((s) => s.ready)
  // Ready means every servable serves: one that failed to load keeps the server not ready.
  const ready = () => registryReady(opts.registry)
  app.get('/health', async (_req, reply) => (healthy() ? reply.code(200).send({}) : reply.code(503).send({ error: 'unhealthy', error_type: 'healthcheck' })))
  app.get('/v2/health/live', async () => ({ live: true }))
  app.get('/v2/health/ready', async (_req, reply) => reply.code(ready() ? 200 : 503).send({ ready: ready() }))
  // OIP: server metadata, model metadata and readiness, infer (protocol/oip/rest.ts).
  registerOipRoutes(app, opts.registry)
  // One runtime snapshot feeds both: protocol never walks replica objects.
  app.get('/stats', async () => serverSnapshot(opts.registry))
  // What each servable offers (methods, tensors, versions, replicas): `ms-serve list` and the client read it.
  app.get('/servables', async () => describeServables(opts.registry))
  app.get('/servables/:name', async (req, reply) => {
    const { name } = req.params as { name: string }
    const all = describeServables(opts.registry)
    const s = all.servables.find((x) => x.name === name)
    if (s) return s
    const failed = all.unavailable.find((x) => x.name === name)
    if (failed) return reply.code(503).send({ error: `servable ${name} is unavailable, it failed to load: ${failed.error}`, error_type: 'servable_unavailable' })
    return reply.code(404).send({ error: `no servable ${name} (loaded: ${all.servables.map((x) => x.name).join(', ') || 'none'}); GET /servables lists them`, error_type: 'not_found' })
  })
  app.get('/metrics', async (_req, reply) => {
    const metrics = opts.registry.metrics
    return reply.type(metrics.contentType).send(await renderPrometheus(metrics, await serverSnapshot(opts.registry)))
  })

  /**
   * Shutdown without resets: stop accepting, answer what is in flight (each answer closes its
   * connection), close connections that stay idle for IDLE_GRACE_MS, then close the app. Node's
   * own close() would drop idle keep-alive sockets at once, racing a client that is just sending.
   */
  const closeGracefully = async (): Promise<void> => {
    closing = true
    // Answers already being made close their connection too (unless their headers are out).
    for (const st of conns.values()) if (st.res && !st.res.headersSent) st.res.shouldKeepAlive = false
    // net.Server's close stops accepting and leaves open connections alone (http.Server's would not).
    if (app.server.listening) NetServer.prototype.close.call(app.server)
    const deadline = performance.now() + DRAIN_TIMEOUT_MS
    while (conns.size > 0 && performance.now() < deadline) {
      const now = performance.now()
      for (const [sock, st] of conns) if (st.active === 0 && now - st.idleSince >= IDLE_GRACE_MS) sock.end()
      await new Promise((r) => setTimeout(r, 50))
    }
    await app.close()
  }
  return Object.assign(app, { closeGracefully }) as RestServer
}
