"""The grammar of model sources, revisions and mount paths, and where model_source points.

Each scheme's grammar (api/rules.py) is compared, over many generated strings, with a
plain restatement of the rule written here without regular expressions; the two must
agree on every input. Then the property the grammar exists for: whatever a pvc:// source
says, the rendered model_source is the claim's mount or a normalised path inside it, and
the renderer refuses, on its own, any path that would leave the mount.

Grammar per scheme (the CRD's CEL rules and `llm-operator validate` share it):

- hf://<org>/<name>: exactly two names of letters, digits, `-`, `_`, `.`; each 1-96
  characters, starting and ending with a letter, digit or `_`; no `--` or `..`
  anywhere; not ending in `.git`. The revision goes in spec.model.revision.
- pvc://<claim>[/<path>]: the claim a DNS-1123 label; the path relative and normalised.
- s3://<bucket>[/<path>]: 3-63 lower-case letters, digits, `.`, `-`; starting and ending
  with a letter or digit; no `..`; not an IPv4 address.
- gs://<bucket>[/<path>]: dot-separated parts of lower-case letters, digits, `-`, `_`,
  each 1-63 characters starting and ending with a letter or digit; 3-222 in all; not an
  IPv4 address; not starting with `goog`, not containing `google`.
- <path> (pvc, s3, gs): segments of POSIX portable filename characters (letters, digits,
  `.`, `_`, `-`) joined by single `/`; no `.` or `..` segment, no empty segment (so no
  leading, doubled or trailing `/`), hence no backslash, `%`, space or control character.
- mount paths: `/` followed by such a path.
- spec.model.revision: `/`-separated names of letters, digits, `_`, `-`, `+`, with single
  dots inside a name.
"""

from __future__ import annotations

import copy
import posixpath
import random
import string
from collections.abc import Callable

import pytest
import yaml
from pydantic import ValidationError

from conftest import SAMPLES, load_one
from llm_operator.api.models import CheckpointSpec, ModelCacheSpec, ModelSpec
from llm_operator.api.validation import SpecError, resolve
from llm_operator.render import names, render
from llm_operator.render.sources import SourceOutsideMountError, parse_source
from llm_operator.settings import OperatorSettings

LOWER_DIGITS = set(string.ascii_lowercase + string.digits)
ALNUM = set(string.ascii_letters + string.digits)
PORTABLE = ALNUM | set("._-")
HUB_WORD = ALNUM | {"_"}
MOUNT = names.MODEL_SOURCE_MOUNT
CASES = 4000


# --- the rules restated without regular expressions -------------------------------------


def clean_relative(path: str) -> bool:
    return all(seg not in ("", ".", "..") and set(seg) <= PORTABLE for seg in path.split("/"))


def clean_mount_path(path: str) -> bool:
    return path.startswith("/") and clean_relative(path[1:])


def ipv4_like(bucket: str) -> bool:
    parts = bucket.split(".")
    return len(parts) == 4 and all(p.isascii() and p.isdigit() for p in parts)


def hub_id(repo: str) -> bool:
    parts = repo.split("/")
    if len(parts) != 2:
        return False
    for part in parts:
        if not 1 <= len(part) <= 96 or not set(part) <= HUB_WORD | {"-", "."}:
            return False
        if part[0] not in HUB_WORD or part[-1] not in HUB_WORD:
            return False
    return "--" not in repo and ".." not in repo and not repo.endswith(".git")


def dns1123_label(name: str) -> bool:
    return (
        1 <= len(name) <= 63
        and set(name) <= LOWER_DIGITS | {"-"}
        and name[0] in LOWER_DIGITS
        and name[-1] in LOWER_DIGITS
    )


def s3_bucket(bucket: str) -> bool:
    return (
        3 <= len(bucket) <= 63
        and set(bucket) <= LOWER_DIGITS | {".", "-"}
        and bucket[0] in LOWER_DIGITS
        and bucket[-1] in LOWER_DIGITS
        and ".." not in bucket
        and not ipv4_like(bucket)
    )


