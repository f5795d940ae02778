/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The web console (`/console`), bundled for the browser by scripts/build.mjs into dist/console/.
 * It reads only public routes: `/console/stream` (the runtime's stats snapshot and the servables'
 * description, once a second, as server-sent events), `/servables`, MindSpore predict and OpenAI
 * chat. With an API key on the server it asks for the key and sends it as a Bearer token.
 */
import { h, render, type ComponentChildren } from 'preact'
import { useEffect, useRef, useState } from 'preact/hooks'
import uPlot from 'uplot'
import { SseParser } from '../client/sse.ts'
import { renderHtmlReport } from '../bench/report-html.ts'
import { BenchReportError, parseBenchReport } from '../bench/report-check.ts'

type Any = any // the server's JSON, read defensively

const KEY = 'ms-serve-api-key'
const auth = (): Record<string, string> => { const k = sessionStorage.getItem(KEY); return k ? { authorization: `Bearer ${k}` } : {} }

class NeedKey extends Error {}

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  const res = await fetch(path, { ...init, headers: { ...auth(), ...(init.headers as Record<string, string> | undefined) } })
  if (res.status === 401) throw new NeedKey('the server needs an API key')
  return res
}

/** Reads an SSE body (the client library's parser), calling `on` with each event's data. */
async function readSse(res: Response, on: (data: string) => void, signal?: AbortSignal): Promise<void> {
  const reader = res.body!.getReader()
  const dec = new TextDecoder()
  const parser = new SseParser()
  while (!signal?.aborted) {
    const { done, value } = await reader.read()
    if (done) break
    for (const data of parser.push(dec.decode(value, { stream: true }))) on(data)
  }
  for (const data of parser.end()) on(data)
}

interface Sample { t: number; snapshot: Any; servables: Any; outcomes?: Record<string, Record<string, number>>; latency?: Record<string, Record<string, { le: (number | null)[]; counts: number[] }>> }

/** The q-quantile (ms) of the observations between two cumulative histograms, interpolated in its bucket; null when none. */
function quantileMs(a: { le: (number | null)[]; counts: number[] } | undefined, b: { le: (number | null)[]; counts: number[] } | undefined, q: number): number | null {
  if (!b) return null
  const d = b.counts.map((c, i) => c - (a?.counts[i] ?? 0))
  const total = d[d.length - 1] ?? 0
  if (total <= 0) return null
  const want = q * total
  for (let i = 0; i < d.length; i++) {
    if (d[i]! < want) continue
    const hi = b.le[i] ?? b.le[i - 1] ?? 0
    const lo = i > 0 ? (b.le[i - 1] ?? 0) : 0
    const below = i > 0 ? d[i - 1]! : 0
    const frac = d[i]! - below > 0 ? (want - below) / (d[i]! - below) : 1
    return (lo + (hi! - lo) * frac) * 1000
  }
  return null
}

/** Percentiles over the last (up to) 10 samples, per servable. */
function percentiles(history: Sample[]): Record<string, Record<string, number>> {
  const cur = history[history.length - 1]
  const old = history[Math.max(0, history.length - 11)]
  const out: Record<string, Record<string, number>> = {}
  for (const [name, hs] of Object.entries(cur?.latency ?? {})) {
    for (const [k, h] of Object.entries(hs)) {
      for (const [label, q] of [['p50', 0.5], ['p99', 0.99]] as const) {
        const v = quantileMs(old?.latency?.[name]?.[k], h, q)
        if (v !== null) (out[name] ??= {})[`${k} ${label} ms`] = v
      }
    }
  }
  return out
}

const sig = (t: Any) => `${t.name}: ${t.dtype ?? '?'}${t.shape ? `[${t.shape.join(',')}]` : ''}`

