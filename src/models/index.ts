// Built-in models generated in-process, so the server, examples and tests need
// no model downloads. Builders are deterministic: same name, same bytes.
import { buildAddModel } from './add.ts';
import { buildImageCnn } from './image-cnn.ts';
import { buildMlp } from './mlp.ts';
import { buildDecoder, DECODER_CONFIGS } from './decoder.ts';

export { buildAddModel, addModelShape, type AddModelOptions } from './add.ts';
export { buildImageCnn, imageCnnWeights, IMAGE_CNN_LABELS, IMAGE_CNN_CHANNELS, type ImageCnnOptions, type ImageCnnWeights } from './image-cnn.ts';
export { buildMlp, buildDeepMlp, mlpWeights, type MlpOptions, type MlpWeights, type DeepMlpOptions } from './mlp.ts';
export { OnnxGraphBuilder, mulberry32, normalSampler, randomNormal, heNormal, floatAttr, IR_VERSION, OPSET_VERSION } from './onnx-builder.ts';
export type { Dim, ElemType, InitData, AttrValue } from './onnx-builder.ts';
export { externalizeModel, writeExternalDataModel, usesExternalData, type ExternalDataOptions, type ExternalizedModel } from './external-data.ts';
export { quantizeModel, quantizeBlockwise, dequantizeBlockwise, quantizeInt8PerColumn, type QuantizeOptions, type QuantFormat, type BlockwiseWeight } from './quantize.ts';
export { buildSyntheticTokenizer, writeSyntheticTokenizer, byteToUnicode, type SyntheticTokenizer } from './synthetic-tokenizer.ts';

/** Name -> builder for every built-in model, with default options. */
export const BUILTIN_MODELS: Record<string, () => Uint8Array> = Object.freeze({
  add: () => buildAddModel({ batchDim: true }),
  add_nobatch: () => buildAddModel({ batchDim: false }),
  image_cnn: () => buildImageCnn(),
  mlp: () => buildMlp(),
  decoder_tiny: () => buildDecoder(DECODER_CONFIGS.tiny),
  decoder_tiny4: () => buildDecoder({ ...DECODER_CONFIGS.tiny, numLayers: 4 }),
  decoder_small: () => buildDecoder(DECODER_CONFIGS.small),
});

/** Builds a built-in model by name; throws listing the valid names if unknown. */
export function buildBuiltinModel(name: string): Uint8Array {
  const build = Object.hasOwn(BUILTIN_MODELS, name) ? BUILTIN_MODELS[name] : undefined;
  if (!build) throw new Error(`unknown built-in model "${name}"; known: ${Object.keys(BUILTIN_MODELS).join(', ')}`);
  return build();
}
