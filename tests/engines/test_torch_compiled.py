"""The torch_compiled engine's own decode loop (static KV cache, fixed-shape decode step, prefill apart)
decodes the eager torch engine's greedy tokens: eagerly here (fast), compiled in the `slow` tests (each
CPU compile takes tens of seconds, so those load as few graphs as cover the paths). Knob values it cannot
run are refused in one line before any load, and what a target cannot run (float8 without fp8, bf16
kernels without bf16) is pruned before any build; weight-only int8 and float8 stay close to fp32; a
compile's inductor cache is kept where autoopt says and a warm one is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from autoopt.config.errors import ConfigError
from autoopt.config.schema import CandidateConfig, TargetConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.torch_compiled import INDUCTOR_CACHE_ENV, INFO, inductor_cache_env
from autoopt.engines.torch_compiled.engine import (
    RUNTIME_FILE,
    TorchCompiledEngine,
    compile_options,
    cuda_int8_note,
    prefill_lengths,
    runtime_settings,
)
from autoopt.engines.torch_compiled.quant import FP8_MAX, Float8Linear, quantize_weights, to_fp8_rows
from autoopt.space.validity import target_problem
from tests.engines.decoding import greedy_tokens as _tokens
from tests.engines.decoding import prompt as _prompt

REPO = Path(__file__).resolve().parents[2]

RUNTIME = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=40, max_batch=2)
# Teacher-forced top-1 agreement of float8 with fp32 on the tiny random model: 0.94 on the tested prompt, 0.91-0.95
# over three (int8_weight: 0.95-0.98); its near-uniform logits make this a tracking check, not an accuracy figure.
TOP1_FP8 = 0.85
# (batch, prompt_len, new): different prompts, lengths and batch sizes in a row on one engine.
REQUESTS = [(1, 12, 8), (2, 20, 6), (1, 7, 14), (2, 35, 6)]


def _candidate(quant: str = "none", compile_mode: str = "none", prefill_bucket: int = 0, **knobs: object):
    return CandidateConfig(
        engine="torch_compiled", quant=quant, compile_mode=compile_mode, prefill_bucket=prefill_bucket, **knobs
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def eager(tiny_model: Path) -> Engine:
    from autoopt.engines.torch.engine import TorchEngine

    return TorchEngine.load(tiny_model, CandidateConfig(engine="torch"), RUNTIME)


def _assert_decodes_like(engine: Engine, reference: Engine, requests: list[tuple[int, int, int]]) -> None:
    for i, (batch, prompt_len, new) in enumerate(requests):
        ids = _prompt(i, batch, prompt_len)
        np.testing.assert_array_equal(_tokens(engine, ids, new), _tokens(reference, ids, new), err_msg=f"request {i}")


# ------------------------------------------------------------------------------------------ knob validation


@pytest.mark.parametrize(
    ("candidate", "runtime", "words"),
    [
        (_candidate(compile_mode="max-autotune"), RUNTIME, ["compile_mode=max-autotune", "reduce-overhead"]),
        (_candidate(prefill_bucket=16), RUNTIME, ["prefill_bucket=16", "32"]),
        (_candidate(quant="int8_dynamic"), RUNTIME, ["quant=int8_dynamic", "int8_weight"]),
        (_candidate(quant="fp16"), RUNTIME, ["quant=fp16", "on cpu"]),
        (_candidate(quant="int4", quant_block_size=16), RUNTIME, ["quant_block_size=16", "32"]),
        (_candidate(), RuntimeOptions(device="tpu", threads=1, max_length=8, max_batch=1), ["device=tpu"]),
    ],
)
def test_values_it_cannot_run_are_refused_in_one_line(candidate, runtime, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        runtime_settings(candidate, runtime)
    message = str(err.value)
    assert "\n" not in message
    assert all(w in message for w in words), message


def test_settings_have_one_cache_per_batch_size_and_declared_quants_match_info() -> None:
    settings = runtime_settings(_candidate(quant="int4", compile_mode="reduce-overhead", prefill_bucket=32), RUNTIME)
    assert settings["batch_sizes"] == [1, 2]
    assert settings["dtype"] == "bfloat16" and settings["group_size"] == 32
    single = RuntimeOptions(device="cpu", threads=2, batch_size=4, max_length=16, max_batch=4)
    assert runtime_settings(_candidate(), single)["batch_sizes"] == [4]
    for device, quants in INFO.quants.items():
        for quant in quants:
            runtime = RuntimeOptions(device=device, threads=1, max_length=8, max_batch=1)
            assert runtime_settings(_candidate(quant=quant), runtime)["quant"] == quant


def test_int4_group_sizes_the_kernels_cannot_take_are_pruned_before_any_build() -> None:
    assert INFO.rule is not None
    assert "quant_block_size" in (INFO.rule(_candidate(quant="int4", quant_block_size=16), "cpu") or "")
    assert INFO.rule(_candidate(quant="int4", quant_block_size=128), "cuda") is None
    assert INFO.rule(_candidate(quant="int8_weight", quant_block_size=16), "cpu") is None  # per channel


def test_compile_tuning_is_refused_where_it_cannot_take_effect_and_pruned_before_any_build() -> None:
    tuned = _candidate(compile_mode="default", compile_tuning="coordinate_descent")
    cuda = RuntimeOptions(device="cuda", threads=1, batch_size=1, max_length=40, max_batch=1)

    with pytest.raises(ConfigError, match="compile_tuning=coordinate_descent .* no effect on cpu"):
        runtime_settings(tuned, RUNTIME)
    with pytest.raises(ConfigError, match="needs a compiled decode step"):
        runtime_settings(_candidate(compile_tuning="coordinate_descent"), cuda)
    assert runtime_settings(tuned, cuda)["compile_tuning"] == "coordinate_descent"
    targets = {name: _target(name) for name in ("cpu", "h100")}
    assert "no effect on cpu" in (target_problem(tuned, targets["cpu"]) or "")
    assert target_problem(tuned, targets["h100"]) is None


def test_tuned_compiles_keep_the_modes_own_options() -> None:
    assert compile_options("reduce-overhead", "none", cpp_wrapper=False) is None
    assert compile_options("reduce-overhead", "coordinate_descent", cpp_wrapper=False) == {
        "triton.cudagraphs": True, "coordinate_descent_tuning": True
    }
    assert compile_options("default", "coordinate_descent", cpp_wrapper=False) == {"coordinate_descent_tuning": True}


def test_a_compiled_step_on_cuda_says_when_aten_s_int8_kernel_will_run_its_int8_matmuls() -> None:
    def note(quant: str, mode: str = "reduce-overhead", tuning: str = "none", rows: int = 1, bucket: int = 0,
             device: str = "cuda") -> str | None:
        runtime = RuntimeOptions(device=device, threads=1, batch_size=1, max_length=40, max_batch=rows)
        candidate = _candidate(quant=quant, compile_mode=mode, compile_tuning=tuning, prefill_bucket=bucket)
        return cuda_int8_note(runtime_settings(candidate, runtime))

    untuned = note("int8_weight") or ""
    assert "its int8 weights run in aten's _weight_int8pack_mm" in untuned and "coordinate_descent" in untuned
    assert "its int8 layers (lm_head" in (note("int4") or "")
    assert note("int8_weight", tuning="coordinate_descent") is None
    assert "decode graphs of 4 rows" in (note("int8_weight", tuning="coordinate_descent", rows=4) or "")
    assert "the prefill graphs" in (note("int8_weight", tuning="coordinate_descent", bucket=32) or "")
    both = note("int4", tuning="coordinate_descent", rows=4, bucket=32) or ""
    assert "decode graphs of 4 rows and the prefill graphs" in both and "int8 layers" in both
    assert note("bf16") is None and note("fp8") is None
    assert note("int8_weight", mode="none") is None and note("int8_weight", device="cpu") is None


def test_the_cpu_compiles_with_the_cpp_wrapper_and_cuda_with_the_python_one() -> None:
    cuda = RuntimeOptions(device="cuda", threads=1, batch_size=1, max_length=40, max_batch=1)
    assert runtime_settings(_candidate(compile_mode="reduce-overhead"), RUNTIME)["cpp_wrapper"] is True
    assert runtime_settings(_candidate(compile_mode="reduce-overhead"), cuda)["cpp_wrapper"] is False
    for mode in ("default", "reduce-overhead"):  # no CUDA graphs on the CPU: every mode compiles the same
        assert compile_options(mode, "none", cpp_wrapper=True) == {"cpp_wrapper": True}


def test_prefill_buckets_cover_every_prompt_that_fits_the_cache() -> None:
    assert prefill_lengths(0, 160) == []
    assert prefill_lengths(64, 160) == [64, 128, 160]
    assert prefill_lengths(32, 64) == [32, 64]
    assert prefill_lengths(128, 40) == [40]


def test_cuda_is_refused_with_one_clear_line_when_absent(tiny_model: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    runtime = RuntimeOptions(device="cuda", threads=1, max_length=16, max_batch=1)
    with pytest.raises(RuntimeError) as err:
        TorchCompiledEngine.load(tiny_model, _candidate(), runtime)
    assert "cuda" in str(err.value).lower() and "\n" not in str(err.value)


# ------------------------------------------------------------------- the loop, uncompiled (no compile here)


def test_uncompiled_loop_decodes_like_eager_torch_across_requests(tiny_model: Path, eager: Engine) -> None:
    engine = TorchCompiledEngine.load(tiny_model, _candidate(), RUNTIME)

    _assert_decodes_like(engine, eager, REQUESTS)

    assert engine.static_kv_allocations() == 2  # batch 1 and 2, allocated by load, not by requests
    assert set(engine.compile_report) == {"decode b1", "decode b2"}
    assert engine.compile_cache_warm() is None  # nothing compiled, so no cache to be warm
    engine.close()


def test_an_uncompiled_loop_reports_no_compile_time(tiny_model: Path) -> None:
    # speed.compile_s is "seconds of the load spent compiling graphs": the report and a bundle's README print it
    engine = TorchCompiledEngine.load(tiny_model, _candidate(prefill_bucket=32), RUNTIME)

    assert engine.compile_seconds() is None
    engine.close()


@pytest.mark.parametrize("bucket", [0, 32], ids=["eager-parts", "bucketed-parts"])
def test_two_prompts_prefilled_in_alternate_parts_between_steps_decode_as_alone(tiny_model: Path, bucket: int) -> None:
    """Two prompts' parts take turns in the stream's one-row cache, each part after the parts before it are copied
    back, while the first to join decodes. With a bucket, the first parts run through the padded prefill at their
    offset and the later ones, whose padding would overrun the 40-position cache, at their own length."""
    engine = TorchCompiledEngine.load(tiny_model, _candidate(prefill_bucket=bucket), RUNTIME)
    prompts, new = [_prompt(0, 1, 20)[0], _prompt(1, 1, 13)[0]], 6
    stream, got = engine.stream(), {}
    for key, prompt in enumerate(prompts):
        stream.begin(key, prompt)
    while any(len(got.get(key, [])) < new for key in range(2)):
        for key, part in ((0, 3), (1, 4)):
            if key not in got and (token := stream.prefill(key, part)) is not None:
                got[key] = [token]
        for key, token in stream.step().items():
            got[key].append(token)
    for key, prompt in enumerate(prompts):
        np.testing.assert_array_equal(got[key][:new], _tokens(engine, prompt[None], new)[0], f"prompt {key}")
    engine.close()


@pytest.mark.parametrize("bucket", [0, 32], ids=["eager-parts", "bucketed-parts"])
def test_a_prompt_prefilled_in_parts_caches_the_keys_and_values_it_caches_whole(tiny_model: Path, bucket: int) -> None:
    """The direct check (the untrained model's tokens barely depend on far context): each row's cached keys, rotated
    for their positions, and values are the same whether its prompt joined whole or in parts, two of the first
    prompt's in a row (its parts stay in the one-row cache), then one of the second's (the first's are copied out,
    and back before its next part)."""
    engine = TorchCompiledEngine.load(tiny_model, _candidate(prefill_bucket=bucket), RUNTIME)
    prompts = [_prompt(0, 1, 20)[0], _prompt(1, 1, 13)[0]]
    parted = engine.stream()
    for key, prompt in enumerate(prompts):
        parted.begin(key, prompt)
    while parted.rows < 2:
        for key, part in ((0, 3), (0, 3), (1, 4)):
            if key not in parted.keys:
                parted.prefill(key, part)
    got = _contexts(parted)
    for key in range(2):
        parted.leave(key)
    whole = engine.stream()  # the same slot's cache
    for key, prompt in enumerate(prompts):
        whole.join(key, prompt)
    want = _contexts(whole)
    for key in range(2):
        for got_kv, want_kv in zip(got[key], want[key], strict=True):
            torch.testing.assert_close(got_kv, want_kv, rtol=1e-4, atol=1e-5)
    engine.close()


def test_a_prompts_parts_survive_a_generate_through_the_one_row_cache_between_them(tiny_model: Path) -> None:
    """The stream prefills in the engine's one-row slot, which `generate` of one row uses too: the waiting parts are
    copied out before it writes there, and back before the prompt's next part."""
    engine = TorchCompiledEngine.load(tiny_model, _candidate(), RUNTIME)
    prompt, other = _prompt(0, 1, 20)[0], _prompt(1, 1, 13)
    stream = engine.stream()
    stream.begin(0, prompt)
    stream.prefill(0, 8)
    _tokens(engine, other, 3)
    stream.prefill(0, 12)
    got = _contexts(stream)[0]
    stream.leave(0)
    stream.join(0, prompt)
    for got_kv, want_kv in zip(got, _contexts(stream)[0], strict=True):
        torch.testing.assert_close(got_kv, want_kv, rtol=1e-4, atol=1e-5)
    engine.close()


def _contexts(stream: Any) -> dict[int, list[torch.Tensor]]:
    """Each row's keys and values in a `TorchCompiledStream`'s cache, from its first column to the write position."""
    return {key: [cache[row, :, stream._starts[row] : stream._width].clone() for cache in stream._slot.decoder.caches()]
            for row, key in enumerate(stream._keys) if key is not None}


def test_a_stream_takes_no_more_prompts_than_its_rows(tiny_model: Path) -> None:
    engine = TorchCompiledEngine.load(tiny_model, _candidate(), RUNTIME)
    stream = engine.stream()
    stream.join(0, _prompt(0, 1, 8)[0])
    stream.begin(1, _prompt(1, 1, 8)[0])  # its parts hold the second row
    with pytest.raises(ValueError, match="2 rows are all taken"):
        stream.begin(2, _prompt(2, 1, 8)[0])
    stream.leave(1)  # mid-prefill: its row is free again
    assert stream.join(2, _prompt(2, 1, 8)[0]) == _tokens(engine, _prompt(2, 1, 8), 1)[0, 0]
    engine.close()


def test_requests_beyond_the_static_cache_are_refused(tiny_model: Path) -> None:
    engine = TorchCompiledEngine.load(tiny_model, _candidate(), RUNTIME)
    with pytest.raises(ValueError, match="max_length"):
        next(engine.generate(_prompt(0, 1, 30), 12))
    with pytest.raises(ValueError, match="max_batch"):
        next(engine.generate(_prompt(0, 3, 8), 2))
    engine.close()


def test_int8_weight_logits_stay_close_to_fp32(tiny_model: Path, eager: Engine) -> None:
    engine = TorchCompiledEngine.load(tiny_model, _candidate(quant="int8_weight"), RUNTIME)
    ids = _prompt(7, 2, 32)

    ref, got = eager.logits(ids), engine.logits(ids)

    assert got.dtype == np.float32 and got.shape == ref.shape
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.9
    assert 0 < np.abs(ref - got).max() < 0.05  # quantized (not the fp32 weights), yet close
    assert _tokens(engine, ids[:1, :16], 4).shape == (1, 4)
    engine.close()


def test_runtime_config_holds_the_settings_load_applies(tmp_path: Path) -> None:
    candidate = _candidate(quant="int8_weight", compile_mode="reduce-overhead", prefill_bucket=64)

    TorchCompiledEngine.write_runtime_config(tmp_path, candidate, RUNTIME)

    written = json.loads((tmp_path / RUNTIME_FILE).read_text())
    assert written == runtime_settings(candidate, RUNTIME)
    assert "def load(folder)" in TorchCompiledEngine.plain_runtime_snippet()


@pytest.mark.parametrize("quant", ["int4", "int8_weight"])
def test_the_bundle_snippet_loads_the_engine_with_the_settings_it_was_measured_with(
    tiny_model: Path, tmp_path: Path, quant: str
) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    candidate = _candidate(quant=quant, quant_block_size=64 if quant == "int4" else 32, attn_backend="math")
    TorchCompiledEngine.write_runtime_config(folder, candidate, RUNTIME)
    namespace: dict[str, object] = {"__name__": "snippet"}
    exec(compile(TorchCompiledEngine.plain_runtime_snippet(), "<snippet>", "exec"), namespace)

    engine = namespace["load"](folder)  # type: ignore[operator]

    assert engine._settings == runtime_settings(candidate, RUNTIME)
    engine.close()


# ------------------------------------------------------------------------------------------------- float8


def test_fp8_rows_round_trip_within_e4m3_precision() -> None:
    magnitudes = torch.logspace(-4, 2, 24)[:, None]  # rows across six decades: each row gets its own scale
    x = torch.randn(24, 64, generator=torch.Generator().manual_seed(0)) * magnitudes

    q, scale = to_fp8_rows(x)

    assert q.dtype == torch.float8_e4m3fn and scale.shape == (24, 1) and scale.dtype == torch.float32
    assert (q.float().abs().amax(dim=1) == FP8_MAX).all()  # each row's largest value maps to the top of the range
    # e4m3 keeps 3 mantissa bits: rounding is within 2^-4 relative, plus half a subnormal step (2^-10) near zero.
    error = (q.float() * scale - x).abs()
    assert (error <= x.abs() * 2**-4 + scale * 2**-10).all()


def test_float8_linear_tracks_the_float_linear() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 32).to(torch.bfloat16)
    x = torch.randn(3, 5, 64, dtype=torch.bfloat16)

    y, ref = Float8Linear(linear, torch.bfloat16)(x), linear(x)

    assert y.dtype == torch.bfloat16 and y.shape == (3, 5, 32)
    relative = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
    assert 0 < relative < 0.1  # quantized (not the float weights), yet close


