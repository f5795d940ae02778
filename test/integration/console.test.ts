// The web console in a real browser: Debian's chromium driven by puppeteer-core, against a real
// server with the add, image and llm servables and one that fails to load. Checks the overview,
// a predict from the playground, a chat that streams into the page (with its sampling parameters in
// the request and the curl line), the metrics chart moving after traffic, the failed servable's
// error, a bench --json result opened in the bench report viewer (and a file that is not one), the
// layout at 380 px, every control labelled and reached with Tab, and the API-key prompt.
// Screenshots of each page go to test-output/console/. Skips (fails under CI) where no chromium is installed.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import puppeteer, { type Browser, type ElementHandle, type Page } from 'puppeteer-core'
import { addServable, floatJson, imageServable, X1, X2 } from '../helpers/fixtures.ts'
import { ROOT, runCli, startServer, tempServables, type StartedServer } from '../helpers/server.ts'

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p))
const SHOTS = join(ROOT, 'test-output', 'console')
let srv: StartedServer
let work: string
let browser: Browser
const cleanups: Array<() => void> = []
const skip: string | false = CHROMIUM ? false : 'no chromium (apt-get install chromium); CI installs it'

before(async () => {
  if (skip) { if (process.env.MS_SERVE_CI) throw new Error(skip); return }
  mkdirSync(SHOTS, { recursive: true })
  const dir = tempServables({ after: (fn) => cleanups.push(fn) })
  work = tempServables({ after: (fn) => cleanups.push(fn) })
  addServable(dir)
  imageServable(dir)
  assert.equal((await runCli(['init', 'llm', '--dir', dir])).code, 0)
  addServable(dir, 'broken')
  writeFileSync(join(dir, 'broken', '1', 'add.onnx'), 'this is not an onnx model')
  srv = await startServer(dir, ['--no-watch'])
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] })
})

after(async () => {
  await browser?.close()
  await srv?.stop()
  for (const c of cleanups) c()
})

async function open(url: string, tab = 'Overview'): Promise<Page> {
  const page = await browser.newPage()
  await page.setViewport({ width: 900, height: 900 })
  const errors: string[] = []
  page.on('pageerror', (e) => errors.push((e as Error).message))
  await page.goto(`${url}/console#${tab}`, { waitUntil: 'load' })
  ;(page as Page & { errors?: string[] }).errors = errors
  return page
}

const text = (page: Page, sel: string) => page.$eval(sel, (e) => e.textContent ?? '')
/** Replaces a text field's value by typing, as a user would. */
const fill = async (page: Page, sel: string, v: string) => { await page.$eval(sel, (e) => { (e as HTMLInputElement).value = '' }); await page.type(sel, v) }

test('overview: every servable with its methods, signatures and replicas; the failed one with its error', { skip }, async () => {
  const page = await open(srv.rest)
  await page.waitForSelector('#overview section[data-name="llm"]', { timeout: 15_000 })
  const add = await text(page, 'section[data-name="add"]')
  assert.match(add, /add ready \(model\)/)
  assert.match(add, /add_common\(x1: float32\[2,2\], x2: float32\[2,2\]\) -> \(y: float32\[2,2\]\)/)
  assert.match(add, /cpu:0\s*inline/)
  assert.match(await text(page, 'section[data-name="image"]'), /classify\(image: \?\)/)
  assert.match(await text(page, 'section[data-name="llm"]'), /generate\(prompt: string\[\]\)/)
  assert.match(await text(page, 'section[data-name="broken"]'), /failed to load.*add\.onnx/s)
  await page.screenshot({ path: join(SHOTS, 'overview.png'), fullPage: true })
  assert.deepEqual((page as Page & { errors?: string[] }).errors, [])
  await page.close()
})

test('predict playground: the form follows the signature and the reply has the right numbers', { skip }, async () => {
  const page = await open(srv.rest, 'Predict')
  await page.waitForSelector('#in-x1', { timeout: 15_000 })
  await fill(page, '#in-x1', '[[1.0, 2.0], [3.0, 4.0]]')
  await fill(page, '#in-x2', '[[5.0, 6.0], [7.0, 8.0]]')
  await page.click('#predict-run')
  await page.waitForSelector('#predict-output')
  assert.deepEqual(JSON.parse(await text(page, '#predict-output')), { instances: [{ y: [[6, 8], [10, 12]] }] })
  assert.match(await text(page, '#predict-reply'), /HTTP 200 in \d/)
  await page.screenshot({ path: join(SHOTS, 'predict.png'), fullPage: true })
  await page.close()
})

