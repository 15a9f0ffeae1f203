"""The CUDA code paths, run only where a CUDA device exists (skipped with the reason elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoopt.bench.latency import time_request
from autoopt.bench.requests import Request
from autoopt.config.schema import BenchConfig, CandidateConfig, ModelConfig, TargetConfig, WorkloadConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.registry import engine_class
from autoopt.engines.sampling import Sampling

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")

PROMPT = np.array([[5, 17, 42, 7, 99, 3, 11, 64]], dtype=np.int64)
GPU = TargetConfig(name="gpu", device="cuda", precisions=["fp32", "bf16", "fp16", "int8", "int4"],
                   engines=["torch", "ort", "ort_genai", "ort_tensorrt"], memory_gb=16, cores=2, price_per_hour=2.0,
                   price_source="test")


def _torch(model: Path, device: str, quant: str = "none"):
    runtime = RuntimeOptions(device=device, threads=2, max_length=32, max_batch=1)
    return engine_class("torch").load(model, CandidateConfig(quant=quant), runtime)


def test_torch_cuda_fp32_generates_the_cpu_tokens(tiny_model: Path) -> None:
    cpu = np.stack(list(_torch(tiny_model, "cpu").generate(PROMPT, 8)), 1)
    engine = _torch(tiny_model, "cuda")

    gpu = np.stack(list(engine.generate(PROMPT, 8)), 1)

    np.testing.assert_array_equal(gpu, cpu)
    assert engine.device_peak_memory_bytes() > 0


@pytest.mark.parametrize("quant", ["bf16", "fp16"])
def test_torch_cuda_half_precision_stays_close_to_fp32(tiny_model: Path, quant: str) -> None:
    ref = _torch(tiny_model, "cpu").logits(PROMPT)

    half = _torch(tiny_model, "cuda", quant).logits(PROMPT)

    assert half.dtype == np.float32 and half.shape == ref.shape
    assert not np.array_equal(half, ref)
    assert np.abs(half - ref).max() < 0.1


def test_measure_job_on_cuda_reports_device_memory_and_speed(tiny_model: Path, tmp_path: Path) -> None:
    from autoopt.jobs.launch import SubprocessLauncher
    from autoopt.jobs.prepare import prepare

    workload = WorkloadConfig(name="smoke", prompt_lengths=[16], output_lengths=[8], eval_windows=2, eval_window_len=32)
    bench = BenchConfig(warmup_runs=1, min_runs=3, min_seconds=0.5, profile=False)
    prep = prepare(ModelConfig(name="tiny", kind="hf", path=str(tiny_model)), GPU, workload, bench, tmp_path)
    launcher, candidate = SubprocessLauncher(), CandidateConfig(quant="bf16")

    result = launcher.launch(prep.measure_job(candidate, launcher.launch(prep.build_job(candidate))))

    assert result.memory.device_peak_mb > 0
    assert result.speed.output_tokens_per_s > 0
    assert 0.5 < result.accuracy.top1_agreement <= 1.0


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
    reason="needs onnxruntime-gpu (CUDAExecutionProvider not in this onnxruntime build)",
)
def test_ort_cuda_fp32_generates_the_cpu_tokens(tiny_model: Path, tmp_path: Path) -> None:
    from autoopt.passes.pipeline import run_pipeline
    from autoopt.passes.plan import plan

    candidate = CandidateConfig(engine="ort")
    built = run_pipeline(tiny_model, "tiny", plan(candidate, "cuda"), tmp_path)
    runtime = RuntimeOptions(device="cuda", threads=2, max_length=32, max_batch=1)
    cpu = np.stack(list(_torch(tiny_model, "cpu").generate(PROMPT, 8)), 1)

    gpu = np.stack(list(engine_class("ort").load(built.artifact, candidate, runtime).generate(PROMPT, 8)), 1)

    np.testing.assert_array_equal(gpu, cpu)


# ---- torch_compiled on a card: attention backends, float8, and the rules that prune before builds ----------

FP8_CARD = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


def _compiled(model: Path, quant: str = "none", compile_mode: str = "none", attn_backend: str = "auto",
              compile_tuning: str = "none"):
    runtime = RuntimeOptions(device="cuda", threads=2, max_length=32, max_batch=1)
    candidate = CandidateConfig(engine="torch_compiled", quant=quant, compile_mode=compile_mode,
                                attn_backend=attn_backend, compile_tuning=compile_tuning)
    return engine_class("torch_compiled").load(model, candidate, runtime)


def _assert_decodes_its_own_greedy_tokens(
    engine: Engine, prompt: np.ndarray, tokens: np.ndarray, tolerance: float = 0.05
) -> None:
    """The compiled step's greedy `tokens` (1, new), teacher-forced through the engine's HF forward over the same
    quantized weights: each must be that forward's top token, or within `tolerance` of it (a near tie that the two
    paths' kernels may order differently; a wrong kernel is off by about the logits' own scale, ~0.5 here)."""
    logits = engine.logits(np.concatenate([prompt, tokens[:, :-1]], axis=1))[0, prompt.shape[1] - 1 :]
    gaps = logits.max(-1) - logits[np.arange(tokens.shape[1]), tokens[0]]
    assert gaps.max() < tolerance, f"the compiled step's tokens fall behind the forward's top token by {gaps.round(3)}"


@pytest.mark.parametrize("backend", ["math", "efficient"])
def test_compiled_loop_fp32_on_cuda_decodes_the_cpu_tokens_under_each_backend(tiny_model: Path, backend: str) -> None:
    cpu = np.stack(list(_torch(tiny_model, "cpu").generate(PROMPT, 8)), 1)
    engine = _compiled(tiny_model, attn_backend=backend)  # efficient: KV heads repeated, the HF logits masked

    gpu = np.stack(list(engine.generate(PROMPT, 8)), 1)

    np.testing.assert_array_equal(gpu, cpu)
    assert np.abs(engine.logits(PROMPT) - _torch(tiny_model, "cpu").logits(PROMPT)).max() < 1e-3


@pytest.mark.parametrize("tuning", ["none", "coordinate_descent"])
def test_reduce_overhead_captures_cuda_graphs_and_decodes_the_uncompiled_loop_tokens(
    tiny_model: Path, tuning: str
) -> None:
    eager = np.stack(list(_compiled(tiny_model).generate(PROMPT, 12)), 1)
    engine = _compiled(tiny_model, compile_mode="reduce-overhead", compile_tuning=tuning)

    first = np.stack(list(engine.generate(PROMPT, 12)), 1)
    again = np.stack(list(engine.generate(PROMPT, 12)), 1)  # replays over the rewound cache

    assert engine.cudagraph_skips == 0
    np.testing.assert_array_equal(first, eager)
    np.testing.assert_array_equal(again, eager)


def test_reduce_overhead_samples_as_the_uncompiled_loop_and_replays_greedy_as_before(tiny_model: Path) -> None:
    """A sampling row reads the step's logits right after the replay that wrote them, before the next reuses the
    buffer: its draws are the uncompiled loop's, and a greedy request after it replays the same tokens."""
    hot = [Sampling(temperature=1.0, seed=5)]
    eager = np.stack(list(_compiled(tiny_model).generate(PROMPT, 12, sampling=hot)), 1)
    engine = _compiled(tiny_model, compile_mode="reduce-overhead")

    greedy = np.stack(list(engine.generate(PROMPT, 12)), 1)
    sampled = np.stack(list(engine.generate(PROMPT, 12, sampling=hot)), 1)

    assert engine.cudagraph_skips == 0
    np.testing.assert_array_equal(sampled, eager)
    assert sampled.tolist() != greedy.tolist()
    np.testing.assert_array_equal(np.stack(list(engine.generate(PROMPT, 12)), 1), greedy)


