/**
 * The parse worker (piscina): runs parseMsBody off the listeners' thread and moves the result's
 * typed arrays back instead of copying them.
 */
import { Piscina } from 'piscina'
import { toServeError } from '../errors.ts'
import { instanceToWire } from '../runtime/wire.ts'
import { parseMsBody, type ParseReply, type ParseTask } from './body-parse.ts'
import { loadMsServiceDefinition } from './grpc/ms-service.ts'

const def = loadMsServiceDefinition()
const deserialize = def.Predict!.requestDeserialize as (b: Buffer) => never

export default function parse(task: ParseTask): unknown {
  let reply: ParseReply
  const buffers = new Set<ArrayBuffer>()
  try {
    // The task is this worker's structured-clone copy: parseMsBody may drop its bytes early.
    const parsed = parseMsBody(task, deserialize, true)
    const instances = parsed.instances.map(instanceToWire)
    for (const inst of instances) {
      for (const k in inst) {
        const v = inst[k]!
        // Wire values are compact (own their buffer), so each buffer can move.
        if (v instanceof Uint8Array) buffers.add(v.buffer as ArrayBuffer)
        else if (typeof v === 'object' && 'd' in v) buffers.add(v.d.buffer as ArrayBuffer)
      }
    }
    reply = { instances, ...(parsed.spec ? { spec: parsed.spec } : {}) }
  } catch (e) {
    reply = { error: toServeError(e).toJSON() }
  }
  // move() marks the wrapper so piscina transfers its buffers and posts `reply` itself.
  return Piscina.move({
    get [Piscina.transferableSymbol]() { return [...buffers] },
    get [Piscina.valueSymbol]() { return reply },
  } as never)
}