test('chat playground: tokens stream into the page; the curl equivalent is shown', { skip }, async () => {
  const page = await open(srv.rest, 'Chat')
  await page.waitForSelector('#chat-send', { timeout: 15_000 })
  await page.$eval('#chat-max', (e) => { (e as HTMLInputElement).value = '' })
  await page.type('#chat-max', '12')
  await page.click('#chat-send')
  await page.waitForFunction(() => Number(document.querySelector('#chat-output')?.getAttribute('data-events')) >= 2 && !(document.querySelector('#chat-send') as HTMLButtonElement).disabled, { timeout: 30_000 })
  const events = Number(await page.$eval('#chat-output', (e) => e.getAttribute('data-events')))
  assert.ok(events >= 2 && events <= 12, `${events} streamed deltas`)
  // The same request by hand (non-stream) gives the same greedy text.
  const res = await fetch(`${srv.rest}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'llm', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 12, temperature: 0 }) })
  assert.equal(await text(page, '#chat-output'), ((await res.json()) as any).choices[0].message.content)
  assert.match(await page.$eval('#chat-curl', (e) => e.textContent ?? ''), /curl -N http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions .*"max_tokens":12/)
  await page.screenshot({ path: join(SHOTS, 'chat.png'), fullPage: true })
  await page.close()
})

test('chat playground: system message, top_p, top_k, seed and stop go into the request and the curl line; the reply still streams', { skip }, async () => {
  const page = await open(srv.rest, 'Chat')
  await page.waitForSelector('#chat-send', { timeout: 15_000 })
  await fill(page, '#chat-max', '10')
  await fill(page, '#chat-system', 'You are terse.')
  await fill(page, '#chat-top-p', '0.9')
  await fill(page, '#chat-top-k', '40')
  await fill(page, '#chat-seed', '7')
  await fill(page, '#chat-stop', 'zzqq\nqq,zz')
  const curl = await text(page, '#chat-curl')
  const sent = JSON.parse(curl.slice(curl.indexOf("-d '") + 4, -1).replace(/'\\''/g, "'"))
  assert.deepEqual(sent, {
    model: 'llm', messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hello' }],
    max_tokens: 10, temperature: 0, top_p: 0.9, top_k: 40, seed: 7, stop: ['zzqq', 'qq,zz'], stream: true,
  }, 'empty fields (frequency/presence penalty, schema) are not sent')
  await page.click('#chat-send')
  await page.waitForFunction(() => Number(document.querySelector('#chat-output')?.getAttribute('data-events')) >= 1 && !(document.querySelector('#chat-send') as HTMLButtonElement).disabled, { timeout: 30_000 })
  // top_p < 1 samples; with the same seed the same request by hand gives the same text.
  const { stream: _s, ...plain } = sent
  const res = await fetch(`${srv.rest}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(plain) })
  assert.equal(res.status, 200)
  assert.equal(await text(page, '#chat-output'), ((await res.json()) as any).choices[0].message.content)
  await page.screenshot({ path: join(SHOTS, 'chat-params.png'), fullPage: true })
  // A field that is not a number is named, in the curl block and instead of sending.
  await fill(page, '#chat-seed', 'abc')
  assert.equal(await text(page, '#chat-curl'), 'seed must be an integer (got "abc")')
  await page.click('#chat-send')
  await page.waitForFunction(() => /not sent: seed must be an integer/.test(document.querySelector('#chat-output')?.textContent ?? ''), { timeout: 5_000 })
  assert.deepEqual((page as Page & { errors?: string[] }).errors, [])
  await page.close()
})

