"""serveConfigV2's text: libyaml's emitter only where it writes what PyYAML's own does."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from llm_operator.render.serve import dump_serve_config


@pytest.mark.parametrize(
    "args",
    [
        {"": "empty key"},  # libyaml writes `'':`, PyYAML `? ''`
        {"long": "x\\" + "ü? " * 40},  # folded at other places
        {"model": "hf://org/model", "max_num_seqs": 64, "ratio": 0.5, "on": True, "x": None},
        {"nested": [{"a": ["b", 1]}, []], "path": "/models/llama-3.1"},
    ],
)
def test_the_text_is_pyyamls(args: dict[str, Any]) -> None:
    config = {"applications": [{"name": "llm", "route_prefix": "/", "args": args}]}
    assert dump_serve_config(config) == yaml.safe_dump(config, sort_keys=False)
