/**
 * Worker-thread entry of one pipeline stage (stage-worker.ts starts it): holds the stage's ORT
 * session and runs one batch at a time on its own thread, so while stage 2 runs batch A here,
 * stage 1 runs batch B in its own worker. onnxruntime-node's run() occupies the calling JS thread
 * for the length of the run, so stages sharing one thread could never overlap.
 *
 * Protocol (StageRequest in, StageReply out): `ready` with the session's metadata once loaded (or
 * `load-error`), then one `done`/`failed` per `run`, in order. Outputs are transferred, not
 * copied: ORT hands each run fresh buffers that nothing here keeps.
 */
import { parentPort } from 'node:worker_threads'
import ort from 'onnxruntime-node'
import type { RunCall, RunResult, StageReply, StageRequest, WireTensor } from './stage-worker.ts'
import { openStage } from './stage-open.ts'

process.setSourceMapsEnabled(true)

const port = parentPort!

function toWire(t: ort.Tensor): WireTensor {
  return { type: t.type, dims: [...t.dims], data: t.data as WireTensor['data'] }
}

async function main(): Promise<void> {
  const session = await openStage()
  if (!session) return
  // One run at a time, started here: ORT would queue concurrent calls itself, but then a run's
  // clock would include its wait and the stage's busy time (and /stats stageMs) would overstate.
  let tail: Promise<void> = Promise.resolve()
  port.on('message', (msg: StageRequest) => {
    if (msg.type === 'release') {
      void tail.then(() => session.release()).finally(() => port.close())
      return
    }
    tail = tail.then(() => runOne(session, msg as unknown as RunCall & { id: number }))
  })
}

async function runOne(session: ort.InferenceSession, msg: RunCall & { id: number }): Promise<void> {
  const feeds: Record<string, ort.Tensor> = {}
  for (const [name, t] of Object.entries(msg.feeds)) feeds[name] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims)
  const t0 = performance.now()
  let out: ort.InferenceSession.OnnxValueMapType
  try {
    out = msg.fetches ? await session.run(feeds, msg.fetches) : await session.run(feeds)
  } catch (e) {
    port.postMessage({ type: 'failed', id: msg.id, message: (e as Error).message } satisfies StageReply)
    return
  }
  const ms = performance.now() - t0
  const wire: Record<string, WireTensor> = {}
  const transfer = new Set<ArrayBuffer>()
  for (const [name, v] of Object.entries(out)) {
    const t = toWire(v as ort.Tensor)
    wire[name] = t
    if (ArrayBuffer.isView(t.data) && t.data.buffer instanceof ArrayBuffer) transfer.add(t.data.buffer)
  }
  const value: RunResult = { out: wire, ms, start: performance.timeOrigin + t0 }
  port.postMessage({ type: 'done', id: msg.id, value } satisfies StageReply, [...transfer])
}

void main()