function Overview({ s }: { s: Sample | null }) {
  if (!s) return h('p', null, 'waiting for the first snapshot...')
  const snap = new Map<string, Any>((s.snapshot.servables as Any[]).map((x) => [`${x.name}@${x.version}`, x]))
  return h('div', { id: 'overview' },
    (s.servables.servables as Any[]).map((sv) => h('section', { class: 'servable', 'data-name': sv.name, key: sv.name },
      h('h3', null, `${sv.name} `, h('span', { class: sv.ready ? 'ok' : 'bad' }, sv.ready ? 'ready' : 'not ready'), ` (${sv.kind})`),
      (sv.versions as Any[]).map((v) => h('div', { key: v.version },
        h('h4', null, `version ${v.version}`),
        h('ul', { class: 'methods' }, (v.methods as Any[]).map((m) => h('li', { key: m.name, class: 'method' },
          h('code', null, `${m.name}(${m.inputs.map(sig).join(', ')}) -> (${m.outputs.map(sig).join(', ')})`),
          m.batched ? ` batched, up to ${m.maxBatchSize} per run` : ''))),
        // Scrolls sideways on a narrow screen (focusable, so the keyboard can scroll it too).
        h('div', { class: 'table-scroll', tabIndex: 0, role: 'region', 'aria-label': `${sv.name} version ${v.version} replicas` }, h('table', { class: 'replicas' },
          h('thead', null, h('tr', null, ['device', 'isolation', 'pid', 'state', 'in flight'].map((c) => h('th', { key: c }, c)))),
          h('tbody', null, (v.replicas as Any[]).map((r, i) => {
            const st = snap.get(`${sv.name}@${v.version}`)?.replicas?.[i]
            return h('tr', { key: i }, h('td', null, r.device), h('td', null, r.isolation), h('td', null, r.pid), h('td', null, r.state), h('td', null, st?.inflightInstances ?? ''))
          })))),
        snap.get(`${sv.name}@${v.version}`) ? h('p', null, `restarts: ${snap.get(`${sv.name}@${v.version}`).restarts}`) : null,
      )),
    )),
    (s.servables.unavailable as Any[]).map((u) => h('section', { class: 'servable failed', 'data-name': u.name, key: u.name },
      h('h3', null, `${u.name} `, h('span', { class: 'bad' }, 'failed to load')),
      h('pre', { class: 'error' }, u.error))),
  )
}

/** Per servable: requests/s, errors/s, queue depth, average batch; per LLM: tokens/s, running. */
function rates(prev: Sample, cur: Sample): Record<string, Record<string, number>> {
  const dt = Math.max(0.001, (cur.t - prev.t) / 1000)
  const out: Record<string, Record<string, number>> = {}
  const sum = (sv: Any, k: string) => Object.values(sv.methods as Record<string, Any>).reduce((a: number, m: Any) => a + (m[k] ?? 0), 0)
  for (const sv of cur.snapshot.servables as Any[]) {
    const before = (prev.snapshot.servables as Any[]).find((x) => x.name === sv.name && x.version === sv.version)
    const req = sum(sv, 'requests') - (before ? sum(before, 'requests') : 0)
    const inst = sum(sv, 'instances') - (before ? sum(before, 'instances') : 0)
    const batches = sum(sv, 'batches') - (before ? sum(before, 'batches') : 0)
    out[sv.name] = { requestsPerSec: req / dt, errorsPerSec: (sum(sv, 'errors') - (before ? sum(before, 'errors') : 0)) / dt, queued: sum(sv, 'queued'), avgBatch: batches ? inst / batches : 0 }
  }
  for (const l of cur.snapshot.llms as Any[]) {
    const before = (prev.snapshot.llms as Any[]).find((x) => x.name === l.name)
    const tok = (x: Any) => (x?.replicas ?? []).reduce((a: number, r: Any) => a + Number(r.engine?.generatedTokens ?? 0), 0)
    const running = (l.replicas as Any[]).reduce((a: number, r: Any) => a + Number(r.engine?.running ?? 0), 0)
    const kv = (l.replicas as Any[]).reduce((a: number, r: Any) => a + Number(r.engine?.kvBytes ?? 0), 0)
    out[l.name] = { ...(out[l.name] ?? {}), tokensPerSec: (tok(l) - tok(before)) / dt, running, kvMiB: kv / 2 ** 20 }
  }
  return out
}

function Chart({ name, series }: { name: string; series: { t: number[]; y: number[]; label: string } }) {
  const el = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | null>(null)
  useEffect(() => {
    if (!el.current) return
    plot.current = new uPlot({ width: Math.min(560, el.current.clientWidth || 560), height: 160, title: `${name}: ${series.label}`, series: [{}, { label: series.label, stroke: '#2a6fdb' }], axes: [{}, {}] }, [[], []], el.current)
    return () => plot.current?.destroy()
  }, [name, series.label])
  useEffect(() => { plot.current?.setData([series.t, series.y]) }, [series.t.length, series.t[series.t.length - 1]])
  return h('div', { ref: el, class: 'chart', 'data-points': series.t.length, 'data-last': series.y[series.y.length - 1] ?? 0, 'aria-label': `${name} ${series.label} chart` })
}