def test_layers_fp8_cannot_take_keep_their_float_weights() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 24))  # 24 outputs: not a multiple of 16

    replaced = quantize_weights(model, "fp8", None, torch.float32, torch.device("cpu"))

    assert replaced == 1 and isinstance(model[0], Float8Linear) and type(model[1]) is nn.Linear


def test_fp8_logits_track_fp32(tiny_model: Path, eager: Engine) -> None:
    engine = TorchCompiledEngine.load(tiny_model, _candidate(quant="fp8"), RUNTIME)
    ids = _prompt(7, 2, 32)

    ref, got = eager.logits(ids), engine.logits(ids)

    assert got.dtype == np.float32 and got.shape == ref.shape
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= TOP1_FP8
    assert 0 < np.abs(ref - got).max() < 0.1  # float8 weights and activations, not the float ones (measured 0.03)
    assert _tokens(engine, ids[:1, :16], 4).shape == (1, 4)
    engine.close()


# -------------------------------------------------------------------- what a target cannot run, before builds


def _target(name: str) -> TargetConfig:
    fields = yaml.safe_load((REPO / "conf" / "target" / f"{name}.yaml").read_text())
    fields.pop("defaults", None)
    return TargetConfig(**fields)


def test_fp8_is_pruned_on_targets_without_float8() -> None:
    assert target_problem(_candidate(quant="fp8"), _target("h100")) is None
    for name in ("cpu", "t4", "a100"):
        problem = target_problem(_candidate(quant="fp8"), _target(name))
        assert problem is not None and problem.startswith(f"quant=fp8 needs fp8, which target={name} does not")


