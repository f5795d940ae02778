/**
 * Replicas without I/O: a TransportFactory whose replicas answer in memory, for unit tests of the
 * pool, the batching loop and the reloader. Each opened transport is recorded with the groups it
 * was sent; a test answers them itself (`answer`) or lets them answer at once (`auto`).
 */
import type { ValidServable } from '../../src/config/validate.ts'
import type { DevicePlan } from '../../src/runtime/devices.ts'
import type { ParentMessage, ReplicaMessage } from '../../src/runtime/messages.ts'
import type { Transport, TransportEvents, TransportFactory } from '../../src/runtime/transport.ts'
import type { WireInstance, WireResult } from '../../src/runtime/wire.ts'
import { Tensor } from '../../src/tensor.ts'

/** One servable `name`@`version`, one model (batch `maxBatchSize`), method `run`: y = x. */
export function fakeServable(opts: { name?: string; version?: number; maxBatchSize?: number; maxWaitMs?: number; maxQueueSize?: number } = {}): ValidServable {
  const name = opts.name ?? 'fake'
  return {
    name, version: opts.version ?? 1, dir: `/nowhere/${name}`, versionDir: `/nowhere/${name}/1`, configFile: '', compiledFile: '', llm: null,
    models: [{
      index: 0, name: 'm.onnx', file: 'm.onnx', path: '/nowhere/m.onnx', withBatchDim: true, withoutBatchDimInputs: [],
      maxBatchSize: opts.maxBatchSize ?? 4, maxWaitMs: opts.maxWaitMs ?? 0, maxQueueSize: opts.maxQueueSize ?? 100,
      session: { graphOptimizationLevel: 'all', executionMode: 'sequential', extra: {} }, site: 'fake',
    }],
    methods: [{ name: 'run', inputs: ['x'], inputRefs: [0], outputs: ['y'], outputRefs: [1], stages: [{ kind: 'model', model: 0, tag: '0', args: [0], outputs: [1], site: 'fake' }], models: [0], site: 'fake' }],
  }
}

export function fakeDevices(n: number): DevicePlan[] {
  return Array.from({ length: n }, (_, i) => ({ deviceType: 'cpu', deviceId: i, isolation: 'process', intraOpThreads: 1, executionProviders: ['cpu'] }))
}

export interface FakeGroup { id: number; method: string; instances: WireInstance[]; replica: FakeReplica }

export class FakeReplica implements Transport {
  readonly pid: number
  readonly sharesThread = false
  readonly groups: FakeGroup[] = []
  ended = false
  constructor(readonly host: FakeHost, readonly device: number, readonly on: TransportEvents, pid: number) { this.pid = pid }

  send(msg: ParentMessage): void {
    if (this.ended) return
    switch (msg.type) {
      case 'init': {
        const fail = this.host.failInit.shift()
        queueMicrotask(() => {
          if (fail) this.on.message({ type: 'init-error', error: { code: 'CONFIG_INVALID', message: fail } })
          else this.on.message({ type: 'ready', models: [{ index: 0, name: 'm.onnx', inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 1] }], outputs: [{ name: 'y', dtype: 'float32', shape: [-1, 1] }], maxBatchSize: this.host.maxBatchSize, fixedBatch: false }] })
        })
        return
      }
      case 'run': {
        const g: FakeGroup = { id: msg.id, method: msg.method, instances: msg.instances, replica: this }
        this.groups.push(g)
        this.host.sent.push(g)
        if (this.host.auto) queueMicrotask(() => this.answer(g))
        return
      }
      default:
    }
  }

  /** Answers a group: each instance's y is its x, or `error` for every instance. */
  answer(g: FakeGroup, error?: string): void {
    if (this.ended) return
    const results: WireResult[] = g.instances.map((inst) => (error ? { e: { code: 'STAGE_FAILED', message: error } } : { o: { y: inst.x! } }))
    this.on.message({ type: 'result', id: g.id, results, runs: [{ model: 0, batch: g.instances.length, padded: 0, ms: 1 }], ms: 1 })
  }

  /** The replica dies (a crash, or its kill). */
  exit(why = 'signal SIGKILL'): void {
    if (this.ended) return
    this.ended = true
    queueMicrotask(() => this.on.exit(why))
  }

  shutdown(): void { this.exit('exit code 0') }
  kill(): void { this.exit('signal SIGKILL') }
}

/** Opens FakeReplicas; one host serves every device of a test. */
export class FakeHost {
  readonly opened: FakeReplica[] = []
  readonly sent: FakeGroup[] = []
  /** Answer every group on the next microtask. */
  auto = false
  maxBatchSize = 4
  /** Messages of init errors for the next starts, in order. */
  failInit: string[] = []
  private nextPid = 1000

  factory(device: DevicePlan): TransportFactory {
    return (_label, on) => {
      const r = new FakeReplica(this, device.deviceId, on, this.nextPid++)
      this.opened.push(r)
      return r
    }
  }

  /** The live (not ended) transport of device `id`. */
  live(id: number): FakeReplica {
    const r = [...this.opened].reverse().find((x) => x.device === id && !x.ended)
    if (!r) throw new Error(`no live fake replica on device ${id}`)
    return r
  }
}

export function x(v: number): { x: Tensor } {
  return { x: new Tensor('float32', [1], new Float32Array([v])) }
}

/** Lets queued microtasks and immediate callbacks run. */
export const tick = () => new Promise<void>((r) => setImmediate(r))
