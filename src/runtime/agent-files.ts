/**
 * The files a replica reads, for agents (issue 13): the master lists them with their sha256 in each
 * init message it sends to an agent (agent-hub.ts), and serves exactly those over the agent stream
 * in chunks (`FileRequest` / `FileChunk` of proto/ms_serve_agent.proto); the agent fetches them
 * into its cache (agent-cache.ts). The list is everything the load code opens: servable_config.ts,
 * every model and stage file, the external-data files those models reference (read from the ONNX
 * file's `external_data` locations without decoding the weights), and for an LLM the tokenizer
 * files the tokenizer loader looks for (llm/tokenizer.ts), and the data files a servable_config.ts
 * may open itself (labels, vocabularies: the other files beside it and in the served version's
 * folder, not ONNX files it does not declare). Files are read in chunks, never whole.
 */
import { createHash } from 'node:crypto'
import { closeSync, createReadStream, existsSync, openSync, readdirSync, readSync, statSync, type Dirent } from 'node:fs'
import { open } from 'node:fs/promises'
import { dirname, isAbsolute, join, normalize, relative, resolve, sep } from 'node:path'
import type { ValidServable } from '../config/validate.ts'

/** Bytes per FileChunk: well under gRPC's message limits (the agent link allows 512 MiB). */
export const CHUNK_BYTES = 1024 * 1024

/** What llm/tokenizer.ts (loadTokenizer, readChatTemplate) reads from a tokenizer folder, if present. */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'config.json', 'generation_config.json', 'chat_template.jinja', 'chat_template.json']

/**
 * The files a replica of `s` reads: its servable_config.ts (the agent compiles it itself, against
 * its own install), every model (stage) file with its external data, and an LLM's model, external
 * data and tokenizer files. Only files that exist are listed (a missing one is the load's error).
 */
export function servableFiles(s: ValidServable): string[] {
  const models = [...s.models.flatMap((m) => (m.stages ? m.stages.map((x) => x.path) : [m.path])), ...(s.llm ? (s.llm.stageFiles ? s.llm.stageFiles.map((f) => f.path) : [s.llm.path]) : [])]
  const out = [s.configFile]
  for (const m of models) out.push(m, ...externalDataFiles(m))
  if (s.llm) {
    // loadTokenizer's folders: tokenizerDir, else the model's folder then its parent.
    const dirs = s.llm.tokenizerDir ? [s.llm.tokenizerDir] : [dirname(s.llm.path), dirname(dirname(s.llm.path))]
    for (const d of dirs) {
      for (const f of TOKENIZER_FILES) out.push(join(d, f))
      const extra = join(d, 'additional_chat_templates')
      try { for (const f of readdirSync(extra).sort()) if (f.endsWith('.jinja')) out.push(join(extra, f)) } catch { /* none */ }
    }
  }
  out.push(...dataFiles(s, new Set(out.map((p) => resolve(p)))))
  return [...new Set(out.map((p) => resolve(p)))].filter((p) => { try { return statSync(p).isFile() } catch { return false } })
}

/**
 * Files a servable_config.ts may import or read itself (`./lib/x.ts`, `readFileSync(new URL('./labels.json',
 * import.meta.url))`): the non-hidden files under its folder, other version folders and
 * node_modules left out, and under the served version's folder. ONNX files it does not declare (a
 * whole model kept beside its stage files, an older export) and their external data are left out:
 * only declared models travel. At most DATA_FILES_MAX files, DATA_DEPTH_MAX folders deep.
 */
