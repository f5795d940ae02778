/**
 * The server's logger: pino, JSON lines on stdout by default (`--log-format pretty` for people at a
 * terminal), `--log-level` fatal..trace or silent. Every event the server reports (start, servable
 * ready, reload, replica exit and restart) is a structured line with an `event` field; both
 * listeners write their access lines on it (accessWriter; fastify's own logger stays off). The
 * Authorization header is redacted wherever a request would be logged whole.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino'
import pretty from 'pino-pretty'

export type { Logger }

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LevelWithSilent[]
export type LogLevel = typeof LOG_LEVELS[number]
export const LOG_FORMATS = ['json', 'pretty'] as const
export type LogFormat = typeof LOG_FORMATS[number]

export interface LogOptions {
  level?: LogLevel
  format?: LogFormat
  /** Where lines go (default stdout); tests pass a stream. */
  destination?: NodeJS.WritableStream
}

const REDACT = ['req.headers.authorization', 'headers.authorization', 'authorization']

/** A logger as the options say. `pretty` formats on this thread (pino-pretty, synchronous). */
export function createLogger(o: LogOptions = {}, bindings: Record<string, unknown> = {}): Logger {
  const base = { level: o.level ?? 'info', redact: { paths: REDACT, censor: '[redacted]' }, base: { pid: process.pid, ...bindings }, timestamp: pino.stdTimeFunctions.isoTime }
  if (o.format === 'pretty') {
    return pino(base, pretty({ sync: true, colorize: false, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', ...(o.destination ? { destination: o.destination } : {}) }))
  }
  if (o.destination) return pino(base, o.destination)
  // Lines are written as they come (event lines are rare and wanted at once); access lines, one per
  // request, reach it already gathered into 8 KiB chunks (lineBufferOf below).
  return pino(base, pino.destination({ dest: 1, sync: false }))
}

/** Longest an access line waits in the buffer before it is written. */
export const FLUSH_MS = 250

/** A logger that drops everything (library use and tests that do not look at logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}

/** Replicas log as the server does: the server puts its level and format in the environment they inherit. */
export const LOG_ENV = { level: 'MS_SERVE_LOG_LEVEL', format: 'MS_SERVE_LOG_FORMAT' } as const

/** Makes replicas started from now on log with `o` (they read LOG_ENV; see replicaLogger). */
export function exportLogOptions(o: LogOptions): void {
  if (o.level) process.env[LOG_ENV.level] = o.level
  if (o.format) process.env[LOG_ENV.format] = o.format
}

let replicaLog: Logger | undefined

/** The logger of replica-side code (one per process or worker), as the server's options say. */
export function replicaLogger(): Logger {
  if (replicaLog) return replicaLog
  const level = process.env[LOG_ENV.level]
  const format = process.env[LOG_ENV.format]
  replicaLog = createLogger({
    level: (LOG_LEVELS as readonly string[]).includes(level ?? '') ? level as LogLevel : 'info',
    format: format === 'pretty' ? 'pretty' : 'json',
  }, process.env.MS_SERVE_REPLICA ? { replica: process.env.MS_SERVE_REPLICA } : {})
  return replicaLog
}

/** What an operator-facing event carries beside its text: its name, severity and facts. */
export interface EventFields {
  event: string
  severity?: 'info' | 'warn' | 'error'
  [key: string]: unknown
}

/**
 * How runtime code reports events (servable ready, reload, replica exit and restart): a readable
 * line and its fields. The server turns them into structured log lines (eventLog); a test may keep
 * only the lines.
 */
export type EventLog = (line: string, fields?: EventFields) => void

/** An EventLog writing to `logger`: one line per event at its severity (default info), the fields beside the message. */
export function eventLog(logger: Logger): EventLog {
  const pending = lineBufferOf(streamOf(logger))
  return (line, fields) => {
    const { severity = 'info', ...rest } = fields ?? { event: 'message' }
    pending.flush() // access lines gathered so far go first: the log stays in time order
    logger[severity](rest, line.replace(/^ms-serve: /, ''))
  }
}

/** One access line's fields: flat strings and numbers (undefined ones are left out). */
export type AccessRecord = Record<string, string | number | boolean | undefined>

/**
 * A writer of access lines, one per request, on `logger`'s stream in pino's own JSON line format
 * (level 30, ISO time, pid and bindings, the fields, msg): the line `logger.info(fields, msg)`
 * writes, built directly for flat fields instead of through pino's generic serializer (~11 µs a
 * line on the bench machine; BENCHMARKS.md §7). With `pretty`, pino-pretty reads the JSON line as
 * it reads pino's. Null when info lines are off.
 */
export function accessWriter(logger: Logger, msg: string): ((r: AccessRecord) => void) | null {
  if (!logger.isLevelEnabled('info')) return null
  const pending = lineBufferOf(streamOf(logger))
  // The logger's bindings as pino renders them (`,"pid":1,"replica":"..."`).
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? ''
  const tail = `,"msg":${JSON.stringify(msg)}}\n`
  return (r) => {
    let line = `{"level":30,"time":"${isoNow()}"${bindings}`
    for (const k in r) {
      const v = r[k]
      if (v === undefined) continue
      line += typeof v === 'string' ? `,"${k}":${PLAIN.test(v) ? `"${v}"` : JSON.stringify(v)}` : `,"${k}":${v}`
    }
    pending.add(line + tail)
  }
}

/** Hands the access lines gathered for `logger`'s stream over to it now (tests; eventLog does it itself). */
export function flushAccessLines(logger: Logger): void {
  lineBufferOf(streamOf(logger)).flush()
}

/** Strings JSON writes as they are (no quote, backslash, control or non-ASCII character). */
const PLAIN = /^[^"\\\u0000-\u001f\u007f-\uffff]*$/

let isoMs = 0
let isoText = ''
/** `new Date().toISOString()`, made once per millisecond (lines of the same ms share it). */
function isoNow(): string {
  const now = Date.now()
  if (now !== isoMs) { isoMs = now; isoText = new Date(now).toISOString() }
  return isoText
}

type LineStream = { write(s: string): unknown; flushSync?(): void }
const streamOf = (logger: Logger): LineStream => (logger as unknown as Record<symbol, LineStream>)[pino.symbols.streamSym]

/**
 * Access lines of one stream, gathered here and handed to it ACCESS_CHUNK characters at a time, at
 * least every FLUSH_MS, before any event line, and at exit: one write per line cost a syscall and
 * an event-loop callback each (20-30 µs of listener CPU per request, BENCHMARKS.md §7), and a write
 * into pino's destination costs ~2.5 µs even when it only buffers, three times the line (§8h).
 */
interface LineBuffer { add(line: string): void; flush(): void }
const lineBuffers = new WeakMap<LineStream, LineBuffer>()
const ACCESS_CHUNK = 8192

function lineBufferOf(stream: LineStream): LineBuffer {
  let b = lineBuffers.get(stream)
  if (b) return b
  let text = ''
  const flush = () => {
    if (!text) return
    const t = text
    text = ''
    try { stream.write(t) } catch { /* closing */ }
  }
  b = { add(line) { text += line; if (text.length >= ACCESS_CHUNK) flush() }, flush }
  const timer = setInterval(flush, FLUSH_MS)
  timer.unref()
  // pino's own exit flush may already have run: hand the rest over and write it out synchronously.
  process.once('exit', () => { flush(); try { stream.flushSync?.() } catch { /* closed */ } })
  lineBuffers.set(stream, b)
  return b
}
