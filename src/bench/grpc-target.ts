/**
 * MindSpore gRPC predict through MsGrpcClient (one HTTP/2 channel, as MindSpore's client uses).
 * The request message is built once per distinct input; the reply is only decoded when it carries
 * error messages.
 */
import { status as GrpcStatus } from '@grpc/grpc-js'
import { MsGrpcClient } from '../client/grpc-client.ts'
import { decodeReply, encodeRequest, type WirePredictRequest } from '../protocol/grpc/ms-codec.ts'
import type { Value } from '../tensor.ts'
import { failed, OK, type SendOutcome, type Target } from './target.ts'

export interface GrpcPredictOptions {
  address: string
  servable: string
  method: string
  version: number
  /** One entry per distinct request: the instances it carries. */
  requests: Record<string, Value>[][]
  timeoutMs: number
}

const STATUS_NAMES = new Map<number, string>(Object.entries(GrpcStatus).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v as number, k]))

export function grpcPredictTarget(o: GrpcPredictOptions): Target {
  const client = new MsGrpcClient(o.address)
  const wires: WirePredictRequest[] = o.requests.map((r) => encodeRequest(o.servable, o.method, o.version, r))
  const itemsPerRequest = o.requests[0]?.length ?? 1
  const opts = { timeoutMs: o.timeoutMs }
  let next = 0
  return {
    description: `gRPC ${o.address} MSService.Predict ${o.servable}:${o.method}`,
    itemsPerRequest,
    async send(): Promise<SendOutcome> {
      const req = wires[next++ % wires.length]!
      try {
        const reply = await client.predictWire(req, opts)
        if (reply.error_msg && reply.error_msg.length > 0) {
          const r = decodeReply(reply)
          if ('error' in r) return failed('ms_error', r.error.message)
          const bad = r.instances.find((i) => 'error' in i)
          if (bad && 'error' in bad) return failed('ms_error', bad.error.message)
        }
        return OK
      } catch (e) {
        const code = (e as { code?: number }).code
        const name = typeof code === 'number' ? STATUS_NAMES.get(code) ?? String(code) : 'ERROR'
        return failed(`grpc_${name}`, (e as { details?: string }).details || (e as Error).message)
      }
    },
    async close(): Promise<void> {
      client.close()
    },
  }
}