def gcs_bucket(bucket: str) -> bool:
    parts = bucket.split(".")
    return (
        3 <= len(bucket) <= 222
        and all(
            1 <= len(p) <= 63
            and set(p) <= LOWER_DIGITS | {"-", "_"}
            and p[0] in LOWER_DIGITS
            and p[-1] in LOWER_DIGITS
            for p in parts
        )
        and not ipv4_like(bucket)
        and not bucket.startswith("goog")
        and "google" not in bucket
    )


def revision_name(revision: str) -> bool:
    allowed = ALNUM | set("_+-.")
    return all(
        name
        and set(name) <= allowed
        and not name.startswith(".")
        and not name.endswith(".")
        and ".." not in name
        for name in revision.split("/")
    )


def source_ok(source: str) -> bool:
    """The whole grammar of spec.model.source, restated."""
    scheme, sep, rest = source.partition("://")
    if not sep:
        return False
    if scheme == "hf":
        return hub_id(rest)
    if scheme not in ("pvc", "s3", "gs"):
        return False
    head, slash, path = rest.partition("/")
    check = {"pvc": dns1123_label, "s3": s3_bucket, "gs": gcs_bucket}[scheme]
    return check(head) and (not slash or clean_relative(path))


# --- generated inputs --------------------------------------------------------------------
# Well-formed values with mutations, so that both verdicts come up often and the
# mistakes sit next to good input: a `.` or `..` segment, an empty one, a character out
# of the set, a name one character too long.

BAD_CHARS = ["\\", "%2e", " ", "\n", "\t", "\x00", "ü", ":", "@", "*", "?", "~", "#", "A"]


def word(rng: random.Random, parts: list[str], joiners: list[str], bad_rate: float) -> str:
    pieces = [rng.choice(parts) for _ in range(rng.randint(1, 3))]
    text = "".join(p + rng.choice(joiners) for p in pieces[:-1]) + pieces[-1]
    if rng.random() < bad_rate:
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(BAD_CHARS + joiners) + text[at:]
    return text


SEGMENTS = ["a", "qwen", "Q-2.5_x", "Llama-3.1-8B", ".cache", "...", "..x", "x..", "-", "_", "9"]


def a_path(rng: random.Random) -> str:
    segments = []
    for _ in range(rng.randint(1, 5)):
        if rng.random() < 0.06:
            segments.append(rng.choice([".", "..", ""]))
        else:
            segments.append(word(rng, SEGMENTS, ["", ".", "-", "_"], 0.04))
    return "/".join(segments)


def a_hub_repo(rng: random.Random) -> str:
    parts = ["Qwen", "Qwen2", "5", "0", "5B", "Instruct", "meta", "llama", "_x", "Z9", "a"]
    names_ = [word(rng, parts, ["", ".", "-", "_", ".", "-"], 0.1) for _ in range(2)]
    if rng.random() < 0.05:
        names_.append(word(rng, parts, ["-"], 0))
    if rng.random() < 0.05:
        names_ = names_[:1]
    if rng.random() < 0.05:
        names_[-1] += rng.choice([".git", "x" * 90, "-", ".", "/", "@main", "--x", "..x"])
    return "/".join(names_)


def a_bucket(rng: random.Random) -> str:
    parts = ["my", "models", "bucket", "b" * 30, "c" * 61, "1", "192", "10", "goog", "ab"]
    text = word(rng, parts, ["", "-", ".", "_", "-", "."], 0.1)
    if rng.random() < 0.05:
        text = rng.choice(["-", ".", "_", "google", "A"]) + text
    return text


