/** ms-serve's version, read once from its package.json so that no file carries a copy that can go stale. */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { findPackageRoot } from './paths.ts'

/** `version` of package.json: TGI /info `version`, gRPC ServerInfo `server_version`. */
export const VERSION: string = (JSON.parse(readFileSync(join(findPackageRoot(), 'package.json'), 'utf8')) as { version: string }).version
