#!/usr/bin/env bash
# Builds a real Kubernetes control plane from the Go module proxy, for the cluster tests
# (tests/cluster): kube-apiserver, kube-controller-manager and kubectl from k8s.io/kubernetes,
# etcd from go.etcd.io/etcd/server, the kwok fake kubelet from sigs.k8s.io/kwok, and helm from
# helm.sh/helm. KEDA's CRDs are copied out of its Go module. Nothing is downloaded from other
# sites. (No kube-scheduler: the tests bind pods to kwok's node themselves.)
#
# Output: .cache/control-plane/bin/{kube-apiserver,kube-controller-manager,kubectl,etcd,kwok,
# helm} and .cache/control-plane/keda-crds/*.yaml. Cached: a binary is rebuilt only when its
# pinned version changes (the stamp file next to it), so later runs cost a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
KEDA_VERSION="${KEDA_VERSION:-v2.16.1}"

root="$PWD/.cache/control-plane"
bin="$root/bin"
mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:--trimpath}"
export CGO_ENABLED=0

stamp_ok() { [ -x "$bin/$1" ] && [ "$(cat "$bin/$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" >"$bin/$1.version"; }
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

# k8s.io/kubernetes is not meant to be required as a module: its go.mod points its staging
# modules (k8s.io/api, k8s.io/client-go, ...) at ./staging. A wrapper module replaces each with
# the published v0.X.Y of the same release.
build_kubernetes() {
  # The stamp names the recipe too: binaries of an earlier recipe are rebuilt.
  local stamp_value="$K8S_VERSION+version-ldflags"
  if stamp_ok kube-apiserver "$stamp_value" && stamp_ok kube-controller-manager "$stamp_value" &&
    stamp_ok kubectl "$stamp_value"; then
    return
  fi
  local t0 dir mod minor staging ldflags major pkg
  t0=$(date +%s)
  dir="$root/src/kubernetes-$K8S_VERSION"
  mkdir -p "$dir"
  minor="v0.${K8S_VERSION#v1.}"
  mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  staging=$(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$mod" | awk '{print $1}' | sort -u)
  {
    echo "module asya.sh/control-plane/kubernetes"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    for m in $staging; do echo "replace $m => $m $minor"; done
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

// Package tools pins the control-plane commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubectl/pkg/cmd"
)
GO
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
  # The version the binaries report (kube-apiserver's /version, which helm checks a chart's
  # kubeVersion against), as Kubernetes' own build stamps it (hack/lib/version.sh); without it
  # they say v0.0.0-master.
  major=${K8S_VERSION#v}
  ldflags="-s -w"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=${major%%.*}"
    ldflags+=" -X $pkg.gitMinor=$(echo "$major" | cut -d. -f2) -X $pkg.gitTreeState=clean"
  done
  (cd "$dir" && GOFLAGS="$GOFLAGS -mod=mod" go build -ldflags="$ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl)
  stamp kube-apiserver "$stamp_value"
  stamp kube-controller-manager "$stamp_value"
  stamp kubectl "$stamp_value"
  echo "control plane: kube-apiserver, kube-controller-manager and kubectl $K8S_VERSION built in $(elapsed "$t0")"
}

# etcd's own main package lives in the repository's root module; etcdmain is the same entry point.
build_etcd() {
  if stamp_ok etcd "$ETCD_VERSION"; then return; fi
  local t0 dir
  t0=$(date +%s)
  dir="$root/src/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<GOMOD
module asya.sh/control-plane/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >"$dir/main.go" <<'GO'
// Command etcd runs etcd's own entry point (go.etcd.io/etcd/server/v3/etcdmain).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && go mod tidy >/dev/null && go build -ldflags="-s -w" -o "$bin/etcd" .)
  stamp etcd "$ETCD_VERSION"
  echo "control plane: etcd $ETCD_VERSION built in $(elapsed "$t0")"
}

build_tool() { # name version module-path package
  if stamp_ok "$1" "$2"; then return; fi
  local t0 dir
  t0=$(date +%s)
  dir="$root/src/$1-$2"
  mkdir -p "$dir"
  (cd "$dir" && GOBIN="$bin" go install -ldflags="-s -w" "$4@$2")
  stamp "$1" "$2"
  echo "control plane: $1 $2 built in $(elapsed "$t0")"
}

keda_crds() {
  local out="$root/keda-crds" dir
  if [ -f "$out/.version" ] && [ "$(cat "$out/.version")" = "$KEDA_VERSION" ]; then return; fi
  dir=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$out" && mkdir -p "$out"
  cp "$dir"/config/crd/bases/*.yaml "$out/"
  chmod u+w "$out"/*.yaml
  echo "$KEDA_VERSION" >"$out/.version"
}

t_all=$(date +%s)
keda_crds
build_etcd
build_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok
build_tool helm "$HELM_VERSION" helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm
build_kubernetes
echo "control plane ready in $(elapsed "$t_all"): $(ls "$bin" | grep -v '\.version$' | tr '\n' ' ')"
