"""Every install hint installs this autoopt: it is not on a package index, so `pip install autoopt` would not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib

from autoopt.config.knobs import ENGINES
from autoopt.engines.registry import engine_class, engine_info

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CPU_BUILDS = {"onnxruntime", "onnxruntime-genai"}
GPU_BUILDS = {"onnxruntime-gpu", "onnxruntime-genai-cuda"}

FROM_AN_INDEX = re.compile(r"pip install '?autoopt\b")


def test_no_hint_installs_autoopt_from_a_package_index() -> None:
    hints = [r.install for name in ENGINES for reqs in engine_info(name).requires.values() for r in reqs]
    hints += [getattr(engine_class(name), "install_hint", "") for name in ENGINES]

    assert hints and not [h for h in hints if FROM_AN_INDEX.search(h)]
    assert any("-e '.[gpu]'" in h for h in hints)


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in requirements}


def test_the_onnx_runtime_builds_are_extras_that_exclude_each_other() -> None:
    """The CPU and CUDA builds install into the same package directories: a core dependency on one would put it
    beside the other in every GPU install."""
    extras = PROJECT["optional-dependencies"]

    assert not _names(PROJECT["dependencies"]) & (CPU_BUILDS | GPU_BUILDS)
    assert _names(extras["cpu"]) == CPU_BUILDS
    assert _names(extras["gpu"]) == GPU_BUILDS


def test_every_hinted_extra_exists() -> None:
    extras = {r.extra for name in ENGINES for reqs in engine_info(name).requires.values() for r in reqs if r.extra}

    assert extras and {e for spec in extras for e in spec.split(",")} <= set(PROJECT["optional-dependencies"])


def test_without_the_onnx_runtimes_their_engines_are_left_out_with_the_cpu_extra_as_the_hint() -> None:
    code = (
        "import autoopt.study.runner, autoopt.measure\n"
        "from autoopt.config.schema import TargetConfig\n"
        "from autoopt.space.validity import unavailable_engines\n"
        "engines = ['torch', 'ort', 'ort_genai']\n"
        "cpu = TargetConfig(name='cpu', engines=engines, memory_gb=1, price_per_hour=1, price_source='-')\n"
        "for engine, why in unavailable_engines(engines, cpu).items():\n"
        "    print(engine, '|', why)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "without_onnx_runtimes")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout

    lines = dict(line.split(" | ") for line in out.splitlines())
    assert set(lines) == {"ort", "ort_genai"}
    assert all("-e '.[cpu]'" in why for why in lines.values())
