/**
 * Watches a servable directory (chokidar) and reports which servables changed, debounced so that
 * a model copy or an editor's save arrives as one change. Editor swap and temp files are ignored,
 * and a file counts only once its size has been stable (awaitWriteFinish), so half-written model
 * files are not loaded.
 */
import { watch, type FSWatcher } from 'chokidar'
import { relative, resolve, sep } from 'node:path'

const IGNORED = /(^|[/\\])(\.[^/\\]*|[^/\\]*~|[^/\\]*\.(swp|swx|tmp|part|crdownload))$/

export interface ServableWatcher {
  /** Resolves once the initial scan is done: changes after this are reported. */
  ready: Promise<void>
  close(): Promise<void>
}

/** Calls `onChange(names)` with the servable names whose folders changed, at most once per `debounceMs`. */
export function watchServables(dir: string, onChange: (names: Set<string>) => void, debounceMs = 300): ServableWatcher {
  const root = resolve(dir)
  const pending = new Set<string>()
  let timer: NodeJS.Timeout | null = null
  const watcher: FSWatcher = watch(root, {
    ignoreInitial: true,
    depth: 3,
    ignored: (p: string) => IGNORED.test(relative(root, p)),
    awaitWriteFinish: { stabilityThreshold: 200, pollInterval: 50 },
  })
  const touch = (path: string) => {
    const rel = relative(root, path)
    const name = rel.split(sep)[0]
    if (!name || name.startsWith('..')) return
    pending.add(name)
    if (timer) clearTimeout(timer)
    timer = setTimeout(() => {
      timer = null
      const names = new Set(pending)
      pending.clear()
      onChange(names)
    }, debounceMs)
  }
  watcher.on('all', (_event, path) => touch(path))
  const ready = new Promise<void>((r) => watcher.once('ready', () => r()))
  return {
    ready,
    async close() {
      if (timer) clearTimeout(timer)
      await watcher.close()
    },
  }
}
