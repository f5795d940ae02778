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

process.setSourceMapsEnabled(true)

if (!isMainThread && parentPort) {
  const port = parentPort
  // Results are copied, not transferred: a stage may return a tensor its config keeps (a module
  // constant), and moving its buffer would empty it for the next request.
  const core = new ReplicaCore((msg: ReplicaMessage) => port.postMessage(msg))
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
