/**
 * ONNX external data, as `onnx.save_model(..., save_as_external_data=True)`, optimum (exports over
 * 2 GB) and torch's dynamo exporter write it: large initializers keep their name, dims and type in
 * `model.onnx` but their bytes move to one side file (`model.onnx_data`); the proto says where with
 * `data_location = EXTERNAL` and `external_data` entries `location` (relative to the model's
 * folder), `offset` and `length`. Initializers of subgraphs (If/Loop bodies) are moved too.
 */
import { open } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join, normalize, relative } from 'node:path'
import p from 'onnx-proto'
import type { onnx as O } from 'onnx-proto'

// onnx-proto is CommonJS (see onnx-builder.ts); imported directly so onnx-builder can import this.
const { onnx } = p

/** How `externalizeModel` splits a model. */
export interface ExternalDataOptions {
  /** File name of the data file, relative to the model's folder (default `model.onnx_data`). */
  location?: string
  /** Tensors with fewer raw bytes stay inline (default 1024, as onnx's `size_threshold`). */
  sizeThreshold?: number
  /** Each tensor starts at a multiple of this (default 4096, so onnxruntime can memory-map it). */
  align?: number
}

/** One tensor's bytes in the data file. */
export interface ExternalChunk { offset: number; bytes: Uint8Array }

/** A split model: the weight-less graph, the data file's chunks in order and its total length. */
export interface ExternalizedModel {
  model: Uint8Array
  location: string
  chunks: ExternalChunk[]
  dataLength: number
}

/** Every initializer of a graph and of its subgraphs, depth first. */
function* initializersOf(g: O.IGraphProto): Generator<O.ITensorProto> {
  yield* g.initializer ?? []
  for (const n of g.node ?? []) {
    for (const a of n.attribute ?? []) {
      if (a.g) yield* initializersOf(a.g)
      for (const sg of a.graphs ?? []) yield* initializersOf(sg)
    }
  }
}

/** Moves the raw data of every large initializer of `bytes` to an external data file (in memory). */
export function externalizeModel(bytes: Uint8Array, opts: ExternalDataOptions = {}): ExternalizedModel {
  const location = opts.location ?? 'model.onnx_data'
  const threshold = opts.sizeThreshold ?? 1024
  const align = opts.align ?? 4096
  const model = onnx.ModelProto.decode(bytes)
  if (!model.graph) throw new Error('model has no graph')
  const chunks: ExternalChunk[] = []
  let end = 0
  for (const t of initializersOf(model.graph)) {
    const raw = t.rawData
    if (!raw || raw.byteLength < threshold || t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) continue
    const offset = Math.ceil(end / align) * align
    chunks.push({ offset, bytes: raw })
    end = offset + raw.byteLength
    t.rawData = new Uint8Array(0)
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL
    t.externalData = [
      { key: 'location', value: location },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(raw.byteLength) },
    ]
  }
  return { model: onnx.ModelProto.encode(model).finish(), location, chunks, dataLength: end }
}

/**
 * Writes `bytes` as `modelPath` plus its data file next to it (`<model file name>_data` unless
 * `opts.location`), streaming the chunks; returns both paths and sizes.
 */
export async function writeExternalDataModel(modelPath: string, bytes: Uint8Array, opts: ExternalDataOptions = {}): Promise<{ modelPath: string; dataPath: string; modelBytes: number; dataBytes: number }> {
  const split = externalizeModel(bytes, { ...opts, location: opts.location ?? `${basename(modelPath)}_data` })
  const dataPath = join(dirname(modelPath), split.location)
  const fh = await open(dataPath, 'w')
  try {
    for (const c of split.chunks) await fh.write(c.bytes, 0, c.bytes.byteLength, c.offset)
    await fh.truncate(split.dataLength)
  } finally {
    await fh.close()
  }
  const mh = await open(modelPath, 'w')
  try { await mh.write(split.model) } finally { await mh.close() }
  return { modelPath, dataPath, modelBytes: split.model.byteLength, dataBytes: split.dataLength }
}

/**
 * Session config entry for a model created from bytes: onnxruntime resolves external data
 * `location`s against `folder` (honoured by onnxruntime-node 1.30; without it, bytes resolve
 * against the working directory and a model elsewhere fails to load).
 */
