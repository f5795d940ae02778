/** Minimal inline-SVG charts for the HTML report (no scripts, no external assets). */

export interface Point { x: number; y: number; label?: string }
export interface Series { name: string; color: string; points: Point[] }

export const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** About `n` round tick values covering [0, max]. */
export function niceTicks(max: number, n = 5): number[] {
  if (!(max > 0)) return [0, 1]
  const raw = max / n
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag
  const out: number[] = []
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)))
  if (out[out.length - 1]! < max) out.push(Number((out[out.length - 1]! + step).toPrecision(12)))
  return out
}

const tickText = (v: number) => (v >= 10_000 ? `${v / 1000}k` : String(v))

interface Frame { w: number; h: number; left: number; right: number; top: number; bottom: number }

function axes(f: Frame, xTicks: number[], yTicks: number[], sx: (v: number) => number, sy: (v: number) => number, xLabel: string, yLabel: string): string {
  const parts: string[] = []
  for (const t of yTicks) parts.push(`<line x1="${f.left}" x2="${f.w - f.right}" y1="${sy(t)}" y2="${sy(t)}" stroke="#e5e5e5"/><text x="${f.left - 6}" y="${sy(t) + 4}" text-anchor="end">${tickText(t)}</text>`)
  for (const t of xTicks) parts.push(`<text x="${sx(t)}" y="${f.h - f.bottom + 16}" text-anchor="middle">${tickText(t)}</text>`)
  parts.push(`<line x1="${f.left}" x2="${f.w - f.right}" y1="${f.h - f.bottom}" y2="${f.h - f.bottom}" stroke="#333"/>`)
  parts.push(`<line x1="${f.left}" x2="${f.left}" y1="${f.top}" y2="${f.h - f.bottom}" stroke="#333"/>`)
  parts.push(`<text x="${(f.left + f.w - f.right) / 2}" y="${f.h - 6}" text-anchor="middle">${esc(xLabel)}</text>`)
  parts.push(`<text transform="translate(14 ${(f.top + f.h - f.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`)
  return parts.join('')
}

/** Lines with labelled markers, e.g. latency (y) against throughput (x), one point per level. */
export function lineChart(o: { title: string; xLabel: string; yLabel: string; series: Series[]; width?: number; height?: number }): string {
  const f: Frame = { w: o.width ?? 640, h: o.height ?? 360, left: 60, right: 120, top: 30, bottom: 44 }
  const pts = o.series.flatMap((s) => s.points)
  const xTicks = niceTicks(Math.max(...pts.map((p) => p.x), 0))
  const yTicks = niceTicks(Math.max(...pts.map((p) => p.y), 0))
  const sx = (v: number) => f.left + (v / xTicks[xTicks.length - 1]!) * (f.w - f.left - f.right)
  const sy = (v: number) => f.h - f.bottom - (v / yTicks[yTicks.length - 1]!) * (f.h - f.top - f.bottom)
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${f.w}" height="${f.h}" viewBox="0 0 ${f.w} ${f.h}" font-family="sans-serif" font-size="11">`,
    `<text x="${f.left}" y="18" font-size="13" font-weight="bold">${esc(o.title)}</text>`, axes(f, xTicks, yTicks, sx, sy, o.xLabel, o.yLabel)]
  o.series.forEach((s, i) => {
    const sorted = [...s.points].sort((a, b) => a.x - b.x)
    if (sorted.length > 1) parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${sorted.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ')}"/>`)
    for (const p of s.points) {
      parts.push(`<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="3.5" fill="${s.color}"><title>${esc(`${s.name} ${p.label ?? ''}: ${p.y.toFixed(3)} at ${p.x.toFixed(1)}`)}</title></circle>`)
      if (p.label && i === o.series.length - 1) parts.push(`<text x="${(sx(p.x) + 5).toFixed(1)}" y="${(sy(p.y) - 6).toFixed(1)}" fill="#555">${esc(p.label)}</text>`)
    }
    const ly = f.top + 14 + i * 16
    parts.push(`<rect x="${f.w - f.right + 12}" y="${ly - 9}" width="12" height="3" fill="${s.color}"/><text x="${f.w - f.right + 28}" y="${ly - 4}">${esc(s.name)}</text>`)
  })
  parts.push('</svg>')
  return parts.join('')
}

/** Vertical bars over categories, with an optional horizontal reference line. */
export function barChart(o: { title: string; xLabel: string; yLabel: string; bars: Array<{ label: string; value: number }>; color?: string; refLine?: { value: number; label: string }; width?: number; height?: number }): string {
  const f: Frame = { w: o.width ?? 420, h: o.height ?? 240, left: 60, right: 16, top: 30, bottom: 44 }
  const yTicks = niceTicks(Math.max(...o.bars.map((b) => b.value), o.refLine?.value ?? 0, 0))
  const top = yTicks[yTicks.length - 1]!
  const n = Math.max(1, o.bars.length)
  const slot = (f.w - f.left - f.right) / n
  const sy = (v: number) => f.h - f.bottom - (v / top) * (f.h - f.top - f.bottom)
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${f.w}" height="${f.h}" viewBox="0 0 ${f.w} ${f.h}" font-family="sans-serif" font-size="11">`,
    `<text x="${f.left}" y="18" font-size="13" font-weight="bold">${esc(o.title)}</text>`]
  parts.push(axes(f, [], yTicks, () => 0, sy, o.xLabel, o.yLabel))
  o.bars.forEach((b, i) => {
    const x = f.left + i * slot + slot * 0.15
    const y = sy(b.value)
    parts.push(`<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(slot * 0.7).toFixed(1)}" height="${(f.h - f.bottom - y).toFixed(1)}" fill="${o.color ?? '#4e79a7'}"><title>${esc(`${b.label}: ${b.value}`)}</title></rect>`)
    parts.push(`<text x="${(x + slot * 0.35).toFixed(1)}" y="${f.h - f.bottom + 14}" text-anchor="middle">${esc(b.label)}</text>`)
  })
  if (o.refLine) {
    const y = sy(o.refLine.value).toFixed(1)
    parts.push(`<line x1="${f.left}" x2="${f.w - f.right}" y1="${y}" y2="${y}" stroke="#e15759" stroke-dasharray="5 3" stroke-width="1.5"/><text x="${f.w - f.right - 4}" y="${Number(y) - 4}" text-anchor="end" fill="#e15759">${esc(o.refLine.label)}</text>`)
  }
  parts.push('</svg>')
  return parts.join('')
}
