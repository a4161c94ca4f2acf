"""A tiny CPU training run for mode Job on the real node: fits y = 3x + 2 by gradient
descent, in plain Python (no downloads, no numpy), checkpointing as a real trainer does.

    python -m llm_standin.train --steps 300 --every 20 --step-seconds 0.2

Reads its checkpoint directory from LLMOP_CHECKPOINT_DIR (the operator sets it from
spec.storage.checkpoints). At start it resumes from the newest checkpoint there, prints
the step it resumed from and appends it to `resumes.log` (one line per start, read by
the e2e test); every `--every` steps it writes `ckpt-<step>.json` atomically; at the end
it writes `done.json` and exits 0 if the fit converged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

CHECKPOINT_DIR_ENV = "LLMOP_CHECKPOINT_DIR"
RESUMES_LOG = "resumes.log"
DONE = "done.json"
# The data: y = 3x + 2 on 20 points in [0, 1).
POINTS = [(i / 20, 3 * (i / 20) + 2) for i in range(20)]
LEARNING_RATE = 0.5
CONVERGED_LOSS = 1e-3


def newest_checkpoint(directory: Path) -> dict[str, float] | None:
    found = sorted(directory.glob("ckpt-*.json"))
    return json.loads(found[-1].read_text()) if found else None


def write_atomically(path: Path, data: dict[str, float]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # a kill mid-write never leaves half a checkpoint


def step(w: float, b: float) -> tuple[float, float, float]:
    """One gradient step of mean squared error; returns (w, b, loss before the step)."""
    n = len(POINTS)
    errors = [(w * x + b - y, x) for x, y in POINTS]
    loss = sum(e * e for e, _ in errors) / n
    grad_w = 2 * sum(e * x for e, x in errors) / n
    grad_b = 2 * sum(e for e, _ in errors) / n
    return w - LEARNING_RATE * grad_w, b - LEARNING_RATE * grad_b, loss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=20, help="checkpoint every N steps")
    parser.add_argument("--step-seconds", type=float, default=0.0, help="pause per step")
    args = parser.parse_args(argv)
    directory = Path(os.environ.get(CHECKPOINT_DIR_ENV, ""))
    if not str(directory) or not directory.is_dir():
        print(f"{CHECKPOINT_DIR_ENV} must name a directory", file=sys.stderr)
        return 2
    state = newest_checkpoint(directory) or {"step": 0, "w": 0.0, "b": 0.0}
    start, w, b = int(state["step"]), float(state["w"]), float(state["b"])
    print(f"resumed from step {start}", flush=True)
    with (directory / RESUMES_LOG).open("a") as log:
        log.write(f"{start}\n")
    loss = float("inf")
    for current in range(start + 1, args.steps + 1):
        w, b, loss = step(w, b)
        if current % args.every == 0:
            write_atomically(
                directory / f"ckpt-{current:06d}.json", {"step": current, "w": w, "b": b}
            )
            print(f"step {current} loss {loss:.6f} checkpointed", flush=True)
        time.sleep(args.step_seconds)
    _, _, loss = step(w, b)
    write_atomically(directory / DONE, {"step": args.steps, "w": w, "b": b, "loss": loss})
    print(f"done at step {args.steps}: w={w:.4f} b={b:.4f} loss={loss:.6f}", flush=True)
    return 0 if loss < CONVERGED_LOSS else 1


if __name__ == "__main__":
    sys.exit(main())
