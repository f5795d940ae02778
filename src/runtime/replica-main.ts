/**
 * Replica entry for `isolation: 'process'` (a child process, the default) and `'thread'` (a
 * worker thread): wires a ReplicaCore to the parent's channel. A process isolates native crashes
 * and gets the malloc tuning env (MALLOC_ENV in transport.ts) that only a fresh process reads; a
 * thread saves the cross-process hop. ORT's run() blocks its thread either way, never the
 * listeners' event loop.
 */
import { isMainThread, parentPort } from 'node:worker_threads'
import { HEARTBEAT_MS, type ParentMessage, type ReplicaMessage } from './messages.ts'
import { ReplicaCore } from './replica-core.ts'

process.setSourceMapsEnabled(true)

if (!isMainThread && parentPort) {
  const port = parentPort
  // Results are copied, not transferred: a stage may return a tensor its config keeps (a module
  // constant), and moving its buffer would empty it for the next request.
  const core = new ReplicaCore((msg: ReplicaMessage) => port.postMessage(msg))
  // Silence is how the parent's watchdog tells a hung thread (a stage that never returns).
  const beat = setInterval(() => port.postMessage({ type: 'beat' } satisfies ReplicaMessage), HEARTBEAT_MS)
  beat.unref()
  port.on('message', (msg: ParentMessage) => {
    if (msg.type === 'shutdown') { clearInterval(beat); void core.close().finally(() => port.close()) }
    else core.handle(msg)
  })
} else {
  const send = (msg: ReplicaMessage) => { if (process.connected) process.send!(msg) }
  const core = new ReplicaCore(send)
  process.on('message', (msg: ParentMessage) => {
    if (msg.type === 'shutdown') process.exit(0)
    else core.handle(msg)
  })
  // The parent going away must not leave an orphan replica holding memory: the IPC channel
  // closing says so, and so does being re-parented (checked with the heartbeat, in case the
  // channel's end is noticed late). A send that races the parent's exit ends us quietly.
  const parent = process.ppid
  process.on('disconnect', () => process.exit(0))
  process.on('error', () => process.exit(0))
  setInterval(() => {
    if (process.ppid !== parent || !process.connected) process.exit(0)
    send({ type: 'beat' })
  }, HEARTBEAT_MS).unref()
}
