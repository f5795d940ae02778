/**
 * "Did you mean" for config keys: one helper for declareModel/declareLlm/registerMethod/addStage
 * options and the server YAML, so every unknown-key message has the same shape and threshold.
 */

/**
 * Edit distance with adjacent transpositions counted as one edit (optimal string alignment):
 * `devcies` -> `devices` is one slip of the fingers, not two substitutions.
 */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)])
  for (let j = 1; j <= b.length; j++) d[0]![j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1)
      d[i]![j] = v
    }
  }
  return d[a.length]![b.length]!
}

/** A name without case and separators: `maxInstancesPerRequest`, `max_instances_per_request`, `--max-instances-per-request` agree. */
const bare = (name: string) => name.toLowerCase().replace(/[-_]/g, '')

/**
 * The known name `given` most likely meant: the same words in another case or separator style
 * first (`maxBatchsize`, `watchdogMs` for `watchdog_ms`), else the closest within 2 edits, and
 * never more than half of `given`, so short keys such as `tag` are not "corrected" into unrelated ones.
 */
export function suggestName(given: string, known: readonly string[]): string | undefined {
  const lower = given.toLowerCase()
  const same = known.find((k) => k.toLowerCase() === lower) ?? known.find((k) => bare(k) === bare(given))
  if (same) return same
  let best: string | undefined
  let bestDistance = Math.min(2, Math.floor(given.length / 2))
  for (const k of known) {
    const dist = editDistance(lower, k.toLowerCase())
    if (dist <= bestDistance && (best === undefined || dist < bestDistance)) { best = k; bestDistance = dist }
  }
  return best
}

/** The own keys of `obj` that are not in `known`, in the order written. */
export function unknownKeys(obj: object, known: readonly string[]): string[] {
  return Object.keys(obj).filter((k) => !known.includes(k))
}

/**
 * `<lead>; did you mean "x"? Known <noun>: a, b, c` (or `<lead>. Known ...` without a close
 * match). `lead` says what was wrong, e.g. `declareModel option "maxBatchsize" is unknown`.
 */
export function unknownKeyMessage(lead: string, key: string, known: readonly string[], noun = 'options'): string {
  const s = suggestName(key, known)
  return `${lead}${s ? `; did you mean "${s}"?` : '.'} Known ${noun}: ${known.join(', ')}`
}

/**
 * The message for the first unknown key of an options object, or null when every key is known.
 * `what` names the API, e.g. `declareModel option` gives `declareModel option "x" is unknown; ...`.
 */
export function checkOptionKeys(obj: object, known: readonly string[], what: string): string | null {
  const bad = unknownKeys(obj, known)[0]
  return bad === undefined ? null : unknownKeyMessage(`${what} "${bad}" is unknown`, bad, known)
}