/** Failed requests by kind (outcome code) over the last (up to) 10 samples. */
function errorKinds(history: Sample[], name: string) {
  const cur = history[history.length - 1]?.outcomes?.[name] ?? {}
  const old = history[Math.max(0, history.length - 11)]?.outcomes?.[name] ?? {}
  const kinds = Object.entries(cur).map(([k, v]) => [k, v - (old[k] ?? 0)] as const).filter(([k, d]) => k !== 'success' && d > 0)
  if (kinds.length === 0) return null
  return h('p', { class: 'bad errors' }, 'errors (10 s): ', kinds.map(([k, d]) => h('span', { key: k, 'data-error': k, 'data-count': d }, `${k} ${d} `)))
}

/** Executed batch sizes since start, from the snapshot (all methods of the newest version). */
function batchHistogram(s: Sample, name: string) {
  const sv = (s.snapshot.servables as Any[]).filter((x) => x.name === name).pop()
  if (!sv) return null
  const sizes: Record<string, number> = {}
  for (const m of Object.values(sv.methods as Record<string, Any>)) for (const [b, n] of Object.entries(m.batchSizes as Record<string, number>)) sizes[b] = (sizes[b] ?? 0) + n
  const entries = Object.entries(sizes).sort((a, b) => Number(a[0]) - Number(b[0]))
  if (entries.length === 0) return null
  const max = Math.max(...entries.map((e) => e[1]))
  return h('div', { class: 'batches', 'aria-label': `${name} batch sizes` }, h('p', null, 'batch sizes executed'),
    entries.map(([b, n]) => h('div', { key: b, class: 'bar', 'data-batch': b, 'data-count': n },
      h('span', { class: 'bar-label' }, `${b}`), h('span', { class: 'bar-fill', style: `width:${Math.max(2, (n / max) * 300)}px` }), ` ${n}`)))
}

function Metrics({ history }: { history: Sample[] }) {
  if (history.length < 2) return h('p', null, 'collecting samples...')
  const points = history.slice(1).map((s, i) => ({ t: s.t / 1000, r: rates(history[i]!, s) }))
  const last = points[points.length - 1]!.r
  const pct = percentiles(history)
  return h('div', { id: 'metrics' }, Object.entries(last).map(([name, r0]) => {
    const r = { ...r0, ...(pct[name] ?? {}) }
    const key = r0.tokensPerSec !== undefined ? 'tokensPerSec' : 'requestsPerSec'
    return h('section', { class: 'metric', 'data-name': name, key: name },
      h('h3', null, name),
      h('p', { class: 'numbers' }, Object.entries(r).map(([k, v]) => h('span', { key: k, 'data-metric': k, 'data-value': v }, `${k} ${v.toFixed(k === 'running' || k === 'queued' ? 0 : k.endsWith(' ms') ? 2 : 1)} · `))),
      errorKinds(history, name),
      batchHistogram(history[history.length - 1]!, name),
      h(Chart, { name, series: { t: points.map((p) => p.t), y: points.map((p) => p.r[name]?.[key] ?? 0), label: key === 'tokensPerSec' ? 'tokens/s' : 'requests/s' } }))
  }))
}

/** A nested JSON array of zeros (as floats: MindSpore's REST reads `1` as int32 and `1.0` as float32). */
function zeros(shape: number[] | null, dtype: string | null): string {
  const leaf = dtype && /int|bool/.test(dtype) ? '0' : '0.0'
  const build = (d: number): string => (d >= (shape?.length ?? 0) ? leaf : `[${Array.from({ length: Math.max(1, shape![d]! < 0 ? 1 : shape![d]!) }, () => build(d + 1)).join(', ')}]`)
  return shape ? build(0) : '""'
}