def a_revision(rng: random.Random) -> str:
    parts = ["main", "v1", "refs", "pr", "1", "a1b2c3", "release", "x+y"]
    names_ = [word(rng, parts, ["", ".", "-", "_"], 0.08) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.08:
        names_.insert(rng.randint(0, len(names_)), rng.choice([".", "..", "", ".x", "x."]))
    return "/".join(names_)


def a_source(rng: random.Random) -> str:
    scheme = rng.choice(["hf", "pvc", "s3", "gs", "HF", "file", "http", ""])
    head = a_hub_repo(rng) if scheme in ("hf", "HF") else a_bucket(rng)
    rest = "" if scheme in ("hf", "HF") or rng.random() < 0.2 else "/" + a_path(rng)
    return f"{scheme}://{head}{rest}"


def a_mount_path(rng: random.Random) -> str:
    return rng.choice(["/", "/", "/", "/", "", "//", "/./", "/../"]) + a_path(rng)


def generated(make: Callable[[random.Random], str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [make(rng) for _ in range(CASES)]


def admitted(make: Callable[[str], object], value: str) -> bool:
    try:
        make(value)
    except ValidationError:
        return False
    return True


def disagreements(
    values: list[str], make: Callable[[str], object], oracle: Callable[[str], bool]
) -> list[tuple[str, bool]]:
    return [(v, oracle(v)) for v in values if admitted(make, v) != oracle(v)]


def model(source: str) -> ModelSpec:
    return ModelSpec(source=source)


GRAMMAR_CASES: list[tuple[str, list[str], Callable[[str], object], Callable[[str], bool]]] = [
    ("pvc paths", [f"pvc://models/{p}" for p in generated(a_path, 1)], model, source_ok),
    ("s3 keys", [f"s3://my-models/{p}" for p in generated(a_path, 2)], model, source_ok),
    ("gs keys", [f"gs://my-bucket/{p}" for p in generated(a_path, 3)], model, source_ok),
    ("hub ids", [f"hf://{r}" for r in generated(a_hub_repo, 4)], model, source_ok),
    ("pvc claims", [f"pvc://{b}/x" for b in generated(a_bucket, 5)], model, source_ok),
    ("s3 buckets", [f"s3://{b}/x" for b in generated(a_bucket, 6)], model, source_ok),
    ("gs buckets", [f"gs://{b}/x" for b in generated(a_bucket, 7)], model, source_ok),
    ("any source", generated(a_source, 8), model, source_ok),
    (
        "cache mount paths",
        generated(a_mount_path, 9),
        lambda v: ModelCacheSpec(mount_path=v),
        clean_mount_path,
    ),
    (
        "checkpoint mount paths",
        generated(a_mount_path, 10),
        lambda v: CheckpointSpec(mount_path=v),
        clean_mount_path,
    ),
    (
        "revisions",
        generated(a_revision, 11),
        lambda v: ModelSpec(source="hf://Qwen/Qwen2.5-0.5B-Instruct", revision=v),
        revision_name,
    ),
]


@pytest.mark.parametrize(
    ("kind", "values", "make", "oracle"), GRAMMAR_CASES, ids=[c[0] for c in GRAMMAR_CASES]
)
def test_the_grammar_is_the_stated_rule(
    kind: str,
    values: list[str],
    make: Callable[[str], object],
    oracle: Callable[[str], bool],
) -> None:
    assert disagreements(values, make, oracle) == []
    # Guard: the generator reaches both verdicts, often.
    verdicts = [oracle(v) for v in values]
    assert min(verdicts.count(True), verdicts.count(False)) >= len(values) // 50, kind


# Boundaries and the cases the issue names.
EDGES: dict[str, bool] = {
    "hf://Qwen/Qwen2.5-0.5B-Instruct": True,
    "hf://meta-llama/Llama-3.1-8B-Instruct": True,
    "hf://_org/_name_": True,
    f"hf://org/{'a' * 96}": True,
    f"hf://org/{'a' * 97}": False,
    f"hf://{'o' * 97}/name": False,
    "hf://org/repo/../../etc": False,
    "hf://a/b/c": False,
    "hf://../../": False,
    "hf://gpt2": False,
    "hf://org/name.git": False,
    "hf://org/name.gitx": True,
    "hf://org/a.-b": True,
    "hf://org/a--b": False,
    "hf://org/-name": False,
    "hf://org/name.": False,
    "hf://org/name@main": False,
    "pvc://weights/../../etc/passwd": False,
    "pvc://other-ns/../../claim": False,
    "pvc://other-ns/claim": True,
    "pvc://model-store": True,
    "pvc://model-store/": False,
    "pvc://model-store/meta-llama/Llama-3.1-8B-Instruct": True,
    "pvc://model-store/.cache/huggingface/hub": True,
    "pvc://model-store/.../x": True,
    f"pvc://{'c' * 63}/x": True,
    f"pvc://{'c' * 64}/x": False,
    "pvc://claim.dotted/x": False,
    "s3://my-models/embedder-v2": True,
    "s3://abc": True,
    "s3://ab": False,
    f"s3://{'b' * 63}/x": True,
    f"s3://{'b' * 64}/x": False,
    "s3://my.models.v2/x": True,
    "s3://my..models/x": False,
    "s3://my-models-/x": False,
    "s3://192.168.1.10/x": False,
    "s3://192.168.1.10a/x": True,
    "s3://my_models/x": False,
    "gs://my-bucket/llama-3.1-8b": True,
    "gs://my_bucket/x": True,
    f"gs://{'p' * 63}/x": True,
    f"gs://{'p' * 64}/x": False,
    f"gs://{'.'.join(['p' * 63] * 3 + ['p' * 30])}/x": True,  # 222 characters
    f"gs://{'.'.join(['p' * 63] * 3 + ['p' * 31])}/x": False,  # 223
    "gs://goog-models/x": False,
    "gs://my-google-models/x": False,
    "gs://10.0.0.1/x": False,
}


def test_edges() -> None:
    wrong = {s: ok for s, ok in EDGES.items() if admitted(model, s) != ok or source_ok(s) != ok}
    assert wrong == {}


# --- where model_source points --------------------------------------------------------


def inside_mount(local: str) -> bool:
    return posixpath.normpath(local) == local and (local == MOUNT or local.startswith(MOUNT + "/"))


def test_an_admitted_pvc_source_renders_inside_the_mount_unchanged() -> None:
    sources = [f"pvc://models/{p}" for p in generated(a_path, 21)] + ["pvc://models"]
    admitted_sources = [s for s in sources if admitted(model, s)]
    assert len(admitted_sources) >= CASES // 20
    for source in admitted_sources:
        local = parse_source(source).model_source
        assert inside_mount(local), source
        # Already normalised: the path the user wrote is the path the engine reads.
        path = source.removeprefix("pvc://models").removeprefix("/")
        assert local == (f"{MOUNT}/{path}" if path else MOUNT)


def test_the_renderer_refuses_a_path_out_of_the_mount_on_its_own() -> None:
    """Unvalidated input (validation refuses these first): inside the mount or an error."""
    escaped = 0
    for relative in [*generated(a_path, 22), "..", "../", "a/../..", "/../..", "..\\.."]:
        try:
            local = parse_source(f"pvc://models/{relative}").model_source
        except SourceOutsideMountError:
            escaped += 1
            assert not inside_mount(posixpath.normpath(f"{MOUNT}/{relative}")), relative
        else:
            assert inside_mount(local), relative
    assert escaped >= 5


def quickstart_with_source(source: str) -> dict[str, object]:
    body = copy.deepcopy(load_one(SAMPLES / "quickstart.yaml"))
    body["spec"]["model"]["source"] = source
    return body


def rendered_model_source(body: dict[str, object]) -> str:
    (service,) = render(resolve(body), OperatorSettings())
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    loading = config["applications"][0]["args"]["llm_configs"][0]["model_loading_config"]
    source: str = loading["model_source"]
    return source


def test_rendered_children_keep_model_source_inside_the_mount() -> None:
    """Through validation and the whole renderer: refused naming the field, or inside."""
    refused = inside = 0
    for relative in generated(a_path, 23)[:400]:
        body = quickstart_with_source(f"pvc://models/{relative}")
        try:
            local = rendered_model_source(body)
        except SpecError as exc:
            assert "spec.model.source" in str(exc)
            refused += 1
        else:
            assert inside_mount(local), relative
            inside += 1
    assert refused > 50 and inside > 20
