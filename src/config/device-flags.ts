/**
 * The device flags as the CLI and the server YAML spell them (`--devices 0,1`, `--isolation`):
 * parsed here, in config/, so their texts name the flag; runtime/ gets plain ids and kinds.
 */
import { ServeError } from '../errors.ts'
import { ISOLATION_SETTINGS, type IsolationSetting } from '../runtime/devices.ts'

/** Parses `--devices 0,1` into unique non-negative ids. */
export function parseDeviceIds(text: string): number[] {
  const ids = text.split(',').map((s) => s.trim()).filter(Boolean)
  if (ids.length === 0) throw new ServeError('INVALID_REQUEST', `--devices needs a comma list of device ids, e.g. --devices 0,1 (got "${text}")`)
  const out: number[] = []
  for (const s of ids) {
    if (!/^\d+$/.test(s)) throw new ServeError('INVALID_REQUEST', `--devices: "${s}" is not a device id; use non-negative integers, e.g. --devices 0,1`)
    const n = Number(s)
    if (out.includes(n)) throw new ServeError('INVALID_REQUEST', `--devices lists device ${n} twice`)
    out.push(n)
  }
  return out
}

/** A device `--devices` names: a local id, or `NAME:ID`, device ID of the agent named NAME. */
export interface DeviceRef { id: number; agent?: string }

/** One device entry, `0` or `NAME:ID`; null when it is neither (the flag and the YAML word the error). */
export function parseDeviceRef(text: string): DeviceRef | null {
  const m = /^(?:([A-Za-z0-9._-]+):)?(\d+)$/.exec(text)
  if (!m) return null
  return m[1] ? { id: Number(m[2]), agent: m[1] } : { id: Number(m[2]) }
}

/**
 * Parses the server's `--devices`: local ids and agents' devices (`0,1`, `0,hostb:0`), in order
 * (a staged servable's pipeline takes them in this order: stage k on the k-th).
 */
export function parseDeviceRefs(text: string): DeviceRef[] {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean)
  if (items.length === 0) throw new ServeError('INVALID_REQUEST', `--devices needs a comma list of device ids, e.g. --devices 0,1 or --devices 0,hostb:0 (got "${text}")`)
  const out: DeviceRef[] = []
  for (const s of items) {
    const ref = parseDeviceRef(s)
    if (!ref) throw new ServeError('INVALID_REQUEST', `--devices: "${s}" is not a device; use a non-negative id (0) or an agent's device as NAME:ID (hostb:0, NAME as the agent's --name), e.g. --devices 0,hostb:0`)
    if (out.some((r) => r.id === ref.id && r.agent === ref.agent)) throw new ServeError('INVALID_REQUEST', `--devices lists device ${s} twice`)
    out.push(ref)
  }
  return out
}

/** Parses `--isolation`; the error names the choices. */
export function parseIsolation(text: string, what = '--isolation'): IsolationSetting {
  if ((ISOLATION_SETTINGS as readonly string[]).includes(text)) return text as IsolationSetting
  throw new ServeError('INVALID_REQUEST', `${what} must be one of ${ISOLATION_SETTINGS.join(', ')} (got "${text}")`)
}