test('metrics: the requests/s chart moves after traffic', { skip }, async () => {
  const page = await open(srv.rest, 'Metrics')
  await page.waitForSelector('section.metric[data-name="add"] .chart', { timeout: 15_000 })
  const body = floatJson({ instances: [{ x1: X1, x2: X2 }] })
  const deadline = Date.now() + 20_000
  let last = 0
  while (Date.now() < deadline && last <= 0) {
    await Promise.all(Array.from({ length: 20 }, () => fetch(`${srv.rest}/model/add:add_common`, { method: 'POST', body })))
    await new Promise((r) => setTimeout(r, 300))
    last = Number(await page.$eval('section.metric[data-name="add"] .chart', (e) => e.getAttribute('data-last')))
  }
  assert.ok(last > 0, 'requests/s above 0 after traffic')
  assert.ok(Number(await page.$eval('section.metric[data-name="add"] .chart', (e) => e.getAttribute('data-points'))) >= 2)
  assert.ok(await page.$('section.metric[data-name="add"] canvas'), 'uPlot drew a canvas')
  // Latency percentiles from the server's histograms, and the executed batch sizes.
  await page.waitForSelector('section.metric[data-name="add"] [data-metric="latency p99 ms"]', { timeout: 10_000 })
  const p50 = Number(await page.$eval('section.metric[data-name="add"] [data-metric="latency p50 ms"]', (e) => e.getAttribute('data-value')))
  const p99 = Number(await page.$eval('section.metric[data-name="add"] [data-metric="latency p99 ms"]', (e) => e.getAttribute('data-value')))
  assert.ok(p50 > 0 && p99 >= p50 && p99 < 10_000, `p50 ${p50} ms, p99 ${p99} ms`)
  const counts = await page.$$eval('section.metric[data-name="add"] .bar', (bars) => bars.map((b) => Number(b.getAttribute('data-count'))))
  assert.ok(counts.length > 0 && counts.every((n) => n > 0), `batch histogram ${counts}`)
  // Errors by kind: 3 requests with a malformed x1 (and no x2) are invalid_request outcomes.
  await Promise.all(Array.from({ length: 3 }, () => fetch(`${srv.rest}/model/add:add_common`, { method: 'POST', body: '{"instances":[{"x1":[[1.0]]}]}' })))
  await page.waitForSelector('section.metric[data-name="add"] .errors [data-error]', { timeout: 10_000 })
  assert.match(await text(page, 'section.metric[data-name="add"] .errors'), /errors \(10 s\): invalid_request 3/)
  await page.screenshot({ path: join(SHOTS, 'metrics.png'), fullPage: true })
  await page.close()
})

test('bench report viewer: a bench --json result shows the same page as --html; another JSON file gets an error naming what is wrong', { skip, timeout: 120_000 }, async () => {
  // A real result: the project's bench against this test's server (two short levels).
  const json = join(work, 'bench.json')
  const html = join(work, 'bench.html')
  const r = await runCli(['bench', '--url', srv.rest, '--servable', 'add', '--method', 'add_common', '--concurrency', '1,2', '--duration', '600ms', '--warmup', '200ms', '--json', json, '--html', html, '--no-progress'], ROOT, 90_000)
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`)
  const page = await open(srv.rest, 'Bench')
  const input = (await page.waitForSelector('#bench-file', { timeout: 15_000 })) as ElementHandle<HTMLInputElement>
  assert.equal(await page.$eval('#bench-file', (e) => (e as HTMLInputElement).labels?.[0]?.textContent?.trim()), 'bench JSON result')
  await input.uploadFile(json)
  const frameEl = (await page.waitForSelector('#bench-report', { timeout: 10_000 }))!
  // The frame holds exactly what `--html` wrote for the same result.
  assert.equal(await page.$eval('#bench-report', (e) => (e as HTMLIFrameElement).srcdoc), readFileSync(html, 'utf8'))
  const frame = (await frameEl.contentFrame())!
  await frame.waitForSelector('svg')
  const svgs = await frame.$$eval('svg', (list) => list.map((s) => ({ text: s.textContent ?? '', width: s.getBoundingClientRect().width, marks: s.querySelectorAll('circle, rect').length })))
  const line = svgs.find((s) => s.text.startsWith('Latency vs throughput'))
  assert.ok(line, `a latency plot among ${svgs.map((s) => s.text.slice(0, 40))}`)
  for (const series of ['p50', 'p95', 'p99', 'c=1', 'c=2']) assert.ok(line!.text.includes(series), `the plot names ${series}`)
  assert.ok(line!.marks >= 6 && line!.width > 100, `3 series x 2 levels drawn: ${JSON.stringify(line)}`)
  assert.ok(svgs.some((s) => s.text.startsWith('Executed batch sizes, c=1')), 'the batch-size histogram of a level')
  assert.match(await frame.$eval('body', (b) => b.textContent ?? ''), /ms-serve bench: add:add_common[\s\S]*level\s+req\/s\s+items\/s/)
  assert.ok(await page.$eval('#bench-report', (e) => e.getBoundingClientRect().height > 400), 'the frame is sized to its report')
  await page.screenshot({ path: join(SHOTS, 'bench-report.png'), fullPage: true })

  // Not a bench result: the server's /servables description.
  const other = join(work, 'servables.json')
  writeFileSync(other, await (await fetch(`${srv.rest}/servables`)).text())
  await input.uploadFile(other)
  await page.waitForSelector('#bench-error', { timeout: 5_000 })
  assert.match(await text(page, '#bench-error'), /^servables\.json is not a bench report this console can show: not a bench result: `tool` is missing, expected "ms-serve bench"/)
  assert.equal(await page.$('#bench-report'), null, 'the previous report is gone')
  await page.screenshot({ path: join(SHOTS, 'bench-error.png'), fullPage: true })
  // A bench result missing a field the plots need: the field is named.
  const broken = JSON.parse(readFileSync(json, 'utf8'))
  delete broken.levels[1].latencyMs
  writeFileSync(join(work, 'broken.json'), JSON.stringify(broken))
  await input.uploadFile(join(work, 'broken.json'))
  await page.waitForFunction(() => /broken\.json/.test(document.querySelector('#bench-error')?.textContent ?? ''), { timeout: 5_000 })
  assert.match(await text(page, '#bench-error'), /`levels\[1\]\.latencyMs` must be an object \(got nothing\)/)
  writeFileSync(join(work, 'text.json'), 'level req/s\n')
  await input.uploadFile(join(work, 'text.json'))
  await page.waitForFunction(() => /text\.json/.test(document.querySelector('#bench-error')?.textContent ?? ''), { timeout: 5_000 })
  assert.match(await text(page, '#bench-error'), /not JSON: /)
  assert.deepEqual((page as Page & { errors?: string[] }).errors, [])
  await page.close()
})

test('at 380 px wide nothing overflows the page sideways (tables scroll in their box)', { skip }, async () => {
  const page = await open(srv.rest)
  await page.setViewport({ width: 380, height: 800 })
  await page.waitForSelector('#overview section[data-name="llm"]', { timeout: 15_000 })
  const overflow = () => page.evaluate(() => ({ scroll: document.body.scrollWidth, client: document.body.clientWidth, doc: document.documentElement.scrollWidth, view: document.documentElement.clientWidth }))
  const o = await overflow()
  assert.ok(o.scroll <= o.client + 1 && o.doc <= o.view + 1, `overview: ${JSON.stringify(o)}`)
  await page.screenshot({ path: join(SHOTS, 'overview-380.png'), fullPage: true })
  for (const tab of ['Metrics', 'Predict', 'Chat', 'Bench']) {
    await page.click(`#tab-${tab}`)
    await new Promise((r) => setTimeout(r, 300))
    const t = await overflow()
    assert.ok(t.scroll <= t.client + 1 && t.doc <= t.view + 1, `${tab}: ${JSON.stringify(t)}`)
    if (tab === 'Chat') await page.screenshot({ path: join(SHOTS, 'chat-380.png'), fullPage: true })
  }
  await page.close()
})

