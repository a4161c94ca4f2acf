#!/usr/bin/env bash
# Builds the operator image from images/operator/Dockerfile with what the machine has, and
# pushes it to a registry of yours (no public image is published):
#
#   bash images/operator/build.sh operator      # `make image`
#   bash images/operator/build.sh push REF      # `make image-push IMAGE=REF`
#   bash images/operator/build.sh test-tools    # kubectl + curl for `helm test`, registry-free
#   bash images/operator/build.sh python-base   # the registry-free build's Python base
#
# The image targets print exactly two lines on stdout, `ref=<image reference>` and
# `archive=<OCI archive>` (as images/ray-local/build.sh does); everything else goes to
# stderr. `push` prints the helm and manifest commands that use the pushed image.
#
# The builder (LLM_OPERATOR_IMAGE_BUILDER=auto|docker|buildah, default auto):
#   docker   `docker build` with BuildKit, exactly as the Dockerfile's header says: its
#            pinned python:3.11-slim base, dependencies from PyPI. Also tagged
#            llm-operator:<version>; the archive is `docker save`'s (OCI layout since
#            Docker 25). Not exercised on our machines, which have no Docker.
#   buildah  no registry, no daemon, root: the base is a Debian root filesystem with
#            Python 3.11 (debootstrap from this machine's apt mirror, a venv at /usr/local
#            so /usr/local/bin/python and pip sit where the official image has them), the
#            dependencies are wheels downloaded on the host (pip inside the build may not
#            reach or trust the index) and mounted at /mnt, the build arguments
#            PIP_NO_INDEX=1 PIP_FIND_LINKS=/mnt point pip at them. Same Dockerfile, same
#            steps; only the base differs (Debian's Python 3.11.2 instead of 3.11.16).
#            Also tagged localhost/llm-operator:<version> in buildah's storage (the last
#            build made; the archive is what `push` and the e2e suite use). RUN steps get
#            no network.
#   auto     docker when its daemon answers, else buildah (installed with apt if missing).
#
# Output lives outside the work tree, in LLM_OPERATOR_IMAGES_CACHE (default
# ~/.cache/llm-operator/images), one directory per image named after a sha256 of all its
# inputs (for the operator: this script, the Dockerfile, .dockerignore, the build context's
# files, the base and the wheels): a warm call returns at once. A build happens in
# <name>.partial and is renamed when complete; a lock serialises builds of one image.
#
# push: the image goes to REF (registry/repository:tag) with `docker push` when docker
# built it, else `skopeo copy` from the archive (skopeo reads your `skopeo login` or docker
# credentials; extra flags in LLM_OPERATOR_PUSH_FLAGS, e.g. --dest-tls-verify=false).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
ocipack=$repo/images/ray-local/ocipack.py
cache=${LLM_OPERATOR_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-operator/images}
case $cache in /*) ;; *) cache=$PWD/$cache ;; esac
suite=${LLM_OPERATOR_DEBIAN_SUITE:-bookworm}
builder=${LLM_OPERATOR_IMAGE_BUILDER:-auto}
# Where the registry-free build mounts the wheels: a directory every Debian base has, so
# the mount point leaves nothing behind in the image.
wheel_mount=/mnt
uid=65532 # the operator's user, as in the Dockerfile and the chart
std_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "build.sh [${SECONDS}s]: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  echo "usage: $0 operator|push REF|test-tools|python-base" >&2
  exit 2
}

# --- inputs and cache keys -----------------------------------------------------------

host_python() {
  if [ -x "$repo/.venv/bin/python" ]; then echo "$repo/.venv/bin/python"; else echo python3; fi
}

project_version() {
  local version
  version=$(sed -n 's/^version = "\([^"]*\)"$/\1/p' "$repo/pyproject.toml" | head -n1)
  [ -n "$version" ] || die "no version in pyproject.toml"
  echo "$version"
}

# The build context the Dockerfile copies (.dockerignore's allowlist), repository-relative.
context_files() {
  (cd "$repo" && {
    echo pyproject.toml
    echo README.md
    find operator/src -type f -not -path '*/__pycache__/*' -not -name '*.py[co]' \
      -not -path '*.egg-info/*'
  } | LC_ALL=C sort)
}

# sha256 (first 12 hex digits) of a description and of the named files (relative to the
# repository, or absolute), names and contents.
inputs_hash() { # description file...
  local description=$1 file path
  shift
  {
    printf '%s\n' "$description"
    for file in "$@"; do
      case $file in /*) path=$file ;; *) path=$repo/$file ;; esac
      printf 'file %s %s\n' "$file" "$(sha256sum <"$path" | cut -d' ' -f1)"
    done
  } | sha256sum | cut -c1-12
}

# --- helpers -------------------------------------------------------------------------

need_cmd() { # command debian-package
  command -v "$1" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "$1 is missing and apt-get is not available: install the Debian package '$2'"
  [ "$(id -u)" = 0 ] || die "$1 is missing: install the Debian package '$2' (needs root)"
  log "installing the Debian package $2 (for $1)"
  local apt=(apt-get -o DPkg::Lock::Timeout=300)
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q "$2" >&2 && return 0
  "${apt[@]}" update -q >&2 || die "apt-get update failed; install the Debian package '$2'"
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q "$2" >&2 ||
    die "could not install the Debian package '$2' (needed for $1)"
}

# The first URI of this machine's apt sources that serves the suite (deb822 or one-line).
apt_mirror() {
  local uri="" deb822
  for deb822 in /etc/apt/sources.list.d/*.sources; do
    [ -f "$deb822" ] || continue
    uri=$(awk -v suite="$suite" '
      function flush() { if (uri != "" && has_suite && is_deb && out == "") out = uri
                         uri = ""; has_suite = 0; is_deb = 0 }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") is_deb = 1 }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has_suite = 1 }
      END { flush(); print out }' "$deb822")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite="$suite" '
      $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit } }')
  fi
  [ -n "$uri" ] || die "no apt source for '$suite' in /etc/apt/sources.list(.d); cannot pick a mirror"
  echo "$uri"
}

# rm -rf that never leaves its file system, after unmounting anything left below (a
# build interrupted while debootstrap had /proc mounted in the root filesystem).
remove_tree() { # dir
  local dir=$1 mount_point
  [ -e "$dir" ] || return 0
  while read -r mount_point; do
    log "unmounting $mount_point"
    umount -l "$mount_point" || true
  done < <(awk -v d="$dir/" 'index($2 "/", d) == 1 {print $2}' /proc/mounts | sort -r)
  rm -rf --one-file-system "$dir"
}

# Run a command in a root filesystem with a clean environment.
in_rootfs() { # rootfs command...
  local rootfs=$1
  shift
  chroot "$rootfs" /usr/bin/env -i PATH="$std_path" HOME=/tmp LANG=C.UTF-8 "$@"
}

# A minimal Debian root filesystem with the given extra packages.
debootstrap_rootfs() { # rootfs packages
  need_cmd debootstrap debootstrap
  local mirror
  mirror=$(apt_mirror)
  log "debootstrap $suite ($2) from $mirror"
  mkdir -p "$cache/debootstrap-debs"
  debootstrap --variant=minbase --cache-dir="$cache/debootstrap-debs" --include="$2" \
    "$suite" "$1" "$mirror" >&2
}

# What an image needs no copy of: apt's lists and caches, documentation, translations,
# logs, and what the host left (its resolver and name).
trim_rootfs() { # rootfs
  local rootfs=$1
  find "$rootfs/tmp" -mindepth 1 -delete
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
    -exec rm -rf {} +
  rm -f "$rootfs/etc/resolv.conf"
  echo localhost >"$rootfs/etc/hostname"
  chmod 0644 "$rootfs/etc/hostname"
}

# Pack a root filesystem into the archive of a build directory and record facts.
pack_rootfs() { # work ref rootfs config-json started
  local work=$1 ref=$2 rootfs=$3 config=$4 started=$5 rootfs_bytes
  log "packing $ref"
  python3 "$ocipack" --rootfs "$rootfs" --ref "$ref" --config "$config" \
    --out "$work/oci-archive.tar" >&2
  rootfs_bytes=$(du -sbx "$rootfs" | cut -f1)
  remove_tree "$rootfs"
  {
    echo "ref=$ref"
    echo "image_bytes=$rootfs_bytes"
    echo "archive_bytes=$(stat -c %s "$work/oci-archive.tar")"
    echo "build_seconds=$((SECONDS - started))"
  } >"$work/build-info"
}

# The build directory, complete: becomes <name>.
publish() { # name
  remove_tree "$cache/$1"
  mv "$cache/$1.partial" "$cache/$1"
  log "built $(tr '\n' ' ' <"$cache/$1/build-info")"
}

# Build <name> with build_<kind> unless its archive exists, under a lock; then print
# `ref=` and `archive=`.
cached_build() { # kind name ref
  local kind=$1 name=$2 ref=$3 archive=$cache/$2/oci-archive.tar
  if [ ! -f "$archive" ]; then
    mkdir -p "$cache/locks"
    (
      exec 9>"$cache/locks/$name"
      flock 9
      if [ ! -f "$archive" ]; then # nobody built it while we waited
        remove_tree "$cache/$name.partial"
        mkdir -p "$cache/$name.partial"
        "build_$kind" "$name" "$ref" "$cache/$name.partial"
        publish "$name"
      fi
    )
  fi
  echo "ref=$ref"
  echo "archive=$archive"
}

field() { # key <<< "key=value lines"
  sed -n "s/^$1=//p" | head -n1
}

# --- the Python base (registry-free builds) --------------------------------------------

python_base_name() {
  local hash
  hash=$(inputs_hash "python-base $suite" images/operator/build.sh images/ray-local/ocipack.py)
  echo "python-base-$suite-$hash"
}

build_python_base() { # name ref work
  local ref=$2 work=$3 rootfs=$3/rootfs started=$SECONDS
  [ "$(id -u)" = 0 ] || die "building the Python base needs root (debootstrap, chroot)"
  debootstrap_rootfs "$rootfs" python3,python3-venv,ca-certificates
  # A venv at /usr/local: python, python3 and pip in /usr/local/bin and packages in
  # /usr/local/lib/python3.11/site-packages, as in the official image, and pip free to
  # install there (Debian's own Python refuses, PEP 668).
  in_rootfs "$rootfs" python3 -m venv /usr/local
  rm -f "$rootfs"/usr/local/bin/activate* "$rootfs"/usr/local/bin/Activate.ps1
  local facts
  facts=$(in_rootfs "$rootfs" python -c 'import os, platform, sys
print("python=%d.%d.%d" % sys.version_info[:3])
print("glibc=" + platform.libc_ver()[1])
print("arch=" + os.uname().machine)')
  in_rootfs "$rootfs" python -m pip --version >&2
  trim_rootfs "$rootfs"
  pack_rootfs "$work" "$ref" "$rootfs" "{\"Env\": [\"PATH=$std_path\", \"LANG=C.UTF-8\"],
    \"Cmd\": [\"python3\"],
    \"Labels\": {\"org.opencontainers.image.title\": \"python-base\",
                 \"org.opencontainers.image.description\": \"Debian $suite with Python 3 in a venv at /usr/local\"}}" \
    "$started"
  echo "$facts" >>"$work/build-info"
}

python_base() { # -> sets base_ref base_archive base_info
  local name out
  name=$(python_base_name)
  out=$(cached_build python_base "$name" "localhost/llmop/python-base:$suite-${name##*-}")
  base_ref=$(field ref <<<"$out")
  base_archive=$(field archive <<<"$out")
  base_info=$cache/$name/build-info
}

# --- the wheelhouse (registry-free builds) ---------------------------------------------

# The build backend and the dependencies, one requirement a line, from pyproject.toml.
requirements() {
  "$(host_python)" - "$repo/pyproject.toml" <<'EOF'
import sys
import tomllib

with open(sys.argv[1], "rb") as file:
    project = tomllib.load(file)
for requirement in project["build-system"]["requires"] + project["project"]["dependencies"]:
    print(requirement)
EOF
}

# Wheels for the base's Python, glibc and architecture, downloaded on the host.
wheelhouse() { # base-info -> sets wheel_dir
  local info=$1 python glibc arch reqs hash name
  python=$(field python <"$info")
  glibc=$(field glibc <"$info")
  arch=$(field arch <"$info")
  reqs=$(requirements)
  hash=$(printf '%s\n' "$python $glibc $arch" "$reqs" | sha256sum | cut -c1-12)
  name=wheelhouse-$hash
  wheel_dir=$cache/$name
  [ -f "$wheel_dir/.complete" ] && return 0
  mkdir -p "$cache/locks"
  (
    exec 9>"$cache/locks/$name"
    flock 9
    [ -f "$wheel_dir/.complete" ] && exit 0
    local minor platforms=() short=${python%.*}
    for ((minor = ${glibc#*.}; minor >= 17; minor--)); do
      platforms+=(--platform "manylinux_2_${minor}_${arch}")
    done
    platforms+=(--platform "manylinux2014_${arch}")
    remove_tree "$wheel_dir.partial"
    log "downloading wheels for CPython $short, glibc $glibc, $arch"
    mapfile -t req_lines <<<"$reqs"
    "$(host_python)" -m pip download --disable-pip-version-check --quiet \
      --only-binary=:all: "${platforms[@]}" --python-version "$short" \
      --implementation cp --abi "cp${short/./}" --dest "$wheel_dir.partial" "${req_lines[@]}" >&2
    touch "$wheel_dir.partial/.complete"
    remove_tree "$wheel_dir"
    mv "$wheel_dir.partial" "$wheel_dir"
  )
}

# --- the operator image ----------------------------------------------------------------

docker_usable() {
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

pick_builder() {
  case $builder in
    docker | buildah) echo "$builder" ;;
    auto) if docker_usable; then echo docker; else echo buildah; fi ;;
    *) die "LLM_OPERATOR_IMAGE_BUILDER=$builder: expected auto, docker or buildah" ;;
  esac
}

build_operator_docker() { # name ref work
  local ref=$2 work=$3 started=$SECONDS
  log "docker build (BuildKit) of images/operator/Dockerfile"
  DOCKER_BUILDKIT=1 docker build -f "$here/Dockerfile" -t "$ref" \
    -t "llm-operator:$(project_version)" "$repo" >&2
  docker save -o "$work/oci-archive.tar" "$ref"
  {
    echo "ref=$ref"
    echo "builder=docker"
    echo "image_bytes=$(docker image inspect -f '{{.Size}}' "$ref")"
    echo "archive_bytes=$(stat -c %s "$work/oci-archive.tar")"
    echo "build_seconds=$((SECONDS - started))"
  } >"$work/build-info"
}

build_operator_buildah() { # name ref work
  local ref=$2 work=$3 started=$SECONDS version tag previous
  version=$(project_version)
  tag=localhost/llm-operator:$version
  previous=$(buildah images --noheading --format '{{.ID}}' "$tag" 2>/dev/null | sed -n 1p) || true
  log "buildah build of images/operator/Dockerfile on $base_ref, wheels from $wheel_dir"
  buildah pull --quiet "oci-archive:$base_archive" >/dev/null
  # --network none: nothing in the build may reach out; --layers=false: one layer per
  # stage, no intermediate images left behind.
  buildah build --network none --pull=never --layers=false \
    -f "$here/Dockerfile" \
    --build-arg "PYTHON_IMAGE=$base_ref" \
    --build-arg PIP_NO_INDEX=1 --build-arg "PIP_FIND_LINKS=$wheel_mount" \
    --volume "$wheel_dir:$wheel_mount:ro" \
    -t "$ref" -t "$tag" "$repo" >&2
  buildah push --quiet "$ref" "oci-archive:$work/oci-archive.tar:$ref" >&2
  {
    echo "ref=$ref"
    echo "builder=buildah"
    echo "base=$base_ref"
    echo "image_size=$(buildah images --noheading --format '{{.Size}}' "$ref" | sed -n 1p)"
    echo "archive_bytes=$(stat -c %s "$work/oci-archive.tar")"
    echo "build_seconds=$((SECONDS - started))"
  } >"$work/build-info"
  # buildah's storage keeps one name, the version tag: the archive holds this build, the
  # base comes back from its own archive, and the build the tag named before goes.
  buildah rmi "$ref" "$base_ref" >/dev/null
  if [ -n "$previous" ] && [ "$previous" != "$(buildah images --noheading --format '{{.ID}}' "$tag" | sed -n 1p)" ]; then
    buildah rmi "$previous" >/dev/null 2>&1 || log "kept the previous $tag ($previous): in use"
  fi
}

build_operator() { # name ref work
  "build_operator_$used_builder" "$@"
}

operator() {
  local version hash name description inputs=()
  version=$(project_version)
  used_builder=$(pick_builder)
  mapfile -t inputs < <(context_files)
  description="operator $version $used_builder"
  if [ "$used_builder" = buildah ]; then
    [ "$(id -u)" = 0 ] || die "the registry-free build needs root (debootstrap, chroot, buildah)"
    need_cmd buildah buildah
    python_base
    wheelhouse "$base_info"
    description+=" $base_ref ${wheel_dir##*/}"
  else
    description+=" $(sed -n 's/^ARG PYTHON_IMAGE=//p' "$here/Dockerfile")"
  fi
  hash=$(inputs_hash "$description" images/operator/build.sh images/operator/Dockerfile \
    .dockerignore "${inputs[@]}")
  name=llm-operator-$version-$hash
  cached_build operator "$name" "localhost/llmop/llm-operator:$version-$hash"
}