function dataFiles(s: ValidServable, listed: ReadonlySet<string>): string[] {
  const files: string[] = []
  const walk = (d: string, depth: number, top: boolean): void => {
    let entries: Dirent[] = []
    try { entries = readdirSync(d, { withFileTypes: true }) } catch { return }
    for (const e of entries.sort((x, y) => (x.name < y.name ? -1 : 1))) {
      if (e.name.startsWith('.') || e.name === 'node_modules' || files.length >= DATA_FILES_MAX) continue
      const p = resolve(d, e.name)
      if (e.isDirectory()) {
        // Version folders are not data: only the served one is walked (below).
        if (depth < DATA_DEPTH_MAX && !(top && /^\d+$/.test(e.name))) walk(p, depth + 1, false)
      } else if (e.isFile()) files.push(p)
    }
  }
  if (s.dir) walk(s.dir, 0, true)
  if (s.versionDir) walk(s.versionDir, 1, false)
  const skip = new Set<string>()
  for (const f of files) if (f.endsWith('.onnx') && !listed.has(f)) { skip.add(f); for (const x of externalDataFiles(f)) skip.add(resolve(x)) }
  return [...new Set(files)].filter((f) => !skip.has(f) && !listed.has(f))
}

const DATA_FILES_MAX = 1000
const DATA_DEPTH_MAX = 4

const digests = new Map<string, { mtimeMs: number; size: number; sha256: string }>()

/** sha256 of a file, streamed (a multi-GB model must not block the event loop), cached by path, size and modification time. */
export async function fileSha256Async(path: string): Promise<string> {
  const st = statSync(path)
  const hit = digests.get(path)
  if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit.sha256
  const h = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: CHUNK_BYTES })) h.update(chunk as Buffer)
  const sha256 = h.digest('hex')
  digests.set(path, { mtimeMs: st.mtimeMs, size: st.size, sha256 })
  return sha256
}

/** sha256 by path of the files of servableFiles(s). */
export async function servableChecksums(s: ValidServable): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const f of servableFiles(s)) { try { out[f] = await fileSha256Async(f) } catch { /* the replica's load reports a missing file */ } }
  return out
}

const externals = new Map<string, { mtimeMs: number; size: number; files: string[] }>()

/**
 * The external-data files an ONNX model references (`external_data` entries with key "location",
 * relative to the model's folder), as absolute paths inside that folder. The protobuf is walked in
 * place: headers are read, tensor bytes skipped, so a large model is not loaded. A file that is
 * not a readable model gives [] (the replica's load reports it).
 */
export function externalDataFiles(modelPath: string): string[] {
  let st
  try { st = statSync(modelPath) } catch { return [] }
  const hit = externals.get(modelPath)
  if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit.files
  const locations = new Set<string>()
  let fd = -1
  try {
    fd = openSync(modelPath, 'r')
    walkProto(new Reader(fd, st.size), 0, st.size, 'model', locations, 0)
  } catch { /* not a model we can read: the load says why */ } finally {
    if (fd >= 0) closeSync(fd)
  }
  const folder = dirname(resolve(modelPath))
  const files = [...locations].filter((l) => l && !isAbsolute(l)).map((l) => join(folder, normalize(l)))
    .filter((p) => !relative(folder, p).startsWith('..') && existsSync(p))
  externals.set(modelPath, { mtimeMs: st.mtimeMs, size: st.size, files })
  return files
}

/** Reads a file through a 64 KiB window (protobuf headers are small and close together). */
class Reader {
  private buf = Buffer.allocUnsafe(64 * 1024)
  private start = 0
  private end = 0
  constructor(private readonly fd: number, readonly size: number) {}
  private fill(pos: number): void {
    const n = readSync(this.fd, this.buf, 0, this.buf.length, pos)
    this.start = pos
    this.end = pos + n
  }
  byte(pos: number): number {
    if (pos < this.start || pos >= this.end) this.fill(pos)
    if (pos >= this.end) throw new Error('truncated')
    return this.buf[pos - this.start]!
  }
  text(pos: number, len: number): string {
    if (len > 4096) return ''
    if (pos < this.start || pos + len > this.end) this.fill(pos)
    return this.buf.toString('utf8', pos - this.start, pos - this.start + len)
  }
  varint(pos: number): [value: number, next: number] {
    let v = 0
    let mul = 1
    for (let i = 0; i < 10; i++) {
      const b = this.byte(pos++)
      v += (b & 0x7f) * mul
      if (b < 0x80) return [v, pos]
      mul *= 128
    }
    throw new Error('bad varint')
  }
}

