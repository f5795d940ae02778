import { writeDecoder, DECODER_CONFIGS } from '../src/models/decoder.ts'
import { LlmEngine } from '../src/llm/engine.ts'
await writeDecoder('/tmp/llm/tiny.onnx', DECODER_CONFIGS.tiny)
const e = await LlmEngine.load('/tmp/llm/tiny.onnx', { maxTotalTokens: 256, kvBlock: 16 })
console.log(e.spec)
const run = (inputs: string, n: number) => new Promise<any>((res) => { const toks: number[] = []; e.submit({ inputs, parameters: { maxNewTokens: n } }, (ev) => { if (ev.type === 'token') toks.push(ev.id); else res({ ev, toks }) }) })
const [a, b] = await Promise.all([run('Hello world', 20), run('Hi', 30)])
console.log(a, b, e.stats())
await e.close()
