/**
 * Hot reload of a servable directory: build -> validate -> start new replicas -> swap the registry
 * entry -> drain and stop the old ones. If any step fails, the old version keeps serving and the
 * error is logged. Reloads run one at a time, in the order the watcher reports them.
 */
import { join, resolve } from 'node:path'
import { findConfigFile, listVersions, loadServable } from '../config/scan.ts'
import { withIsolation, type DevicePlan, type Isolation } from './devices.ts'
import { LiveServable } from './live-servable.ts'
import type { ServableRegistry } from './registry.ts'
import type { ServingPolicy } from './policy.ts'

export interface ReloaderOptions {
  dir: string
  plans: DevicePlan[]
  /** Per-servable isolation overrides (server YAML). */
  isolationOf: Record<string, Isolation>
  versions: Record<string, number[] | 'all'>
  policyOf: (name: string) => ServingPolicy
  log: (line: string) => void
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
    const p = old.drain().then(() => old.stop()).finally(() => this.retiring.delete(p))
    this.retiring.add(p)
  }

  private async reloadOne(name: string): Promise<void> {
    const { log } = this.opts
    const dir = join(resolve(this.opts.dir), name)
    const running = this.registry.all().filter((s) => s.name === name)
    const configFile = findConfigFile(dir)
    if (!configFile) {
      for (const s of running) {
        this.registry.remove(name, s.version)
        this.retire(s)
      }
      if (running.length) log(`servable ${name} removed (its folder or servable_config.ts is gone)`)
      return
    }
    const fresh: LiveServable[] = []
    try {
      for (const valid of await loadServable({ name, dir, configFile, versions: listVersions(dir) }, this.opts.versions[name])) {
        fresh.push(new LiveServable(valid, withIsolation(this.opts.plans, this.opts.isolationOf[name]), this.opts.policyOf(name)))
      }
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
      log(`servable ${name} reloaded: version(s) ${wanted.join(', ')} ready in ${Math.round(performance.now() - t0)} ms`)
    } catch (e) {
      await Promise.all(fresh.map((f) => f.stop(true)))
      if (running.length === 0) this.registry.markFailed(name, (e as Error).message)
      log(`ms-serve: reload of servable ${name} failed; ${running.length ? `still serving version(s) ${running.map((s) => s.version).join(', ')}` : 'it is not served'}: ${(e as Error).message}`)
    }
  }
}
