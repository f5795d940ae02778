/**
 * `ms-serve predict`, `ms-serve generate`, `ms-serve list`: the client library (src/client) at the
 * terminal. Exit codes: 0 done, 1 a server or transport error (or a failed predict instance),
 * 2 a usage error, 130 cancelled with Ctrl-C.
 */
import { readFileSync } from 'node:fs'
import { Command, Option } from 'commander'
import { isServeError, ServeError } from '../errors.ts'
import { parseDurationMs, parseGrpcAddress, parseUrl } from '../bench/parse.ts'
import { Client } from '../client/client.ts'
import { isClientError, type ClientError } from '../client/errors.ts'
import type { ClientOptions, GenerateParams, InstanceResult } from '../client/types.ts'
import type { ServablesDescription, TensorDescription } from '../runtime/describe.ts'
import type { DType, Value } from '../tensor.ts'
import { inputValue, instancesValue, parseDtypes, renderResultsJson, renderResultsTable, splitAssignments, VALUE_DTYPES } from './client-values.ts'

type Flags = Record<string, unknown>

/** Where `ms-serve start` listens by default (REST). */
export const DEFAULT_URL = 'http://127.0.0.1:1500'

const usage = (msg: string): never => { throw new ServeError('INVALID_REQUEST', msg) }
const collect = (v: string, prev: string[] = []) => [...prev, v]

/** The server to talk to and how the user chose it (named in connection errors). */
interface Target { options: ClientOptions; address: string; flag: '--url' | '--grpc'; source: string }

/**
 * --url or --grpc (not both); else MS_SERVE_URL, else MS_SERVE_GRPC, else the default REST address.
 * The API key: --api-key, else the first key of MS_SERVE_API_KEY (the server's own variable).
 */
function targetOf(f: Flags): Target {
  const env = process.env
  if (f['url'] !== undefined && f['grpc'] !== undefined) usage('give one of --url (REST) or --grpc (gRPC), not both')
  let t: Pick<Target, 'address' | 'flag' | 'source'> & { grpc: boolean }
  if (typeof f['grpc'] === 'string') t = { address: parseGrpcAddress(f['grpc']), flag: '--grpc', source: '--grpc', grpc: true }
  else if (typeof f['url'] === 'string') t = { address: parseUrl(f['url']), flag: '--url', source: '--url', grpc: false }
  else if (env.MS_SERVE_URL) t = { address: parseUrl(env.MS_SERVE_URL), flag: '--url', source: 'MS_SERVE_URL', grpc: false }
  else if (env.MS_SERVE_GRPC) t = { address: parseGrpcAddress(env.MS_SERVE_GRPC), flag: '--grpc', source: 'MS_SERVE_GRPC', grpc: true }
  else t = { address: DEFAULT_URL, flag: '--url', source: 'the default', grpc: false }
  const apiKey = typeof f['apiKey'] === 'string' ? f['apiKey'] : env.MS_SERVE_API_KEY?.split(',').map((k) => k.trim()).find(Boolean)
  const read = (flag: string, key: string) => {
    const p = f[key]
    if (typeof p !== 'string') return undefined
    try { return readFileSync(p) } catch (e) { return usage(`${flag} ${p}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`) }
  }
  const ca = read('--tls-ca', 'tlsCa')
  const cert = read('--tls-cert', 'tlsCert')
  const key = read('--tls-key', 'tlsKey')
  if ((cert === undefined) !== (key === undefined)) usage('--tls-cert and --tls-key go together (a client certificate and its key)')
  const tls = ca || cert ? { ...(ca ? { ca } : {}), ...(cert ? { cert, key: key! } : {}) } : undefined
  if (tls && !t.grpc && !t.address.startsWith('https://')) usage(`--tls-* flags need an https:// --url (got ${t.address})`)
  const timeoutMs = typeof f['timeout'] === 'string' ? parseDurationMs('--timeout', f['timeout']) : undefined
  const options: ClientOptions = {
    ...(t.grpc ? { grpc: t.address } : { url: t.address }),
    ...(apiKey ? { apiKey } : {}),
    ...(tls ? { tls } : {}),
    ...(timeoutMs ? { timeoutMs } : {}),
  }
  return { options, address: t.address, flag: t.flag, source: t.source }
}

/** What to do next, by error code: the CLI's addition to the library's message. */
function nextStep(e: ClientError, t: Target): string {
  switch (e.code) {
    case 'UNREACHABLE':
      return `. Is the server running? Start it with \`npx ms-serve start ./servables\` or pass ${t.flag}${t.source.startsWith('MS_SERVE_') ? ` (this address came from ${t.source})` : ''}`
    case 'UNAUTHENTICATED':
      return '. Pass the server\'s key with --api-key KEY (or MS_SERVE_API_KEY)'
    case 'SERVABLE_NOT_FOUND':
      return '. `ms-serve list` shows what the server serves'
    case 'UNSUPPORTED':
      return t.flag === '--grpc' ? '. Try the REST address (--url)' : ''
    default:
      return ''
  }
}

