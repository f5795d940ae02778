/** Where ms-serve's own files are (templates/, proto/, bin/), wherever the code runs from. */
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The package root is the nearest ancestor holding package.json and proto/: this file may run
 * from src/ (tsx), from a dist/ chunk (esbuild) or from an installed package.
 */
export function findPackageRoot(start: string = dirname(fileURLToPath(import.meta.url))): string {
  let dir = start
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'proto', 'ms_service.proto'))) return dir
    const up = dirname(dir)
    if (up === dir) throw new Error(`ms-serve: cannot find the package root (package.json + proto/ms_service.proto) above ${start}`)
    dir = up
  }
}

