/**
 * MindSpore REST predict through the client's REST transport (ms-serve/client): one keep-alive
 * connection per concurrent request, prebuilt bodies sent with `postRaw`, and a response check
 * that only parses JSON when the reply is an error.
 */
import { Client } from '../client/client.ts'
import { errorMessageOf, failed, networkErrorKind, OK, type SendOutcome, type Target } from './target.ts'

export interface RestPredictOptions {
  origin: string
  servable: string
  method: string
  version: number
  /** Request bodies, `{"instances":[...]}`, sent in turn. */
  bodies: Buffer[]
  itemsPerRequest: number
  connections: number
  timeoutMs: number
}

/** `/model/{name}[/version/{n}]:{method}`. */
export function msPredictPath(servable: string, method: string, version: number): string {
  return `/model/${encodeURIComponent(servable)}${version > 0 ? `/version/${version}` : ''}:${encodeURIComponent(method)}`
}

export function restPredictTarget(o: RestPredictOptions): Target {
  const client = new Client({ url: o.origin, connections: o.connections, timeoutMs: o.timeoutMs })
  const rest = client.restTransport!
  const path = msPredictPath(o.servable, o.method, o.version)
  const headers = { 'content-type': 'application/json' }
  let next = 0
  return {
    description: `REST POST ${o.origin}${path}`,
    itemsPerRequest: o.itemsPerRequest,
    async send(): Promise<SendOutcome> {
      const body = o.bodies[next++ % o.bodies.length]!
      try {
        const res = await rest.postRaw(path, body, headers)
        const text = res.text
        if (res.status !== 200) return failed(`http_${res.status}`, errorMessageOf(text))
        // MindSpore answers whole-request and per-instance errors with `error_msg`, possibly in a 200.
        if (text.includes('"error_msg"')) return failed('ms_error', errorMessageOf(text))
        return OK
      } catch (e) {
        return failed(networkErrorKind(e), (e as Error).message)
      }
    },
    async close(): Promise<void> {
      await client.close()
    },
  }
}
