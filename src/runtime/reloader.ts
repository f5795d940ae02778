/**
 * Hot reload of a servable directory: build -> validate -> start new replicas -> swap the registry
 * entry -> drain and stop the old ones. If any step fails, the old version keeps serving and the
 * error is logged. Reloads run one at a time, in the order the watcher reports them.
 */
import type { EventLog } from '../log.ts'
import { join, resolve } from 'node:path'
import { findConfigFile, listVersions, loadServable } from '../config/scan.ts'
import type { ValidServable } from '../config/validate.ts'
import type { LiveServable } from './live-servable.ts'
import type { ServableRegistry } from './registry.ts'

export interface ReloaderOptions {
  /** The versions of servable `name` to serve as its files are now; null when its folder or config is gone. */
  load(name: string): Promise<ValidServable[] | null>
  /** Builds (does not start) the LiveServable of one loaded version. */
  create(valid: ValidServable): LiveServable
  log: EventLog
}

/** ReloaderOptions.load for a servable directory on disk (compiles servable_config.ts with esbuild). */
export function diskLoader(root: string, versions: Record<string, number[] | 'all'>): ReloaderOptions['load'] {
  return async (name) => {
    const dir = join(resolve(root), name)
    const configFile = findConfigFile(dir)
    if (!configFile) return null
    return loadServable({ name, dir, configFile, versions: listVersions(dir) }, versions[name])
  }
}

export class Reloader {
  private chain: Promise<void> = Promise.resolve()
  private retiring = new Set<Promise<void>>()

  constructor(private readonly registry: ServableRegistry, private readonly opts: ReloaderOptions) {}

  /** Queues a reload of `names`; resolves when it (and every earlier one) is applied. */
  reload(names: Iterable<string>): Promise<void> {
    const list = [...names]
    this.chain = this.chain.then(async () => { for (const n of list) await this.reloadOne(n) })
    return this.chain
  }

  /** Waits for queued reloads and for retired versions to finish draining. */
  async settle(): Promise<void> {
    await this.chain
    await Promise.all(this.retiring)
  }

  private retire(old: LiveServable): void {
    const p = old.drain().then(() => old.stop()).then(() => {
      // Its series go from /metrics, unless a reload of the same version number serves on.
      if (!this.registry.all().some((s) => s.name === old.name && s.version === old.version)) return old.metrics.forget(old.name, old.version)
    }).finally(() => this.retiring.delete(p))
    this.retiring.add(p)
  }

  private async reloadOne(name: string): Promise<void> {
    const { log } = this.opts
    const running = this.registry.all().filter((s) => s.name === name)
    let loaded: ValidServable[] | null
    try {
      loaded = await this.opts.load(name)
    } catch (e) {
      this.failed(name, running, e)
      return
    }
    if (!loaded) {
      for (const s of running) {
        this.registry.remove(name, s.version)
        this.retire(s)
      }
      if (running.length) log(`servable ${name} removed (its folder or servable_config.ts is gone)`, { event: 'servable_removed', servable: name })
      return
    }
    const fresh: LiveServable[] = []
    try {
      for (const valid of loaded) fresh.push(this.opts.create(valid))
      const wanted = fresh.map((f) => f.version)
      const t0 = performance.now()
      await Promise.all(fresh.map((f) => f.start()))
      for (const f of fresh) {
        const old = this.registry.swap(f)
        if (old) this.retire(old)
      }
      for (const s of running) {
        if (wanted.includes(s.version)) continue
        this.registry.remove(name, s.version)
        this.retire(s)
      }
      log(`servable ${name} reloaded: version(s) ${wanted.join(', ')} ready in ${Math.round(performance.now() - t0)} ms`, { event: 'servable_reloaded', servable: name, versions: wanted, ms: Math.round(performance.now() - t0) })
    } catch (e) {
      await Promise.all(fresh.map((f) => f.stop(true)))
      this.failed(name, running, e)
    }
  }

  /** A reload that failed: the running versions keep serving; with none, the servable is reported failed. */
  private failed(name: string, running: LiveServable[], e: unknown): void {
    if (running.length === 0) this.registry.markFailed(name, (e as Error).message)
    this.opts.log(`ms-serve: reload of servable ${name} failed; ${running.length ? `still serving version(s) ${running.map((s) => s.version).join(', ')}` : 'it is not served'}: ${(e as Error).message}`, { event: 'reload_failed', severity: 'error', servable: name, serving: running.map((s) => s.version), error: (e as Error).message })
  }
}
