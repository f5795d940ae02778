/** MindSpore Serving REST: `POST /model/{name}[/version/{n}]:{method}` with `{"instances": ...}`. */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ServeError, toServeError } from '../../errors.ts'
import { parseMsUrl, type MsTarget } from './ms-url.ts'
import { renderReply } from './ms-json.ts'
import { msRestError } from '../error-render.ts'
import { parseMsBody } from '../body-parse.ts'

import type { RestOptions } from './server.ts'
import { handleMsGenerate, LLM_METHODS } from './ms-generate.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** The MindSpore target parsed from the URL by the overload check (mindspore.ts). */
    msTarget: MsTarget | null
  }
}

export function registerMindSporeRoutes(app: FastifyInstance, opts: RestOptions): void {
  const sendError = (reply: FastifyReply, e: { code: string; message: string }) => {
    const { status, body } = msRestError(e, opts.always200)
    return reply.code(status).type('application/json').send(body)
  }

  const bodies = opts.bodies
  const limits = opts.limits ?? { fallback: Infinity, byName: {} }

  /**
   * Overload answers before the body is read or parsed: a flood of requests to a full queue
   * costs the listener only their headers, so the 429s come back fast.
   */
  // The URL parsed for the overload check, kept on the request for the handler (parsed once per
  // request; a decorated field keeps the request objects' shape, unlike a WeakMap of short-lived keys).
  app.decorateRequest('msTarget', null)
  // Callback style: an async hook costs a promise per request on the hottest path.
  const rejectWhenFull = (req: FastifyRequest, reply: FastifyReply, done: () => void) => {
    if (req.method !== 'POST') return done()
    let target
    try { target = parseMsUrl(req.method, req.url) } catch { return done() }
    req.msTarget = target
    const live = opts.registry.get(target.name, target.version)
    if (!live || !live.queueFull(target.method)) return done()
    void sendError(reply, live.queueFullError(target.method))
  }

  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    let call
    try {
      const target = req.msTarget ?? parseMsUrl(req.method, req.url)
      const body = Buffer.isBuffer(req.body) ? req.body : null
      if (body === null || body.length === 0) throw new ServeError('INVALID_REQUEST', 'http message invalid')
      // Only an LLM method name costs a registry lookup here (predict looks the servable up itself).
      // An LLM servable's body is no MindSpore instance list: a version it lacks is answered here.
      if ((LLM_METHODS as readonly string[]).includes(target.method) && opts.registry.llm(target.name)) {
        const llm = opts.registry.llm(target.name, target.version)
        if (!llm) throw opts.registry.notAvailable(target.name, target.method, target.version)
        req.access = { method: target.method }
        return handleMsGenerate(llm, target.method, req, reply, sendError)
      }
      const task = { kind: 'ms-json' as const, body, limits, servable: target.name }
      const { instances } = bodies ? await bodies.parse(task) : parseMsBody(task)
      const timeoutMs = requestTimeoutHeader(req.headers['x-request-timeout-ms'])
      req.access = { servable: target.name, version: target.version, method: target.method, instances: instances.length }
      call = { name: target.name, method: target.method, version: target.version, instances, protocol: 'rest' as const, ...(timeoutMs === undefined ? {} : { timeoutMs }), onCancel: (cancel: () => void) => onClientGone(reply, cancel) }
    } catch (e) {
      return sendError(reply, toServeError(e, 'INVALID_REQUEST'))
    }
    const outcome = await opts.registry.predict(call)
    if ('error' in outcome) return sendError(reply, outcome.error)
    return reply.code(200).type('application/json').send(renderReply(outcome))
  }
  const methods: Array<'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH' | 'HEAD' | 'OPTIONS'> = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS']
  app.route({ method: methods, url: '/model/*', handler, onRequest: rejectWhenFull })
  // MindSpore's URL parser is substring-based: `/version/1/model/add:add_common` is a valid address too.
  app.route({ method: methods, url: '/version/*', handler, onRequest: rejectWhenFull })
}

/** `x-request-timeout-ms`: a positive integer, else a 400 naming the header. */
export function requestTimeoutHeader(v: string | string[] | undefined): number | undefined {
  if (v === undefined) return undefined
  const n = Number(Array.isArray(v) ? v[0] : v)
  if (!Number.isInteger(n) || n <= 0) throw new ServeError('INVALID_REQUEST', `header x-request-timeout-ms must be a positive integer of milliseconds (got "${v}")`)
  return n
}

/** Runs `cancel` if the connection closes before the answer is written. */
function onClientGone(reply: FastifyReply, cancel: () => void): void {
  reply.raw.once('close', () => { if (!reply.raw.writableFinished) cancel() })
}
