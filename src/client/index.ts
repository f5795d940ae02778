/**
 * ms-serve's client (`import { Client, tensor } from 'ms-serve/client'`): predict, generate, chat,
 * health and servables over REST or gRPC, with MindSpore's Python client's error semantics.
 */
export { Client } from './client.ts'
export { ClientError, isClientError } from './errors.ts'
export type { ClientErrorCode } from './errors.ts'
export { GrpcTransport, predictResults } from './grpc-transport.ts'
export { RestTransport } from './rest-transport.ts'
export type { WirePredictReply, WirePredictRequest } from '../protocol/grpc/ms-codec.ts'
export type {
  CallOptions, ChatDelta, ChatMessage, ChatOptions, ChatParams, ChatReply, ClientOptions, GenerateDoneEvent, GenerateEvent, GenerateOptions,
  GenerateParams, Health, Instance, InstanceResult, Pem, PredictOptions, Prompt, TokenEvent, ToolCall, TopToken, Usage,
} from './types.ts'
export type {
  MethodDescription, ReplicaDescription, ServableDescription, ServablesDescription, TensorDescription, VersionDescription,
} from '../runtime/describe.ts'
export { Tensor, tensor, tensorFromBytes, castTensor, isTensor, f16BitsToF32, f32ToF16Bits } from '../tensor.ts'
export type { Value, DType, NumericDType, TypedArray } from '../tensor.ts'