function statusText(e: ClientError): string {
  if (e.httpStatus !== undefined) return ` (HTTP ${e.httpStatus})`
  if (e.msStatus !== undefined) return ` (MindSpore status ${e.msStatus})`
  if (e.grpcCode !== undefined && e.code !== 'UNREACHABLE') return ` (gRPC status ${e.grpcCode})`
  return ''
}

function fail(e: unknown, t?: Target): never {
  if (isClientError(e)) {
    if (e.code === 'CANCELLED' && e.httpStatus === undefined && e.grpcCode !== 0) {
      process.stderr.write('ms-serve: cancelled\n')
      process.exit(130)
    }
    // Refused by the client itself (a bad address or option): a usage error.
    const local = e.httpStatus === undefined && e.grpcCode === undefined && e.msStatus === undefined
    const message = e.message.replace(/\.$/, '')
    process.stderr.write(`ms-serve: ${message}${statusText(e)}${t ? nextStep(e, t) : ''}\n`)
    process.exit(local && (e.code === 'INVALID_REQUEST' || e.code === 'UNSUPPORTED') ? 2 : 1)
  }
  if (isServeError(e)) {
    process.stderr.write(`ms-serve: ${e.message}\n`)
    process.exit(e.code === 'INVALID_REQUEST' ? 2 : 1)
  }
  process.stderr.write(`ms-serve: unexpected error: ${(e as Error).stack ?? e}\n`)
  process.exit(1)
}

/** Options every client command takes. */
function addTargetOptions(cmd: Command): Command {
  return cmd
    .option('--url <url>', `REST address of the server (default ${DEFAULT_URL}; env MS_SERVE_URL)`)
    .option('--grpc <host:port>', 'talk gRPC to HOST:PORT instead (env MS_SERVE_GRPC)')
    .option('--api-key <key>', 'sent as Authorization: Bearer KEY (default: the first key of MS_SERVE_API_KEY)')
    .option('--tls-ca <file>', 'PEM CA that signed the server\'s certificate (https:// URL or gRPC over TLS)')
    .option('--tls-cert <file>', 'PEM client certificate for mutual TLS (with --tls-key)')
    .option('--tls-key <file>', 'PEM key of --tls-cert')
    .option('--timeout <time>', 'give up after this long, e.g. 30s or 500ms (default: no limit)')
}

/** The servables' description, or null when the server has none to give (an older server, MindSpore Serving). */
async function describeOrNull(client: Client): Promise<ServablesDescription | null> {
  try {
    return await client.servables()
  } catch (e) {
    if (isClientError(e) && (e.code === 'UNSUPPORTED' || e.code === 'SERVABLE_NOT_FOUND' || e.code === 'BAD_REPLY' || e.code === 'METHOD_NOT_ALLOWED')) return null
    throw e
  }
}

/** The method to call and its declared inputs (from the description when there is one). */
function pickMethod(d: ServablesDescription | null, servable: string, version: number, method: string | undefined): { method: string; inputs: TensorDescription[] } {
  const s = d?.servables.find((x) => x.name === servable)
  const v = s ? (version ? s.versions.find((x) => x.version === version) : s.versions[s.versions.length - 1]) : undefined
  if (method === undefined) {
    if (!d) return usage('--method is required (the server does not describe its servables)')
    if (!s) return usage(`no servable ${servable} on the server (it serves: ${d.servables.map((x) => x.name).join(', ') || 'none'}); \`ms-serve list\` shows them`)
    const names = (v?.methods ?? []).map((m) => m.name)
    if (names.length !== 1) return usage(`--method is required: ${servable} has the methods ${names.join(', ')}`)
    method = names[0]!
  }
  return { method, inputs: v?.methods.find((m) => m.name === method)?.inputs ?? [] }
}

