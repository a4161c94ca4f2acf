"""The program the model-cache prefetch Job runs, as data: its Python source, passed to
`python -c` in the Ray image, which holds the tools it uses (huggingface_hub for hf://,
pyarrow's filesystems for s3:// and gs://; a pvc:// source is a mounted directory).

Text, not an imported module, so `render` stays pure and the Job needs nothing beyond
the Ray image. Everything it is told comes from environment variables, never from the
text, so no value of the spec is ever parsed as code:

- LLMOP_SOURCE: spec.model.source as written (hf://, s3://, gs://, pvc://).
- LLMOP_REVISION: spec.model.revision, or empty.
- LLMOP_LOCAL_SOURCE: for pvc://, where the source claim's directory is mounted.
- LLMOP_TARGET: the directory on the cache claim that the Ray pods load from.

It downloads into a sibling directory and renames it to LLMOP_TARGET only when complete,
with a marker file naming the source and revision inside, so a half download is never
taken for the model; a target whose marker names the same source and revision is kept
as it is (a re-run Job finishes at once).
"""

from __future__ import annotations

from typing import Final

# The marker file in a complete download (a JSON object: source, revision).
MARKER: Final = ".llmop-prefetch.json"
# A partial download sits beside its target with this suffix and a random part.
PARTIAL_SUFFIX: Final = ".partial-"

PROGRAM: Final = f'''
import json, os, shutil, sys, uuid

MARKER = "{MARKER}"
PARTIAL = "{PARTIAL_SUFFIX}"


def fetch(source, revision, local_source, into):
    scheme = source.partition("://")[0]
    if scheme == "hf":
        from huggingface_hub import snapshot_download

        snapshot_download(
            repo_id=source.partition("://")[2],
            revision=revision or None,
            local_dir=into,
            token=os.environ.get("HF_TOKEN") or None,
        )
    elif scheme in ("s3", "gs"):
        from pyarrow import fs

        remote, path = fs.FileSystem.from_uri(source)
        fs.copy_files(path, into, source_filesystem=remote,
                      destination_filesystem=fs.LocalFileSystem())
    elif scheme == "pvc":
        shutil.copytree(local_source, into, symlinks=True, dirs_exist_ok=True)
    else:
        raise SystemExit("unsupported model source: " + source)


def cached(target, wanted):
    try:
        with open(os.path.join(target, MARKER)) as marker:
            return json.load(marker) == wanted
    except (OSError, ValueError):
        return False


def main():
    source = os.environ["LLMOP_SOURCE"]
    revision = os.environ.get("LLMOP_REVISION", "")
    target = os.environ["LLMOP_TARGET"].rstrip("/")
    wanted = {{"source": source, "revision": revision}}
    if cached(target, wanted):
        print("already cached:", source, revision or "(default revision)", "in", target)
        return
    parent, base = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    # Partial downloads of earlier attempts (a killed pod): never a model, only space.
    for name in os.listdir(parent):
        if name.startswith(base + PARTIAL):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    partial = target + PARTIAL + uuid.uuid4().hex[:8]
    os.makedirs(partial)
    print("downloading", source, revision or "(default revision)", "into", partial, flush=True)
    fetch(source, revision, os.environ.get("LLMOP_LOCAL_SOURCE", ""), partial)
    with open(os.path.join(partial, MARKER), "w") as marker:
        json.dump(wanted, marker)
    if os.path.lexists(target):
        shutil.rmtree(target)
    os.rename(partial, target)
    print("cached", source, "in", target, flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:
        print("download failed:", type(exc).__name__, exc, file=sys.stderr, flush=True)
        sys.exit(1)
'''