@pytest.mark.parametrize(("quant", "tuning"), [("int8_weight", "none"), ("int8_weight", "coordinate_descent"),
                                               ("int4", "none")])
def test_compiled_weight_only_quant_on_cuda_matches_the_cpu_kernels(tiny_model: Path, quant: str, tuning: str) -> None:
    def load(device: str, mode: str, tuning: str = "none"):
        runtime = RuntimeOptions(device=device, threads=2, max_length=32, max_batch=1)
        candidate = CandidateConfig(engine="torch_compiled", quant=quant, quant_block_size=32, compile_mode=mode,
                                    compile_tuning=tuning)
        return engine_class("torch_compiled").load(tiny_model, candidate, runtime)

    cpu = load("cpu", "none").logits(PROMPT)  # the same quantized weights through the CPU kernels
    # int8: cast to bf16 in the step (a fused reduction when tuned); int4: tinygemm's packed layout
    engine = load("cuda", "reduce-overhead", tuning)

    got = engine.logits(PROMPT)

    assert np.abs(got - cpu).max() < 0.05  # logits here are ~0.5: a wrong packing is off by that much
    assert (got.argmax(-1) == cpu.argmax(-1)).mean() >= 0.75  # untrained logits are near ties
    assert engine.cudagraph_skips == 0
    _assert_decodes_its_own_greedy_tokens(engine, PROMPT, np.stack(list(engine.generate(PROMPT, 8)), 1))


def test_compiled_loop_bf16_under_cudnn_stays_close_to_fp32(tiny_model: Path) -> None:
    ref = _torch(tiny_model, "cpu").logits(PROMPT)
    engine = _compiled(tiny_model, quant="bf16", compile_mode="reduce-overhead", attn_backend="cudnn")

    got = engine.logits(PROMPT)

    assert np.abs(got - ref).max() < 0.1
    tokens = np.stack(list(engine.generate(PROMPT, 8)), 1)
    _assert_decodes_its_own_greedy_tokens(engine, PROMPT, tokens, tolerance=0.1)  # bf16 both ways, as above


