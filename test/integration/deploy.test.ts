// deploy/: the Kubernetes manifests and the Helm chart, checked offline. The chart is linted and
// rendered by helm itself (deploy/get-helm.sh puts one at deploy/.tools/helm; CI runs it), and
// every object of the manifests and of each rendering is validated against the Kubernetes API
// schemas (kubernetes-models). Then what ties them to ms-serve: every flag the containers pass
// exists in the CLI, the probes are the health routes (open without an API key), the agents
// reach the server's agent port, the HPA scales the agents on a metric the server exports, and
// the Dockerfile starts the server on the ports the manifests use. Not applied to a cluster.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { ConfigMap, PersistentVolumeClaim, Service } from 'kubernetes-models/v1'
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1'
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2'
import { isOpenRestPath } from '../../src/config/security.ts'
import { BIN, ROOT } from '../helpers/server.ts'

const HELM = process.env.MS_SERVE_HELM ?? join(ROOT, 'deploy', '.tools', 'helm')
const CHART = join(ROOT, 'deploy', 'helm', 'ms-serve')

type K8s = { apiVersion: string; kind: string; metadata: { name: string }; spec?: any; data?: Record<string, string> }

const MODELS: Record<string, new (o: any) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap, 'v1/PersistentVolumeClaim': PersistentVolumeClaim, 'v1/Service': Service,
  'apps/v1/Deployment': Deployment, 'apps/v1/StatefulSet': StatefulSet, 'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
}

function objects(text: string): K8s[] {
  return parseAllDocuments(text).map((d) => d.toJS() as K8s).filter((o) => o && typeof o === 'object')
}

/** Each object valid against its API schema; returns them by kind. */
function validate(objs: K8s[], where: string): Map<string, K8s[]> {
  const byKind = new Map<string, K8s[]>()
  for (const o of objs) {
    const Model = MODELS[`${o.apiVersion}/${o.kind}`]
    assert.ok(Model, `${where}: ${o.apiVersion} ${o.kind} has no schema check here`)
    assert.doesNotThrow(() => new Model(o).validate(), `${where}: ${o.kind} ${o.metadata?.name} is not a valid object`)
    byKind.set(o.kind, [...(byKind.get(o.kind) ?? []), o])
  }
  return byKind
}

const helpOf = (cmd: string) => execFileSync(process.execPath, [BIN, cmd, '--help'], { encoding: 'utf8' })

/** Every `--flag` in a container's args is one the CLI command lists. */
function checkArgs(args: string[], where: string): void {
  const cmd = args[0]!
  const help = helpOf(cmd)
  for (const a of args) if (a.startsWith('--')) assert.ok(help.includes(a), `${where}: ${cmd} has no flag ${a}`)
}

/** What ties the objects to ms-serve (see the file comment). */
function checkWiring(kinds: Map<string, K8s[]>, where: string, agents = true): void {
  const server = kinds.get('Deployment')![0]!
  const c = server.spec.template.spec.containers[0]
  checkArgs(c.args, `${where} server`)
  for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
    const path = c[probe].httpGet.path
    assert.ok(isOpenRestPath(path) && path.startsWith('/v2/health/'), `${where}: ${probe} ${path} is a health route open without a key`)
  }
  assert.equal(c.readinessProbe.httpGet.path, '/v2/health/ready')
  const rest = Number(c.args[c.args.indexOf('--rest') + 1].split(':')[1])
  assert.equal(c.ports.find((p: any) => p.name === 'rest').containerPort, rest)
  assert.equal(server.spec.template.metadata.annotations['prometheus.io/port'], String(rest))
  if (!agents) { assert.equal(kinds.get('StatefulSet'), undefined); return }
  const agentsPort = Number(c.args[c.args.indexOf('--agents-listen') + 1].split(':')[1])
  const sts = kinds.get('StatefulSet')![0]!
  const a = sts.spec.template.spec.containers[0]
  checkArgs(a.args, `${where} agent`)
  const [host, port] = a.args[a.args.indexOf('--master') + 1].split(':')
  const svc = kinds.get('Service')!.find((s) => s.metadata.name === host)
  assert.ok(svc, `${where}: the agents' --master ${host} is a Service`)
  assert.equal(svc.spec.ports[0].port, Number(port))
  assert.equal(svc.spec.ports[0].targetPort, 'agents')
  assert.equal(c.ports.find((p: any) => p.name === 'agents').containerPort, agentsPort)
  assert.deepEqual(svc.spec.selector, server.spec.selector.matchLabels)
  // Agents see the servables at the server's path (they check the server's sha256 of each file).
  const mount = (x: any) => x.volumeMounts.find((m: any) => m.name === 'servables').mountPath
  assert.equal(mount(a), mount(c))
  const hpa = kinds.get('HorizontalPodAutoscaler')?.[0]
  if (hpa) {
    assert.deepEqual([hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name], ['StatefulSet', sts.metadata.name])
    const metric = hpa.spec.metrics[0].object.metric.name
    assert.match(readFileSync(join(ROOT, 'src', 'runtime', 'metrics.ts'), 'utf8'), new RegExp(`'${metric}'`), `the HPA's metric ${metric} is one the server exports`)
  }
}

