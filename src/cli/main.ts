/** The `ms-serve` command line: flags -> serve()/initServable(), errors -> messages and exit codes. */
import { Command, Option } from 'commander'
import { readFileSync } from 'node:fs'
import { parse as parseYaml } from 'yaml'
import { isServeError, ServeError } from '../errors.ts'
import { ISOLATIONS, parseDeviceIds, parseIsolation, type DeviceType, type Isolation } from '../runtime/devices.ts'
import { serve, type HostPort } from '../server.ts'
import { initServable, listTemplates } from './init.ts'
import { registerBenchCommand } from './bench.ts'

process.setSourceMapsEnabled(true)

/** Parses `HOST:PORT` (port 0 = any free port). */
export function parseHostPort(flag: string, text: string): HostPort {
  const m = /^(.*):(\d+)$/.exec(text.trim())
  if (!m || !m[1]) throw new ServeError('INVALID_REQUEST', `${flag} expects HOST:PORT, e.g. ${flag} 127.0.0.1:${flag === '--grpc' ? 5500 : 1500} (got "${text}")`)
  const port = Number(m[2])
  if (port > 65535) throw new ServeError('INVALID_REQUEST', `${flag}: port ${port} is out of range 0..65535`)
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port }
}

interface ServerFile {
  grpc?: string | null
  rest?: string | null
  devices?: number[] | string
  device_type?: DeviceType
  isolation?: string
  max_msg_mb?: number
  servables?: Record<string, { version?: number; versions?: number[] | 'all'; isolation?: string }>
}

function readServerFile(path: string): ServerFile {
  try {
    const doc = parseYaml(readFileSync(path, 'utf8')) as ServerFile | null
    return doc ?? {}
  } catch (e) {
    throw new ServeError('CONFIG_INVALID', `cannot read server config ${path}: ${(e as Error).message}`)
  }
}

function fail(e: unknown): never {
  if (isServeError(e)) {
    process.stderr.write(`ms-serve: ${e.message}\n`)
    process.exit(e.code === 'CONFIG_INVALID' || e.code === 'INVALID_REQUEST' ? 2 : 1)
  }
  process.stderr.write(`ms-serve: unexpected error: ${(e as Error).stack ?? e}\n`)
  process.exit(1)
}

const program = new Command()
program.name('ms-serve').description('Serve ONNX models and LLMs over MindSpore-compatible gRPC + REST').showHelpAfterError()

