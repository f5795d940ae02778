/**
 * Public in-process API of the LLM engine, for the protocol routes and the replica process.
 * The engine runs its own step loop; host it in a worker/replica so session.run (which blocks
 * its thread for a whole step) does not stall the listeners, and start that process with
 * MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296.
 */
export { LlmEngine } from './engine.ts'
export type { EngineStats, LlmEngineOptions } from './engine.ts'
export type { DoneEvent, ErrorEvent, FinishReason, GenerateEvent, GenerateParameters, GenerateRequest, RequestTimings, TokenEvent, ValidGenerate, ValidationLimits } from './types.ts'
export { validateGenerate } from './validate.ts'
export type { PromptEncoder } from './validate.ts'
export { loadPromptEncoder } from './prompt-encoder.ts'
export { ChatTemplate, DEFAULT_CHAT_TEMPLATE } from './chat-template.ts'
export type { ChatMessage } from './chat-template.ts'
export { ByteLevelTokenizer, BYTE_VOCAB, HfTokenizer, loadTokenizer } from './tokenizer.ts'
export type { LlmTokenizer } from './tokenizer.ts'
export { describeModel } from './model-spec.ts'
export type { ModelSpec } from './model-spec.ts'
