/** MindSpore Serving REST: `POST /model/{name}[/version/{n}]:{method}` with `{"instances": ...}`. */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ERROR_CODES, ServeError, toServeError, type ErrorCode } from '../../errors.ts'
import { predictForProtocol } from '../predict.ts'
import { parseMsUrl } from './ms-url.ts'
import { parseInstances, parseJsonBody, renderError, renderReply } from './ms-json.ts'
import type { RestOptions } from './server.ts'
import { handleMsGenerate, LLM_METHODS } from './ms-generate.ts'

export function registerMindSporeRoutes(app: FastifyInstance, opts: RestOptions): void {
  const predict = predictForProtocol(opts.registry)
  const status = (code: string) => (opts.always200 ? 200 : ERROR_CODES[code as ErrorCode]?.http ?? 500)
  const sendError = (reply: FastifyReply, e: { code: string; message: string }) => reply.code(status(e.code)).type('application/json').send(renderError(e.message))

  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    let call
    try {
      const target = parseMsUrl(req.method, req.url)
      const text = typeof req.body === 'string' ? req.body : ''
      if (text.length === 0) throw new ServeError('INVALID_REQUEST', 'http message invalid')
      // Only an LLM method name costs a registry lookup here (predict looks the servable up itself).
      if ((LLM_METHODS as readonly string[]).includes(target.method) && opts.registry.get(target.name, target.version)?.servable.llm) {
        return handleMsGenerate(opts.registry.llm(target.name)!, target.method, req, reply, sendError)
      }
      call = { name: target.name, method: target.method, version: target.version, instances: parseInstances(parseJsonBody(text)) }
    } catch (e) {
      return sendError(reply, toServeError(e, 'INVALID_REQUEST'))
    }
    const result = await predict(call)
    if ('error' in result) return sendError(reply, result.error)
    const items = result.instances.map((r) => ('error' in r ? { error: r.error.message } : { outputs: r.outputs }))
    return reply.code(200).type('application/json').send(renderReply(items))
  }
  const methods: Array<'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH' | 'HEAD' | 'OPTIONS'> = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS']
  app.route({ method: methods, url: '/model/*', handler })
  // MindSpore's URL parser is substring-based: `/version/1/model/add:add_common` is a valid address too.
  app.route({ method: methods, url: '/version/*', handler })
}
