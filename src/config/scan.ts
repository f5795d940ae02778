/**
 * Finds servables in a servable directory: `DIR/<name>/servable_config.ts` plus numeric version
 * folders `DIR/<name>/<n>/` (positive decimal, no leading zeros, as MindSpore and Triton), and
 * loads the versions to serve (compiled + validated).
 */
import { existsSync, readdirSync, statSync } from 'node:fs'
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path'
import { ServeError } from '../errors.ts'
import { compileServableConfig } from './compile.ts'
import { validateServable, type ValidServable } from './validate.ts'

const CONFIG_FILES = ['servable_config.ts', 'servable_config.mts', 'servable_config.js', 'servable_config.mjs']

export interface FoundServable {
  name: string
  dir: string
  configFile: string
  versions: number[]
}

/** The servable config file in a servable folder, if there is one. */
export function findConfigFile(dir: string): string | undefined {
  return CONFIG_FILES.map((f) => join(dir, f)).find((f) => existsSync(f))
}

/** Lists the version folders of one servable, ascending. */
export function listVersions(dir: string): number[] {
  return readdirSync(dir)
    .filter((d) => /^[1-9]\d*$/.test(d) && statSync(join(dir, d)).isDirectory())
    .map(Number)
    .sort((a, b) => a - b)
}

/** The directory above `abs`, written as the user wrote the path (a relative path stays relative to the cwd). */
function parentAsGiven(abs: string, given: string): string {
  const parent = dirname(abs)
  return isAbsolute(given) ? parent : relative(process.cwd(), parent) || '.'
}

/** The servable folder that `abs` is or lies in (as a version folder, a model or its config file), if any. */
function enclosingServable(abs: string): string | undefined {
  for (let d = abs, i = 0; i < 4 && d !== dirname(d); i++, d = dirname(d)) {
    if (existsSync(d) && statSync(d).isDirectory() && findConfigFile(d)) return d
  }
  return undefined
}

/**
 * Why `root` is not a servable directory, for paths that exist but point one level too deep (a
 * servable folder, a version folder, a file): what was given and the command to run instead.
 */
function wrongLevelMessage(root: string, abs: string, isFile: boolean): string | undefined {
  const sdir = enclosingServable(abs)
  if (sdir === abs) {
    const cfg = basename(findConfigFile(abs)!)
    return `${root} is a servable folder itself (it holds ${cfg}); start its parent: ms-serve start ${parentAsGiven(abs, root)}`
  }
  if (sdir) {
    const what = isFile ? 'a file' : 'a folder'
    return `${root} is ${what} inside servable folder ${basename(sdir)}, not a servable directory; `
      + `start the folder that holds the servable folders: ms-serve start ${parentAsGiven(sdir, root)}`
  }
  if (isFile) {
    return `${root} is a file, not a servable directory. Start a directory holding servable folders `
      + '(DIR/<name>/servable_config.ts), e.g. ms-serve start servables; create one with: npx ms-serve init add --dir servables'
  }
  return undefined
}

/** Scans DIR; throws CONFIG_INVALID if DIR is missing, is a file or a servable folder, or holds no servable. */
export function scanServables(root: string): FoundServable[] {
  const dir = resolve(root)
  if (!existsSync(dir)) {
    throw new ServeError('CONFIG_INVALID', `servable directory ${root} does not exist. Create one with: npx ms-serve init add --dir ${root}`)
  }
  if (!statSync(dir).isDirectory()) throw new ServeError('CONFIG_INVALID', wrongLevelMessage(root, dir, true)!)
  const found: FoundServable[] = []
  for (const name of readdirSync(dir).sort()) {
    const sdir = join(dir, name)
    if (name.startsWith('.') || !statSync(sdir).isDirectory()) continue
    const cfg = findConfigFile(sdir)
    if (!cfg) continue
    found.push({ name, dir: sdir, configFile: cfg, versions: listVersions(sdir) })
  }
  if (found.length === 0) {
    // Only when nothing was found: a servables root that happens to hold a config file still works.
    const wrongLevel = wrongLevelMessage(root, dir, false)
    if (wrongLevel) throw new ServeError('CONFIG_INVALID', wrongLevel)
    throw new ServeError('CONFIG_INVALID', `no servable found in ${root}: expected ${root}/<name>/servable_config.ts. Create one with: npx ms-serve init add --dir ${root}`)
  }
  return found
}

/** Picks the versions to serve: explicit ones must exist; default is the newest. */
export function chooseVersions(s: FoundServable, wanted?: number[] | 'all'): number[] {
  if (s.versions.length === 0) {
    throw new ServeError('CONFIG_INVALID', `${s.dir} has no version folder. Put the model files in ${s.dir}/1/`)
  }
  if (wanted === 'all') return [...s.versions]
  if (!wanted || wanted.length === 0 || (wanted.length === 1 && wanted[0] === 0)) return [s.versions[s.versions.length - 1]!]
  for (const v of wanted) {
    if (!s.versions.includes(v)) throw new ServeError('CONFIG_INVALID', `servable ${s.name}: version ${v} was asked for but ${s.dir} has versions [${s.versions.join(', ')}]`)
  }
  return [...wanted]
}

/** Compiles a found servable's config once and validates it for each version to serve. */
export async function loadServable(found: FoundServable, wanted?: number[] | 'all'): Promise<ValidServable[]> {
  const { definition, compiledFile } = await compileServableConfig(found.configFile)
  return chooseVersions(found, wanted).map((v) => validateServable(definition, { name: found.name, version: v, dir: found.dir, versionDir: join(found.dir, String(v)), configFile: found.configFile, compiledFile }))
}
