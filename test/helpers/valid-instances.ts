/**
 * For tests that drive LiveServable.predict directly (it takes only ValidInstances): checks the
 * instances the way the registry does, against the models the servable's ready replica reported.
 */
import type { LiveServable } from '../../src/runtime/live-servable.ts'
import { predictSignature, validatePredict, type ValidInstances } from '../../src/runtime/valid-predict.ts'
import type { Value } from '../../src/tensor.ts'

/** `instances` as ValidInstances for `method` of the started `live`; throws if any is refused. */
export function validFor(live: LiveServable, method: string, instances: Record<string, Value>[]): ValidInstances {
  const models = live.replicas.find((r) => r.state === 'ready')?.models ?? []
  const valid = validatePredict(predictSignature(live.servable, models), method, instances)
  const refused = valid.refused?.find((e) => e !== undefined)
  if (refused) throw refused
  return valid.instances
}
