/** The `ms-serve` command line: flags -> serve()/initServable(), errors -> messages and exit codes. */
import { Command, CommanderError, Option } from 'commander'
import { isServeError, ServeError } from '../errors.ts'
import {
  HTTP_RANGES, parseHostPort, parseIntFlag, parseMaxMsgMb, readServerFile, timeoutOrderProblem, unknownServableWarnings,
  type NamedMs, type ServerFile,
} from '../config/server-file.ts'
import { scanServables } from '../config/scan.ts'
import { ISOLATION_SETTINGS, type DeviceType, type IsolationSetting } from '../runtime/devices.ts'
import { parseDeviceRefs, parseIsolation, type DeviceRef } from '../config/device-flags.ts'
import { serve, type HttpLimits } from '../server.ts'
import { DEFAULT_POLICY, MIN_WATCHDOG_MS, POLICY_RANGES, type IntRange, type ServingPolicy } from '../runtime/policy.ts'
import { DEFAULT_BODY_TIMEOUT_MS, DEFAULT_HEADERS_TIMEOUT_MS } from '../protocol/rest/server.ts'
import { initServable, listTemplates } from './init.ts'
import { registerBenchCommand } from './bench.ts'
import { registerClientCommands } from './client-commands.ts'
import { registerSplitCommand } from './split.ts'
import { registerAgentCommand } from './agent.ts'
import { VERSION } from '../version.ts'
import { CLIENT_AUTH, collectApiKeys, loadTls, type ClientAuth } from '../config/security.ts'
import { createLogger, LOG_ENV, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../log.ts'

process.setSourceMapsEnabled(true)

function fail(e: unknown): never {
  if (isServeError(e)) {
    process.stderr.write(`ms-serve: ${e.message}\n`)
    process.exit(e.code === 'CONFIG_INVALID' || e.code === 'INVALID_REQUEST' ? 2 : 1)
  }
  process.stderr.write(`ms-serve: unexpected error: ${(e as Error).stack ?? e}\n`)
  process.exit(1)
}

/**
 * Commander's own exits: help and --version are 0; every parse error (unknown option or command, missing
 * argument, bad choice, no command) is a usage error, exit 2 as the README says (commander would exit 1).
 */
function exitOnCommanderError(e: CommanderError): never {
  process.exit(e.exitCode === 0 ? 0 : 2)
}

const program = new Command()
program.name('ms-serve').description('Serve ONNX models and LLMs over MindSpore-compatible gRPC + REST')
  .version(VERSION, '-V, --version', 'print the version of ms-serve')

program
  .command('start')
  .description('serve every servable in DIR: one replica per device id behind one gRPC and one REST listener')
  .argument('<dir>', 'servable directory: DIR/<name>/servable_config.ts + DIR/<name>/<version>/<model files>')
  .option('--devices <ids>', 'comma list of device ids; one replica per id per servable (a staged servable: one pipeline per `stages` ids). NAME:ID is device ID of the agent named NAME (with --agents-listen), e.g. 0,hostb:0 puts stage 2 on hostb', '0')
  .addOption(new Option('--device-type <type>', 'execution provider for the device ids').choices(['cpu', 'cuda']).default('cpu'))
  .addOption(new Option('--isolation <where>', 'where replicas run: auto (chosen per servable at load by timing its models: inline up to 1 ms a run at the largest batch, thread up to 10 ms, else process; LLMs process), process (a child process per replica: crash-isolated), thread (a worker thread), inline (the listeners\' thread: fastest for models that run in microseconds; LLMs then use a thread)').choices([...ISOLATION_SETTINGS]).default('auto'))
  .option('--grpc <host:port>', 'gRPC listen address (port 0 = any free port)', '127.0.0.1:5500')
  .option('--rest <host:port>', 'REST listen address (port 0 = any free port)', '127.0.0.1:1500')
  .option('--agents-listen <host:port>', 'accept agents (ms-serve agent --master HOST:PORT) here; each agent device becomes a replica of every servable')
  .option('--no-local-replicas', 'run no replicas on this host\'s devices, only on agents\' (with --agents-listen)')
  .option('--no-console', 'do not serve the web console at /console on the REST listener')
  .option('--no-grpc-server', 'do not start the gRPC listener')
  .option('--no-rest-server', 'do not start the REST listener')
  .option('--max-msg-mb <n>', 'largest request body or gRPC message in MiB (1..512)', '100')
  .option('--rest-always-200', 'answer REST errors with HTTP 200 like MindSpore Serving (default: 4xx/5xx)')
  .option('--no-watch', 'do not watch DIR for changes (default: changed servables are hot-reloaded)')
  .option('--default-llm <name>', 'LLM servable for routes that name no model (TGI /generate, OpenAI without model)')
  .option('--strict', 'exit when any servable fails to load (default: serve the others and report it unavailable)')
  .option('--request-timeout-ms <n>', 'longest a request may take, arrival to answer (504); 0 = no limit; a request may ask for less with x-request-timeout-ms or a gRPC deadline', String(DEFAULT_POLICY.timeoutMs))
  .option('--max-instances-per-request <n>', 'most instances in one predict request, checked while the body is read', String(DEFAULT_POLICY.maxInstancesPerRequest))
  .option('--watchdog-ms <n>', `a replica silent this long (stopped, or a stage that never returns) is killed and restarted; 0 = off, else >= ${MIN_WATCHDOG_MS}`, String(DEFAULT_POLICY.watchdogMs))
  .option('--max-connections <n>', 'most open REST connections; 0 = no limit', '0')
  .option('--headers-timeout-ms <n>', 'REST: a request whose headers take longer is answered 408 and closed', String(DEFAULT_HEADERS_TIMEOUT_MS))
  .option('--body-timeout-ms <n>', 'REST: a request whose body takes longer to arrive is answered 408 and closed', String(DEFAULT_BODY_TIMEOUT_MS))
  .addOption(new Option('--log-level <level>', 'log lines at this level and above (access lines are info; engine request lines debug)').choices([...LOG_LEVELS]).default('info').env(LOG_ENV.level))
  .addOption(new Option('--log-format <format>', 'json: one JSON object per line (for collectors); pretty: readable lines').choices([...LOG_FORMATS]).default('json').env(LOG_ENV.format))
  .option('--no-access-log', 'no access line per request (the other events are still logged)')
  .option('--tls-cert <file>', 'PEM certificate (chain): serve REST over HTTPS and gRPC over TLS (with --tls-key)')
  .option('--tls-key <file>', 'PEM private key of --tls-cert')
  .option('--tls-ca <file>', 'PEM CA certificate(s): clients must present a certificate it signed (mutual TLS; see --tls-client-auth)')
  .addOption(new Option('--tls-client-auth <where>', 'with --tls-ca: require client certificates on both listeners, or on gRPC only').choices([...CLIENT_AUTH]).default('both'))
  .option('--api-key <key>', 'require Authorization: Bearer <key> on every inference route of both listeners (repeat for several keys; also MS_SERVE_API_KEY, comma-separated)', (v: string, prev: string[] = []) => [...prev, v])
  .option('--api-key-file <file>', 'API keys, one per line (# comments allowed)')
  .option('--config <file>', 'server config YAML: grpc, rest, devices, device_type, isolation, max_msg_mb, strict, the limit flags in snake_case (request_timeout_ms, ...), tls.{cert,key,ca,client_auth}, api_key_file, log_level, log_format, access_log, servables.<name>.{version(s), isolation, request_timeout_ms, max_instances_per_request, watchdog_ms}; flags win')
  .action(async (dir: string, o: Record<string, string | boolean | undefined>, cmd: Command) => {
    try {
      // The YAML is checked whole (keys and values) in config/server-file.ts; flags given on the command line win.
      const file: ServerFile = o.config ? readServerFile(String(o.config)) : {}
      const src = (k: string) => cmd.getOptionValueSource(k) === 'cli'
      const deviceRefs: DeviceRef[] = src('devices') || file.devices === undefined ? parseDeviceRefs(String(o.devices)) : file.devices.map((d) => (typeof d === 'number' ? { id: d } : d))
      const devices = deviceRefs.filter((r) => !r.agent).map((r) => r.id)
      const placed = deviceRefs.find((r) => r.agent)
      if (placed && !o.agentsListen) throw new ServeError('INVALID_REQUEST', `--devices ${placed.agent}:${placed.id} places work on agent ${placed.agent}, which needs --agents-listen HOST:PORT (where \`ms-serve agent --name ${placed.agent}\` connects)`)
      const maxMsgMb = src('maxMsgMb') || file.max_msg_mb === undefined ? parseMaxMsgMb(String(o.maxMsgMb)) : file.max_msg_mb
      const grpc = src('grpc') || file.grpc === undefined ? parseHostPort('--grpc', String(o.grpc)) : file.grpc
      if (o.localReplicas === false && !o.agentsListen) throw new ServeError('INVALID_REQUEST', '--no-local-replicas needs --agents-listen HOST:PORT: without local replicas only agents can serve')
      const rest = src('rest') || file.rest === undefined ? parseHostPort('--rest', String(o.rest)) : file.rest
      const versions: Record<string, number[] | 'all'> = {}
      const isolationOf: Record<string, IsolationSetting> = {}
      const policyOf: Record<string, Partial<ServingPolicy>> = {}
      for (const [name, s] of Object.entries(file.servables ?? {})) {
        if (s.versions !== undefined) versions[name] = s.versions
        if (s.isolation !== undefined) isolationOf[name] = s.isolation
        if (s.policy !== undefined) policyOf[name] = s.policy
      }
      // A limit: the flag if given on the command line, else the YAML's value, else the flag's default.
      const limit = (key: string, flag: string, fromFile: number | undefined, range: IntRange): number =>
        (src(key) || fromFile === undefined ? parseIntFlag(flag, String(o[key]), range) : fromFile)
      const policy: ServingPolicy = {
        timeoutMs: limit('requestTimeoutMs', '--request-timeout-ms', file.request_timeout_ms, POLICY_RANGES.timeoutMs),
        maxInstancesPerRequest: limit(
          'maxInstancesPerRequest', '--max-instances-per-request', file.max_instances_per_request, POLICY_RANGES.maxInstancesPerRequest),
        watchdogMs: limit('watchdogMs', '--watchdog-ms', file.watchdog_ms, POLICY_RANGES.watchdogMs),
      }
      const http: Required<HttpLimits> = {
        maxConnections: limit('maxConnections', '--max-connections', file.max_connections, HTTP_RANGES.maxConnections),
        headersTimeoutMs: limit('headersTimeoutMs', '--headers-timeout-ms', file.headers_timeout_ms, HTTP_RANGES.headersTimeoutMs),
        bodyTimeoutMs: limit('bodyTimeoutMs', '--body-timeout-ms', file.body_timeout_ms, HTTP_RANGES.bodyTimeoutMs),
      }
      // The two REST timeouts must agree; the message names where each value came from.
      const origin = (key: 'headersTimeoutMs' | 'bodyTimeoutMs', flag: string, yamlKey: string, fromFile: number | undefined): NamedMs => {
        if (src(key) || fromFile === undefined) return { ms: http[key], name: flag, isDefault: !src(key) }
        return { ms: http[key], name: `${o.config}: ${yamlKey}` }
      }
      const order = timeoutOrderProblem(
        origin('headersTimeoutMs', '--headers-timeout-ms', 'headers_timeout_ms', file.headers_timeout_ms),
        origin('bodyTimeoutMs', '--body-timeout-ms', 'body_timeout_ms', file.body_timeout_ms),
      )
      if (order) throw new ServeError('INVALID_REQUEST', order)
      // Before the listeners start, so the warnings come ahead of the success lines.
      if (o.config) {
        const found = scanServables(dir).map((f) => f.name)
        for (const w of unknownServableWarnings(file, String(o.config), found)) process.stderr.write(`ms-serve: warning: ${w}\n`)
      }
      // Security and logging: flags win over the YAML; files are read (and checked) before anything starts.
      const pick = (key: string, fromFile: string | undefined) => (src(key) || fromFile === undefined ? (o[key] === undefined ? undefined : String(o[key])) : fromFile)
      const fileFrom = (key: string, flag: string, yamlKey: string, fromFile: string | undefined) => {
        if (src(key)) return { path: String(o[key]), from: flag }
        return fromFile === undefined ? undefined : { path: fromFile, from: `${o.config}: ${yamlKey}` }
      }
      const tlsFile = file.tls ?? {}
      const cert = fileFrom('tlsCert', '--tls-cert', 'tls.cert', tlsFile.cert)
      const key = fileFrom('tlsKey', '--tls-key', 'tls.key', tlsFile.key)
      const ca = fileFrom('tlsCa', '--tls-ca', 'tls.ca', tlsFile.ca)
      const tls = loadTls({
        ...(cert ? { cert } : {}), ...(key ? { key } : {}), ...(ca ? { ca } : {}),
        clientAuth: (pick('tlsClientAuth', tlsFile.client_auth) ?? 'both') as ClientAuth,
      })
      const keyFile = fileFrom('apiKeyFile', '--api-key-file', 'api_key_file', file.api_key_file)
      const apiKeys = collectApiKeys((o.apiKey as unknown as string[] | undefined) ?? [], keyFile ? [keyFile] : [], process.env.MS_SERVE_API_KEY)
      const logOptions = { level: pick('logLevel', file.log_level) as LogLevel, format: pick('logFormat', file.log_format) as LogFormat }
      const logger = createLogger(logOptions)
      const server = await serve({
        logger,
        logOptions,
        accessLog: src('accessLog') || file.access_log === undefined ? o.accessLog !== false : file.access_log,
        tls,
        apiKeys,
        strict: Boolean(o.strict) || file.strict === true,
        policy,
        policyOf,
        http,
        dir,
        devices,
        ...(placed ? { deviceRefs } : {}),
        deviceType: (src('deviceType') || !file.device_type ? o.deviceType : file.device_type) as DeviceType,
        isolation: src('isolation') || file.isolation === undefined ? parseIsolation(String(o.isolation)) : file.isolation,
        grpc: o.grpcServer === false ? null : grpc,
        rest: o.restServer === false ? null : rest,
        maxMsgMb,
        restAlways200: Boolean(o.restAlways200),
        watch: o.watch !== false,
        ...(o.defaultLlm ? { defaultLlm: String(o.defaultLlm) } : {}),
        versions,
        isolationOf,
        agentsListen: o.agentsListen ? parseHostPort('--agents-listen', String(o.agentsListen)) : null,
        localReplicas: o.localReplicas !== false,
        console: o.console !== false,
      })
      let closing = false
      const shutdown = (sig: string) => {
        // A second signal: end the replicas too (not left to notice the dead parent), then exit.
        if (closing) { server.kill(); process.exit(130) }
        closing = true
        logger.info({ event: 'shutdown', signal: sig }, `${sig} received, draining in-flight requests (send again to exit now)`)
        const exit = (code: number) => { logger.flush(); process.exit(code) }
        server.close().then(() => exit(0), () => exit(1))
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
registerClientCommands(program)
registerSplitCommand(program, fail)
registerAgentCommand(program, fail)
// Set on every command (settings are copied to subcommands only when they are created): each usage
// error names the command whose --help lists what it accepts.
for (const cmd of [program, ...program.commands]) {
  const name = cmd === program ? 'ms-serve' : `ms-serve ${cmd.name()}`
  cmd.exitOverride(exitOnCommanderError)
    .configureOutput({ outputError: (text, write) => write(`ms-serve: ${text.replace(/^error: /, '')}`) })
    .showHelpAfterError(`run '${name} --help' for its usage`)
}
program.parseAsync(process.argv).catch(fail)
