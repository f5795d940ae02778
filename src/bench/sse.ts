/** What the benchmark makes of SSE payloads (the parser itself is the client's, src/client/sse.ts). */

/** What one streamed generate event means to the benchmark. */
export type StreamEvent =
  | { kind: 'token'; count: number; final: boolean; finalTokens?: number }
  | { kind: 'empty' }
  | { kind: 'done' }
  | { kind: 'error'; errorKind: string; message: string }

/**
 * Interprets one SSE payload of a TGI `/generate_stream` or OpenAI `/v1/completions` stream.
 * TGI: one token per event, `generated_text` set on the last; OpenAI: text chunks, an optional usage
 * chunk, then `[DONE]`.
 */
export function interpretEvent(route: 'tgi' | 'openai', payload: string): StreamEvent {
  if (payload === '[DONE]') return { kind: 'done' }
  let ev: Record<string, unknown>
  try { ev = JSON.parse(payload) as Record<string, unknown> } catch { return { kind: 'error', errorKind: 'bad_event', message: `not JSON: ${payload.slice(0, 120)}` } }
  if (ev['error'] !== undefined && ev['error'] !== null) {
    const e = ev['error']
    const msg = typeof e === 'string' ? e : typeof (e as { message?: unknown }).message === 'string' ? (e as { message: string }).message : JSON.stringify(e)
    const type = typeof ev['error_type'] === 'string' ? ev['error_type'] : 'error'
    return { kind: 'error', errorKind: `stream_${type}`, message: msg }
  }
  if (route === 'tgi') {
    if (!ev['token']) return { kind: 'empty' }
    const final = ev['generated_text'] !== null && ev['generated_text'] !== undefined
    const details = ev['details'] as { generated_tokens?: number } | null | undefined
    return { kind: 'token', count: 1, final, ...(final && typeof details?.generated_tokens === 'number' ? { finalTokens: details.generated_tokens } : {}) }
  }
  const choices = ev['choices'] as Array<{ text?: string; delta?: { content?: string }; finish_reason?: string | null }> | undefined
  const usage = ev['usage'] as { completion_tokens?: number } | null | undefined
  const c = choices?.[0]
  const text = c?.text ?? c?.delta?.content ?? ''
  const finish = c?.finish_reason !== undefined && c.finish_reason !== null && c.finish_reason !== ''
  if (text.length === 0 && typeof usage?.completion_tokens === 'number') return { kind: 'token', count: 0, final: true, finalTokens: usage.completion_tokens }
  if (text.length === 0) return finish ? { kind: 'token', count: 0, final: true } : { kind: 'empty' }
  return { kind: 'token', count: 1, final: finish, ...(typeof usage?.completion_tokens === 'number' ? { finalTokens: usage.completion_tokens } : {}) }
}
