/**
 * The texts of each route family for the errors runtime/ describes as facts (errors.ts ErrorFacts).
 * MindSpore's are byte-exact (its clients and tests match them); TGI's are its router's. An error
 * without facts keeps its own message (the replica's texts, validation texts, foreign errors).
 */
import { factsOf, type ErrorFacts } from '../errors.ts'

interface Wordable { message: string; details?: unknown }

/** MindSpore Serving's texts (master and REST front end). */
function mindspore(f: ErrorFacts): string {
  switch (f.reason) {
    case 'servable_unavailable':
      return `Request servable(${f.servable}) method(${f.method})${f.version !== 0 ? `  version(${f.version}) ` : ' '}, servable is not available`
    case 'method_unavailable':
      return `Request servable(${f.servable}) method(${f.method}) , method is not available`
    case 'no_instances':
      return `Instances count of request cannot be 0, servable: ${f.servable}, method: ${f.method}`
    case 'input_missing':
      return `Cannot find input ${f.input} in instance input , servable ${f.servable}, method ${f.method}`
    case 'queue_full':
      return `Serving Error: enqueued requests count exceeds the limit ${f.limit}`
    case 'llm_overloaded':
      return 'Model is overloaded'
  }
}

/** TGI's texts (its OpenAI routes share them); predict facts never reach its routes but read well anyway. */
function tgi(f: ErrorFacts, fallback: string): string {
  return f.reason === 'llm_overloaded' ? 'Model is overloaded' : fallback
}

/** The text of `e` on MindSpore routes (REST `error_msg`, gRPC `ErrorMsg.error_msg`). */
export function msText(e: Wordable): string {
  const f = factsOf(e)
  return f ? mindspore(f) : e.message
}

/** The text of `e` on TGI and OpenAI routes and ms-serve's own gRPC services. */
export function tgiText(e: Wordable): string {
  const f = factsOf(e)
  return f ? tgi(f, e.message) : e.message
}
