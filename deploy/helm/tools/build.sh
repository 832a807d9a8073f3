#!/usr/bin/env bash
# Builds the chart's tools into DIR (make: $GROUNDSWELL_CACHE/helm-tools, else .run/cache/helm-tools): helm (lint,
# template) and validate (the rendered manifests against the Kubernetes API types, offline), from the Go module proxy
# with the checksums in go.sum (-mod=readonly: a module whose checksum is not there fails the build). Reused while
# go.mod, go.sum and the validator's source are unchanged (DIR/stamp). `make test` starts it in the background before
# the suite; tests/infra/test_helm_chart.py waits for it (DIR/build.lock) and runs it itself if nothing did.
#   GO (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mkdir -p "${1:-$here/../../../.run/cache/helm-tools}" && cd "${1:-$here/../../../.run/cache/helm-tools}" && pwd)"
go="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

exec 9>"$dir/build.lock"
flock 9
stamp="$(cat "$here/go.mod" "$here/go.sum" "$here/validate/main.go" | sha256sum | cut -c1-16)"
if [ -x "$dir/helm" ] && [ -x "$dir/validate" ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "helm tools: up to date in $dir"
  exit 0
fi
if [ ! -x "$go" ]; then
  echo "helm tools: no Go toolchain (set GO=/path/to/go; Go $(sed -n 's/^go //p' "$here/go.mod") or newer)" >&2
  exit 1
fi
rm -f "$dir/stamp"
started=$(date +%s)
cd "$here"
# Go's own module and build caches (go env GOMODCACHE GOCACHE; set them to move them): another checkout on the same
# machine then only links. From cold the build takes minutes (docs/scaling.md).
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
# What helm's own Makefile stamps in: its version, and the Kubernetes version of its client modules (the default
# of `helm template` and the deprecation rules of `helm lint`).
helm="$(sed -n 's/^\t*helm.sh\/helm\/v3 \(v[0-9.]*\).*/\1/p' go.mod)"
k8s="$(sed -n 's/^\t*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' go.mod)"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm"
for package in pkg/lint/rules pkg/chartutil; do
  ldflags="$ldflags -X helm.sh/helm/v3/$package.k8sVersionMajor=1 -X helm.sh/helm/v3/$package.k8sVersionMinor=$k8s"
done
nice -n 10 "$go" build -trimpath -ldflags="$ldflags" -o "$dir/helm" helm.sh/helm/v3/cmd/helm
nice -n 10 "$go" build -trimpath -ldflags="-s -w" -o "$dir/validate" ./validate
echo "$stamp" > "$dir/stamp"
echo "helm tools: built in $(( $(date +%s) - started )) s into $dir ($("$dir/helm" version --short))"
