/**
 * What the load generator drives: one `send()` per request, resolving (never rejecting) with the
 * outcome. Targets prebuild their request bodies, so a send costs the client stack and nothing else.
 */

export interface SendError { kind: string; message: string }

/** Token-bearing chunk arrival times (performance.now() values) and the output token count. */
export interface StreamTiming { chunkTimes: number[]; outputTokens: number }

export interface SendOutcome {
  error: SendError | null
  stream?: StreamTiming
}

export interface Target {
  /** e.g. `REST http://127.0.0.1:1500/model/add:add_common`. */
  readonly description: string
  readonly itemsPerRequest: number
  send(): Promise<SendOutcome>
  close(): Promise<void>
}

/** The one success outcome of predict targets (shared: nothing to allocate per request). */
export const OK: SendOutcome = Object.freeze({ error: null }) as SendOutcome

export function failed(kind: string, message: string): SendOutcome {
  return { error: { kind, message } }
}

/** Names a client-side failure by its code (undici and Node use `code` strings). */
export function networkErrorKind(e: unknown): string {
  const code = (e as { code?: string }).code
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return 'timeout'
    case 'ECONNREFUSED':
      return 'connect_refused'
    case 'ECONNRESET':
    case 'UND_ERR_SOCKET':
    case 'EPIPE':
      return 'connection_reset'
    default:
      return `client_${code ?? (e as Error).name ?? 'error'}`
  }
}

/** The message of a MindSpore (`error_msg`), TGI (`error`) or OpenAI (`error.message`) error body. */
export function errorMessageOf(text: string): string {
  try {
    const j = JSON.parse(text) as Record<string, unknown>
    if (typeof j['error_msg'] === 'string') return j['error_msg']
    const inst = j['instances']
    if (Array.isArray(inst)) {
      const e = inst.find((x) => x && typeof (x as { error_msg?: unknown }).error_msg === 'string') as { error_msg: string } | undefined
      if (e) return e.error_msg
    }
    const err = j['error']
    if (typeof err === 'string') return err
    if (err && typeof (err as { message?: unknown }).message === 'string') return (err as { message: string }).message
  } catch { /* not JSON: show the text */ }
  return text.slice(0, 200)
}
