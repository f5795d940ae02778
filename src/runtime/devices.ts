/**
 * Device ids -> execution providers. cpu: the CPU EP with intra-op threads divided so replicas do
 * not oversubscribe the cores; cuda: the CUDA EP with that device_id, where onnxruntime-node has it.
 */
import { availableParallelism } from 'node:os'
import { existsSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { ServeError } from '../errors.ts'

export type DeviceType = 'cpu' | 'cuda'

/** Where a replica runs: a child process, a worker thread, or the listeners' thread. */
export type Isolation = 'process' | 'thread' | 'inline'
export const ISOLATIONS: readonly Isolation[] = ['process', 'thread', 'inline']
/** What `--isolation` may say: one of those, or `auto` (the default: chosen at load, auto-isolation.ts). */
export type IsolationSetting = Isolation | 'auto'
export const ISOLATION_SETTINGS: readonly IsolationSetting[] = ['auto', ...ISOLATIONS]

/** The plans with another isolation (a per-servable override of the server's). */
export function withIsolation(plans: DevicePlan[], isolation: IsolationSetting | undefined): DevicePlan[] {
  return isolation === undefined ? plans : plans.map((p) => ({ ...p, isolation }))
}

export interface DevicePlan {
  deviceType: DeviceType
  deviceId: number
  intraOpThreads: number
  /** onnxruntime-node `executionProviders` session option. */
  executionProviders: Array<string | { name: string; deviceId?: number }>
  /** Where the replica runs (see replica.ts); `auto` is decided when its servable loads. */
  isolation: IsolationSetting
  /**
   * A pipeline replica of a staged model (declareModel `stages`): the device of each stage, in
   * order (this plan is the first one's). Absent: every model runs on this device.
   */
  stageDevices?: DevicePlan[]
  /** A replica on a remote agent (`ms-serve agent`, runtime/agent-hub.ts): the agent's name. */
  agent?: string
}

/**
 * The replicas of a servable whose models are split into `stages` pipeline stages: one pipeline
 * per `stages` devices, stage k on the k-th device of its pipeline. Fewer devices than stages:
 * one pipeline, stages placed on the devices in turn (stage k on device k mod n).
 *
 * Devices of agents (`--devices 0,hostb:0`): a pipeline whose stages are all on one agent is a
 * whole replica there; one that spans hosts runs its replica (the engine, the batching, the
 * sampler) here (in a process unless --isolation says otherwise), and each stage on another host over the agent link
 * (runtime/remote-stage.ts).
 */
export function pipelinePlans(plans: readonly DevicePlan[], stages: number): DevicePlan[] {
  if (stages <= 1 || plans.length === 0) return [...plans]
  const pipelines = Math.max(1, Math.floor(plans.length / stages))
  return Array.from({ length: pipelines }, (_, p) => {
    const stageDevices = Array.from({ length: stages }, (_, k) => plans[(p * stages + k) % plans.length]!)
    const hosts = new Set(stageDevices.map((d) => d.agent ?? ''))
    if (hosts.size === 1) return { ...stageDevices[0]!, stageDevices }
    const { agent: _agent, ...here } = stageDevices.find((d) => !d.agent) ?? stageDevices[0]!
    // `auto` would time the model here, stages and all: such a replica runs in a process unless told otherwise.
    return { ...here, isolation: here.isolation === 'auto' ? 'process' as const : here.isolation, stageDevices }
  })
}

/** Whether a replica of this plan waits on an agent to start (a replica there, or a stage there). */
export function onAgent(plan: DevicePlan): boolean {
  return plan.agent !== undefined || (plan.stageDevices ?? []).some((d) => d.agent !== undefined && d.agent !== plan.agent)
}

/**
 * One plan per (servable replica, device). On CPU every replica shares the same cores, so each
 * gets floor(cores / replicas) intra-op threads (at least 1).
 */
export function planDevices(deviceType: DeviceType, deviceIds: number[], numReplicasTotal: number, cores = availableParallelism(), isolation: IsolationSetting = 'auto'): DevicePlan[] {
  if (deviceType !== 'cpu' && deviceType !== 'cuda') throw new ServeError('INVALID_REQUEST', `device type must be cpu or cuda (got "${deviceType}")`)
  const threads = Math.max(1, Math.floor(cores / Math.max(1, numReplicasTotal)))
  return deviceIds.map((id) => ({ deviceType, deviceId: id, intraOpThreads: threads, executionProviders: executionProviders(deviceType, id), isolation }))
}

/** onnxruntime-node's `executionProviders` for one device. */
function executionProviders(deviceType: DeviceType, id: number): DevicePlan['executionProviders'] {
  return deviceType === 'cpu' ? ['cpu'] : [{ name: 'cuda', deviceId: id }]
}

/**
 * Device `id` of the agent `agent` (its replicas run there in a process). `intraOpThreads` 0 leaves
 * the threads to the agent, which knows its cores (a device `--devices` names before it joined).
 */
export function agentDevicePlan(deviceType: DeviceType, agent: string, id: number, intraOpThreads = 0): DevicePlan {
  return { deviceType, deviceId: id, intraOpThreads, executionProviders: executionProviders(deviceType, id), isolation: 'process', agent }
}

/** Whether onnxruntime-node's CUDA provider library was installed beside its binding. */
export function cudaProviderInstalled(): boolean {
  try {
    const req = createRequire(import.meta.url)
    const binDir = join(dirname(req.resolve('onnxruntime-node')), '..', 'bin')
    for (const napi of readdirSync(binDir)) {
      const dir = join(binDir, napi, process.platform, process.arch)
      if (existsSync(join(dir, 'libonnxruntime_providers_cuda.so')) || existsSync(join(dir, 'onnxruntime_providers_cuda.dll'))) return true
    }
  } catch { /* no binding dir: no CUDA */ }
  return false
}

/** Throws a clear error when the CUDA EP is not usable with this onnxruntime-node install. */
export function checkDeviceTypeAvailable(deviceType: DeviceType, backends: Array<{ name: string; bundled: boolean }>, providerInstalled: boolean): void {
  if (deviceType !== 'cuda') return
  const cuda = backends.find((b) => b.name === 'cuda')
  if (!cuda || !(cuda.bundled || providerInstalled)) {
    throw new ServeError('CONFIG_INVALID', 'device type cuda was asked for, but this onnxruntime-node install has no CUDA execution provider (it ships CPU only on this platform). Install the CUDA build of onnxruntime-node (ONNXRUNTIME_NODE_INSTALL_CUDA=v12 npm rebuild onnxruntime-node on a machine with CUDA 12), or start with --device-type cpu.')
  }
}