async function predictAction(f: Flags): Promise<void> {
  const t = targetOf(f)
  const servable = f['servable'] as string
  const version = f['version'] === undefined ? 0 : Number(f['version'])
  if (!Number.isInteger(version) || version < 0) usage(`--version expects an integer >= 0 (got "${f['version']}")`)
  const inputs = (f['input'] as string[] | undefined) ?? []
  const dtypes = parseDtypes((f['dtype'] as string[] | undefined) ?? [])
  if (inputs.length && f['instances'] !== undefined) usage('give the inputs with --input NAME=VALUE or all instances with --instances @file.json, not both')
  if (!inputs.length && f['instances'] === undefined) usage('nothing to send: give --input NAME=VALUE for each input (or --instances @file.json)')
  const pairs = splitAssignments('--input', inputs, "x1='[[1.0,2.0],[3.0,4.0]]'")
  const client = new Client(t.options)
  try {
    const d = await describeOrNull(client)
    const { method, inputs: declared } = pickMethod(d, servable, version, f['method'] as string | undefined)
    const declaredOf = (name: string): DType | null | undefined => declared.find((x) => x.name === name)?.dtype
    let instances: Record<string, Value>[]
    if (pairs.length) {
      const one: Record<string, Value> = {}
      for (const [name, text] of pairs) one[name] = inputValue(name, text, dtypes.get(name), declaredOf(name))
      instances = [one]
    } else instances = instancesValue(f['instances'] as string, dtypes, declaredOf)
    const results: InstanceResult[] = await client.predict(servable, method, instances, { version })
    process.stdout.write(f['json'] ? renderResultsJson(results) : renderResultsTable(results))
    await client.close()
    process.exit(results.some((r) => r.error !== undefined) ? 1 : 0)
  } catch (e) {
    fail(e, t)
  }
}

function generateParams(f: Flags): GenerateParams {
  const num = (flag: string, key: string, int: boolean, min: number): number | undefined => {
    const v = f[key]
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isFinite(n) || n < min || (int && !Number.isInteger(n))) usage(`${flag} expects ${int ? 'an integer' : 'a number'} >= ${min} (got "${v}")`)
    return n
  }
  const p: GenerateParams = {}
  const set = <K extends keyof GenerateParams>(k: K, v: GenerateParams[K] | undefined) => { if (v !== undefined) p[k] = v }
  set('maxNewTokens', num('--max-new-tokens', 'maxNewTokens', true, 1))
  set('temperature', num('--temperature', 'temperature', false, 0))
  set('topK', num('--top-k', 'topK', true, 1))
  set('topP', num('--top-p', 'topP', false, 0))
  set('seed', num('--seed', 'seed', true, 0))
  set('repetitionPenalty', num('--repetition-penalty', 'repetitionPenalty', false, 0))
  if (Array.isArray(f['stop'])) p.stop = f['stop'] as string[]
  if (f['doSample']) p.doSample = true
  return p
}

async function generateAction(prompt: string, f: Flags): Promise<void> {
  const t = targetOf(f)
  const params = generateParams(f)
  const version = f['version'] === undefined ? undefined : Number(f['version'])
  if (version !== undefined && (!Number.isInteger(version) || version < 0)) usage(`--version expects an integer >= 0 (got "${f['version']}")`)
  const client = new Client(t.options)
  // Ctrl-C cancels the request on the server (the stream is closed), then exits 130.
  const ac = new AbortController()
  process.once('SIGINT', () => ac.abort())
  const stream = f['stream'] === true
  const json = f['json'] === true
  try {
    const events = client.generate(prompt, params, { signal: ac.signal, ...(f['servable'] ? { servable: f['servable'] as string } : {}), ...(version ? { version } : {}) })
    for await (const ev of events) {
      if (ev.type === 'token') {
        if (!stream) continue
        process.stdout.write(json ? `${JSON.stringify(ev)}\n` : ev.text)
        continue
      }
      if (json) process.stdout.write(`${JSON.stringify(stream ? ev : { generated_text: ev.generatedText, finish_reason: ev.finishReason, generated_tokens: ev.generatedTokens })}\n`)
      else process.stdout.write(stream ? '\n' : `${ev.generatedText}\n`)
      if (!json) process.stderr.write(`(${ev.generatedTokens} tokens, finish reason: ${ev.finishReason})\n`)
    }
    await client.close()
    process.exit(0)
  } catch (e) {
    if (stream && !json) process.stdout.write('\n')
    fail(e, t)
  }
}

const shapeText = (s: number[] | null) => (s === null ? '?' : `[${s.join(',')}]`)
const tensorText = (x: TensorDescription) => `${x.name}: ${x.dtype ?? '?'} ${shapeText(x.shape)}`

