/**
 * Tool calls in generated text, read as the text streams. A reader takes the output piece by piece
 * (token texts, or the whole text at once) and turns it into content and tool-call deltas in
 * OpenAI's streaming shape: a call's first delta carries its id and function name, the following
 * ones pieces of its `arguments` JSON text. The same reader serves streaming and non-streaming
 * answers, so both say the same thing for the same output.
 *
 * Readers:
 * - forced (tool_choice "required" or a named function): the grammar made the output the call's
 *   JSON, `{"name": ..., "arguments": {...}}` for "required", the arguments alone for a named one;
 *   arguments stream as they are generated.
 * - hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks among text (Hermes 2
 *   Pro, Qwen2/2.5/3, many fine-tunes); text around them is content.
 * - llama3_json: an output that is a JSON object `{"name": ..., "parameters": {...}}` (Llama 3.1+
 *   JSON tool calling; also `arguments`), optionally after `<|python_tag|>`, several joined by `;`;
 *   in that key order the arguments stream. Any other output is content.
 * Whitespace at the end of content is held until non-blank content follows, so blank lines around
 * calls (and at the end) do not become content. A block that does not parse as a call is given back as content.
 */
import { randomBytes } from 'node:crypto'

export const TOOL_PARSERS = ['hermes', 'llama3_json', 'none'] as const
export type ToolParserName = typeof TOOL_PARSERS[number]

/** A piece of one tool call: `id` and `name` on its first piece; the `arguments` pieces concatenate. */
export interface ToolCallDelta {
  index: number
  id?: string
  name?: string
  arguments: string
}

export type ToolEvent = { content: string } | { call: ToolCallDelta }

export interface ToolCallReader {
  /** What `text`, the next piece of the output, completes. */
  push(text: string): ToolEvent[]
  /** What is still held when the output ends. */
  end(): ToolEvent[]
  /** Calls begun so far. */
  readonly calls: number
}

/** A whole tool call as a non-streaming answer carries it. */
export interface ToolCall { id: string; name: string; arguments: string }

