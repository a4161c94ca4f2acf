"""Pack a root filesystem into an OCI image archive (an `oci-archive` tar), stdlib only.

    python3 images/ray-local/ocipack.py --rootfs DIR --ref REF --out ARCHIVE.tar \
        --config '{"User": "1000", "Env": ["PATH=..."], "Cmd": ["/bin/bash"]}' [--zstd]

The image has one layer, uncompressed (so its digest is also its diff_id), or with
`--zstd` compressed by the `zstd` command (a 10 GB layer of Python wheels shrinks to about
4 GB: less to write, to import and to keep; containerd decompresses zstd layers). The
archive is
an OCI image layout: `oci-layout`, `index.json` and `blobs/sha256/*`. The manifest's
descriptor in `index.json` carries the full reference both as
`org.opencontainers.image.ref.name` and as `io.containerd.image.name`, which is what
`ctr -n k8s.io images import` reads to name the image; skopeo reads the archive as
`oci-archive:ARCHIVE.tar`.

Deterministic for a given root filesystem: entries in sorted order, owners by number
only, modification times kept (whole seconds; Python's .pyc files check them) and no
creation time in the config. The contents of /dev, /proc and /sys are left out: the
container runtime provides them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import IO, Any

RUNTIME_DIRS = frozenset({"dev", "proc", "sys"})
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
ZSTD_LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"
# zstd's default level: about 250 MB/s a core here, and fast to decompress.
ZSTD_COMMAND = ("zstd", "-3", "-T0", "-q", "-c")
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class HashingWriter(io.RawIOBase):
    """A write-only file that counts and hashes what goes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.target.write(view)
        self.sha256.update(view)
        self.size += len(view)
        return len(view)


def _walk(rootfs: Path) -> list[tuple[Path, str]]:
    """Every path under rootfs with its name in the layer, parents before children."""
    entries: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(rootfs):
        relative = Path(dirpath).relative_to(rootfs)
        if relative.parts and relative.parts[0] in RUNTIME_DIRS:
            dirnames.clear()
            continue
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            entries.append((Path(dirpath) / name, (relative / name).as_posix()))
    entries.sort(key=lambda entry: entry[1].split("/"))
    return entries


def write_layer(rootfs: Path, target: IO[bytes]) -> tuple[str, int]:
    """Write rootfs as an uncompressed tar to target; return its sha256 hex and size."""
    writer = HashingWriter(target)
    buffered = io.BufferedWriter(writer, buffer_size=1 << 20)
    with tarfile.open(fileobj=buffered, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, arcname in _walk(rootfs):
            mode = path.lstat().st_mode
            if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
                continue
            info = tar.gettarinfo(str(path), arcname)
            info.uname = info.gname = ""
            info.mtime = int(info.mtime)
            if info.isreg():
                with path.open("rb") as content:
                    tar.addfile(info, content)
            else:
                tar.addfile(info)
    buffered.flush()
    return writer.sha256.hexdigest(), writer.size


def write_zstd_layer(rootfs: Path, target: IO[bytes]) -> tuple[str, str, int]:
    """Write rootfs as a zstd-compressed tar to target; return the sha256 hex of the tar
    (the diff_id), of the compressed bytes (the digest) and the compressed size."""
    if shutil.which(ZSTD_COMMAND[0]) is None:
        raise SystemExit("ocipack: --zstd needs the zstd command (Debian package zstd)")
    compressed = HashingWriter(target)
    with subprocess.Popen(ZSTD_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as zstd:
        assert zstd.stdin is not None and zstd.stdout is not None
        source = zstd.stdout

        def drain() -> None:
            while chunk := source.read(1 << 20):
                compressed.write(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            diff_id, _ = write_layer(rootfs, zstd.stdin)
        finally:
            zstd.stdin.close()
        reader.join()
    if zstd.returncode != 0:
        raise SystemExit(f"ocipack: zstd failed with exit status {zstd.returncode}")
    return diff_id, compressed.sha256.hexdigest(), compressed.size


def _blob(data: dict[str, Any]) -> tuple[bytes, str]:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return raw, hashlib.sha256(raw).hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def pack(
    rootfs: Path, ref: str, image_config: dict[str, Any], out: Path, zstd: bool = False
) -> str:
    """Write the OCI archive for rootfs to out; return the manifest digest."""
    layer_path = out.with_name(out.name + ".layer")
    with layer_path.open("wb") as layer_file:
        if zstd:
            diff_id, layer_digest, layer_size = write_zstd_layer(rootfs, layer_file)
        else:
            layer_digest, layer_size = write_layer(rootfs, layer_file)
            diff_id = layer_digest
    platform = {"architecture": GOARCH.get(os.uname().machine, os.uname().machine), "os": "linux"}
    config_raw, config_digest = _blob(
        {
            **platform,
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created_by": "images/ray-local/build.sh"}],
        }
    )
    manifest_raw, manifest_digest = _blob(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": f"sha256:{config_digest}",
                "size": len(config_raw),
            },
            "layers": [
                {
                    "mediaType": ZSTD_LAYER_MEDIA_TYPE if zstd else LAYER_MEDIA_TYPE,
                    "digest": f"sha256:{layer_digest}",
                    "size": layer_size,
                }
            ],
        }
    )
    index_raw, _ = _blob(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [
                {
                    "mediaType": MANIFEST_MEDIA_TYPE,
                    "digest": f"sha256:{manifest_digest}",
                    "size": len(manifest_raw),
                    "platform": platform,
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref,
                    },
                }
            ],
        }
    )
    partial = out.with_name(out.name + ".tmp")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(tar, "index.json", index_raw)
        for directory in ("blobs", "blobs/sha256"):
            _add_dir(tar, directory)
        _add_bytes(tar, f"blobs/sha256/{manifest_digest}", manifest_raw)
        _add_bytes(tar, f"blobs/sha256/{config_digest}", config_raw)
        info = tarfile.TarInfo(f"blobs/sha256/{layer_digest}")
        info.size = layer_size
        info.mode = 0o644
        with layer_path.open("rb") as layer_file:
            tar.addfile(info, layer_file)
    layer_path.unlink()
    partial.rename(out)
    return f"sha256:{manifest_digest}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs", type=Path, required=True)
    parser.add_argument("--ref", required=True, help="full image reference, name:tag")
    parser.add_argument("--config", required=True, help="OCI image config (User, Env, ...)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--zstd", action="store_true", help="compress the layer with zstd")
    args = parser.parse_args()
    digest = pack(args.rootfs, args.ref, json.loads(args.config), args.out, zstd=args.zstd)
    print(f"packed {args.ref} ({digest}) into {args.out}", flush=True)


if __name__ == "__main__":
    main()