test('deploy/kubernetes/ms-serve.yaml: valid objects, wired to the CLI and to each other', () => {
  const kinds = validate(objects(readFileSync(join(ROOT, 'deploy', 'kubernetes', 'ms-serve.yaml'), 'utf8')), 'ms-serve.yaml')
  assert.deepEqual([...kinds.keys()].sort(), ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PersistentVolumeClaim', 'Service', 'StatefulSet'])
  checkWiring(kinds, 'ms-serve.yaml')
  // The ConfigMap's server.yaml is one the server accepts (keys and ranges are checked at start).
  const cm = kinds.get('ConfigMap')![0]!
  assert.doesNotThrow(() => parseAllDocuments(cm.data!['server.yaml']!))
})

test('the Helm chart lints and renders valid objects for the default values and the variants', (t) => {
  if (!existsSync(HELM)) {
    const why = `no helm at ${HELM}: run bash deploy/get-helm.sh (CI does)`
    if (process.env.MS_SERVE_CI) assert.fail(why)
    t.skip(why)
    return
  }
  const lint = spawnSync(HELM, ['lint', CHART], { encoding: 'utf8' })
  assert.equal(lint.status, 0, lint.stdout + lint.stderr)
  const render = (...set: string[]) => {
    const r = spawnSync(HELM, ['template', 'demo', CHART, ...set.flatMap((s) => ['--set', s])], { encoding: 'utf8' })
    assert.equal(r.status, 0, r.stderr)
    return objects(r.stdout)
  }
  const base = validate(render(), 'chart defaults')
  checkWiring(base, 'chart defaults')
  const serverArgs = (k: Map<string, K8s[]>) => k.get('Deployment')![0]!.spec.template.spec.containers[0].args as string[]
  assert.ok(serverArgs(base).includes('--agents-listen'))
  // Agents only: the server runs no local replicas.
  const remoteOnly = validate(render('server.devices=null'), 'chart server.devices=null')
  assert.ok(serverArgs(remoteOnly).includes('--no-local-replicas'))
  checkWiring(remoteOnly, 'chart server.devices=null')
  // Pipeline stages on an agent pod: its name (the StatefulSet's pod name) in the server's --devices.
  const staged = validate(render('server.devices={0,demo-ms-serve-agent-0:0}'), 'chart server.devices with an agent device')
  const args = serverArgs(staged)
  assert.equal(args[args.indexOf('--devices') + 1], '0,demo-ms-serve-agent-0:0')
  // No agents: no StatefulSet, no agent port, no HPA.
  const single = validate(render('agents.enabled=false'), 'chart agents.enabled=false')
  assert.ok(!serverArgs(single).includes('--agents-listen'))
  checkWiring(single, 'chart agents.enabled=false', false)
  // An existing claim and API keys from a Secret.
  const keyed = validate(render('servables.existingClaim=models', 'server.apiKeySecret=ms-keys'), 'chart existingClaim + apiKeySecret')
  assert.equal(keyed.get('PersistentVolumeClaim'), undefined)
  assert.ok(serverArgs(keyed).includes('--api-key-file'))
  assert.equal(keyed.get('Deployment')![0]!.spec.template.spec.volumes.find((v: any) => v.name === 'servables').persistentVolumeClaim.claimName, 'models')
})

test('deploy/Dockerfile starts the server on the ports the manifests use, as a non-root user', () => {
  const df = readFileSync(join(ROOT, 'deploy', 'Dockerfile'), 'utf8')
  assert.match(df, /^USER node$/m)
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(df)![1]!) as string[]
  checkArgs(cmd, 'Dockerfile CMD')
  assert.deepEqual(/^EXPOSE (.*)$/m.exec(df)![1]!.split(' ').map(Number), [1500, 5500, 6200])
  assert.equal(cmd[cmd.indexOf('--rest') + 1], '0.0.0.0:1500')
  assert.equal(cmd[cmd.indexOf('--grpc') + 1], '0.0.0.0:5500')
})
