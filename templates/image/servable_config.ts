// The `image` servable: a small CNN image classifier with real pre- and post-processing.
// Input  {"image": {"b64": "<JPEG or PNG bytes>"}}
// Output {"label": "cat", "score": 0.31, "top_labels": "cat,dog,frog", "top_scores": [0.31, 0.2, 0.1]}
// The CNN's weights are seeded-random (the project builds it; nothing is downloaded), so its labels
// are not meaningful; swap in your own exported model and labels to classify for real.
import sharp from 'sharp'
import { defineServable, isTensor, tensor, type Tensor, type Value } from 'ms-serve'

const SIZE = 32
const TOP_K = 3
const MEAN = [0.4914, 0.4822, 0.4465]
const STD = [0.247, 0.2435, 0.2616]
const LABELS = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']

/** Decodes a JPEG/PNG (sharp), resizes to SIZE x SIZE, and normalises to float32 CHW. */
async function preprocess(image: Value): Promise<Value> {
  if (typeof image === 'string' || isTensor(image)) throw new Error('input image must be bytes: send {"image": {"b64": "<base64 of a JPEG or PNG>"}}')
  let raw: Buffer
  try {
    raw = await sharp(image).removeAlpha().toColorspace('srgb').resize(SIZE, SIZE, { fit: 'fill' }).raw().toBuffer()
  } catch (e) {
    throw new Error(`cannot decode image (${(e as Error).message}); send a JPEG or PNG`)
  }
  const chw = new Float32Array(3 * SIZE * SIZE)
  for (let p = 0; p < SIZE * SIZE; p++) {
    for (let c = 0; c < 3; c++) chw[c * SIZE * SIZE + p] = (raw[p * 3 + c]! / 255 - MEAN[c]!) / STD[c]!
  }
  return tensor('float32', [3, SIZE, SIZE], chw)
}

/** Batched postprocess: softmax over the logits of each instance, then the top-k labels. */
function postprocess(instances: Value[][]): Value[][] {
  return instances.map(([logits]) => {
    const l = (logits as Tensor).data as Float32Array
    const max = Math.max(...l)
    const exp = Array.from(l, (v) => Math.exp(v - max))
    const sum = exp.reduce((a, b) => a + b, 0)
    const order = exp.map((e, i) => [e / sum, i] as const).sort((a, b) => b[0] - a[0]).slice(0, TOP_K)
    return [
      LABELS[order[0]![1]] ?? String(order[0]![1]),
      tensor('float32', [], [order[0]![0]]),
      order.map(([, i]) => LABELS[i] ?? String(i)).join(','),
      tensor('float32', [TOP_K], order.map(([p]) => p)),
    ]
  })
}

export default defineServable((s) => {
  const cnn = s.declareModel({ file: 'image_cnn.onnx', maxBatchSize: 16, maxWaitMs: 2 })
  s.registerMethod('classify', { inputs: ['image'], outputs: ['label', 'score', 'top_labels', 'top_scores'] }, ({ image }) => {
    const x = s.addStage(preprocess, [image], { tag: 'Preprocess' })
    const logits = s.addStage(cnn, [x])
    const [label, score, topLabels, topScores] = s.addStage(postprocess, [logits], { outputs: 4, batchSize: 0, tag: 'Postprocess' })
    return { label: label!, score: score!, top_labels: topLabels!, top_scores: topScores! }
  })
})