@pytest.mark.parametrize("quant", ["int8_weight", "int4"])
def test_bf16_activation_kernels_are_pruned_on_cards_without_bf16(quant: str) -> None:
    problem = target_problem(_candidate(quant=quant), _target("t4"))

    assert problem == (
        f"engine=torch_compiled runs quant={quant} with bf16 activations, which target=t4 does not support "
        f"(supports: fp32, fp16, int8, int4); choose another engine for quant={quant} there"
    )
    assert target_problem(_candidate(quant=quant), _target("a100")) is None


def test_t4_still_runs_the_compiled_loop_in_its_own_precisions() -> None:
    for quant in ("none", "fp16"):
        assert target_problem(_candidate(quant=quant), _target("t4")) is None


# ------------------------------------------------------------------------------------------ inductor cache


def test_inductor_cache_goes_under_autoopts_cache_unless_the_user_chose_one(tmp_path: Path) -> None:
    assert inductor_cache_env(tmp_path, environ={}) == {INDUCTOR_CACHE_ENV: str(tmp_path / "inductor")}
    assert inductor_cache_env(tmp_path, environ={INDUCTOR_CACHE_ENV: "/my/cache"}) == {}


# ---------------------------------------------------------------------------- compiled (slow: CPU compiles)


# One load in a fresh process (as every trial and reported run loads): flash inside the compiled step.
_LOAD_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
import numpy as np
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine
candidate = CandidateConfig(engine="torch_compiled", compile_mode="default", attn_backend="flash")
runtime = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=40, max_batch=1)
engine = TorchCompiledEngine.load(Path(sys.argv[1]), candidate, runtime)
steps = engine.generate(np.array(json.loads(sys.argv[2]), dtype=np.int64), 10)
tokens = [int(step[0]) for step in steps]
print(json.dumps({"cache": engine.compile_cache, "warm": engine.compile_cache_warm(), "tokens": tokens}))
"""


@pytest.mark.slow
def test_a_fresh_process_compiling_the_same_graph_is_served_by_the_inductor_cache_and_says_so(
    tiny_model: Path, eager: Engine, tmp_path: Path
) -> None:
    cache = tmp_path / "inductor"
    env = {**os.environ, INDUCTOR_CACHE_ENV: str(cache), "HF_HUB_OFFLINE": "1"}
    prompt = _prompt(4, 1, 12)

    def load_once() -> dict:
        cmd = [sys.executable, "-c", _LOAD_IN_A_FRESH_PROCESS, str(tiny_model), json.dumps(prompt.tolist())]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    cold, warm = load_once(), load_once()

    assert cold["cache"]["dir"] == str(cache) and cold["cache"]["misses"] >= 1 and cold["warm"] is False
    assert warm["cache"]["hits"] >= 1 and warm["cache"]["misses"] == 0 and warm["warm"] is True
    assert cold["tokens"] == warm["tokens"] == _tokens(eager, prompt, 10)[0].tolist()


@pytest.mark.slow
def test_compiled_decode_and_bucketed_prefill_decode_like_eager_torch(tiny_model: Path, eager: Engine) -> None:
    # One batch size (batch 1 runs padded into it) and two prefill buckets: three graphs.
    runtime = RuntimeOptions(device="cpu", threads=2, batch_size=2, max_length=40, max_batch=2)
    engine = TorchCompiledEngine.load(tiny_model, _candidate(compile_mode="default", prefill_bucket=32), runtime)

    assert set(engine.compile_report) == {"decode b2", "prefill b2 len32", "prefill b2 len40"}
    assert engine.compile_seconds() > 0
    with torch._dynamo.config.patch(error_on_recompile=True):  # load compiled every graph a request uses
        _assert_decodes_like(engine, eager, REQUESTS)  # prompts 7-20 in the 32 bucket, 35 in the 40 one
        # a prompt's second part (chunked prefill) goes through the 32 bucket's graph at its offset, as compiled
        slot, ids = engine._slots[2], torch.from_numpy(_prompt(5, 2, 12))
        with torch.inference_mode():
            slot.decoder.starts.zero_()
            engine._prefill(slot, ids[:, :5])
            engine._prefill(slot, ids[:, 5:], start=5)
            parted = [cache[:, :, :12].clone() for cache in slot.decoder.caches()]
            engine._prefill(slot, ids)
            for got, want in zip(parted, slot.decoder.caches(), strict=True):  # keys rotated for their positions
                torch.testing.assert_close(got, want[:, :, :12], rtol=1e-4, atol=1e-5)
    assert engine.static_kv_allocations() == 1
    engine.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("quant", "mode"),
    [
        ("int8_weight", "reduce-overhead"),  # on the CPU: inductor without CUDA graphs
        ("fp8", "default"),  # _scaled_mm with float8 runs on the CPU too: inductor's lowering of it is checked here
    ],
)
def test_compiled_quantized_step_decodes_like_its_uncompiled_loop(tiny_model: Path, quant: str, mode: str) -> None:
    runtime = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=40, max_batch=1)
    compiled = TorchCompiledEngine.load(tiny_model, _candidate(quant, mode), runtime)
    uncompiled = TorchCompiledEngine.load(tiny_model, _candidate(quant, "none"), runtime)

    with torch._dynamo.config.patch(error_on_recompile=True):
        _assert_decodes_like(compiled, uncompiled, [(1, 12, 10), (1, 25, 12)])
    assert list(compiled.compile_report) == ["decode b1"]
    compiled.close()
    uncompiled.close()


_MANY_ENGINES = """
import sys
from pathlib import Path
import numpy as np
import torch
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.torch_compiled.engine import TorchCompiledEngine
torch._dynamo.config.recompile_limit = 2  # dynamo's default is 8: the same overflow, with fewer compiles
for length in (20, 24, 28, 32):  # each cache length is another graph of the same forward
    runtime = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=length, max_batch=1)
    engine = TorchCompiledEngine.load(Path(sys.argv[1]), CandidateConfig(engine="torch_compiled"), runtime)
    list(engine.generate(np.ones((1, 8), dtype=np.int64), 4))
print("loaded", length)
"""


@pytest.mark.slow
def test_one_process_loads_more_compiled_engines_than_dynamos_recompile_limit(tiny_model: Path) -> None:
    # A serving process, an in-process A/B or the GPU bench loads many engines; dynamo counts all their graphs
    # against one limit per code object, and a fullgraph compile beyond it fails.
    proc = subprocess.run([sys.executable, "-c", _MANY_ENGINES, str(tiny_model)], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("loaded 32")
