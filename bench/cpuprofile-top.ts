/**
 * Summarises V8 .cpuprofile files (from `node --cpu-prof`): self time by function and by
 * package/area, so "where does the time go" has a short answer.
 *
 *   node --import tsx bench/cpuprofile-top.ts bench/results/prof-add/*.cpuprofile [--top 25]
 */
import { readFileSync } from 'node:fs'

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: number[] }
interface Profile { nodes: Node[]; startTime: number; endTime: number; samples?: number[]; timeDeltas?: number[] }

const args = process.argv.slice(2)
const topIdx = args.indexOf('--top')
const top = topIdx >= 0 ? Number(args[topIdx + 1]) : 25
const files = args.filter((a, i) => !a.startsWith('--') && (topIdx < 0 || i !== topIdx + 1))

/** Buckets a frame into an area: our src/ folder, a package, node internals, or native/GC. */
function area(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)'
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1]
  if (pkg) return pkg
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`
  const ours = /\/(src|dist)\/(.*)$/.exec(url)?.[2]
  if (ours) return `ms-serve ${ours.replace(/\.(ts|js)$/, '')}`
  return url.split('/').slice(-2).join('/')
}

for (const file of files) {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  const samples = p.samples ?? []
  const deltas = p.timeDeltas ?? []
  for (let i = 0; i < samples.length; i++) self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + (deltas[i] ?? 0))
  const total = [...self.values()].reduce((a, b) => a + b, 0)
  const fnTime = new Map<string, number>()
  const areaTime = new Map<string, number>()
  for (const [id, us] of self) {
    const n = byId.get(id)!
    const cf = n.callFrame
    const key = `${cf.functionName || '(anonymous)'} ${cf.url ? `${cf.url.split('/').slice(-2).join('/')}:${cf.lineNumber + 1}` : ''}`
    fnTime.set(key, (fnTime.get(key) ?? 0) + us)
    const a = area(cf.url, cf.functionName)
    areaTime.set(a, (areaTime.get(a) ?? 0) + us)
  }
  const idle = fnTime.get('(idle) ') ?? 0
  fnTime.delete('(idle) ')
  areaTime.delete('(idle)')
  const busy = total - idle
  const show = (m: Map<string, number>, n: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([k, v]) => `  ${((v / Math.max(1, busy)) * 100).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(7)} ms  ${k}`).join('\n')
  process.stdout.write(`\n${file}\n  wall ${((p.endTime - p.startTime) / 1e6).toFixed(1)} s, busy ${(busy / 1e6).toFixed(2)} s (${((busy / Math.max(1, total)) * 100).toFixed(0)}% of samples); shares below are of busy time\n`)
  process.stdout.write(`by area:\n${show(areaTime, 15)}\nby function (self):\n${show(fnTime, top)}\n`)
}
