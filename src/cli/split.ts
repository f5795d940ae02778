/**
 * `ms-serve split MODEL --stages N | --at T1,T2 [--at ...] --out DIR`: cuts an ONNX model into
 * pipeline stages (src/models/split.ts), writes stage1.onnx..stageN.onnx, and checks on random
 * inputs that the chained stages give the whole model's outputs (src/models/split-check.ts).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import type { Command } from 'commander'
import { ServeError } from '../errors.ts'
import { onnx } from '../models/onnx-builder.ts'
import { repackExternalData } from '../models/external-data.ts'

function parseDims(list: string[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const item of list) {
    for (const kv of item.split(',')) {
      const m = /^([^=]+)=(\d+)$/.exec(kv.trim())
      if (!m) throw new ServeError('INVALID_REQUEST', `--dim ${kv}: expected NAME=SIZE, e.g. --dim batch_size=1`)
      out[m[1]!.trim()] = Number(m[2])
    }
  }
  return out
}

export function registerSplitCommand(program: Command, fail: (e: unknown) => never): void {
  program
    .command('split')
    .description('split an ONNX model into pipeline stages that chain (stage1.onnx ... stageN.onnx), checked against the whole model')
    .argument('<model>', 'the ONNX file')
    .option('--stages <n>', 'number of stages, cut evenly (decoders with present.* outputs: at layer boundaries)')
    .option('--at <tensors>', 'cut after the nodes computing these tensors (comma list; repeat for each boundary)', (v: string, prev: string[] = []) => [...prev, v], [] as string[])
    .option('--out <dir>', 'where the stage files go (default: beside the model)')
    .option('--dim <name=size>', 'size of a free input dim for the check (repeatable; default optimum decoder sizes, else 2)', (v: string, prev: string[] = []) => [...prev, v], [] as string[])
    .option('--no-check', 'do not run the whole model and the stages on random inputs to compare them')
    .option('--list', 'print the model\'s tensors in node order (candidates for --at) and exit')
    .action(async (model: string, o: { stages?: string; at: string[]; out?: string; dim: string[]; check: boolean; list?: boolean }) => {
      try {
        if (!existsSync(model)) throw new ServeError('INVALID_REQUEST', `model file ${model} not found`)
        const bytes = readFileSync(model)
        if (o.list) {
          const g = onnx.ModelProto.decode(bytes).graph!
          for (const n of g.node ?? []) process.stdout.write(`${n.opType}\t${(n.output ?? []).join(', ')}\n`)
          return
        }
        if (o.stages !== undefined && o.at.length > 0) throw new ServeError('INVALID_REQUEST', 'give either --stages N or --at TENSORS, not both')
        const stages = o.stages === undefined ? undefined : Number(o.stages)
        if (stages !== undefined && (!Number.isInteger(stages) || stages < 2)) throw new ServeError('INVALID_REQUEST', `--stages must be an integer >= 2 (got ${o.stages})`)
        const dims = parseDims(o.dim)
        const { splitModel } = await import('../models/split.ts')
        const { checkSplit, ortTyper } = await import('../models/split-check.ts')
        const t0 = performance.now()
        // External data (model.onnx + model.onnx_data) resolves against the model's folder.
        const folder = dirname(resolve(model))
        const r = await splitModel(bytes, { ...(o.at.length ? { at: o.at.map((a) => a.split(',').map((x) => x.trim()).filter(Boolean)) } : { stages: stages ?? 2 }), externalDataFolder: folder }, ortTyper)
        const out = o.out ?? join(model, '..')
        mkdirSync(out, { recursive: true })
        for (const [i, s] of r.stages.entries()) {
          const file = join(out, `stage${i + 1}.onnx`)
          let data = ''
          if (s.externalData) {
            // Each stage gets its own data file with just its weights, so it loads from any folder.
            const packed = await repackExternalData(s.bytes, folder, file)
            data = `; ${packed.tensors} weights in ${packed.dataPath} (${(packed.dataBytes / 1048576).toFixed(2)} MiB)`
          } else writeFileSync(file, s.bytes)
          process.stdout.write(`stage ${i + 1}: ${file} (${s.nodes} nodes, ${(s.bytes.length / 1048576).toFixed(2)} MiB${data}; inputs ${s.inputs.join(', ')}; outputs ${s.outputs.join(', ')})\n`)
        }
        r.crossings.forEach((c, i) => process.stdout.write(`boundary ${i + 1} (${r.method}): ${c.length} tensor(s) cross: ${c.join(', ')}\n`))
        if (o.check) {
          const rep = await checkSplit(bytes, r.stages, dims, undefined, { whole: folder })
          for (const x of rep.outputs) process.stdout.write(`check ${x.name}: max |whole - stages| = ${x.maxAbsDiff.toExponential(2)}\n`)
          const tol = 1e-4
          if (!(rep.maxAbsDiff <= tol)) throw new ServeError('INTERNAL', `the stages differ from the whole model by ${rep.maxAbsDiff} (tolerance ${tol}); report this with the model`)
          process.stdout.write(`check passed: stages equal the whole model within ${tol} on random inputs (max difference ${rep.maxAbsDiff.toExponential(2)})\n`)
        }
        process.stdout.write(`split into ${r.stages.length} stages in ${Math.round(performance.now() - t0)} ms\n`)
      } catch (e) {
        fail(e)
      }
    })
}
