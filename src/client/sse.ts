/**
 * Incremental Server-Sent Events parser (the subset TGI and OpenAI streams use): `data:` lines
 * joined by `\n` form one event, a blank line ends it, `:` lines are keep-alive comments. Chunks may
 * split anywhere, including inside a `\r\n`.
 */
export class SseParser {
  private buf = ''
  private data: string[] = []

  /** Feeds decoded text; returns the data payloads of the events completed by it. */
  push(text: string): string[] {
    this.buf += text
    const out: string[] = []
    let start = 0
    for (;;) {
      let nl = -1
      for (let i = start; i < this.buf.length; i++) {
        const c = this.buf.charCodeAt(i)
        if (c === 10 || c === 13) { nl = i; break }
      }
      if (nl < 0) break
      // A lone '\r' at the end of the buffer may be half of '\r\n': wait for the next chunk.
      if (this.buf.charCodeAt(nl) === 13 && nl === this.buf.length - 1) break
      const line = this.buf.slice(start, nl)
      start = nl + (this.buf.charCodeAt(nl) === 13 && this.buf.charCodeAt(nl + 1) === 10 ? 2 : 1)
      this.line(line, out)
    }
    this.buf = this.buf.slice(start)
    return out
  }

  /** Ends the stream; an event without its closing blank line still counts (some servers omit it). */
  end(): string[] {
    const out: string[] = []
    if (this.buf.length) this.line(this.buf, out)
    this.buf = ''
    if (this.data.length) { out.push(this.data.join('\n')); this.data = [] }
    return out
  }

  private line(line: string, out: string[]): void {
    if (line === '') {
      if (this.data.length) { out.push(this.data.join('\n')); this.data = [] }
      return
    }
    if (line.startsWith(':')) return
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    if (field !== 'data') return
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    this.data.push(value)
  }
}
