/** Public API for servable_config.ts files: `import { defineServable, tensor } from 'ms-serve'`. */
export { defineServable, Placeholder, ModelRef } from './config/define.ts'
export type {
  ServableBuilder, ServableDefinition, ServableOptions, ModelOptions, LlmOptions, BatchingOptions, SessionOptions, StageOptions,
  InstanceStageFn, BatchStageFn,
} from './config/define.ts'
export { Tensor, tensor, tensorFromBytes, castTensor, isTensor, shapeSize, f16BitsToF32, f32ToF16Bits } from './tensor.ts'
export type { Value, DType, NumericDType, TypedArray } from './tensor.ts'
export { ServeError } from './errors.ts'
export { InvalidInputError } from './stage-errors.ts'
