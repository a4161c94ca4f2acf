#!/usr/bin/env bash
# Builds the pinned control-plane tools (Kubernetes, etcd, kwok, KubeRay, Helm, and
# the real node's kubelet, kube-proxy and CoreDNS) from
# the Go modules in e2e/tools/<group>/, or reuses an earlier build, and prints the
# directory that holds them all. `e2e/tools.sh helm kwok` limits it to those groups.
#
# Each upstream project gets a module of its own so their dependency graphs never mix;
# the version pinned in that module's go.mod is the cache key. Builds live outside the
# work tree (LLM_OPERATOR_TOOLS_CACHE, default ~/.cache/llm-operator/tools), so a warm
# machine rebuilds nothing and a fresh clone reuses them.
set -euo pipefail

e2e_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
modules_dir=$e2e_dir/tools
cache=${LLM_OPERATOR_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-operator/tools}
bin_dir=${LLM_OPERATOR_BIN_DIR:-$e2e_dir/../.e2e/bin}
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# group | main module (its version is the key) | binaries it yields
tool_groups=(
  "helm|helm.sh/helm/v3|helm"
  "kwok|sigs.k8s.io/kwok|kwok kwokctl"
  "kuberay|github.com/ray-project/kuberay/ray-operator|ray-operator"
  "etcd|go.etcd.io/etcd/server/v3|etcd"
  "kubernetes|k8s.io/kubernetes|kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"
  "coredns|github.com/coredns/coredns|coredns"
)

# Bumped when the way a group is built changes, so cached builds are not reused.
build_recipe=3

pinned_version() { # module go.mod (in a require block, or a one-line require)
  awk -v m="$1" '$1 == "require" {$1 = ""; $0 = $0} $1 == m && $2 ~ /^v/ {print $2; exit}' "$2"
}

# Release builds stamp the version into the binaries; `go install` does not, and then
# kube-apiserver reports v0.0.0 and Helm refuses charts that declare a kubeVersion.
version_ldflags() { # group version
  case $1 in
    kubernetes)
      local minor
      minor=$(echo "$2" | cut -d. -f2)
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s ' \
          "$pkg" "$2" "$pkg" "$pkg" "$minor"
      done ;;
    helm)
      # As upstream's Makefile: the default capabilities (what `helm template` assumes
      # without --kube-version) follow the client-go Helm was built with, not v1.20.
      local client_go major minor pkg
      client_go=$(cd "$modules_dir/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
      major=$(($(echo "${client_go#v}" | cut -d. -f1) + 1))
      minor=$(echo "$client_go" | cut -d. -f2)
      printf -- '-X helm.sh/helm/v3/internal/version.version=%s ' "$2"
      for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        printf -- '-X %s.k8sVersionMajor=%s -X %s.k8sVersionMinor=%s ' "$pkg" "$major" "$pkg" "$minor"
      done ;;
  esac
}

build_group() { # group module dest version
  local group=$1 module=$2 dest=$3 version=$4 started=$SECONDS
  echo "building $group ($module $(basename "$dest" | sed "s/^$group-//")) into $dest" >&2
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  if [ "$group" = coredns ]; then
    # Our own small main (e2e/tools/coredns/main.go) over the pinned CoreDNS packages.
    (cd "$modules_dir/$group" && nice -n 10 go build -o "$dest.partial/coredns" \
      -ldflags="-X github.com/coredns/coredns/coremain.GitCommit=$version" .)
  else
    (cd "$modules_dir/$group" && GOBIN="$dest.partial" nice -n 10 go install \
      -ldflags="$(version_ldflags "$group" "$version")" tool)
  fi
  case $group in
    # The etcd server's main package is the module root, so Go names the binary after
    # the path element before /v3.
    etcd) mv "$dest.partial/server" "$dest.partial/etcd" ;;
    # KubeRay's CRDs ship in the same module as the operator: keep the pinned copy.
    kuberay)
      local src
      src=$(cd "$modules_dir/$group" && go list -m -f '{{.Dir}}' "$module")
      cp -r "$src/config/crd/bases" "$dest.partial/crds"
      chmod -R u+w "$dest.partial/crds" ;;
  esac
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  echo "built $group in $((SECONDS - started)) s" >&2
}

# The Gateway API's CRDs (standard channel: GatewayClass, Gateway, HTTPRoute, ...) at the
# version KubeRay's module requires (its go.mod pins it), copied out of that module's
# download; linked as gateway-api-crds with KubeRay's. The HTTPRoute of
# spec.exposure.gateway is checked against them, and the local cluster installs them.
link_gateway_api_crds() {
  local module=sigs.k8s.io/gateway-api version dest src
  version=$(pinned_version "$module" "$modules_dir/kuberay/go.mod")
  [ -n "$version" ] || { echo "no version of $module in e2e/tools/kuberay/go.mod" >&2; exit 1; }
  dest=$cache/gateway-api-$version
  if [ ! -d "$dest" ]; then
    src=$(cd "$modules_dir/kuberay" && go mod download -json "$module" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
    [ -d "$src/config/crd/standard" ] || { echo "no CRDs in $module $version ($src)" >&2; exit 1; }
    rm -rf "$dest.partial"
    cp -r "$src/config/crd/standard" "$dest.partial"
    chmod -R u+w "$dest.partial"
    mv "$dest.partial" "$dest"
  fi
  ln -sfn "$dest" "$bin_dir/gateway-api-crds"
}

mkdir -p "$bin_dir"
wanted=" $* "
for entry in "${tool_groups[@]}"; do
  IFS='|' read -r group module binaries <<<"$entry"
  [ $# -eq 0 ] || [[ $wanted == *" $group "* ]] || continue
  version=$(pinned_version "$module" "$modules_dir/$group/go.mod")
  [ -n "$version" ] || { echo "no version of $module in e2e/tools/$group/go.mod" >&2; exit 1; }
  dest=$cache/$group-$version-r$build_recipe
  [ -d "$dest" ] || build_group "$group" "$module" "$dest" "$version"
  for binary in $binaries; do
    ln -sfn "$dest/$binary" "$bin_dir/$binary"
  done
  [ "$group" != kuberay ] || ln -sfn "$dest/crds" "$bin_dir/kuberay-crds"
  [ "$group" != kuberay ] || link_gateway_api_crds
done
cd "$bin_dir" && pwd
