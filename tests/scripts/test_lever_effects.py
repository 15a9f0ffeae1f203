"""scripts/lever_effects.py: pairs of candidates that differ in one knob, read from a ground-truth file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from tests.conftest import REPO


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lever_effects", REPO / "scripts" / "lever_effects.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entry(kv: str, block: int, e2e: float, top1: float) -> dict:
    params = {"engine": "ort_genai", "ort_genai.quant": "int4", "ort_genai.kv_cache": kv,
              "ort_genai.quant_block_size": block}
    result = {"speed": {"e2e_ms": {"p90": e2e}}, "accuracy": {"top1_agreement": top1},
              "memory": {"peak_rss_mb": 100.0, "artifact_mb": 20.0 if block == 32 else 19.0}}
    return {"label": "x", "params": params, "result": result}


def test_each_row_pairs_candidates_that_differ_in_that_knob_only_from_its_default(tmp_path: Path) -> None:
    entries = {"a": _entry("dynamic", 32, 100.0, 0.96), "b": _entry("static", 32, 80.0, 0.96),
               "c": _entry("dynamic", 128, 90.0, 0.94), "d": _entry("static", 128, 72.0, 0.94),
               "failed": {"label": "y", "params": {"engine": "ort_genai"}, "failed": "build failed"}}
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"fingerprint": {}, "entries": entries}))

    rows = _script().table(truth, "e2e_p90").splitlines()[2:]

    assert rows == [
        "| ort_genai | kv_cache: dynamic → static | 2 | 0.80 [0.80, 0.80] | +0.000 [+0.000, +0.000] | +0 | +0.0 |",
        "| ort_genai | quant_block_size: 32 → 128 | 2 | 0.90 [0.90, 0.90] | -0.020 [-0.020, -0.020] | +0 | -1.0 |",
    ]
