// Builds src/ into dist/ with esbuild (one ESM bundle per entry, shared chunks so that
// the CLI, the servable API and the replica entry share one copy of each module).
// `--types` also writes dist/api.d.ts, the public API's declarations as one self-contained file
// (package.json `types`). `--examples` also generates the model files of the bundled example servables.
import { build } from 'esbuild'
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const entries = ['src/api.ts', 'src/cli/main.ts', 'src/client/index.ts']
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
// The web console (/console): a browser bundle (Preact + uPlot) and its stylesheet; served from
// dist/console by protocol/rest/console.ts, nothing fetched from elsewhere at run time.
await build({
  absWorkingDir: root,
  entryPoints: ['src/console/app.ts', 'src/console/app.css'],
  outdir: 'dist/console',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome110', 'firefox110', 'safari16'],
  minify: true,
  sourcemap: 'linked',
  logLevel: 'warning',
})
if (!process.argv.includes('--quiet')) console.log(`ms-serve: built ${entries.length} entries into dist/ in ${Date.now() - t0} ms`)

if (process.argv.includes('--types')) {
  const t1 = Date.now()
  // One bundled .d.ts rather than tsc's per-file output: src/ imports with `.ts` extensions and
  // reaches internals whose dependencies' typings do not check under a consumer's NodeNext config
  // without skipLibCheck. Bundling keeps only what api.ts exports and what those types mention;
  // grpc-js's status enum is inlined so that the file imports nothing.
  const { generateDtsBundle } = (await import('dts-bundle-generator')).default
  const [dts, clientDts] = generateDtsBundle(['api.ts', join('client', 'index.ts')].map((f) => ({
    filePath: join(root, 'src', f),
    libraries: { inlinedLibraries: ['@grpc/grpc-js'] },
    output: { noBanner: true, exportReferencedTypes: false },
  })), { preferredConfigPath: join(root, 'tsconfig.build.json') })
  writeFileSync(join(root, 'dist', 'api.d.ts'), `// ms-serve's public API (generated from src/api.ts by scripts/build.mjs --types).\n${dts}`)
  // `ms-serve/client` (package.json exports): the client library's declarations, one file too.
  writeFileSync(join(root, 'dist', 'client.d.ts'), `// ms-serve/client (generated from src/client/index.ts by scripts/build.mjs --types).\n${clientDts}`)
  if (!process.argv.includes('--quiet')) console.log(`ms-serve: wrote dist/api.d.ts in ${Date.now() - t1} ms`)
}

if (process.argv.includes('--examples')) {
  for (const name of readdirSync(join(root, 'servables'))) {
    if (!existsSync(join(root, 'templates', name))) continue
    execFileSync(process.execPath, [join(root, 'bin', 'ms-serve.js'), 'init', name, '--dir', join(root, 'servables')], { stdio: 'inherit' })
  }
}