type Kind = 'model' | 'graph' | 'node' | 'attribute' | 'function' | 'tensor' | 'sparse' | 'entry'
/** onnx.proto field numbers that lead to TensorProto.external_data, by message. */
const DESCEND: Record<Kind, Record<number, Kind>> = {
  model: { 7: 'graph', 25: 'function' },
  graph: { 1: 'node', 5: 'tensor', 15: 'sparse' },
  function: { 7: 'node' },
  node: { 5: 'attribute' },
  attribute: { 5: 'tensor', 6: 'graph', 10: 'tensor', 11: 'graph', 22: 'sparse', 23: 'sparse' },
  sparse: { 1: 'tensor', 2: 'tensor' },
  tensor: { 13: 'entry' },
  entry: {},
}

function walkProto(r: Reader, pos: number, end: number, kind: Kind, out: Set<string>, depth: number): void {
  if (depth > 64) return
  let key = ''
  let value = ''
  while (pos < end) {
    const [tag, p] = r.varint(pos)
    pos = p
    const field = Math.floor(tag / 8)
    switch (tag & 7) {
      case 0: pos = r.varint(pos)[1]; break
      case 1: pos += 8; break
      case 5: pos += 4; break
      case 2: {
        const [len, q] = r.varint(pos)
        if (q + len > end) throw new Error('truncated')
        const sub = DESCEND[kind][field]
        if (kind === 'entry' && field === 1) key = r.text(q, len)
        else if (kind === 'entry' && field === 2) value = r.text(q, len)
        else if (sub) walkProto(r, q, q + len, sub, out, depth + 1)
        pos = q + len
        break
      }
      default: throw new Error('not a protobuf')
    }
  }
  if (kind === 'entry' && key === 'location') out.add(value)
}

/** A FileChunk as the proto has it (master -> agent). */
export interface FileChunk { request: number; path: string; offset: number; data: Buffer; last: boolean; size: number; sha256: string; error: string }

/** True when `path` is an absolute, normalized path (what the master lists; anything else is refused). */
export function isPlainAbsolute(path: string): boolean {
  return isAbsolute(path) && normalize(path) === path && !path.split(sep).includes('..')
}

/**
 * Serves `path` to an agent as FileChunks through `write` (which waits while the stream is full),
 * if it is in `allowed` (the files of the assignments sent to that agent); otherwise, or on a read
 * error, one chunk with `error` naming the path. Reads CHUNK_BYTES at a time.
 */
export async function serveFile(allowed: ReadonlySet<string>, request: number, path: string, write: (c: FileChunk) => Promise<boolean>): Promise<void> {
  const base = { request, path, offset: 0, data: Buffer.alloc(0), last: true, size: 0, sha256: '' }
  if (!isPlainAbsolute(path) || !allowed.has(path)) {
    await write({ ...base, error: `${path} is not a file of any servable assigned to this agent; the master serves only those` })
    return
  }
  let fh
  try {
    fh = await open(path, 'r')
    const size = (await fh.stat()).size
    const h = createHash('sha256')
    let offset = 0
    for (;;) {
      const data = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, size - offset))
      const { bytesRead } = data.length ? await fh.read(data, 0, data.length, offset) : { bytesRead: 0 }
      const chunk = data.subarray(0, bytesRead)
      h.update(chunk)
      const last = offset + bytesRead >= size || bytesRead === 0
      if (!(await write({ request, path, offset, data: chunk, last, size, sha256: last ? h.digest('hex') : '', error: '' }))) return
      offset += bytesRead
      if (last) return
    }
  } catch (e) {
    await write({ ...base, error: `the master cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` })
  } finally {
    await fh?.close()
  }
}
