// Builds src/ into dist/ with esbuild (one ESM bundle per entry, shared chunks so that
// the CLI, the servable API and the replica entry share one copy of each module).
// `--examples` also generates the model files of the bundled example servables.
import { build } from 'esbuild'
import { existsSync, readdirSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const entries = ['src/api.ts', 'src/cli/main.ts']
for (const dir of ['src/runtime', 'src/llm', 'src/bench', 'src/protocol']) {
  if (!existsSync(join(root, dir))) continue
  for (const f of readdirSync(join(root, dir))) if (f.endsWith('-main.ts')) entries.push(`${dir}/${f}`)
}
const t0 = Date.now()
await build({
  absWorkingDir: root,
  entryPoints: entries,
  outdir: 'dist',
  outbase: 'src',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  sourcemap: 'linked',
  logLevel: 'warning',
  chunkNames: 'chunks/[name]-[hash]',
})
if (!process.argv.includes('--quiet')) console.log(`ms-serve: built ${entries.length} entries into dist/ in ${Date.now() - t0} ms`)

if (process.argv.includes('--examples')) {
  for (const name of readdirSync(join(root, 'servables'))) {
    if (!existsSync(join(root, 'templates', name))) continue
    execFileSync(process.execPath, [join(root, 'bin', 'ms-serve.js'), 'init', name, '--dir', join(root, 'servables')], { stdio: 'inherit' })
  }
}