export function newCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`
}

/**
 * The parser a chat template's tool format calls for, when the servable does not name one:
 * hermes for templates that write `<tool_call>`, llama3_json for Llama 3's (`<|python_tag|>`, or
 * the "name"/"parameters" JSON instruction), else none (tool_choice "auto" answers content).
 */
export function detectToolParser(templateSources: readonly string[]): ToolParserName {
  const all = templateSources.join('\n')
  if (all.includes('<tool_call>')) return 'hermes'
  if (all.includes('<|python_tag|>') || /"name": function name, "parameters"/.test(all)) return 'llama3_json'
  return 'none'
}

/**
 * Collects one push's events. Trailing whitespace of content is held (across pushes) until more
 * non-blank content follows; a call, or the end of the output, drops it. So blank lines around
 * calls never become content, however the output is split.
 */
class Emitter {
  private blank = ''
  out: ToolEvent[] = []
  content(text: string): void {
    if (text === '') return
    const body = text.trimEnd()
    if (body !== '') this.out.push({ content: this.blank + body })
    this.blank = body === '' ? this.blank + text : text.slice(body.length)
  }
  call(delta: ToolCallDelta): void {
    this.blank = ''
    this.out.push({ call: delta })
  }
  /** The events since the last take; `final` drops held blanks. */
  take(final = false): ToolEvent[] {
    const out = this.out
    this.out = []
    if (final) this.blank = ''
    return out
  }
}

/** Tracks where one JSON value ends in a stream of characters (strings and nesting aware). */
class JsonValueEnd {
  private depth = 0
  private inString = false
  private escaped = false
  /** Whether the value's first character has come (blanks before it do not count). */
  started = false
  done = false

  /**
   * How many characters of `text` still belong to the value (leading blanks before it included);
   * sets `done` once the value is complete.
   */
  take(text: string): number {
    for (let i = 0; i < text.length; i++) {
      if (this.done) return i
      const ch = text[i]!
      if (this.inString) {
        if (this.escaped) this.escaped = false
        else if (ch === '\\') this.escaped = true
        else if (ch === '"') { this.inString = false; if (this.depth === 0) this.done = true }
        continue
      }
      if (!this.started && /\s/.test(ch)) continue
      if (this.started && this.depth === 0 && (ch === ',' || ch === '}' || ch === ']' || /\s/.test(ch))) { this.done = true; return i }
      this.started = true
      if (ch === '"') this.inString = true
      else if (ch === '{' || ch === '[') this.depth++
      else if (ch === '}' || ch === ']') { this.depth--; if (this.depth === 0) this.done = true }
    }
    return text.length
  }
}

/** `{"name": string, "arguments"|"parameters": value}` -> the call, or null when it is not one. */
function callOf(v: unknown): { name: string; arguments: string } | null {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return null
  const { name, arguments: a, parameters: p } = v as Record<string, unknown>
  if (typeof name !== 'string' || name === '') return null
  const args = a ?? p ?? {}
  return { name, arguments: typeof args === 'string' ? args : JSON.stringify(args) }
}

function parseJson(text: string): unknown {
  try { return JSON.parse(text) } catch { return undefined }
}

/** tool_choice names the function: the output is its arguments. */
export function namedCallReader(name: string, id = newCallId()): ToolCallReader {
  let begun = false
  const head = (out: ToolEvent[]) => {
    if (!begun) out.push({ call: { index: 0, id, name, arguments: '' } })
    begun = true
  }
  return {
    get calls() { return begun ? 1 : 0 },
    push(text) {
      const out: ToolEvent[] = []
      head(out)
      if (text) out.push({ call: { index: 0, arguments: text } })
      return out
    },
    end() {
      const out: ToolEvent[] = []
      head(out)
      return out
    },
  }
}

const REQUIRED_HEAD = /^\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:/

/** tool_choice "required": the output is `{"name": ..., "arguments": ...}`; arguments stream once the name is known. */
export function requiredCallReader(id = newCallId()): ToolCallReader {
  let begun = false
  let whole = ''
  const args = new JsonValueEnd()
  return {
    get calls() { return begun ? 1 : 0 },
    push(text) {
      whole += text
      const out: ToolEvent[] = []
      if (!begun) {
        const m = REQUIRED_HEAD.exec(whole)
        if (!m) return out
        out.push({ call: { index: 0, id, name: JSON.parse(m[1]!) as string, arguments: '' } })
        begun = true
        text = whole.slice(m[0].length)
      }
      if (!args.started) text = text.trimStart()
      if (args.done || text === '') return out
      const n = args.take(text)
      if (n > 0) out.push({ call: { index: 0, arguments: text.slice(0, n) } })
      return out
    },
    end() {
      if (begun) return []
      // Not in the expected key order: the whole output, if it is a call.
      const call = callOf(parseJson(whole))
      begun = call !== null
      return call ? [{ call: { index: 0, id, ...call } }] : (whole ? [{ content: whole }] : [])
    },
  }
}

const OPEN = '<tool_call>'
const CLOSE = '</tool_call>'

/** The longest end of `s` that is a start of `marker` (text that may be the marker's first part). */
function heldPrefix(s: string, marker: string): number {
  for (let n = Math.min(s.length, marker.length - 1); n > 0; n--) if (marker.startsWith(s.slice(s.length - n))) return n
  return 0
}

/** Hermes-style `<tool_call>{json}</tool_call>` blocks among text. */
export function hermesReader(newId: () => string = newCallId): ToolCallReader {
  const em = new Emitter()
  let buf = ''
  let inCall = false
  let calls = 0
  const finish = (body: string, closed: boolean) => {
    const call = callOf(parseJson(body.trim()))
    if (call) em.call({ index: calls++, id: newId(), ...call })
    else em.content(OPEN + body + (closed ? CLOSE : ''))
  }
  const step = (text: string, final: boolean): ToolEvent[] => {
    buf += text
    for (;;) {
      if (!inCall) {
        const at = buf.indexOf(OPEN)
        if (at >= 0) {
          em.content(buf.slice(0, at))
          buf = buf.slice(at + OPEN.length)
          inCall = true
          continue
        }
        const keep = final ? 0 : heldPrefix(buf, OPEN)
        em.content(buf.slice(0, buf.length - keep))
        buf = buf.slice(buf.length - keep)
        break
      }
      const at = buf.indexOf(CLOSE)
      if (at >= 0) {
        finish(buf.slice(0, at), true)
        buf = buf.slice(at + CLOSE.length)
        inCall = false
        continue
      }
      if (final) { finish(buf, false); buf = ''; inCall = false }
      break
    }
    return em.take(final)
  }
  return { get calls() { return calls }, push: (text) => step(text, false), end: () => step('', true) }
}

const PYTHON_TAG = '<|python_tag|>'

const LLAMA_HEAD = /^\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"(?:parameters|arguments)"\s*:/

/**
 * Llama 3 JSON tool calls. An output that opens with `{` or `<|python_tag|>` is read as calls;
 * any other output streams as content. A call in the usual key order, `{"name": ..., "parameters"
 * (or "arguments"): {...}}`, streams: its name as soon as the head is there, then its arguments as
 * they are generated (as vLLM's streaming parser; an output cut off mid-arguments is a call with
 * the arguments so far). After a call, `;` opens the next one; any other text is content. An object
 * in another key order (or one that is not a call) is held and read at the end, given back as
 * content when it is not calls.
 */
export function llama3JsonReader(newId: () => string = newCallId): ToolCallReader {
  const em = new Emitter()
  let mode: 'undecided' | 'text' | 'json' = 'undecided'
  /** Within 'json': where the next characters belong. */
  let at: 'head' | 'args' | 'close' | 'sep' = 'head'
  let args = new JsonValueEnd()
  let buf = ''
  let calls = 0
  const decide = () => {
    const s = buf.trimStart()
    if (s === '') return
    if (s.startsWith('{') || s.startsWith(PYTHON_TAG)) {
      mode = 'json'
      if (s.startsWith(PYTHON_TAG)) buf = s.slice(PYTHON_TAG.length)
    } else if (!PYTHON_TAG.startsWith(s)) mode = 'text'
  }
  const toText = () => { mode = 'text'; em.content(buf); buf = '' }
  const step = () => {
    for (;;) {
      if (at === 'head') {
        const m = LLAMA_HEAD.exec(buf)
        if (m) {
          em.call({ index: calls++, id: newId(), name: JSON.parse(m[1]!) as string, arguments: '' })
          buf = buf.slice(m[0].length)
          args = new JsonValueEnd()
          at = 'args'
          continue
        }
        // Not (yet) the usual head: held; read at the end if it never becomes one.
        return
      }
      if (at === 'args') {
        if (!args.started) buf = buf.trimStart()
        if (buf === '') return
        const n = args.take(buf)
        if (n > 0) em.call({ index: calls - 1, arguments: buf.slice(0, n) })
        buf = buf.slice(n)
        if (!args.done) return
        at = 'close'
        continue
      }
      const t = buf.trimStart()
      if (t === '') { buf = ''; return }
      if (at === 'close') {
        if (!t.startsWith('}')) { buf = t; toText(); return }
        buf = t.slice(1)
        at = 'sep'
        continue
      }
      // at === 'sep': `;` opens the next call, anything else is content.
      if (t.startsWith(';')) { buf = t.slice(1); at = 'head'; continue }
      buf = t
      toText()
      return
    }
  }
  return {
    get calls() { return calls },
    push(text) {
      buf += text
      if (mode === 'undecided') decide()
      if (mode === 'json') step()
      if (mode === 'text') { em.content(buf); buf = '' }
      return em.take()
    },
    end() {
      // push already read as far as the text allows; what is left is decided here.
      if (mode === 'json' && at === 'head' && buf.trim() !== '') {
        // Never the usual head: calls in another key order, or content.
        const found = splitCalls(buf)
        if (found) for (const c of found) em.call({ index: calls++, id: newId(), ...c })
        else em.content(buf)
      } else if (mode !== 'json') em.content(buf)
      buf = ''
      return em.take(true)
    },
  }
}

/** `{...}; {...}` -> the calls, or null when any part is not a call. */
function splitCalls(text: string): Array<{ name: string; arguments: string }> | null {
  const calls: Array<{ name: string; arguments: string }> = []
  let rest = text.trim()
  while (rest !== '') {
    const end = new JsonValueEnd()
    const n = end.take(rest)
    if (!end.done) return null
    const call = callOf(parseJson(rest.slice(0, n)))
    if (!call) return null
    calls.push(call)
    rest = rest.slice(n).trim()
    if (rest.startsWith(';')) rest = rest.slice(1).trim()
    else if (rest !== '') return null
  }
  return calls.length > 0 ? calls : null
}

/** The reader for a parser name; null for 'none'. */
export function toolCallReader(parser: ToolParserName): ToolCallReader | null {
  if (parser === 'hermes') return hermesReader()
  if (parser === 'llama3_json') return llama3JsonReader()
  return null
}

/** Runs a whole output through a reader: the answer's content (null when blank) and its calls. */
export function readAll(reader: ToolCallReader, text: string): { content: string | null; calls: ToolCall[] } {
  const calls: ToolCall[] = []
  let content = ''
  for (const ev of [...reader.push(text), ...reader.end()]) {
    if ('content' in ev) { content += ev.content; continue }
    const d = ev.call
    if (d.id !== undefined) calls[d.index] = { id: d.id, name: d.name ?? '', arguments: '' }
    calls[d.index]!.arguments += d.arguments
  }
  const trimmed = content.trim()
  return { content: trimmed === '' ? null : calls.length > 0 ? trimmed : content, calls }
}
