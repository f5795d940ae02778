/**
 * Replica entry for `isolation: 'process'` (a child process, the default) and `'thread'` (a
 * worker thread): wires a ReplicaCore to the parent's channel. A process isolates native crashes
 * and gets the malloc tuning env (MALLOC_ENV in replica.ts) that only a fresh process reads; a
 * thread saves the cross-process hop. ORT's run() blocks its thread either way, never the
 * listeners' event loop.
 */
import { isMainThread, parentPort } from 'node:worker_threads'
import type { ParentMessage, ReplicaMessage } from './messages.ts'
import { ReplicaCore } from './replica-core.ts'
import type { WireResult } from './wire.ts'

process.setSourceMapsEnabled(true)

function resultBuffers(results: WireResult[]): ArrayBuffer[] {
  const bufs = new Set<ArrayBuffer>()
  for (const r of results) {
    if (!('o' in r)) continue
    for (const k in r.o) {
      const v = r.o[k]!
      const d = typeof v === 'string' ? null : v instanceof Uint8Array ? v : 'd' in v ? v.d : null
      if (d && d.buffer instanceof ArrayBuffer) bufs.add(d.buffer)
    }
  }
  return [...bufs]
}

if (!isMainThread && parentPort) {
  const port = parentPort
  // Result tensors are fresh buffers owned by this thread: move them instead of copying.
  const core = new ReplicaCore((msg: ReplicaMessage) => port.postMessage(msg, msg.type === 'result' ? resultBuffers(msg.results) : undefined))
  port.on('message', (msg: ParentMessage) => {
    if (msg.type === 'shutdown') void core.close().finally(() => port.close())
    else core.handle(msg)
  })
} else {
  const core = new ReplicaCore((msg: ReplicaMessage) => process.send!(msg))
  process.on('message', (msg: ParentMessage) => {
    if (msg.type === 'shutdown') process.exit(0)
    else core.handle(msg)
  })
  // The parent going away must not leave an orphan replica holding memory.
  process.on('disconnect', () => process.exit(0))
}