test('keyboard: every control has a label and Tab reaches each one', { skip }, async () => {
  for (const tab of ['Predict', 'Chat', 'Bench']) {
    const page = await open(srv.rest, tab)
    await page.waitForSelector(tab === 'Predict' ? '#in-x1' : tab === 'Chat' ? '#chat-send' : '#bench-file', { timeout: 15_000 })
    const controls = await page.$$eval('main input, main select, main textarea, main button, nav button, main summary', (els) => els.map((e, i) => {
      e.setAttribute('data-k', String(i))
      const labelled = (e as HTMLInputElement).labels?.length || e.getAttribute('aria-label') || ((e.tagName === 'BUTTON' || e.tagName === 'SUMMARY') && e.textContent?.trim())
      return { k: String(i), what: `${e.tagName.toLowerCase()}#${e.id}`, labelled: Boolean(labelled) }
    }))
    assert.ok(controls.length >= 6, `${tab}: ${controls.length} controls`)
    for (const c of controls) assert.ok(c.labelled, `${tab}: ${c.what} has no label`)
    const reached = new Set<string>()
    for (let i = 0; i < controls.length + 10; i++) {
      await page.keyboard.press('Tab')
      const k = await page.evaluate(() => document.activeElement?.getAttribute('data-k') ?? null)
      if (k !== null) reached.add(k)
    }
    assert.deepEqual(controls.filter((c) => !reached.has(c.k)).map((c) => c.what), [], `${tab}: not reached with Tab`)
    await page.close()
  }
})

test('with an API key the console asks for it, then shows the server', { skip }, async (t) => {
  const dir = tempServables(t)
  addServable(dir)
  const keyed = await startServer(dir, ['--no-watch', '--api-key', 'console-key'])
  try {
    const page = await open(keyed.rest)
    await page.waitForSelector('#key-form', { timeout: 15_000 })
    await page.screenshot({ path: join(SHOTS, 'api-key.png'), fullPage: true })
    await page.type('#api-key', 'console-key')
    await page.click('#key-form button')
    await page.waitForSelector('#overview section[data-name="add"]', { timeout: 15_000 })
    assert.equal((await fetch(`${keyed.rest}/console/stream`)).status, 401, 'the stream needs the key')
    assert.equal((await fetch(`${keyed.rest}/console`)).status, 200, 'the page itself is open')
    await page.close()
  } finally {
    await keyed.stop()
  }
})
