/**
 * The agent's copy of the master's servable files (issue 13). An init message names every file
 * the replica reads with its sha256 (agent-files.ts); the agent keeps them under
 * `--cache-dir/<master host_port>/<the master's absolute path>`, so two masters never share a
 * file, two servables of one master never collide, and a servable's layout is kept (external data
 * beside its model, tokenizer files beside theirs). A cached file whose sha256 matches is used as
 * it is; others are fetched over the agent stream (file_request -> file_chunks), written to a temp
 * file, checked against the listed sha256 and renamed into place. The init's paths are then
 * rewritten to the cache copies, so the replica's load code runs unchanged.
 */
import { createHash, type Hash } from 'node:crypto'
import { mkdir, open, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join, resolve, sep } from 'node:path'
import { ServeError } from '../errors.ts'
import type { EventLog } from '../log.ts'
import type { ValidServable } from '../config/validate.ts'
import { fileSha256Async, isPlainAbsolute, type FileChunk } from './agent-files.ts'

/** `$XDG_CACHE_HOME/ms-serve/agent`, else `~/.cache/ms-serve/agent`. */
export function defaultCacheDir(): string {
  const xdg = process.env.XDG_CACHE_HOME
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.cache'), 'ms-serve', 'agent')
}

/** The cache folder of one master: its address with the characters a file name cannot hold replaced. */
export function masterCacheDir(cacheDir: string, master: string): string {
  return join(resolve(cacheDir), master.replace(/[^A-Za-z0-9._-]/g, '_'))
}

/** Where the master's `path` is cached under `root`; throws for a path that would leave it. */
export function cachedPath(root: string, path: string): string {
  if (!isPlainAbsolute(path)) throw new ServeError('INVALID_REQUEST', `the master listed ${JSON.stringify(path)}, which is not an absolute normalized path; the agent fetches only such paths`)
  const local = join(root, path)
  if (!local.startsWith(root + sep)) throw new ServeError('INVALID_REQUEST', `the master listed ${path}, which would leave the cache ${root}`)
  return local
}

/**
 * Beside each cached file, its sha256 with the size and modification time it was computed at: a
 * restarted agent trusts it while both match (hashing a multi-GB model again would take a minute),
 * and hashes the file again when either changed.
 */
const digestFile = (path: string) => `${path}.ms-serve-sha256`

async function writeDigest(path: string, sha256: string): Promise<void> {
  const st = await stat(path)
  const fh = await open(digestFile(path), 'w')
  try { await fh.writeFile(JSON.stringify({ sha256, size: st.size, mtimeMs: st.mtimeMs })) } finally { await fh.close() }
}

/** sha256 of a cached file (from its digest file while size and mtime match, else hashed), or null when it is not there. */
export async function cachedSha256(path: string): Promise<string | null> {
  let st
  try { st = await stat(path) } catch { return null }
  try {
    const d = JSON.parse(await readFile(digestFile(path), 'utf8')) as { sha256?: unknown; size?: unknown; mtimeMs?: unknown }
    if (typeof d.sha256 === 'string' && d.size === st.size && d.mtimeMs === st.mtimeMs) return d.sha256
  } catch { /* none yet, or unreadable: hash the file */ }
  const sha = await fileSha256Async(path)
  await writeDigest(path, sha).catch(() => undefined)
  return sha
}

/** The servable of an init message with every file path moved under the cache root. */
export function servableInCache(s: ValidServable, root: string): ValidServable {
  const at = (p: string) => join(root, p)
  return {
    ...s,
    dir: at(s.dir),
    versionDir: at(s.versionDir),
    configFile: at(s.configFile),
    models: s.models.map((m) => ({ ...m, path: at(m.path), ...(m.stages ? { stages: m.stages.map((x) => ({ ...x, path: at(x.path) })) } : {}) })),
    llm: s.llm ? { ...s.llm, path: at(s.llm.path), ...(s.llm.stageFiles ? { stageFiles: s.llm.stageFiles.map((f) => ({ ...f, path: at(f.path) })) } : {}), ...(s.llm.tokenizerDir ? { tokenizerDir: at(s.llm.tokenizerDir) } : {}) } : null,
  }
}

interface Receiving {
  path: string
  tmp: string
  fh: FileHandle
  hash: Hash
  size: number
  received: number
  /** Bytes received but not yet written. */
  queued: number
  writes: Promise<void>
  started: number
  nextTenth: number
  /** The last chunk is in: the file completes once its writes are done. */
  last: boolean
  done: (e?: Error) => void
}

/** Bytes received but not on disk above which the agent stream is paused. */
const MAX_QUEUED = 64 * 1024 * 1024
/** Files at least this big log their progress every 10%. */
const PROGRESS_BYTES = 64 * 1024 * 1024

export interface FetcherOptions {
  /** This master's cache folder (masterCacheDir). */
  root: string
  /** Sends a FileRequest on the agent stream. */
  request: (request: number, path: string) => void
  /** Pause / resume reading the agent stream while the disk is behind. */
  pause: () => void
  resume: () => void
  log: EventLog
  agent: string
}

/** The fetches of one agent connection: made at init, fed by the stream's file_chunks. */
export class FileFetcher {
  private nextId = 1
  private readonly receiving = new Map<number, Receiving>()
  /** Fetches in progress by cache path: two replicas of one servable fetch a file once. */
  private readonly inflight = new Map<string, Promise<void>>()
  private queued = 0
  private paused = false
  private closed: string | null = null

  constructor(private readonly o: FetcherOptions) {}

