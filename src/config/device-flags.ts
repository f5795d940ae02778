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

/** Parses `--isolation`; the error names the choices. */
export function parseIsolation(text: string, what = '--isolation'): IsolationSetting {
  if ((ISOLATION_SETTINGS as readonly string[]).includes(text)) return text as IsolationSetting
  throw new ServeError('INVALID_REQUEST', `${what} must be one of ${ISOLATION_SETTINGS.join(', ')} (got "${text}")`)
}
