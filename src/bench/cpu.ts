/**
 * CPU time of the processes in a run, so a report can say where the cores went: the load generator
 * (this process), the server's main process and its replicas. Linux /proc only; elsewhere the
 * server side reads as null.
 */
import { readFileSync } from 'node:fs'
import type { CpuBreakdown } from './types.ts'

/** USER_HZ: /proc/<pid>/stat counts in clock ticks, 100 per second on Linux builds that matter. */
const TICKS_PER_SEC = 100

/** utime + stime of `pid` in ms, or null when /proc is not readable. */
export function processCpuMs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name may hold spaces or parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SEC
  } catch {
    return null
  }
}

/**
 * Time of all cores together in ms from /proc/stat: `busy` is everything but idle and iowait,
 * `total` includes them.
 */
export function machineCpuMs(): { busy: number; total: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!
    const v = line.trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal (guest time is already inside user)
    const busy = v[0]! + v[1]! + v[2]! + v[5]! + v[6]! + (v[7] ?? 0)
    return { busy: (busy * 1000) / TICKS_PER_SEC, total: ((busy + v[3]! + v[4]!) * 1000) / TICKS_PER_SEC }
  } catch {
    return null
  }
}

export interface CpuSnapshot { at: number; clientMs: number; serverMs: number | null; replicasMs: number | null; machineMs: number | null }

export function cpuSnapshot(serverPid: number | null, replicaPids: number[]): CpuSnapshot {
  const u = process.cpuUsage()
  const replicas = replicaPids.map(processCpuMs)
  return {
    at: performance.now(),
    clientMs: (u.user + u.system) / 1000,
    serverMs: serverPid ? processCpuMs(serverPid) : null,
    replicasMs: replicas.length && replicas.every((x) => x !== null) ? replicas.reduce<number>((a, b) => a + b!, 0) : null,
    machineMs: machineCpuMs()?.busy ?? null,
  }
}

/** Cores used (1.0 = one core busy) and CPU ms per completed request between two snapshots. */
export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot, requests: number): CpuBreakdown {
  const wall = Math.max(1, b.at - a.at)
  const share = (ms: number) => ({ cores: ms / wall, msPerRequest: requests ? ms / requests : 0 })
  const per = (x: number | null, y: number | null) => (x === null || y === null ? null : share(y - x))
  const client = share(b.clientMs - a.clientMs)
  const server = per(a.serverMs, b.serverMs)
  const replicas = per(a.replicasMs, b.replicasMs)
  const machine = per(a.machineMs, b.machineMs)
  // What other processes on the machine used meanwhile: a noisy neighbour shows up here.
  const other = machine ? share(Math.max(0, machine.cores - client.cores - (server?.cores ?? 0) - (replicas?.cores ?? 0)) * wall) : null
  return { client, server, replicas, other }
}