@pytest.mark.skipif(not FP8_CARD, reason="float8 matmul needs compute capability 8.9+")
def test_compiled_fp8_on_cuda_tracks_fp32(tiny_model: Path) -> None:
    ref = _torch(tiny_model, "cpu").logits(PROMPT)
    engine = _compiled(tiny_model, quant="fp8", compile_mode="reduce-overhead")

    got = engine.logits(PROMPT)

    assert got.shape == ref.shape and np.abs(got - ref).max() > 0
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.75
    _assert_decodes_its_own_greedy_tokens(engine, PROMPT, np.stack(list(engine.generate(PROMPT, 8)), 1))


def test_flash_refuses_a_mask_on_cuda_as_the_attention_rules_assume() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 4, 8, 64, device="cuda", dtype=torch.bfloat16)
    mask = torch.ones(8, 8, device="cuda", dtype=torch.bool).tril()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), pytest.raises(RuntimeError):
        torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)


def test_efficient_refuses_grouped_query_attention_on_cuda_as_the_attention_rules_assume() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 4, 8, 64, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(1, 2, 8, 64, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION), pytest.raises(RuntimeError):
        torch.nn.functional.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)


def test_the_bench_kernel_profile_sees_the_graph_replayed_kernels(tiny_model: Path) -> None:
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("gpu_decode_bench", REPO / "scripts" / "gpu_decode_bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    engine = _compiled(tiny_model, compile_mode="reduce-overhead")

    wall_ms = 1e3 * time_request(engine, Request(PROMPT, 8)).e2e_s

    got = bench.kernel_profile(engine, PROMPT, 8, wall_ms)

    assert "unavailable" not in got, got
    assert got["kernels_per_token"] > 1 and 0 < got["busy_share"] <= 1.05 and got["top"]


@pytest.mark.parametrize(("tuning", "rows", "aten_kernel"),
                         [("none", 1, True), ("coordinate_descent", 1, False), ("coordinate_descent", 2, True)])
def test_int8_matmuls_run_in_aten_s_int8_kernel_where_the_load_says_they_will(
    tiny_model: Path, caplog: pytest.LogCaptureFixture, tuning: str, rows: int, aten_kernel: bool
) -> None:
    """What `cuda_int8_note` says, against the kernels the compiled decode step runs (prefill runs eagerly here,
    where no inductor pattern applies)."""
    from torch.profiler import ProfilerActivity, profile

    runtime = RuntimeOptions(device="cuda", threads=2, max_length=32, max_batch=rows, batch_size=rows)
    candidate = CandidateConfig(engine="torch_compiled", quant="int8_weight", compile_mode="default",
                                compile_tuning=tuning, prefill_bucket=0)
    with caplog.at_level("WARNING", logger="autoopt.engines"):
        engine = engine_class("torch_compiled").load(tiny_model, candidate, runtime)
    prompt = np.repeat(PROMPT, rows, axis=0)
    list(engine.generate(prompt, 4))

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        list(engine.generate(prompt, 4))

    ran = " ".join(e.key for e in prof.key_averages())
    assert ("weight_int8pack_mm" in ran) is aten_kernel, sorted({e.key[:60] for e in prof.key_averages()})[:40]
    assert ("_weight_int8pack_mm" in caplog.text) is aten_kernel, caplog.text


_FRESH_LOAD = """
import json, sys
from pathlib import Path
import numpy as np
from autoopt.bundle.manifest import hash_tree
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine, load_settings
folder = Path(sys.argv[1])
TorchCompiledEngine.read_compiled_graphs(folder, hash_tree(folder))
engine = TorchCompiledEngine.load(folder, *load_settings(folder))
tokens = np.stack(list(engine.generate(np.array(json.loads(sys.argv[2]), dtype=np.int64), 8)), 1)
print(json.dumps({"cache": engine.compile_cache, "skips": engine.cudagraph_skips, "tokens": tokens.tolist()}))
"""


def test_a_bundle_compiled_for_the_card_ships_graphs_a_fresh_process_reads(tiny_model: Path, tmp_path: Path) -> None:
    import json
    import os
    import shutil
    import subprocess
    import sys

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    runtime = RuntimeOptions(device="cuda", threads=2, max_length=32, max_batch=1)
    candidate = CandidateConfig(engine="torch_compiled", quant="bf16", compile_mode="reduce-overhead")
    engine_class("torch_compiled").write_runtime_config(folder, candidate, runtime)
    assert engine_class("torch_compiled").write_compiled_graphs(folder) == "inductor_cache"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "empty")}

    proc = subprocess.run([sys.executable, "-c", _FRESH_LOAD, str(folder), json.dumps(PROMPT.tolist())], env=env,
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])

    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["cache"]["hits"] >= 1 and got["cache"]["misses"] == 0 and got["skips"] == 0, got
    eager = np.stack(list(_compiled(tiny_model, quant="bf16").generate(PROMPT, 8)), 1)
    np.testing.assert_array_equal(np.array(got["tokens"]), eager)