# --- push --------------------------------------------------------------------------------

push() { # image
  local image=$1 out ref archive info used repository tag
  case ${image##*/} in
    *@*) die "$image: give a tag, not a digest (the chart takes image.repository and image.tag)" ;;
    *:*) ;;
    *) die "$image: no tag; e.g. registry.example.com/team/llm-operator:$(project_version)" ;;
  esac
  [[ $image == */* ]] || die "$image: name a registry and repository, e.g. registry.example.com/team/llm-operator:$(project_version)"
  repository=${image%:*}
  tag=${image##*:}
  out=$(operator)
  ref=$(field ref <<<"$out")
  archive=$(field archive <<<"$out")
  info=$(dirname "$archive")/build-info
  used=$(field builder <"$info")
  # shellcheck disable=SC2206 # flags, split on purpose
  local flags=(${LLM_OPERATOR_PUSH_FLAGS:-})
  if [ "$used" = docker ]; then
    log "docker push $image"
    docker tag "$ref" "$image" >&2
    docker push "$image" >&2
  else
    need_cmd skopeo skopeo
    log "skopeo copy oci-archive:$archive docker://$image"
    skopeo copy "${flags[@]}" "oci-archive:$archive" "docker://$image" >&2
  fi
  cat <<EOF
pushed $ref as $image. Install with it:
  helm install llm-operator charts/llm-operator -n llm-system --create-namespace \\
    --set image.repository=$repository --set image.tag=$tag
or with plain manifests:
  make manifests IMAGE=$image && kubectl apply --server-side -f dist/install.yaml
EOF
}

# --- the helm test image -----------------------------------------------------------------

kubectl_binary() {
  local found
  if [ -x "$repo/.e2e/bin/kubectl" ]; then
    found=$repo/.e2e/bin/kubectl
  else
    found=$(command -v kubectl) || die "no kubectl: run e2e/tools.sh (or put kubectl on PATH)"
  fi
  readlink -f "$found"
}

build_test_tools() { # name ref work
  local ref=$2 work=$3 rootfs=$3/rootfs started=$SECONDS
  [ "$(id -u)" = 0 ] || die "building the test tools image needs root (debootstrap, chroot)"
  debootstrap_rootfs "$rootfs" curl,ca-certificates
  # Without its debug information (a third of its size); Go needs none of it to run.
  need_cmd strip binutils
  strip -o "$rootfs/usr/local/bin/kubectl" "$(kubectl_binary)"
  chmod 0755 "$rootfs/usr/local/bin/kubectl"
  in_rootfs "$rootfs" kubectl version --client >&2
  in_rootfs "$rootfs" curl --version | sed -n 1p >&2
  trim_rootfs "$rootfs"
  pack_rootfs "$work" "$ref" "$rootfs" "{\"User\": \"$uid:$uid\",
    \"Env\": [\"PATH=$std_path\", \"HOME=/tmp\"], \"Cmd\": [\"/bin/sh\"],
    \"Labels\": {\"org.opencontainers.image.title\": \"llm-operator-test-tools\",
                 \"org.opencontainers.image.description\": \"kubectl and curl for the chart's helm test\"}}" \
    "$started"
}

test_tools() {
  local kubectl version hash
  kubectl=$(kubectl_binary)
  version=$("$kubectl" version --client -o json |
    "$(host_python)" -c 'import json, sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')
  hash=$(inputs_hash "test-tools $suite $version" images/operator/build.sh \
    images/ray-local/ocipack.py "$kubectl")
  cached_build test_tools "test-tools-$version-$hash" "localhost/llmop/test-tools:$version-$hash"
}

# --- main --------------------------------------------------------------------------------

case ${1:-} in
  operator) [ $# -eq 1 ] || usage; operator ;;
  push) [ $# -eq 2 ] || usage; push "$2" ;;
  test-tools) [ $# -eq 1 ] || usage; test_tools ;;
  python-base)
    [ $# -eq 1 ] || usage
    python_base
    echo "ref=$base_ref"
    echo "archive=$base_archive" ;;
  *) usage ;;
esac
