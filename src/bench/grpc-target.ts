/**
 * MindSpore gRPC predict through the client's gRPC transport (one HTTP/2 channel, as MindSpore's
 * client uses). The request message is built once per distinct input and sent with predictWire;
 * the reply is only decoded when it carries error messages.
 */
import { status as GrpcStatus } from '@grpc/grpc-js'
import { Client } from '../client/client.ts'
import { isClientError } from '../client/errors.ts'
import { predictResults } from '../client/grpc-transport.ts'
import { encodeRequest, type WirePredictRequest } from '../protocol/grpc/ms-codec.ts'
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
  const client = new Client({ grpc: o.address })
  const transport = client.grpcTransport!
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
        const reply = await transport.predictWire(req, opts)
        if (reply.error_msg && reply.error_msg.length > 0) {
          const bad = predictResults(reply).find((i) => i.error !== undefined)
          if (bad) return failed('ms_error', bad.error!)
        }
        return OK
      } catch (e) {
        if (!isClientError(e)) return failed('client_error', (e as Error).message)
        // A whole-request error in the reply (gRPC status OK) or a gRPC status of the call.
        if (e.grpcCode === GrpcStatus.OK) return failed('ms_error', e.message)
        return failed(`grpc_${e.grpcCode === undefined ? 'ERROR' : STATUS_NAMES.get(e.grpcCode) ?? String(e.grpcCode)}`, e.message)
      }
    },
    async close(): Promise<void> {
      await client.close()
    },
  }
}
