// The web console in a real browser: Debian's chromium driven by puppeteer-core, against a real
// server with the add, image and llm servables and one that fails to load. Checks the overview,
// a predict from the playground, a chat that streams into the page, the metrics chart moving
// after traffic, the failed servable's error, and the API-key prompt. Screenshots of each page go
// to test-output/console/. Skips (fails under CI) where no chromium is installed.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import puppeteer, { type Browser, type Page } from 'puppeteer-core'
import { addServable, floatJson, imageServable, X1, X2 } from '../helpers/fixtures.ts'
import { ROOT, runCli, startServer, tempServables, type StartedServer } from '../helpers/server.ts'

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p))
const SHOTS = join(ROOT, 'test-output', 'console')
let srv: StartedServer
let browser: Browser
const cleanups: Array<() => void> = []
const skip: string | false = CHROMIUM ? false : 'no chromium (apt-get install chromium); CI installs it'

before(async () => {
  if (skip) { if (process.env.MS_SERVE_CI) throw new Error(skip); return }
  mkdirSync(SHOTS, { recursive: true })
  const dir = tempServables({ after: (fn) => cleanups.push(fn) })
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
  const fill = async (sel: string, v: string) => { await page.$eval(sel, (e) => { (e as HTMLTextAreaElement).value = '' }); await page.type(sel, v) }
  await fill('#in-x1', '[[1.0, 2.0], [3.0, 4.0]]')
  await fill('#in-x2', '[[5.0, 6.0], [7.0, 8.0]]')
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