function Predict({ s }: { s: Sample | null }) {
  const servables = ((s?.servables.servables ?? []) as Any[]).filter((x) => x.kind === 'model')
  const [name, setName] = useState('')
  const [method, setMethod] = useState('')
  const [values, setValues] = useState<Record<string, string>>({})
  const [reply, setReply] = useState<{ status: number; text: string; ms: number } | null>(null)
  const sv = servables.find((x) => x.name === name) ?? servables[0]
  const version = sv?.versions[sv.versions.length - 1]
  const m = (version?.methods as Any[] | undefined)?.find((x) => x.name === method) ?? version?.methods[0]
  const run = async () => {
    if (!sv || !m) return
    const t0 = performance.now()
    const fields = m.inputs.map((i: Any) => `${JSON.stringify(i.name)}: ${values[`${m.name}.${i.name}`] ?? zeros(i.shape, i.dtype)}`)
    const res = await api(`/model/${encodeURIComponent(sv.name)}:${encodeURIComponent(m.name)}`, { method: 'POST', body: `{"instances":[{${fields.join(', ')}}]}` })
    setReply({ status: res.status, text: await res.text(), ms: performance.now() - t0 })
  }
  const onFile = (input: string) => async (e: Event) => {
    const f = (e.target as HTMLInputElement).files?.[0]
    if (!f) return
    const b = new Uint8Array(await f.arrayBuffer())
    let bin = ''
    for (const x of b) bin += String.fromCharCode(x)
    setValues({ ...values, [input]: JSON.stringify({ b64: btoa(bin) }), [`${input}#preview`]: URL.createObjectURL(f) })
  }
  if (!sv) return h('p', null, 'no tensor servable is loaded')
  return h('div', { id: 'predict' },
    h('label', null, 'servable ', h('select', { id: 'predict-servable', value: sv.name, onChange: (e: Any) => { setName(e.target.value); setMethod('') } }, servables.map((x) => h('option', { key: x.name, value: x.name }, x.name)))),
    h('label', null, ' method ', h('select', { id: 'predict-method', value: m?.name, onChange: (e: Any) => setMethod(e.target.value) }, (version.methods as Any[]).map((x) => h('option', { key: x.name, value: x.name }, x.name)))),
    m && (m.inputs as Any[]).map((i) => {
      const k = `${m.name}.${i.name}`
      return h('div', { class: 'input', key: k },
        h('label', { for: `in-${i.name}` }, sig(i)),
        h('textarea', { id: `in-${i.name}`, rows: 3, value: values[k] ?? zeros(i.shape, i.dtype), onInput: (e: Any) => setValues({ ...values, [k]: e.target.value }) }),
        i.dtype === null || i.dtype === 'bytes' ? h('span', null, ' or a file: ', h('input', { type: 'file', 'aria-label': `file for ${i.name}`, onChange: onFile(k) })) : null,
        values[`${k}#preview`] ? h('img', { src: values[`${k}#preview`], alt: `preview of ${i.name}`, height: 64 }) : null)
    }),
    h('button', { id: 'predict-run', onClick: () => void run() }, 'Run'),
    reply ? h('div', { id: 'predict-reply' }, h('p', null, `HTTP ${reply.status} in ${reply.ms.toFixed(1)} ms`), h('pre', { id: 'predict-output' }, reply.text)) : null,
  )
}

/** One chat parameter field: its state, the request key it fills, and the hint after its name. */
const PARAMS = [
  ['max_tokens', 'chat-max', 'integer'], ['temperature', 'chat-temp', '0 to 2, 0 = greedy'], ['top_p', 'chat-top-p', 'between 0 and 1'], ['top_k', 'chat-top-k', 'integer, -1 = off'],
  ['seed', 'chat-seed', 'integer'], ['frequency_penalty', 'chat-freq', '-2 to 2'], ['presence_penalty', 'chat-pres', '-2 to 2'],
] as const