/** The description as indented text: servable, versions with replicas, methods with their tensors. */
export function renderServables(d: ServablesDescription): string {
  const lines: string[] = []
  if (d.servables.length === 0) lines.push('no servables loaded')
  for (const s of d.servables) {
    lines.push(`${s.name} (${s.kind}, ${s.ready ? 'ready' : 'not ready'})`)
    for (const v of s.versions) {
      const replicas = v.replicas.map((r) => `${r.device} ${r.isolation} ${r.state}${r.pid ? ` pid ${r.pid}` : ''}`).join('; ')
      lines.push(`  version ${v.version}: ${v.ready ? 'ready' : 'not ready'}; replicas: ${replicas || 'none'}`)
      for (const m of v.methods) {
        const batch = m.batched ? `  (batched, up to ${m.maxBatchSize ?? '?'} per run)` : ''
        lines.push(`    ${m.name}(${m.inputs.map(tensorText).join(', ')}) -> (${m.outputs.map(tensorText).join(', ')})${batch}`)
      }
    }
  }
  if (d.unavailable.length) {
    lines.push('unavailable (failed to load):')
    for (const u of d.unavailable) lines.push(`  ${u.name}: ${u.error}`)
  }
  return lines.join('\n') + '\n'
}

async function listAction(f: Flags): Promise<void> {
  const t = targetOf(f)
  const client = new Client(t.options)
  try {
    const d = await client.servables()
    process.stdout.write(f['json'] ? `${JSON.stringify(d, null, 2)}\n` : renderServables(d))
    await client.close()
    process.exit(0)
  } catch (e) {
    fail(e, t)
  }
}

const PREDICT_HELP = `
Values (--input NAME=VALUE, VALUE is JSON or @FILE holding JSON):
  a nested array of numbers  a tensor; its dtype: --dtype NAME=..., else the servable's declared
                             input dtype (ms-serve list shows it), else float32 when any number is
                             written as a float (1.0, 2.5), else int64. true/false make bool.
  a JSON string              a string ('"hello"': mind the shell's quotes)
  {"b64": "...", "type": "float16", "shape": [2]}   MindSpore's typed base64 tensor; without type: bytes
  --dtype NAME=string        VALUE (or the @FILE's text) is the string as it is, not JSON
  --dtype NAME=bytes         @FILE's bytes as they are (e.g. an image), or VALUE's UTF-8 bytes
Several instances: --instances @file.json with MindSpore's body {"instances": [{"x1": ...}, ...]}.
Output: one table per instance (large tensors abbreviated); --json prints
  {"instances":[{"outputs":{"y":{"dtype":"float32","shape":[2,2],"data":[[6,8],[10,12]]}}}]}
  with a failed instance as {"error": "..."}. Exit code 1 if any instance failed.
dtypes: ${VALUE_DTYPES.join(', ')}

Example:
  ms-serve predict --servable add --method add_common --input x1='[[1.0,2.0],[3.0,4.0]]' --input x2=@x2.json
`

/** Registers `predict`, `generate` and `list` on `program`. */
export function registerClientCommands(program: Command): void {
  addTargetOptions(program
    .command('predict')
    .description('call a servable method (MindSpore predict) and print its outputs')
    .requiredOption('--servable <name>', 'servable to call')
    .option('--method <name>', 'method to call (default: the servable\'s only method)')
    .option('--input <name=value>', 'one input of the instance: JSON literal or @file (repeat per input; see below)', collect)
    .option('--dtype <name=dtype>', 'dtype of an input\'s numbers, or string / bytes (repeatable)', collect)
    .option('--instances <json|@file>', 'several instances as MindSpore\'s {"instances":[...]} body, instead of --input')
    .option('--version <n>', 'servable version (default: the newest running)')
    .option('--json', 'print the outputs as JSON'))
    .addHelpText('after', PREDICT_HELP)
    .action((f: Flags) => predictAction(f))

  addTargetOptions(program
    .command('generate')
    .description('generate text with an LLM servable; --stream prints tokens as they arrive (Ctrl-C cancels)')
    .argument('<prompt>', 'the prompt text')
    .option('--servable <name>', 'LLM servable (default: the server\'s default LLM)')
    .option('--version <n>', 'servable version (default: the newest running)')
    .option('--max-new-tokens <n>', 'most tokens to generate')
    .option('--temperature <t>', 'sampling temperature (default: greedy)')
    .option('--top-k <k>', 'sample from the k most likely tokens')
    .option('--top-p <p>', 'sample from the smallest set of tokens with this probability mass')
    .option('--repetition-penalty <x>', 'penalise tokens already generated (1 = none)')
    .option('--seed <n>', 'random seed for sampling')
    .option('--do-sample', 'sample even without temperature/top-k/top-p')
    .option('--stop <text>', 'stop when this text is generated (repeatable)', collect)
    .option('--stream', 'print each token as it arrives')
    .addOption(new Option('--json', 'print JSON: the result ({generated_text, finish_reason, generated_tokens}); with --stream one event per line')))
    .action((prompt: string, f: Flags) => generateAction(prompt, f))

  addTargetOptions(program
    .command('list')
    .description('list the servables: versions, readiness, methods with their inputs and outputs, replicas')
    .option('--json', 'print the description as JSON (GET /servables)'))
    .action((f: Flags) => listAction(f))
}
