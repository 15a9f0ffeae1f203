"""scripts/gpu_decode_bench.py: the card table, the engines it benches, and a CPU smoke run end to end."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from autoopt.engines.torch_compiled import INFO
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_decode_bench.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_decode_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "gb_per_s"),
    [
        ("NVIDIA H200", 4800.0),
        ("NVIDIA H100 80GB HBM3", 3350.0),
        ("NVIDIA H100 PCIe", 2000.0),
        ("NVIDIA H100 NVL", 3900.0),
        ("NVIDIA A100-SXM4-80GB", 2039.0),
        ("NVIDIA A100-SXM4-40GB", 1555.0),
        ("Tesla T4", 320.0),
    ],
)
def test_a_known_card_gets_its_datasheet_bandwidth_with_the_source(name: str, gb_per_s: float) -> None:
    found = _bench().card_bandwidth(name)

    assert found is not None and found[0] == gb_per_s
    assert "datasheet" in found[1] and "not checked" in found[1]


def test_an_unknown_card_gets_no_bandwidth() -> None:
    assert _bench().card_bandwidth("Some Future GPU") is None


def test_eager_bf16_comes_first_then_each_compile_mode_then_every_quant_the_engine_declares() -> None:
    labels = [label for label, _ in _bench().variants("cuda", ["reduce-overhead", "default"])]
    tuned = dict(_bench().variants("cuda", ["reduce-overhead"], ["int8_weight", "bf16"]))

    quants = [q for q in INFO.quants["cuda"] if q not in ("none", "bf16", "fp16")]
    assert labels == ["eager bf16", "compiled bf16 reduce-overhead", "compiled bf16 default",
                      *(f"compiled {q} g32" if q == "int4" else f"compiled {q}" for q in quants)]
    assert {"int8_weight", "int4"} <= set(quants)
    for quant in ("int8_weight", "bf16"):
        assert tuned[f"compiled {quant} tuned"].compile_tuning == "coordinate_descent"
        assert tuned[f"compiled {quant} tuned"].quant == quant
    assert tuned["compiled int8_weight"].compile_tuning == "none"
    assert list(tuned).index("compiled int8_weight tuned") == list(tuned).index("compiled int8_weight") + 1
    picked = dict(_bench().variants("cuda", ["reduce-overhead"], ["int4"], quants=["int4"], int4_group=128))
    assert list(picked) == ["eager bf16", "compiled bf16 reduce-overhead", "compiled int4 g128", "compiled int4 g128 tuned"]
    assert picked["compiled int4 g128"].quant_block_size == 128


def test_a_divergence_is_found_where_it_is_and_eager_prefers_its_own_token_there(tiny_model: Path) -> None:
    from autoopt.config.schema import CandidateConfig
    from autoopt.engines.base import RuntimeOptions
    from autoopt.engines.registry import engine_class

    bench = _bench()
    runtime = RuntimeOptions(device="cpu", threads=1, max_length=32, max_batch=1)
    eager = engine_class("torch").load(tiny_model, CandidateConfig(), runtime)
    prompts = [np.array([[5, 17, 42, 7, 99, 3]]), np.array([[8, 1, 64, 33, 2, 70]])]
    reference = [bench.greedy(eager, p, 8) for p in prompts]
    other = reference[1].copy()
    other[0, 5:] = (other[0, 5:] + 1) % 512  # the engine under test departs at token 5 of the second prompt

    got = bench.greedy_agreement(eager, prompts, reference, [reference[0], other])

    assert got["identical_prompts"] == 1 and got["first_divergence"] == [8, 5]
    assert got["prefix_agreement"] == pytest.approx((8 + 5) / 16) and got["token_agreement"] == pytest.approx(13 / 16)
    (margin,) = got["divergence_margins"]
    assert margin > -1e-4  # eager's greedy token is the top of its own teacher-forced logits


@pytest.mark.slow
def test_cpu_smoke_run_writes_every_figure_for_every_engine(tmp_path: Path) -> None:
    from autoopt.config.schema import ModelShape
    from autoopt.models.shape import ensure_shape_model

    shape = ModelShape(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                       vocab_size=512, tie_word_embeddings=False, rope_theta=1e6, max_position_embeddings=256)
    folder = ensure_shape_model(shape, tmp_path / "cache")
    out = tmp_path / "bench.json"

    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--models", str(folder), "--rounds", "2", "--prompts", "2",
         "--prompt", "16", "--new", "6", "--bandwidth-gbps", "10", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )

    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["bandwidth"]["gb_per_s"] == 10.0 and report["rounds"] == 2
    (model,) = report["models"]
    assert model["prompts"] == "held-out text of the built-in corpus"
    engines = {e["label"]: e for e in model["engines"]}
    required = ["eager bf16", "compiled bf16 default", "compiled int8_weight", "compiled int4 g32"]
    assert list(engines)[:2] == required[:2] and set(required) <= set(engines)
    for engine in (engines[label] for label in required):  # others (fp8) are counted elsewhere or not yet
        assert "error" not in engine, engine
        for key in ("decode_tokens_per_s", "tpot_ms", "ttft_ms", "speedup_vs_eager"):
            figure = engine[key]
            assert figure["n"] == 2 and figure["p10"] <= figure["median"] <= figure["p90"]
        assert engine["roofline"]["efficiency"] > 0 and engine["roofline"]["bandwidth_gb_per_s"] == 10.0
        greedy = engine["greedy"]
        assert greedy["prompts"] == 2 and 0.0 <= greedy["token_agreement"] <= 1.0
        assert 0.0 <= greedy["prefix_agreement"] <= 1.0 and len(greedy["first_divergence"]) == 2
        assert engine["kernels"] is None  # the kernel profile is for cards
        assert engine["peak_memory_mb"] is None  # no GPU: nothing to read
    # the compiled step attends over its whole 16 + 6 cache; eager's dynamic cache over what is filled
    assert {engines[label]["roofline"]["mean_context"] for label in required[1:]} == {22}
    assert engines["eager bf16"]["roofline"]["mean_context"] < 22
    eager, compiled = engines["eager bf16"], engines["compiled bf16 default"]
    assert eager["greedy"]["token_agreement"] == 1.0 and eager["compile_s"] is None
    assert eager["speedup_vs_compiled_bf16"] is None and compiled["speedup_vs_compiled_bf16"]["median"] == 1.0
    int8 = engines["compiled int8_weight"]
    ratios = [b / t for b, t in zip(compiled["tpot_rounds_ms"], int8["tpot_rounds_ms"], strict=True)]
    assert int8["speedup_vs_compiled_bf16"]["median"] == pytest.approx(statistics.median(ratios))
    assert compiled["compile_s"] > 0
    assert "| eager bf16 |" in proc.stdout and "compiled int4" in proc.stdout


def test_the_table_shows_no_compile_time_for_an_engine_that_compiled_nothing() -> None:
    figure = {"median": 2.0, "p10": 1.0, "p90": 3.0, "n": 2}
    greedy = {"prompts": 2, "identical_prompts": 2, "prefix_agreement": 1.0, "divergence_margins": []}
    row = {"label": "eager bf16", "decode_tokens_per_s": figure, "speedup_vs_eager": figure, "ttft_ms": figure,
           "tpot_ms": figure, "roofline": None, "kernels": None, "peak_memory_mb": None, "greedy": greedy}

    eager, compiled = _bench().table([{"model": "m", "engines": [{**row, "compile_s": None},
                                                                 {**row, "compile_s": 12.34}]}]).splitlines()[2:]

    columns = [line.split("|")[9].strip() for line in (eager, compiled)]
    assert columns == ["-", "12.3"]


def test_each_stage_of_a_model_is_saved_as_it_finishes(tiny_model: Path, tmp_path: Path) -> None:
    bench = _bench()
    args = bench.parse_args(["--device", "cpu", "--models", str(tiny_model), "--rounds", "2", "--prompts", "1",
                             "--prompt", "8", "--new", "3", "--compile-modes", "none", "--quants", "",
                             "--threads", "1", "--out", str(tmp_path / "bench.json")])
    saved: list[dict] = []

    model, waiting = bench.bench_model("tiny", tiny_model, args, None, lambda m: saved.append(json.loads(json.dumps(m))))

    stages = [[set(e) for e in s["engines"]] for s in saved]
    assert all(s["partial"] for s in saved) and "partial" not in model
    assert [len(s) for s in stages[:2]] == [1, 2] and "greedy" not in stages[1][1]  # each load, as it ends
    timed = next(i for i, s in enumerate(stages) if all("tpot_ms" in e for e in s))
    assert "greedy" in stages[timed - 1][1] and "tpot_ms" not in stages[timed - 1][1]  # checked, then timed
    assert timed == len(saved) - 1  # the timings are the last stage: profiles wait for every model's timings
    assert waiting == [] and all(e["kernels"] is None for e in model["engines"])  # on a card only


def test_a_float_only_model_is_benched_as_eager_and_compiled_bf16_only(tiny_model: Path, tmp_path: Path) -> None:
    bench = _bench()
    args = bench.parse_args(["--device", "cpu", "--models", str(tiny_model), "--rounds", "1", "--prompts", "1",
                             "--prompt", "8", "--new", "2", "--compile-modes", "none", "--tuned", "int8_weight",
                             "--float-only", "tiny", "--threads", "1", "--out", str(tmp_path / "bench.json")])

    model, _ = bench.bench_model("tiny", tiny_model, args, None)

    assert [e["label"] for e in model["engines"]] == ["eager bf16", "compiled bf16 none"]


def test_a_model_that_fails_is_recorded_and_the_others_keep_their_figures(tiny_model: Path, tmp_path: Path) -> None:
    bench = _bench()
    out = tmp_path / "bench.json"

    (tmp_path / "not_a_model").mkdir()
    bench.main(["--device", "cpu", "--models", f"{tmp_path / 'not_a_model'},{tiny_model}", "--rounds", "1", "--prompts", "1",
                "--prompt", "8", "--new", "2", "--compile-modes", "none", "--quants", "", "--threads", "1",
                "--out", str(out)])

    failed, timed = json.loads(out.read_text())["models"]
    assert failed["model"] == str(tmp_path / "not_a_model") and "config.json" in failed["error"]
    assert "error" not in timed and all("tpot_ms" in e for e in timed["engines"])


def test_the_kernel_profile_counts_one_request_after_a_dropped_warm_up(tiny_model: Path) -> None:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from autoopt.config.schema import CandidateConfig
    from autoopt.engines.base import RuntimeOptions
    from autoopt.engines.registry import engine_class

    bench = _bench()
    engine = engine_class("torch").load(tiny_model, CandidateConfig(), RuntimeOptions(device="cpu", threads=1,
                                                                                        max_length=32, max_batch=1))
    prompt = np.array([[5, 17, 42, 7, 99, 3]])
    bench.greedy(engine, prompt, 4)
    with profile(activities=[ProfilerActivity.CPU]) as one:
        bench.greedy(engine, prompt, 4)
    operators = sum(e.count for e in one.key_averages() if e.device_type == DeviceType.CPU)

    got = bench.kernel_profile(engine, prompt, 4, wall_ms=10.0, device="cpu")

    assert got["kernels_per_token"] * 4 == operators
    assert got["wall_ms"] == 10.0 and "warm-up" in got["method"]


def test_copies_are_counted_apart_from_kernels() -> None:
    from types import SimpleNamespace as Event

    events = [Event(key="ampere_bf16_s16816gemm", count=48), Event(key="Memcpy DtoH (Device -> Pinned)", count=8),
              Event(key="Memset (Device)", count=4), Event(key="triton_red_fused_0", count=16)]

    assert _bench().per_token(events, 8) == {"kernels_per_token": 8.0, "copies_per_token": 1.5}