export function externalDataFolderOption(folder: string): Record<string, string> {
  return { [FOLDER_KEY]: folder }
}

/** The session config key externalDataFolderOption sets. */
const FOLDER_KEY = 'session.model_external_initializers_file_folder_path'

/**
 * The external-data files a model given as bytes references, as paths in `folder` (where a session
 * made from the bytes looks, externalDataFolderOption): for an agent to fetch them with a stage.
 */
export function externalDataPaths(bytes: Uint8Array, folder: string): string[] {
  let model: O.ModelProto
  try { model = onnx.ModelProto.decode(bytes) } catch { return [] }
  const out = new Set<string>()
  if (model.graph) {
    for (const t of initializersOf(model.graph)) {
      if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) continue
      const loc = t.externalData?.find((e) => e.key === 'location')?.value
      if (!loc || isAbsolute(loc)) continue
      const p = join(folder, normalize(loc))
      if (!relative(folder, p).startsWith('..')) out.add(p)
    }
  }
  return [...out]
}

/** The folder externalDataFolderOption set in session options' `extra`, if any. */
export function externalDataFolderOf(options: { extra?: unknown }): string | undefined {
  const v = (options.extra as Record<string, unknown> | undefined)?.[FOLDER_KEY]
  return typeof v === 'string' && v ? v : undefined
}

/** Session options without externalDataFolderOption's entry. */
export function withoutExternalDataFolder<T extends { extra?: unknown }>(options: T): T {
  const { [FOLDER_KEY]: _folder, ...extra } = (options.extra ?? {}) as Record<string, unknown>
  return { ...options, extra }
}

/** True if any initializer (subgraphs included) of a decoded model keeps its data in a file. */
export function usesExternalData(model: O.IModelProto): boolean {
  if (!model.graph) return false
  for (const t of initializersOf(model.graph)) if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) return true
  return false
}

/**
 * Gives a model whose initializers reference external data in `fromFolder` its own data file:
 * writes `toModelPath` and `<its file name>_data` beside it holding only the tensors this model
 * references (read one at a time from their files, aligned as `externalizeModel` writes them).
 * For `ms-serve split`: each stage file then travels with exactly its weights.
 */
export async function repackExternalData(bytes: Uint8Array, fromFolder: string, toModelPath: string, opts: { align?: number } = {}): Promise<{ dataPath: string; dataBytes: number; tensors: number }> {
  const align = opts.align ?? 4096
  const model = onnx.ModelProto.decode(bytes)
  if (!model.graph) throw new Error('model has no graph')
  const location = `${basename(toModelPath)}_data`
  const dataPath = join(dirname(toModelPath), location)
  const out = await open(dataPath, 'w')
  const sources = new Map<string, Awaited<ReturnType<typeof open>>>()
  let end = 0
  let tensors = 0
  try {
    for (const t of initializersOf(model.graph)) {
      if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) continue
      const entry = (k: string) => t.externalData?.find((e) => e.key === k)?.value ?? undefined
      const from = entry('location')
      if (!from) throw new Error(`initializer ${t.name} is external but names no location`)
      const offset = Number(entry('offset') ?? 0)
      const length = entry('length')
      let fh = sources.get(from)
      if (!fh) { fh = await open(join(fromFolder, from), 'r'); sources.set(from, fh) }
      const size = length === undefined ? (await fh.stat()).size - offset : Number(length)
      const buf = new Uint8Array(size)
      const { bytesRead } = await fh.read(buf, 0, size, offset)
      if (bytesRead !== size) throw new Error(`initializer ${t.name}: ${from} holds ${bytesRead} of its ${size} bytes at offset ${offset}`)
      const at = Math.ceil(end / align) * align
      await out.write(buf, 0, size, at)
      end = at + size
      tensors++
      t.externalData = [{ key: 'location', value: location }, { key: 'offset', value: String(at) }, { key: 'length', value: String(size) }]
    }
    await out.truncate(end)
  } finally {
    await out.close()
    for (const fh of sources.values()) await fh.close()
  }
  const mh = await open(toModelPath, 'w')
  try { await mh.write(onnx.ModelProto.encode(model).finish()) } finally { await mh.close() }
  return { dataPath, dataBytes: end, tensors }
}
