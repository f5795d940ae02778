/** A client of ms-serve's own gRPC service (msserve.v1.MsServe, proto/ms_serve.proto) for tests. */
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { ROOT } from './server.ts'

export interface GenerateClient {
  /** Every event of one Generate stream; rejects with the gRPC error. */
  generate(req: object): Promise<any[]>
  serverInfo(): Promise<any>
  close(): void
}

/** `md`: metadata sent on every call (authorization, x-request-id). */
export function generateClient(address: string, credentials = grpc.credentials.createInsecure(), md: Record<string, string> = {}): GenerateClient {
  const pkg = protoLoader.loadSync(join(ROOT, 'proto', 'ms_serve.proto'), { keepCase: true, longs: Number, defaults: true })
  const client = new (grpc.loadPackageDefinition(pkg).msserve as any).v1.MsServe(address, credentials)
  return {
    generate: (req) => new Promise((resolve, reject) => {
      const out: any[] = []
      const meta = new grpc.Metadata()
      for (const [k, v] of Object.entries(md)) meta.set(k, v)
      const call = client.Generate(req, meta)
      call.on('data', (e: any) => out.push(e))
      call.on('error', reject)
      call.on('end', () => resolve(out))
    }),
    serverInfo: () => new Promise((resolve, reject) => {
      const meta = new grpc.Metadata()
      for (const [k, v] of Object.entries(md)) meta.set(k, v)
      client.ServerInfo({}, meta, (e: unknown, r: unknown) => (e ? reject(e) : resolve(r)))
    }),
    close: () => client.close(),
  }
}
