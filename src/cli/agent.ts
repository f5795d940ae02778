/**
 * `ms-serve agent --master HOST:PORT --devices 0,1`: serves replicas (or the pipeline stages the
 * master's `--devices NAME:ID` places here) for a master started with `--agents-listen` (runtime/agent.ts). TLS and the API key are the client side of the master's:
 * `--tls-ca` (and `--tls-cert`/`--tls-key` for mutual TLS), `--api-key` or MS_SERVE_API_KEY.
 * The servable's files are fetched from the master into `--cache-dir` unless `--no-fetch-models`.
 */
import { readFileSync } from 'node:fs'
import * as grpc from '@grpc/grpc-js'
import type { Command } from 'commander'
import { ServeError } from '../errors.ts'
import { parseDeviceIds } from '../config/device-flags.ts'
import { parseHostPort } from '../config/server-file.ts'
import { createLogger, eventLog } from '../log.ts'

function readPem(flag: string, path: string | undefined): Buffer | null {
  if (!path) return null
  try { return readFileSync(path) } catch (e) { throw new ServeError('INVALID_REQUEST', `${flag} ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`) }
}

export function registerAgentCommand(program: Command, fail: (e: unknown) => never): void {
  program
    .command('agent')
    .description('serve replicas for a master started with --agents-listen: this host\'s devices become replicas of every servable, or run the pipeline stages the master places here (its --devices NAME:ID, NAME = this agent\'s --name)')
    .requiredOption('--master <host:port>', 'the master\'s --agents-listen address')
    .option('--devices <ids>', 'comma list of device ids to serve', '0')
    .option('--device-type <type>', 'cpu or cuda', 'cpu')
    .option('--name <name>', 'this agent\'s name (unique; a rejoining agent keeps its replicas under it)')
    .option('--api-key <key>', 'the master\'s API key (default: the first of MS_SERVE_API_KEY)')
    .option('--tls-ca <file>', 'CA certificate(s) the master\'s certificate is checked against (TLS)')
    .option('--tls-cert <file>', 'this agent\'s certificate (mutual TLS)')
    .option('--tls-key <file>', 'this agent\'s private key (mutual TLS)')
    .option('--cache-dir <dir>', 'where the servable files fetched from the master are kept (default: $XDG_CACHE_HOME/ms-serve/agent or ~/.cache/ms-serve/agent)')
    .option('--no-fetch-models', 'fetch nothing: read the files at the master\'s paths, which must hold the same files (same sha256)')
    .action(async (o: { master: string; devices: string; deviceType: string; name?: string; apiKey?: string; tlsCa?: string; tlsCert?: string; tlsKey?: string; cacheDir?: string; fetchModels: boolean }) => {
      try {
        const hp = parseHostPort('--master', o.master)
        const devices = parseDeviceIds(o.devices)
        if (o.deviceType !== 'cpu' && o.deviceType !== 'cuda') throw new ServeError('INVALID_REQUEST', `--device-type must be cpu or cuda (got "${o.deviceType}")`)
        const ca = readPem('--tls-ca', o.tlsCa)
        const cert = readPem('--tls-cert', o.tlsCert)
        const key = readPem('--tls-key', o.tlsKey)
        if ((cert === null) !== (key === null)) throw new ServeError('INVALID_REQUEST', '--tls-cert and --tls-key go together (mutual TLS)')
        const credentials = ca || cert ? grpc.credentials.createSsl(ca, key, cert) : grpc.credentials.createInsecure()
        const logger = createLogger({})
        const log = eventLog(logger)
        const { runAgent } = await import('../runtime/agent.ts')
        const agent = runAgent({
          master: `${hp.host}:${hp.port}`, devices, deviceType: o.deviceType, credentials, log, fetchModels: o.fetchModels,
          ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
          ...(o.name ? { name: o.name } : {}),
          ...((o.apiKey ?? process.env.MS_SERVE_API_KEY?.split(',')[0]?.trim()) ? { apiKey: o.apiKey ?? process.env.MS_SERVE_API_KEY!.split(',')[0]!.trim() } : {}),
        })
        const stop = () => { void agent.close().then(() => { logger.flush(); process.exit(process.exitCode ?? 0) }) }
        process.on('SIGINT', stop)
        process.on('SIGTERM', stop)
      } catch (e) {
        fail(e)
      }
    })
}
