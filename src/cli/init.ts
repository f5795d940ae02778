/**
 * `ms-serve init <template> [name]`: copies templates/<template>/ into DIR/<name>/ and generates its
 * model files with the project's own builders. Re-running it on an unchanged servable is a no-op
 * that fills in missing model files; files that differ are never overwritten without --force.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { ServeError } from '../errors.ts'
import { BUILTIN_MODELS } from '../models/index.ts'
import { findPackageRoot } from '../paths.ts'

interface TemplateMeta { description: string; models: Record<string, string>; try?: string }

export function templatesDir(): string {
  return join(findPackageRoot(), 'templates')
}

export function listTemplates(): Array<{ name: string; description: string }> {
  const dir = templatesDir()
  return readdirSync(dir).filter((n) => existsSync(join(dir, n, 'template.json'))).sort()
    .map((name) => ({ name, description: (JSON.parse(readFileSync(join(dir, name, 'template.json'), 'utf8')) as TemplateMeta).description }))
}

function walk(dir: string, base = dir): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f)
    return statSync(p).isDirectory() ? walk(p, base) : [relative(base, p)]
  })
}

export interface InitResult { dir: string; written: string[]; unchanged: string[]; next: string; tryCommand?: string }

/** Scaffolds a servable; throws INVALID_REQUEST naming the conflicting files unless `force`. */
export function initServable(template: string, opts: { name?: string; dir: string; force?: boolean; onProgress?: (msg: string) => void }): InitResult {
  const tdir = join(templatesDir(), template)
  if (!existsSync(join(tdir, 'template.json'))) {
    throw new ServeError('INVALID_REQUEST', `unknown template "${template}". Available: ${listTemplates().map((t) => t.name).join(', ')}`)
  }
  const meta = JSON.parse(readFileSync(join(tdir, 'template.json'), 'utf8')) as TemplateMeta
  const name = opts.name ?? template
  if (!/^[A-Za-z0-9_][\w.-]*$/.test(name)) throw new ServeError('INVALID_REQUEST', `servable name "${name}" must use letters, digits, _ . - (it becomes the URL segment /model/${name})`)
  const target = join(opts.dir, name)
  const files = new Map<string, () => Uint8Array>()
  for (const f of walk(tdir)) if (f !== 'template.json') files.set(f, () => readFileSync(join(tdir, f)))
  for (const [f, model] of Object.entries(meta.models)) {
    const build = BUILTIN_MODELS[model]
    if (!build) throw new ServeError('INTERNAL', `template ${template} names unknown model builder "${model}"`)
    files.set(f, build)
  }
  const planned = [...files].map(([f, make]) => ({ f, path: join(target, f), data: make() }))
  const conflicts = planned.filter((p) => existsSync(p.path) && !Buffer.from(readFileSync(p.path)).equals(Buffer.from(p.data)))
  if (conflicts.length && !opts.force) {
    throw new ServeError('INVALID_REQUEST', `${target} already exists and differs from template "${template}" in: ${conflicts.map((c) => c.f).join(', ')}. Use --force to overwrite, or pick another name: npx ms-serve init ${template} <name>`)
  }
  const written: string[] = []
  const unchanged: string[] = []
  for (const p of planned) {
    if (existsSync(p.path) && !conflicts.includes(p)) { unchanged.push(p.f); continue }
    opts.onProgress?.(`writing ${relative(process.cwd(), p.path) || p.path}`)
    mkdirSync(dirname(p.path), { recursive: true })
    writeFileSync(p.path, p.data)
    written.push(p.f)
  }
  const rel = relative(process.cwd(), opts.dir) || '.'
  const shown = rel.startsWith('..') ? resolve(opts.dir) : rel.startsWith('.') ? rel : `./${rel}`
  return { dir: target, written, unchanged, next: `npx ms-serve start ${shown} --devices 0`, tryCommand: meta.try?.replaceAll('{name}', name) }
}
