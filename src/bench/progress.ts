/**
 * Progress on stderr (stdout stays for the report): a cli-progress bar per level on a terminal,
 * otherwise one line per finished level so CI logs still show what happened.
 */
import cliProgress from 'cli-progress'
import type { TickInfo } from './load.ts'

export interface Progress {
  startLevel(label: string, totalMs: number): void
  tick(t: TickInfo, unit: string): void
  endLevel(summary: string): void
  log(line: string): void
  stop(): void
}

const fmt = (x: number) => (x >= 100 ? Math.round(x).toString() : x.toFixed(1))

export function createProgress(enabled: boolean, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!enabled) return { startLevel() {}, tick() {}, endLevel() {}, log() {}, stop() {} }
  if (!stream.isTTY) {
    return {
      startLevel() {},
      tick() {},
      endLevel: (s) => stream.write(`ms-serve bench: ${s}\n`),
      log: (l) => stream.write(`ms-serve bench: ${l}\n`),
      stop() {},
    }
  }
  let bar: cliProgress.SingleBar | null = null
  let label = ''
  return {
    startLevel(l, totalMs) {
      label = l
      bar = new cliProgress.SingleBar({
        stream,
        format: '{label} [{bar}] {phase} {secs}s | {rate} | mean {lat} ms | windows {windows}',
        barsize: 24,
        hideCursor: true,
        clearOnComplete: true,
        fps: 5,
      }, cliProgress.Presets.shades_classic)
      bar.start(Math.max(1, Math.round(totalMs)), 0, { label: l.padEnd(10), phase: 'warm-up', secs: '0.0', rate: '-', lat: '-', windows: 0 })
    },
    tick(t, unit) {
      bar?.update(Math.min(Math.round(t.elapsedMs), Math.round(t.totalMs)), {
        label: label.padEnd(10),
        phase: t.phase === 'warmup' ? 'warm-up' : 'measure',
        secs: (t.elapsedMs / 1000).toFixed(1),
        rate: t.lastWindow ? `${fmt(t.lastWindow.throughput)} ${unit}` : '-',
        lat: t.lastWindow ? t.lastWindow.meanLatencyMs.toFixed(2) : '-',
        windows: t.windows,
      })
    },
    endLevel(s) {
      bar?.stop()
      bar = null
      stream.write(`${s}\n`)
    },
    log(l) {
      if (bar) bar.stop()
      stream.write(`${l}\n`)
    },
    stop() {
      bar?.stop()
      bar = null
    },
  }
}
