// The `add` servable: MindSpore Serving's canonical example. Model: y = x1 + x2 on float32 2x2
// tensors, with a batch dim so that instances from concurrent requests run together.
import { defineServable, castTensor, isTensor, InvalidInputError, type Value } from 'ms-serve'

/** add_cast's preprocess stage: accept int (or any numeric) tensors and cast them to float32. */
function castToFloat32(x1: Value, x2: Value): Value[] {
  return [x1, x2].map((x, i) => {
    if (!isTensor(x)) throw new InvalidInputError(`input x${i + 1} must be a numeric tensor`)
    return castTensor(x, 'float32')
  })
}

export default defineServable((s) => {
  const add = s.declareModel({ file: 'add.onnx', withBatchDim: true, maxBatchSize: 32, maxWaitMs: 0 })

  s.registerMethod('add_common', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x1, x2 }) => {
    const y = s.addStage(add, [x1, x2])
    return { y }
  })

  s.registerMethod('add_cast', { inputs: ['x1', 'x2'], outputs: ['y'] }, ({ x1, x2 }) => {
    const [a, b] = s.addStage(castToFloat32, [x1, x2], { outputs: 2, tag: 'Preprocess' })
    const y = s.addStage(add, [a!, b!])
    return { y }
  })
})
