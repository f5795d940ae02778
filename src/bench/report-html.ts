/**
 * `--html`: one self-contained file (inline CSS and SVG, no scripts) that opens in any browser:
 * latency against throughput over the levels, executed batch sizes per level, the raw baseline,
 * and the same tables as the text report.
 */
import { renderTextReport } from './report-text.ts'
import { barChart, esc, lineChart, type Series } from './svg.ts'
import type { BenchReport } from './types.ts'

const COLORS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f']

export function renderHtmlReport(r: BenchReport): string {
  const gen = r.levels.some((l) => l.generate)
  const charts: string[] = []
  if (r.levels.length) {
    const xOf = (l: (typeof r.levels)[number]) => (gen ? l.generate!.outputTokensPerSec : l.itemsPerSec)
    const series: Series[] = gen
      ? [
          { name: 'TTFT p50', color: COLORS[0]!, points: r.levels.map((l) => ({ x: xOf(l), y: l.generate!.ttftMs.p50, label: l.label })) },
          { name: 'TTFT p99', color: COLORS[1]!, points: r.levels.map((l) => ({ x: xOf(l), y: l.generate!.ttftMs.p99, label: l.label })) },
          { name: 'TPOT p50', color: COLORS[2]!, points: r.levels.map((l) => ({ x: xOf(l), y: l.generate!.tpotMs.p50, label: l.label })) },
          { name: 'ITL p99', color: COLORS[3]!, points: r.levels.map((l) => ({ x: xOf(l), y: l.generate!.itlMs.p99, label: l.label })) },
        ]
      : [
          { name: 'p50', color: COLORS[0]!, points: r.levels.map((l) => ({ x: xOf(l), y: l.latencyMs.p50, label: l.label })) },
          { name: 'p95', color: COLORS[1]!, points: r.levels.map((l) => ({ x: xOf(l), y: l.latencyMs.p95, label: l.label })) },
          { name: 'p99', color: COLORS[2]!, points: r.levels.map((l) => ({ x: xOf(l), y: l.latencyMs.p99, label: l.label })) },
        ]
    charts.push(lineChart({ title: 'Latency vs throughput (one point per level)', xLabel: gen ? 'output tokens/s' : 'items/s', yLabel: 'latency (ms)', series }))
  }
  const hist = r.levels.filter((l) => l.server && Object.keys(l.server.batchSizes).length)
  const histCharts = hist.map((l) => barChart({
    title: `Executed batch sizes, ${l.label} (avg ${l.server!.avgBatchSize.toFixed(1)})`,
    xLabel: 'batch size',
    yLabel: 'executions',
    bars: Object.entries(l.server!.batchSizes).sort((a, b) => Number(a[0]) - Number(b[0])).map(([k, v]) => ({ label: k, value: v })),
    width: 360,
    height: 220,
  }))
  if (r.baseline?.rows.length) {
    const best = r.levels.reduce((a, l) => Math.max(a, gen ? l.generate?.outputTokensPerSec ?? 0 : l.itemsPerSec), 0)
    charts.push(barChart({
      title: `Raw baseline (${r.baseline.kind}) by batch size`,
      xLabel: 'batch size',
      yLabel: gen ? 'tokens/s' : 'items/s',
      bars: r.baseline.rows.map((x) => ({ label: String(x.batch), value: Math.round(x.itemsPerSec) })),
      color: '#59a14f',
      refLine: { value: best, label: `ms-serve best ${Math.round(best)}/s` },
      width: 520,
    }))
  }
  const t = r.target
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ms-serve bench: ${esc(t.servable)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
pre{background:#f6f6f6;padding:12px;overflow-x:auto;font-size:12px;line-height:1.35}
.grid{display:flex;flex-wrap:wrap;gap:12px}.muted{color:#666;font-size:13px}
svg{max-width:100%;height:auto}
</style></head><body>
<h1>ms-serve bench: ${esc(t.servable)}${t.method ? `:${esc(t.method)}` : ''}</h1>
<p class="muted">${esc(t.protocol === 'generate' ? `${t.route} stream` : t.protocol.toUpperCase())} at ${esc(t.address)} &middot; ${esc(r.startedAt)} &middot;
${r.machine.cpus} &times; ${esc(r.machine.cpuModel)}, node ${esc(r.machine.node)} &middot; the load generator shares these cores with the server</p>
<div class="grid">${charts.join('\n')}</div>
${histCharts.length ? `<h2>Executed batch sizes (server /stats)</h2><div class="grid">${histCharts.join('\n')}</div>` : ''}
<h2>Results</h2>
<pre>${esc(renderTextReport(r))}</pre>
<h2>Raw JSON</h2>
<details><summary>show</summary><pre>${esc(JSON.stringify(r, null, 2))}</pre></details>
</body></html>
`
}
