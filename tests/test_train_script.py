"""The tiny training entrypoint of the local Ray image (llm_standin.train), run with this
Python as the real node's Job runs it: start, stop midway, resume from the checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STANDIN = Path(__file__).resolve().parent.parent / "images" / "ray-local" / "standin"


def run(checkpoints: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(STANDIN), "LLMOP_CHECKPOINT_DIR": str(checkpoints)}
    return subprocess.Popen(
        [sys.executable, "-m", "llm_standin.train", *args],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_killed_run_resumes_from_its_newest_checkpoint(tmp_path: Path) -> None:
    first = run(tmp_path, "--steps", "300", "--every", "20", "--step-seconds", "0.01")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("ckpt-*.json")) or len(list(tmp_path.glob("ckpt-*"))) < 3:
        assert time.monotonic() < deadline, "no checkpoints written"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # as a deleted pod's process dies
    first.wait(10)
    assert not (tmp_path / "done.json").exists(), "killed before the end"
    newest = max(int(json.loads(p.read_text())["step"]) for p in tmp_path.glob("ckpt-*.json"))
    assert 40 <= newest < 300

    second = run(tmp_path, "--steps", "300", "--every", "20")
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out
    assert out.splitlines()[0] == f"resumed from step {newest}"
    assert (tmp_path / "resumes.log").read_text().split() == ["0", str(newest)]
    done = json.loads((tmp_path / "done.json").read_text())
    assert done["loss"] < 1e-3 and abs(done["w"] - 3) < 0.1 and abs(done["b"] - 2) < 0.1


def test_without_a_checkpoint_directory_it_refuses(tmp_path: Path) -> None:
    proc = run(tmp_path / "missing")
    proc.communicate(timeout=30)
    assert proc.returncode == 2
