#!/usr/bin/env node
// Shim: make sure dist/ is built (a fresh clone after `npm ci --ignore-scripts` has none), then run the CLI.
import { existsSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { dirname, join } from 'node:path'
import { execFileSync } from 'node:child_process'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const main = join(root, 'dist', 'cli', 'main.js')
if (!existsSync(main)) {
  execFileSync(process.execPath, [join(root, 'scripts', 'build.mjs')], { stdio: 'inherit' })
}
await import(pathToFileURL(main).href)
