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

/** Busy time of all cores together (everything but idle and iowait) in ms, from /proc/stat. */
export function machineBusyMs(): number | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!
    const v = line.trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal (guest time is already inside user)
    const busy = v[0]! + v[1]! + v[2]! + v[5]! + v[6]! + (v[7] ?? 0)
    return (busy * 1000) / TICKS_PER_SEC
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
    machineMs: machineBusyMs(),
  }
}

/** Cores used (1.0 = one core busy) and CPU ms per completed request between two snapshots. */
export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot, requests: number): CpuBreakdown {
  const wall = Math.max(1, b.at - a.at)
  const per = (x: number | null, y: number | null) => (x === null || y === null ? null : { cores: (y - x) / wall, msPerRequest: requests ? (y - x) / requests : 0 })
  const machine = per(a.machineMs, b.machineMs)
  const ours = [per(a.clientMs, b.clientMs), per(a.serverMs, b.serverMs), per(a.replicasMs, b.replicasMs)].reduce((x, s) => x + (s?.cores ?? 0), 0)
  // What other processes on the machine used meanwhile: a noisy neighbour shows up here.
  const other = machine ? { cores: Math.max(0, machine.cores - ours), msPerRequest: requests ? (Math.max(0, machine.cores - ours) * wall) / requests : 0 } : null
  return { client: per(a.clientMs, b.clientMs)!, server: per(a.serverMs, b.serverMs), replicas: per(a.replicasMs, b.replicasMs), other }
}
