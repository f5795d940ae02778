// An LLM in pipeline stages: the decoder (optimum with-past I/O) is split at load at a
// transformer-layer boundary into 2 stages, each its own onnxruntime session; with --devices 0,1
// stage 1 runs on device 0 and stage 2 on device 1, and each stage keeps the KV cache of its own
// layers. Greedy output equals the unsplit model token for token. Its weights are seeded-random
// (built by the project); drop in your own optimum export to split a real model.
import { defineServable } from 'ms-serve'

export default defineServable((s) => {
  s.declareLlm({
    file: 'model.onnx',
    stages: 2, // pipeline stages, split between layers (at most the decoder's layer count)
    maxBatchSize: 16,
    maxTotalTokens: 512,
    maxConcurrentRequests: 64,
  })
})