program
  .command('start')
  .description('serve every servable in DIR: one replica per device id behind one gRPC and one REST listener')
  .argument('<dir>', 'servable directory: DIR/<name>/servable_config.ts + DIR/<name>/<version>/<model files>')
  .option('--devices <ids>', 'comma list of device ids; one replica per id per servable', '0')
  .addOption(new Option('--device-type <type>', 'execution provider for the device ids').choices(['cpu', 'cuda']).default('cpu'))
  .addOption(new Option('--isolation <where>', 'where replicas run: process (a child process per replica: crash-isolated), thread (a worker thread), inline (the listeners\' thread: fastest for models that run in microseconds; LLMs then use a thread)').choices([...ISOLATIONS]).default('process'))
  .option('--grpc <host:port>', 'gRPC listen address (port 0 = any free port)', '127.0.0.1:5500')
  .option('--rest <host:port>', 'REST listen address (port 0 = any free port)', '127.0.0.1:1500')
  .option('--no-grpc-server', 'do not start the gRPC listener')
  .option('--no-rest-server', 'do not start the REST listener')
  .option('--max-msg-mb <n>', 'largest request body or gRPC message in MiB (1..512)', '100')
  .option('--rest-always-200', 'answer REST errors with HTTP 200 like MindSpore Serving (default: 4xx/5xx)')
  .option('--no-watch', 'do not watch DIR for changes (default: changed servables are hot-reloaded)')
  .option('--default-llm <name>', 'LLM servable for routes that name no model (TGI /generate, OpenAI without model)')
  .option('--config <file>', 'server config YAML: grpc, rest, devices, device_type, isolation, max_msg_mb, servables.<name>.version(s)')
  .action(async (dir: string, o: Record<string, string | boolean | undefined>, cmd: Command) => {
    try {
      const file = o.config ? readServerFile(String(o.config)) : {}
      const src = (k: string) => cmd.getOptionValueSource(k) === 'cli'
      const devicesText = src('devices') || file.devices === undefined ? String(o.devices) : Array.isArray(file.devices) ? file.devices.join(',') : String(file.devices)
      const maxMsgMb = Number(src('maxMsgMb') || file.max_msg_mb === undefined ? o.maxMsgMb : file.max_msg_mb)
      if (!Number.isInteger(maxMsgMb) || maxMsgMb < 1 || maxMsgMb > 512) throw new ServeError('INVALID_REQUEST', `--max-msg-mb must be an integer in 1..512 (got ${o.maxMsgMb})`)
      const grpcText = src('grpc') || file.grpc === undefined ? String(o.grpc) : file.grpc
      const restText = src('rest') || file.rest === undefined ? String(o.rest) : file.rest
      const versions: Record<string, number[] | 'all'> = {}
      const isolationOf: Record<string, Isolation> = {}
      for (const [name, s] of Object.entries(file.servables ?? {})) {
        if (s.versions !== undefined) versions[name] = s.versions
        else if (s.version !== undefined) versions[name] = [s.version]
        if (s.isolation !== undefined) isolationOf[name] = parseIsolation(String(s.isolation), `servables.${name}.isolation`)
      }
      const server = await serve({
        dir,
        devices: parseDeviceIds(devicesText),
        deviceType: (src('deviceType') || !file.device_type ? o.deviceType : file.device_type) as DeviceType,
        isolation: parseIsolation(String(src('isolation') || file.isolation === undefined ? o.isolation : file.isolation)),
        grpc: o.grpcServer === false || grpcText === null ? null : parseHostPort('--grpc', grpcText),
        rest: o.restServer === false || restText === null ? null : parseHostPort('--rest', restText),
        maxMsgMb,
        restAlways200: Boolean(o.restAlways200),
        watch: o.watch !== false,
        ...(o.defaultLlm ? { defaultLlm: String(o.defaultLlm) } : {}),
        versions,
        isolationOf,
      })
      let closing = false
      const shutdown = (sig: string) => {
        if (closing) process.exit(130)
        closing = true
        process.stdout.write(`ms-serve: ${sig} received, draining in-flight requests (send again to exit now)\n`)
        server.close().then(() => process.exit(0), () => process.exit(1))
      }
      process.on('SIGINT', () => shutdown('SIGINT'))
      process.on('SIGTERM', () => shutdown('SIGTERM'))
    } catch (e) {
      fail(e)
    }
  })

program
  .command('init')
  .description('scaffold a servable from a template (model files are generated, nothing is downloaded)')
  .argument('[template]', 'template name (see --list)')
  .argument('[name]', 'servable name (default: the template name)')
  .option('--dir <dir>', 'servable directory', 'servables')
  .option('--force', 'overwrite files that differ from the template')
  .option('--list', 'list the templates')
  .action((template: string | undefined, name: string | undefined, o: { dir: string; force?: boolean; list?: boolean }) => {
    try {
      if (o.list || !template) {
        for (const t of listTemplates()) process.stdout.write(`${t.name.padEnd(8)} ${t.description}\n`)
        if (!template && !o.list) process.stdout.write('\nusage: npx ms-serve init <template> [name] [--dir servables]\n')
        return
      }
      const r = initServable(template, { name, dir: o.dir, force: o.force, onProgress: (m) => process.stdout.write(`  ${m}\n`) })
      process.stdout.write(r.written.length ? `created ${r.dir} (${r.written.join(', ')})\n` : `${r.dir} already matches template "${template}"; nothing to do\n`)
      process.stdout.write(`next: ${r.next}\n`)
      if (r.tryCommand) process.stdout.write(`then: ${r.tryCommand}\n`)
    } catch (e) {
      fail(e)
    }
  })

registerBenchCommand(program)
program.parseAsync(process.argv).catch(fail)
