#!/usr/bin/env bash
# Build the local control plane's binaries from pinned Go modules, once per version.
#
# Each wrapper module under tools/<name>/ pins one upstream project. Built binaries go to
# $RUNNERFLEET_CACHE/bin/<name>-<version>/ (default ~/.cache/runnerfleet) and are rebuilt only
# when that directory lacks a binary, so a version bump in a go.mod means a new directory.
# Nothing built is ever written into the repository.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${RUNNERFLEET_CACHE:-$HOME/.cache/runnerfleet}
only=${1:-all}

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is missing (needed to build the control-plane binaries); install Go >= 1.26 and put 'go' on PATH" >&2
  exit 2
fi

export CGO_ENABLED=0
export GOFLAGS=${GOFLAGS:--buildvcs=false}

# version of a required module, read from a wrapper's go.mod
modver() { awk -v m="$2" '$1==m {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$here/$1/go.mod"; }

build() { # build <wrapper> <version> <out-name> <package> [ldflags]
  local wrapper=$1 version=$2 name=$3 pkg=$4 ldflags=${5:-}
  local dir="$cache/bin/$wrapper-$version"
  if [ -x "$dir/$name" ]; then
    echo "cached  $dir/$name"
    return
  fi
  mkdir -p "$dir"
  echo "build   $name ($pkg@$version) ..."
  local start=$SECONDS
  (cd "$here/$wrapper" && go build -trimpath -ldflags "-s -w $ldflags" -o "$dir/$name.tmp" "$pkg")
  mv "$dir/$name.tmp" "$dir/$name"
  echo "built   $dir/$name in $((SECONDS - start))s"
}

if [ "$only" = all ] || [ "$only" = k8s ]; then
  kv=$(modver k8s k8s.io/kubernetes)
  minor=${kv#v1.}; minor=${minor%%.*}
  vflags=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    vflags+=" -X $p.gitVersion=$kv -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    build k8s "$kv" "$c" "k8s.io/kubernetes/cmd/$c" "$vflags"
  done
fi
if [ "$only" = all ] || [ "$only" = etcd ]; then
  ev=$(modver etcd go.etcd.io/etcd/server/v3)
  build etcd "$ev" etcd runnerfleet.dev/tools/etcd
fi
if [ "$only" = all ] || [ "$only" = kwok ]; then
  wv=$(modver kwok sigs.k8s.io/kwok)
  build kwok "$wv" kwok sigs.k8s.io/kwok/cmd/kwok
fi
if [ "$only" = all ] || [ "$only" = karpenter ]; then
  kv=$(modver karpenter sigs.k8s.io/karpenter)
  build karpenter "$kv" karpenter-kwok sigs.k8s.io/karpenter/kwok
  crds="$cache/bin/karpenter-$kv/karpenter-crds"
  if [ ! -d "$crds" ]; then
    # Karpenter's own CRDs (NodePool, NodeClaim, ...) and the kwok provider's KWOKNodeClass,
    # copied from the module so `cluster up --karpenter` needs no module cache at run time.
    src=$(cd "$here/karpenter" && go list -m -f '{{.Dir}}' sigs.k8s.io/karpenter)
    mkdir -p "$crds.tmp"
    cp "$src"/kwok/charts/crds/*.yaml "$src"/kwok/apis/crds/*.yaml "$crds.tmp/"
    chmod -R u+w "$crds.tmp"
    mv "$crds.tmp" "$crds"
    echo "copied  Karpenter CRDs to $crds"
  fi
fi
if [ "$only" = all ] || [ "$only" = helm ]; then
  hv=$(modver helm helm.sh/helm/v3)
  build helm "$hv" helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$hv"
fi
