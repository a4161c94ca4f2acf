#!/usr/bin/env bash
# Builds, without a container engine or an image registry, the images the local
# cluster's real kubelet node runs, as OCI archives for `ctr -n k8s.io images import`:
#
#   bash images/ray-local/build.sh ray     # Ray (the operator's Ray version) + llm_standin (Serve stand-in, and llm_standin.train: the CPU training entrypoint of mode Job tests)
#   bash images/ray-local/build.sh ray-llm # Ray + Ray Serve LLM (vLLM) + llmop_fake_engine
#   bash images/ray-local/build.sh pause   # the pod sandbox image, from pause.c
#   bash images/ray-local/build.sh redis   # Debian's redis-server, for GCS fault tolerance
#
# Prints exactly two lines on stdout, `ref=<image reference>` and `archive=<OCI archive>`;
# everything else goes to stderr. The Ray and Redis images need root (debootstrap, chroot).
#
# Output lives outside the work tree, in LLM_OPERATOR_IMAGES_CACHE (default
# ~/.cache/llm-operator/images), one directory per image named after a sha256 of all
# its inputs (this script, ocipack.py, the stand-in app or fake engine, the Ray version and
# the Debian suite; for pause the pinned Kubernetes version): a warm call returns at once.
# A build happens in <name>.partial and is renamed when complete. Wheels are downloaded
# once per requirement and kept there too (ray-wheels-<hash>), so changing this script
# or an app rebuilds an image without downloading again.
#
# Ray image: `debootstrap --variant=minbase` of the Debian suite from this machine's own
# apt mirror, a venv at /opt/ray holding ray[serve] from wheels downloaded on the host
# (pip inside the chroot cannot reach the index), the stand-in Serve app
# (images/ray-local/standin) at /opt/llm-standin on PYTHONPATH, and Ray's usual non-root
# user `ray` (uid 1000, HOME /home/ray). bash, wget and grep are there for KubeRay's
# container command and probes.
#
# Ray LLM image: the same, with ray[serve,llm] (Ray Serve LLM, vLLM and a CUDA build of
# torch, which imports without a GPU: about 9.5 GB) and, instead of the stand-in, the
# fake engine (images/ray-local/fake_engine) at /opt/llmop-fake-engine on PYTHONPATH. It
# stands in for vLLM where no GPU exists: the image sets
# RAYLLM_VLLM_ENGINE_CLS=llmop_fake_engine.engine:FakeVLLMEngine, so Ray Serve LLM's own
# application (engine.type vllm) runs with only the inference engine replaced. For tests
# on machines without GPUs only; never for serving. Its layer is zstd-compressed (about
# 4 GB); the other images' layers are uncompressed.
#
# Redis image: `debootstrap --variant=minbase` of the same suite with Debian's
# redis-server (and redis-cli, for probes), running as the package's own `redis` user,
# `redis-server` on port 6379 with /data as its (empty, unsaved) directory by default.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${LLM_OPERATOR_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-operator/images}
case $cache in /*) ;; *) cache=$PWD/$cache ;; esac
suite=${LLM_OPERATOR_DEBIAN_SUITE:-bookworm}
ray_uid=1000
ray_gid=100 # `users`, as in the rayproject images

log() { echo "build.sh [${SECONDS}s]: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  echo "usage: $0 ray|ray-llm|pause|redis" >&2
  exit 2
}

# --- inputs and cache keys -----------------------------------------------------------

ray_version() {
  local version
  version=$(sed -n 's/^DEFAULT_RAY_VERSION = "\([^"]*\)"$/\1/p' \
    "$repo/operator/src/llm_operator/settings.py")
  [ -n "$version" ] || die "no DEFAULT_RAY_VERSION in operator/src/llm_operator/settings.py"
  echo "$version"
}

k8s_version() {
  local version
  version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' \
    "$repo/e2e/tools/kubernetes/go.mod")
  [ -n "$version" ] || die "no k8s.io/kubernetes version in e2e/tools/kubernetes/go.mod"
  echo "$version"
}

list_app_files() { # directory under this one
  (cd "$here" && find "$1" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' |
    LC_ALL=C sort)
}

# sha256 (first 12 hex digits) of a description and of the named files (relative to
# this directory), names and contents.
inputs_hash() { # description file...
  local description=$1 file
  shift
  {
    printf '%s\n' "$description"
    for file in "$@"; do
      printf 'file %s %s\n' "$file" "$(sha256sum <"$here/$file" | cut -d' ' -f1)"
    done
  } | sha256sum | cut -c1-12
}

# --- helpers -------------------------------------------------------------------------

need_cmd() { # command debian-package
  command -v "$1" >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "$1 is missing and apt-get is not available: install the Debian package '$2'"
  log "installing the Debian package $2 (for $1)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2 && return 0
  apt-get update -q >&2 || die "apt-get update failed; install the Debian package '$2'"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >&2 ||
    die "could not install the Debian package '$2' (needed for $1)"
}

# The first URI of this machine's apt sources that serves the suite (deb822 or one-line).
apt_mirror() {
  local uri=""
  local deb822
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

# Run a command in the root filesystem with a clean environment: nothing of the host's
# (PIP_*, proxies, PYTHONPATH) leaks into the build.
in_rootfs() { # rootfs [chroot options] -- command...
  local rootfs=$1 options=()
  shift
  while [ "$1" != -- ]; do options+=("$1"); shift; done
  shift
  chroot "${options[@]}" "$rootfs" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp LANG=C.UTF-8 "$@"
}

# Finish an image: pack rootfs into the archive, record facts, publish the directory.
# LLM_OPERATOR_KEEP_ROOTFS=1 keeps the root filesystem next to the archive.
publish() { # name ref rootfs config-json started [ocipack option...]
  local name=$1 ref=$2 rootfs=$3 config=$4 started=$5 work=$cache/$1.partial rootfs_bytes
  shift 5
  log "packing $ref"
  python3 "$here/ocipack.py" --rootfs "$rootfs" --ref "$ref" --config "$config" \
    --out "$work/oci-archive.tar" "$@" >&2
  rootfs_bytes=$(du -sbx "$rootfs" | cut -f1)
  if [ "${LLM_OPERATOR_KEEP_ROOTFS:-0}" != 1 ]; then
    remove_tree "$rootfs"
  fi
  {
    echo "ref=$ref"
    echo "rootfs_bytes=$rootfs_bytes"
    echo "archive_bytes=$(stat -c %s "$work/oci-archive.tar")"
    echo "build_seconds=$((SECONDS - started))"
  } >"$work/build-info"
  remove_tree "$cache/$name"
  mv "$work" "$cache/$name"
  log "built $ref: $(tr '\n' ' ' <"$cache/$name/build-info")"
}

# --- wheels for a root filesystem's Python -----------------------------------------

# The pip platform tags a glibc accepts, newest first.
wheel_platforms() { # glibc arch
  local minor
  for ((minor = ${1#*.}; minor >= 17; minor--)); do
    echo --platform
    echo "manylinux_2_${minor}_$2"
  done
  echo --platform
  echo "manylinux2014_$2"
}

# Wheels of a requirement for a CPython/glibc/architecture, downloaded on the host into
# the cache (pip inside the root filesystem cannot reach the index) and kept: a rebuild
# after a change of this script or of an app reuses them (ray[serve,llm] is 5 GB).
wheelhouse() { # requirement python(e.g. 311) glibc arch -> sets wheel_dir
  local requirement=$1 py=$2 glibc=$3 arch=$4 hash name host_python=python3
  hash=$(printf '%s\n' "$requirement" "cp$py $glibc $arch" | sha256sum | cut -c1-12)
  name=ray-wheels-$hash
  wheel_dir=$cache/$name
  [ -f "$wheel_dir/.complete" ] && return 0
  [ -x "$repo/.venv/bin/python" ] && host_python=$repo/.venv/bin/python
  mkdir -p "$cache/locks"
  (
    exec 8>"$cache/locks/$name"
    flock 8
    [ -f "$wheel_dir/.complete" ] && exit 0
    local platforms
    mapfile -t platforms < <(wheel_platforms "$glibc" "$arch")
    log "downloading $requirement wheels for cp$py, glibc $glibc, $arch"
    # Kept across attempts: pip skips the wheels an interrupted download completed.
    mkdir -p "$wheel_dir.partial"
    "$host_python" -m pip download --disable-pip-version-check --quiet \
      --only-binary=:all: "${platforms[@]}" --python-version "${py:0:1}.${py:1}" \
      --implementation cp --abi "cp$py" --dest "$wheel_dir.partial" "$requirement" >&2
    touch "$wheel_dir.partial/.complete"
    remove_tree "$wheel_dir"
    mv "$wheel_dir.partial" "$wheel_dir"
    log "$(find "$wheel_dir" -name '*.whl' | wc -l) wheels, $(du -sh "$wheel_dir" | cut -f1)"
  )
}

# --- the Ray images ------------------------------------------------------------------

# What the two Ray images differ in, by kind: the pip extras, the app directory (under
# this one) and where it goes in the image, a module the image check imports, extra
# Env entries, how ocipack.py packs it, the image's title and description. The Ray LLM
# image's layer is compressed with zstd (10 GB of wheels become about 4 GB, in about a
# minute on one core): 6 GB less to write, to import into containerd and to keep there.
ray_flavour() { # ray|ray-llm
  case $1 in
    ray)
      extras=serve app_src=standin app_dir=/opt/llm-standin app_module=llm_standin.app
      extra_env=() pack_options=()
      title=ray-local
      description="Ray $version with the llm_standin Serve app, for the local cluster" ;;
    ray-llm)
      extras=serve,llm app_src=fake_engine app_dir=/opt/llmop-fake-engine
      app_module=llmop_fake_engine.engine
      extra_env=("RAYLLM_VLLM_ENGINE_CLS=llmop_fake_engine.engine:FakeVLLMEngine")
      pack_options=(--zstd)
      title=ray-llm-local
      description="Ray $version and Ray Serve LLM with vLLM's engine replaced by llmop_fake_engine, which stands in for vLLM where no GPU exists; for the local cluster's tests only" ;;
    *) die "unknown Ray image kind $1" ;;
  esac
}

# The image config (User, Env, Cmd, ...) as JSON; Env entries as arguments.
ray_image_config() { # title version description env...
  python3 - "$ray_uid" "$@" <<'PY'
import json
import sys

user, title, version, description, *env = sys.argv[1:]
labels = {
    "org.opencontainers.image.title": title,
    "org.opencontainers.image.version": version,
    "org.opencontainers.image.description": description,
}
config = {"User": user, "Env": env, "Cmd": ["/bin/bash"], "WorkingDir": "/home/ray",
          "Labels": labels}
print(json.dumps(config))
PY
}

build_ray() { # name ref version rootfs kind
  local name=$1 ref=$2 version=$3 rootfs=$4 kind=$5 mirror started=$SECONDS
  local extras app_src app_dir app_module extra_env pack_options title description
  ray_flavour "$kind"
  [ "$(id -u)" = 0 ] || die "building the Ray image needs root (debootstrap, chroot)"
  need_cmd debootstrap debootstrap
  [ ${#pack_options[@]} -eq 0 ] || need_cmd zstd zstd
  mirror=$(apt_mirror)
  log "debootstrap $suite from $mirror"
  mkdir -p "$cache/debootstrap-debs"
  debootstrap --variant=minbase --cache-dir="$cache/debootstrap-debs" \
    --include=python3,python3-venv,ca-certificates,procps,wget,bash \
    "$suite" "$rootfs" "$mirror" >&2

  # The wheels must match the root filesystem's Python and glibc, not the host's.
  local py glibc arch wheel_dir requirement="ray[$extras]==$version"
  read -r py glibc arch < <(in_rootfs "$rootfs" -- python3 -c \
    'import os, platform, sys; print("%d%d" % sys.version_info[:2], platform.libc_ver()[1], os.uname().machine)')
  wheelhouse "$requirement" "$py" "$glibc" "$arch"
  # Hard links where the cache and the root filesystem share a file system: no copy.
  cp -al "$wheel_dir" "$rootfs/tmp/wheels" 2>/dev/null || {
    rm -rf "$rootfs/tmp/wheels"
    cp -a "$wheel_dir" "$rootfs/tmp/wheels"
  }

  log "installing $requirement into /opt/ray"
  in_rootfs "$rootfs" -- python3 -m venv /opt/ray
  in_rootfs "$rootfs" -- /opt/ray/bin/python -m pip install --disable-pip-version-check --quiet \
    --root-user-action=ignore --no-cache-dir --no-index --find-links /tmp/wheels \
    "$requirement" >&2

  log "adding $app_src and the ray user"
  mkdir -p "$rootfs$app_dir"
  (cd "$here/$app_src" && find . -type f -not -path '*/__pycache__/*' -not -name '*.pyc' |
    LC_ALL=C sort | tar -cf - --no-recursion -T -) | tar -xf - -C "$rootfs$app_dir"
  in_rootfs "$rootfs" -- /opt/ray/bin/python -m compileall -q "$app_dir" >&2
  in_rootfs "$rootfs" -- useradd --uid "$ray_uid" --gid "$ray_gid" --create-home \
    --home-dir /home/ray --shell /bin/bash ray
  in_rootfs "$rootfs" -- chown -R "$ray_uid:$ray_gid" /opt/ray
  # Login shells (KubeRay's ENABLE_LOGIN_SHELL=true runs `bash -lc`) reset PATH in
  # /etc/profile; keep the venv first there too.
  # shellcheck disable=SC2016 # expanded by the login shell
  echo 'case ":$PATH:" in *:/opt/ray/bin:*) ;; *) PATH=/opt/ray/bin:$PATH ;; esac' \
    >"$rootfs/etc/profile.d/ray-venv.sh"

  local path=/opt/ray/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  local env=("PATH=$path" "PYTHONPATH=$app_dir" "VIRTUAL_ENV=/opt/ray" "LANG=C.UTF-8"
    "${extra_env[@]}")
  log "checking the image as uid $ray_uid"
  # The engine class Ray Serve LLM would load, when the image names one, must import
  # and implement Ray's engine protocol.
  # shellcheck disable=SC2016 # expanded by the shell inside the root filesystem
  in_rootfs "$rootfs" --userspec="$ray_uid:$ray_gid" -- "${env[@]}" HOME=/home/ray \
    APP_MODULE="$app_module" bash -c '
      set -e
      for tool in bash wget grep ps ray serve; do command -v "$tool" >/dev/null; done
      python -c "
import importlib, os, ray, ray.serve
importlib.import_module(os.environ[\"APP_MODULE\"])
engine = os.environ.get(\"RAYLLM_VLLM_ENGINE_CLS\", \"\")
if engine:
    from ray._common.utils import import_attr
    from ray.llm._internal.serve.core.engine.protocol import LLMEngine
    assert issubclass(import_attr(engine), LLMEngine), engine
print(\"ray\", ray.__version__, os.environ[\"APP_MODULE\"], engine)"
      env -i HOME=/home/ray bash -lc "command -v ray"' >&2

  # What the build, its check and the host left behind: downloaded files, caches, the
  # host's resolver and name.
  find "$rootfs/tmp" -mindepth 1 -delete
  rm -rf "$rootfs/home/ray/.cache" "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  rm -f "$rootfs/etc/resolv.conf"
  echo localhost >"$rootfs/etc/hostname"
  chmod 0644 "$rootfs/etc/hostname"

  publish "$name" "$ref" "$rootfs" \
    "$(ray_image_config "$title" "$version" "$description" "${env[@]}")" "$started" \
    "${pack_options[@]}"
}

# --- the Redis image -----------------------------------------------------------------

# Leave the host as it was: every process still running from the root filesystem (a
# package's post-installation script may start its daemon) is stopped.
stop_rootfs_processes() { # rootfs
  local rootfs dir pid
  rootfs=$(readlink -f "$1")
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [ "$(readlink "$dir/root" 2>/dev/null)" = "$rootfs" ] || continue
    log "stopping process $pid left running in the root filesystem"
    kill "$pid" 2>/dev/null || true
  done
}

build_redis() { # name ref suite rootfs
  local name=$1 ref=$2 rootfs=$4 mirror started=$SECONDS uid gid version
  [ "$(id -u)" = 0 ] || die "building the Redis image needs root (debootstrap, chroot)"
  need_cmd debootstrap debootstrap
  mirror=$(apt_mirror)
  log "debootstrap $suite with redis-server from $mirror"
  mkdir -p "$cache/debootstrap-debs"
  debootstrap --variant=minbase --cache-dir="$cache/debootstrap-debs" \
    --include=redis-server "$suite" "$rootfs" "$mirror" >&2
  stop_rootfs_processes "$rootfs"

  uid=$(awk -F: '$1 == "redis" {print $3}' "$rootfs/etc/passwd")
  gid=$(awk -F: '$1 == "redis" {print $4}' "$rootfs/etc/passwd")
  if [ -z "$uid" ] || [ -z "$gid" ]; then die "the redis-server package made no redis user"; fi
  mkdir -p "$rootfs/data"
  chown "$uid:$gid" "$rootfs/data"
  chmod 0750 "$rootfs/data"

  find "$rootfs/tmp" -mindepth 1 -delete
  rm -rf "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  rm -f "$rootfs/etc/resolv.conf"
  echo localhost >"$rootfs/etc/hostname"
  chmod 0644 "$rootfs/etc/hostname"

  log "checking the image as uid $uid: a server on a socket answers PING"
  # shellcheck disable=SC2016 # expanded by the shell inside the root filesystem
  in_rootfs "$rootfs" --userspec="$uid:$gid" -- HOME=/data bash -c '
      set -e
      redis-server --port 0 --unixsocket /tmp/check.sock --dir /tmp --save "" \
        --appendonly no --daemonize no >/tmp/check.log 2>&1 &
      for _ in $(seq 50); do [ -S /tmp/check.sock ] && break; sleep 0.1; done
      [ "$(redis-cli -s /tmp/check.sock ping)" = PONG ]
      redis-cli -s /tmp/check.sock shutdown nosave >/dev/null 2>&1 || true
      wait' >&2 || die "redis-server did not answer in the root filesystem"
  stop_rootfs_processes "$rootfs"
  find "$rootfs/tmp" -mindepth 1 -delete
  version=$(in_rootfs "$rootfs" -- redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')

  local config
  config=$(cat <<EOF2
{"User": "$uid:$gid",
 "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
 "Cmd": ["redis-server", "--port", "6379", "--protected-mode", "no", "--save", "",
         "--appendonly", "no", "--dir", "/data"],
 "WorkingDir": "/data",
 "ExposedPorts": {"6379/tcp": {}},
 "Labels": {"org.opencontainers.image.title": "redis-local",
            "org.opencontainers.image.version": "$version",
            "org.opencontainers.image.description": "Debian $suite's redis-server $version, for the local cluster"}}
EOF2
)
  publish "$name" "$ref" "$rootfs" "$config" "$started"
}

# --- the pause image -----------------------------------------------------------------

build_pause() { # name ref k8s-version rootfs
  local name=$1 ref=$2 version=$3 rootfs=$4 started=$SECONDS module_dir src
  need_cmd gcc gcc
  command -v go >/dev/null 2>&1 || die "go is missing (needed to find the Kubernetes sources)"
  module_dir=$repo/e2e/tools/kubernetes
  src=$(cd "$module_dir" && { go list -m -f '{{.Dir}}' k8s.io/kubernetes 2>/dev/null || :; })
  if [ -z "$src" ] || [ ! -f "$src/build/pause/linux/pause.c" ]; then
    log "downloading the k8s.io/kubernetes $version module"
    (cd "$module_dir" && go mod download k8s.io/kubernetes) >&2
    src=$(cd "$module_dir" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  fi
  mkdir -p "$rootfs"
  gcc -static -O2 -Wall -Werror -DVERSION="$version" -o "$rootfs/pause" \
    "$src/build/pause/linux/pause.c"
  strip "$rootfs/pause"
  "$rootfs/pause" -v >&2
  publish "$name" "$ref" "$rootfs" \
    '{"User": "65535:65535", "Entrypoint": ["/pause"]}' "$started"
}

# --- main ----------------------------------------------------------------------------

[ $# -eq 1 ] || usage
builder=$1 build_args=()
case $1 in
  ray | ray-llm)
    version=$(ray_version)
    ray_flavour "$1"
    mapfile -t app_files < <(list_app_files "$app_src")
    [ "${#app_files[@]}" -gt 0 ] || die "nothing under images/ray-local/$app_src"
    hash=$(inputs_hash "$1 $version $suite" build.sh ocipack.py "${app_files[@]}")
    name=$title-$version-$hash
    ref=localhost/llmop/$title:$version-$hash
    builder=ray build_args=("$1") ;;
  pause)
    version=$(k8s_version)
    hash=$(inputs_hash "pause $version" build.sh ocipack.py)
    name=pause-$version-$hash
    ref=localhost/llmop/pause:$version-$hash ;;
  redis)
    version=$suite
    hash=$(inputs_hash "redis $suite" build.sh ocipack.py)
    name=redis-local-$suite-$hash
    ref=localhost/llmop/redis-local:$suite-$hash ;;
  *) usage ;;
esac
archive=$cache/$name/oci-archive.tar

if [ ! -f "$archive" ]; then
  mkdir -p "$cache/locks"
  exec 9>"$cache/locks/$name"
  flock 9
  if [ ! -f "$archive" ]; then # nobody built it while we waited
    remove_tree "$cache/$name.partial"
    mkdir -p "$cache/$name.partial"
    "build_$builder" "$name" "$ref" "$version" "$cache/$name.partial/rootfs" "${build_args[@]}"
  fi
fi

echo "ref=$ref"
echo "archive=$archive"