function Chat({ s }: { s: Sample | null }) {
  const llms = ((s?.servables.servables ?? []) as Any[]).filter((x) => x.kind === 'llm')
  const [model, setModel] = useState('')
  const [system, setSystem] = useState('')
  const [prompt, setPrompt] = useState('Hello')
  const [params, setParams] = useState<Record<string, string>>({ max_tokens: '32', temperature: '0' })
  const [stop, setStop] = useState('')
  const [schema, setSchema] = useState('')
  const [out, setOut] = useState('')
  const [events, setEvents] = useState(0)
  const [busy, setBusy] = useState(false)
  const name = model || llms[0]?.name
  // Empty fields are not sent (the server's defaults apply); a field that is not a number is named.
  const body = () => {
    const messages = [...(system.trim() ? [{ role: 'system', content: system }] : []), { role: 'user', content: prompt }]
    const b: Any = { model: name, messages }
    for (const [k] of PARAMS) {
      const v = (params[k] ?? '').trim()
      if (!v) continue
      const n = Number(v)
      if (!Number.isFinite(n) || ((k === 'max_tokens' || k === 'seed') && !Number.isInteger(n))) throw new Error(`${k} must be ${k === 'max_tokens' || k === 'seed' ? 'an integer' : 'a number'} (got ${JSON.stringify(v)})`)
      b[k] = n
    }
    const stops = stop.split('\n').map((x) => x.replace(/\r$/, '')).filter((x) => x.length > 0)
    if (stops.length) b.stop = stops
    if (schema.trim()) {
      let parsed: unknown
      try { parsed = JSON.parse(schema) } catch { throw new Error('the JSON schema is not valid JSON') }
      b.response_format = { type: 'json_schema', json_schema: { name: 'console', schema: parsed } }
    }
    b.stream = true
    return b
  }
  const send = async () => {
    setOut(''); setEvents(0); setBusy(true)
    try {
      const res = await api('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body()) })
      if (!res.ok) { setOut(await res.text()); return }
      let text = ''
      let n = 0
      await readSse(res, (d) => {
        if (d === '[DONE]') return
        const delta = JSON.parse(d).choices?.[0]?.delta?.content
        if (delta) { text += delta; n++; setOut(text); setEvents(n) }
      })
    } catch (e) {
      setOut(`not sent: ${(e as Error).message}`)
    } finally { setBusy(false) }
  }
  if (!name) return h('p', null, 'no LLM servable is loaded')
  let curl = ''
  // The shell quotes the body in '...': a ' inside it is written as '\''.
  try { curl = `curl -N ${location.origin}/v1/chat/completions -H 'content-type: application/json'${sessionStorage.getItem(KEY) ? ' -H "authorization: Bearer $KEY"' : ''} -d '${JSON.stringify(body()).replace(/'/g, "'\\''")}'` } catch (e) { curl = (e as Error).message }
  return h('div', { id: 'chat' },
    h('label', null, 'model ', h('select', { id: 'chat-model', value: name, onChange: (e: Any) => setModel(e.target.value) }, llms.map((x) => h('option', { key: x.name }, x.name)))),
    h('label', { for: 'chat-system' }, 'system message (optional)'), h('textarea', { id: 'chat-system', rows: 2, value: system, onInput: (e: Any) => setSystem(e.target.value) }),
    h('label', { for: 'chat-prompt' }, 'message'), h('textarea', { id: 'chat-prompt', rows: 3, value: prompt, onInput: (e: Any) => setPrompt(e.target.value) }),
    h('fieldset', { class: 'params' }, h('legend', null, 'parameters (empty = the server default)'),
      PARAMS.map(([k, id, hint]) => h('label', { key: k, for: id }, `${k} `, h('input', { id, size: 6, inputMode: 'decimal', value: params[k] ?? '', title: hint, 'aria-describedby': `${id}-hint`, onInput: (e: Any) => setParams({ ...params, [k]: e.target.value }) }),
        h('span', { id: `${id}-hint`, class: 'hint' }, ` ${hint}`))),
      h('label', { for: 'chat-stop', class: 'wide' }, 'stop (one sequence per line)'), h('textarea', { id: 'chat-stop', rows: 2, value: stop, onInput: (e: Any) => setStop(e.target.value) })),
    h('label', { for: 'chat-schema' }, 'JSON schema (structured output, optional)'), h('textarea', { id: 'chat-schema', rows: 2, value: schema, onInput: (e: Any) => setSchema(e.target.value) }),
    h('button', { id: 'chat-send', disabled: busy, onClick: () => void send() }, busy ? 'Streaming...' : 'Send'),
    h('pre', { id: 'chat-output', 'data-events': events, 'aria-live': 'polite' }, out),
    h('details', null, h('summary', null, 'as curl'), h('pre', { id: 'chat-curl' }, curl)),
  )
}

/**
 * A `ms-serve bench --json` file opened in the browser (nothing is uploaded): the same page as
 * `--html` (src/bench/report-html.ts), in a sandboxed frame that runs no scripts; a file that is
 * not a bench result gets a message naming what is wrong.
 */
function BenchViewer() {
  const [shown, setShown] = useState<{ file: string; n: number; html?: string; error?: string } | null>(null)
  const frame = useRef<HTMLIFrameElement>(null)
  const fit = () => {
    const f = frame.current
    const d = f?.contentDocument
    if (f && d?.documentElement) f.style.height = `${d.documentElement.scrollHeight + 8}px`
  }
  useEffect(() => { addEventListener('resize', fit); return () => removeEventListener('resize', fit) }, [])
  const onFile = async (e: Event) => {
    const f = (e.target as HTMLInputElement).files?.[0]
    if (!f) return
    try {
      setShown({ file: f.name, n: (shown?.n ?? 0) + 1, html: renderHtmlReport(parseBenchReport(await f.text())) })
    } catch (err) {
      setShown({ file: f.name, n: (shown?.n ?? 0) + 1, error: err instanceof BenchReportError ? err.message : `could not render it: ${(err as Error).message}` })
    }
  }
  return h('div', { id: 'bench' },
    h('p', null, 'Open the file written by ', h('code', null, 'ms-serve bench --json FILE'), ' to see the plots and tables of ', h('code', null, '--html'),
      '. The file is read by this page; nothing is sent to the server.'),
    h('label', { for: 'bench-file' }, 'bench JSON result '), h('input', { id: 'bench-file', type: 'file', accept: '.json,application/json', onChange: (e: Event) => void onFile(e) }),
    shown?.error ? h('p', { id: 'bench-error', class: 'bad', role: 'alert' }, `${shown.file} is not a bench report this console can show: ${shown.error}`) : null,
    shown?.html ? h('iframe', { id: 'bench-report', key: shown.n, title: `bench report from ${shown.file}`, sandbox: 'allow-same-origin', srcdoc: shown.html, ref: frame, onLoad: fit }) : null,
  )
}

function KeyForm({ onKey }: { onKey: () => void }) {
  const [k, setK] = useState('')
  return h('form', { id: 'key-form', onSubmit: (e: Event) => { e.preventDefault(); sessionStorage.setItem(KEY, k); onKey() } },
    h('p', null, 'This server needs an API key.'),
    h('label', { for: 'api-key' }, 'API key '), h('input', { id: 'api-key', type: 'password', value: k, onInput: (e: Any) => setK(e.target.value) }),
    h('button', { type: 'submit' }, 'Use key'))
}

const TABS = ['Overview', 'Metrics', 'Predict', 'Chat', 'Bench'] as const
const TAB_NAMES: Record<string, string> = { Bench: 'Bench report' }

function App() {
  const [tab, setTab] = useState<(typeof TABS)[number]>((location.hash.slice(1) as (typeof TABS)[number]) || 'Overview')
  const [history, setHistory] = useState<Sample[]>([])
  const [needKey, setNeedKey] = useState(false)
  const [error, setError] = useState('')
  const [attempt, setAttempt] = useState(0)
  useEffect(() => {
    const ac = new AbortController()
    void (async () => {
      try {
        const res = await api('/console/stream', { signal: ac.signal })
        setNeedKey(false)
        await readSse(res, (d) => setHistory((h0) => [...h0.slice(-119), JSON.parse(d) as Sample]), ac.signal)
      } catch (e) {
        if (e instanceof NeedKey) setNeedKey(true)
        else if (!ac.signal.aborted) setError(`lost the live stream: ${(e as Error).message}; reload the page`)
      }
    })()
    return () => ac.abort()
  }, [attempt])
  const cur = history[history.length - 1] ?? null
  const pages: Record<string, () => ComponentChildren> = {
    Overview: () => h(Overview, { s: cur }), Metrics: () => h(Metrics, { history }), Predict: () => h(Predict, { s: cur }), Chat: () => h(Chat, { s: cur }), Bench: () => h(BenchViewer, null),
  }
  return h('div', null,
    h('header', null, h('h1', null, 'ms-serve'), h('nav', { role: 'tablist' }, TABS.map((t) => h('button', { key: t, role: 'tab', 'aria-selected': t === tab, id: `tab-${t}`, onClick: () => { setTab(t); location.hash = t } }, TAB_NAMES[t] ?? t)))),
    needKey ? h(KeyForm, { onKey: () => setAttempt(attempt + 1) }) : h('main', null, error ? h('p', { class: 'bad' }, error) : null, pages[tab]!()),
  )
}

render(h(App, null), document.getElementById('app')!)
