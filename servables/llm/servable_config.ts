// The `llm` servable: a small Llama-style decoder (RMSNorm, rotary positions, grouped-query
// attention, SwiGLU) exported with the HF optimum with-past I/O, served with continuous batching.
// Its weights are seeded-random (built by the project, nothing is downloaded), so its text is
// gibberish; drop in your own optimum export (model.onnx + tokenizer.json + tokenizer_config.json)
// to serve a real model. Routes: /model/llm:generate, :generated_stream, TGI /generate(_stream),
// OpenAI /v1/completions and /v1/chat/completions, and gRPC msserve.v1.MsServe/Generate.
import { defineServable } from 'ms-serve'

export default defineServable((s) => {
  s.declareLlm({
    file: 'model.onnx',
    maxBatchSize: 16, // KV slots per replica = the largest running batch
    maxTotalTokens: 512, // prompt + generated tokens per request
    maxConcurrentRequests: 64, // per replica; more in flight -> 429 "Model is overloaded"
  })
})
