/**
 * Compiles a servable_config.ts with esbuild into a temp ES module and imports it. `ms-serve`
 * imports resolve to this running copy of the API, so the placeholders and Tensor class the config
 * uses are the same objects the server checks against. The compiled file lives in a temp folder,
 * so each bundled file's `import.meta.url` (and `import.meta.dirname` / `filename`) is set to that
 * file's own place: `new URL('./labels.json', import.meta.url)` in a config reads the file beside it.
 */
import { build, type Message, type Plugin } from 'esbuild'
import { readFile } from 'node:fs/promises'
import { mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path'
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { ServeError } from '../errors.ts'
import type { ServableDefinition } from './define.ts'

/** The module that `import ... from 'ms-serve'` maps to: dist/api.js beside this bundle, or src/api.ts under tsx. */
function apiModulePath(): string {
  const here = fileURLToPath(import.meta.url)
  const distRoot = here.includes(`${join('/', 'dist', '/')}`) ? here.slice(0, here.lastIndexOf('/dist/') + 6) : null
  if (distRoot) return join(distRoot, 'api.js')
  return join(dirname(here), '..', 'api.ts')
}

function formatMessage(m: Message): string {
  // esbuild reports paths relative to its working dir; show them the way validation errors do.
  const loc = m.location ? `${relativeSite(resolve(m.location.file))}:${m.location.line}:${m.location.column + 1}: ` : ''
  const text = m.location?.lineText ? `\n    ${m.location.lineText}` : ''
  return `${loc}${m.text}${text}`
}

export interface CompiledConfig { definition: ServableDefinition; compiledFile: string }

/** Source files of a config (not its npm packages) with `import.meta` naming where they are, not the bundle. */
const ownImportMeta: Plugin = {
  name: 'ms-serve-import-meta',
  setup(b) {
    b.onLoad({ filter: /\.[cm]?[jt]s$/ }, async (args) => {
      if (args.path.includes(`${sep}node_modules${sep}`)) return undefined
      // Read once here (returning undefined would make esbuild read it again).
      const text = await readFile(args.path, 'utf8')
      const ext = extname(args.path)
      const loader = ext === '.ts' || ext === '.mts' || ext === '.cts' ? 'ts' : 'js'
      if (!text.includes('import.meta')) return { contents: text, loader }
      const url = JSON.stringify(pathToFileURL(args.path).href)
      const contents = text
        .replace(/\bimport\.meta\.url\b/g, url)
        .replace(/\bimport\.meta\.dirname\b/g, JSON.stringify(dirname(args.path)))
        .replace(/\bimport\.meta\.filename\b/g, JSON.stringify(args.path))
      return { contents, loader }
    })
  },
}

/** Bundles and imports `configFile`; throws CONFIG_INVALID naming file, line and fix. */
export async function compileServableConfig(configFile: string): Promise<CompiledConfig> {
  const outDir = join(tmpdir(), 'ms-serve-configs')
  mkdirSync(outDir, { recursive: true })
  const api = apiModulePath()
  let code: string
  try {
    const result = await build({
      entryPoints: [configFile],
      bundle: true,
      write: false,
      // Source map paths are written relative to outdir: it must be where the compiled file lands,
      // or stack sites (file:line in config errors) resolve to a path that does not exist.
      outdir: outDir,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      sourcemap: 'inline',
      logLevel: 'silent',
      plugins: [ownImportMeta, {
        name: 'ms-serve-api',
        setup(b) {
          b.onResolve({ filter: /^ms-serve$/ }, () => ({ path: pathToFileURL(api).href, external: true }))
          // npm packages stay external (native addons such as sharp cannot be bundled) and are
          // pinned to absolute paths, since the compiled file lives in a temp dir. They resolve from
          // the config's folder first, then from ms-serve's own dependencies.
          b.onResolve({ filter: /^[^./]/ }, (args) => {
            if (args.path.startsWith('node:')) return { path: args.path, external: true }
            for (const from of [configFile, fileURLToPath(import.meta.url)]) {
              try {
                const r = createRequire(from).resolve(args.path)
                return { path: isAbsolute(r) ? pathToFileURL(r).href : r, external: true }
              } catch { /* try the next place, else let esbuild bundle it */ }
            }
            return undefined
          })
        },
      }],
    })
    code = result.outputFiles[0]!.text
  } catch (e) {
    const errors = (e as { errors?: Message[] }).errors
    const detail = errors?.length ? errors.map(formatMessage).join('\n') : (e as Error).message
    throw new ServeError('CONFIG_INVALID', `${configFile} does not compile:\n${detail}\nFix the TypeScript error above and start again.`)
  }
  const hash = createHash('sha1').update(configFile).update(code).digest('hex').slice(0, 12)
  const compiledFile = join(outDir, `${basename(dirname(configFile))}-${hash}.mjs`)
  writeFileSync(compiledFile, code)
  let mod: { default?: unknown }
  try {
    mod = await import(pathToFileURL(compiledFile).href)
  } catch (e) {
    const stack = (e as Error).stack ?? String(e)
    const site = /servable_config\.ts:(\d+)/.exec(stack)
    throw new ServeError('CONFIG_INVALID', `${configFile}${site ? `:${site[1]}` : ''}: loading the config threw: ${(e as Error).message}`)
  }
  const def = mod.default as ServableDefinition | undefined
  if (!def || def.kind !== 'ms-serve.servable') {
    throw new ServeError('CONFIG_INVALID', `${configFile}: the default export is not a servable definition. Write \`export default defineServable((s) => { ... })\` with defineServable imported from 'ms-serve'.`)
  }
  return { definition: def, compiledFile }
}

/** Re-imports an already compiled config (replicas do this to get the stage functions). */
export async function importCompiled(compiledFile: string): Promise<ServableDefinition> {
  const mod = await import(pathToFileURL(compiledFile).href)
  return mod.default as ServableDefinition
}

export function relativeSite(site: string): string {
  if (!site) return site
  const r = relative(process.cwd(), site)
  return r.startsWith('..') ? site : r
}
