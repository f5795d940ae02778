/**
 * The start every stage worker shares (runtime/stage-main.ts, llm/stage-decoder-main.ts): open the
 * stage's ORT session from the worker data and answer `ready` with its metadata, or `load-error`
 * with onnxruntime's reason (then null: the worker has nothing to serve).
 */
import { parentPort, workerData } from 'node:worker_threads'
import ort from 'onnxruntime-node'
import type { StageReply, StageWorkerData } from './stage-worker.ts'

export async function openStage(): Promise<ort.InferenceSession | null> {
  const init = workerData as StageWorkerData
  const port = parentPort!
  let session: ort.InferenceSession
  try {
    session = 'path' in init.source
      ? await ort.InferenceSession.create(init.source.path, init.options)
      : await ort.InferenceSession.create(init.source.bytes, init.options)
  } catch (e) {
    port.postMessage({ type: 'load-error', message: (e as Error).message } satisfies StageReply)
    return null
  }
  port.postMessage({
    type: 'ready',
    inputMetadata: session.inputMetadata.map((m) => ({ ...m })),
    outputMetadata: session.outputMetadata.map((m) => ({ ...m })),
  } satisfies StageReply)
  return session
}