  /**
   * Makes every file of `checksums` present in the cache with its sha256 (cached ones are kept,
   * others fetched); throws a ServeError naming the file that could not be had.
   */
  async ensure(checksums: Record<string, string>): Promise<void> {
    for (const [path, sha] of Object.entries(checksums)) {
      const local = cachedPath(this.o.root, path)
      let p = this.inflight.get(local)
      if (!p) {
        p = this.ensureOne(path, sha, local).finally(() => this.inflight.delete(local))
        this.inflight.set(local, p)
      }
      await p
    }
  }

  private async ensureOne(path: string, sha: string, local: string): Promise<void> {
    const have = await cachedSha256(local)
    if (have === sha) {
      this.o.log(`ms-serve agent ${this.o.agent}: ${path} cached (${local})`, { event: 'agent_file_cached', agent: this.o.agent, path, local })
      return
    }
    if (have !== null) this.o.log(`ms-serve agent ${this.o.agent}: the cached ${local} differs from the master's ${path} (sha256 ${have.slice(0, 12)}... here, ${sha.slice(0, 12)}... there); fetching it again`, { event: 'agent_file_stale', severity: 'warn', agent: this.o.agent, path, local })
    await this.fetch(path, sha, local)
  }

  private async fetch(path: string, sha: string, local: string): Promise<void> {
    if (this.closed) throw new ServeError('REPLICA_CRASHED', `cannot fetch ${path}: ${this.closed}`)
    await mkdir(dirname(local), { recursive: true })
    const tmp = `${local}.part-${process.pid}-${this.nextId}`
    const fh = await open(tmp, 'w')
    const id = this.nextId++
    const started = performance.now()
    const finished = new Promise<void>((resolveDone, rejectDone) => {
      this.receiving.set(id, { path, tmp, fh, hash: createHash('sha256'), size: 0, received: 0, queued: 0, writes: Promise.resolve(), started, nextTenth: 1, last: false, done: (e) => (e ? rejectDone(e) : resolveDone()) })
    })
    this.o.request(id, path)
    try {
      await finished
    } catch (e) {
      await this.receiving.get(id)?.writes.catch(() => undefined)
      this.receiving.delete(id)
      await fh.close().catch(() => undefined)
      await rm(tmp, { force: true })
      throw e
    }
    const r = this.receiving.get(id)!
    this.receiving.delete(id)
    await fh.close()
    const got = r.hash.digest('hex')
    if (got !== sha) {
      await rm(tmp, { force: true })
      throw new ServeError('CONFIG_INVALID', `${path} was fetched from the master but its sha256 is ${got.slice(0, 12)}..., not the ${sha.slice(0, 12)}... the master listed (did the file change on the master while it was sent? the replica restarts and fetches it again)`)
    }
    await rename(tmp, local)
    await writeDigest(local, sha).catch(() => undefined)
    const ms = Math.round(performance.now() - started)
    this.o.log(`ms-serve agent ${this.o.agent}: fetched ${path} (${r.received} bytes, ${ms} ms) into ${local}`, { event: 'agent_file_fetched', agent: this.o.agent, path, local, bytes: r.received, ms })
  }

  /** A file_chunk from the master. */
  chunk(c: FileChunk): void {
    const r = this.receiving.get(Number(c.request))
    if (!r || r.last) return
    const fail = (why: string) => { r.last = true; r.done(new ServeError('CONFIG_INVALID', why)) }
    if (c.error) return fail(`cannot fetch ${r.path} from the master: ${c.error}`)
    const offset = Number(c.offset)
    if (offset !== r.received) return fail(`cannot fetch ${r.path}: a chunk at offset ${offset} came when ${r.received} bytes were in (the stream lost order)`)
    const data = c.data ?? Buffer.alloc(0)
    r.size = Number(c.size)
    r.hash.update(data)
    r.received += data.length
    r.queued += data.length
    this.queued += data.length
    if (this.queued > MAX_QUEUED && !this.paused) { this.paused = true; this.o.pause() }
    r.writes = r.writes.then(async () => {
      if (data.length) await r.fh.write(data, 0, data.length, offset)
    }).finally(() => {
      r.queued -= data.length
      this.queued -= data.length
      if (this.paused && this.queued < MAX_QUEUED / 2) { this.paused = false; this.o.resume() }
    })
    // A failed write is reported with the last chunk; until then it must not count as unhandled.
    r.writes.catch(() => undefined)
    if (r.size >= PROGRESS_BYTES && r.received < r.size && r.received >= (r.size * r.nextTenth) / 10) {
      const pct = Math.floor((r.received * 10) / r.size) * 10
      r.nextTenth = pct / 10 + 1
      this.o.log(`ms-serve agent ${this.o.agent}: fetching ${r.path}: ${pct}% (${r.received} of ${r.size} bytes, ${Math.round(performance.now() - r.started)} ms)`, { event: 'agent_file_progress', agent: this.o.agent, path: r.path, bytes: r.received, size: r.size, percent: pct })
    }
    if (c.last) {
      r.last = true
      r.writes.then(() => r.done(), (e: Error) => r.done(new ServeError('INTERNAL', `cannot write ${r.tmp}: ${e.message}`)))
    }
  }

  /** The stream ended: every fetch in progress fails (the replicas on it end too). */
  lost(why: string): void {
    this.closed = why
    for (const r of this.receiving.values()) {
      // A file whose last chunk is in completes (its writes are under way).
      if (!r.last) r.done(new ServeError('REPLICA_CRASHED', `cannot fetch ${r.path}: ${why}`))
    }
    if (this.paused) { this.paused = false; this.o.resume() }
  }
}
