"""A bundle's model folder carries the runtime settings it was measured with in the runtime's own
configuration, and the engine's plain-runtime snippet (nothing but the runtime's API) run on that folder
decodes the same tokens, at the per-token speed autoopt measured."""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoopt.config.schema import CandidateConfig, ModelConfig
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.engines.registry import engine_class
from autoopt.passes.pipeline import run_pipeline
from autoopt.passes.plan import plan

RUNTIME = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=48, max_batch=1)
PLAIN_ENGINES = [  # (engine, KV layout) pairs each engine implements
    ("torch", "dynamic"),
    ("torch", "static"),
    ("ort", "dynamic"),
    ("ort_genai", "dynamic"),
    ("ort_genai", "static"),
    ("torch_compiled", "dynamic"),  # its snippet is autoopt's own loop: the KV knob does not apply
]


def _snippet(name: str) -> tuple[Callable[[Path], Any], Callable[[Any, list[int], int], Iterator[int]]]:
    namespace: dict[str, Any] = {"__name__": "plain_runtime_snippet"}
    exec(compile(engine_class(name).plain_runtime_snippet(), f"<{name} snippet>", "exec"), namespace)
    return namespace["load"], namespace["generate"]


def _bundle_copy(artifact: Path, into: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> Path:
    folder = into / "model"
    shutil.copytree(artifact, folder)
    engine_class(candidate.engine).write_runtime_config(folder, candidate, runtime)
    return folder


def _genai_config_like_the_builder() -> dict[str, Any]:
    return {
        "model": {
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "num_hidden_layers": 2,
            },
            "eos_token_id": 0,
            "vocab_size": 512,
        },
        "search": {"max_length": 2048, "past_present_share_buffer": True, "top_k": 50},
    }


def test_genai_settings_are_written_into_genai_config_keeping_the_builders_keys(tmp_path: Path) -> None:
    (tmp_path / "genai_config.json").write_text(json.dumps(_genai_config_like_the_builder()))
    candidate = CandidateConfig(engine="ort_genai", graph_opt="extended", kv_cache="dynamic")

    engine_class("ort_genai").write_runtime_config(tmp_path, candidate, RUNTIME)
    config = json.loads((tmp_path / "genai_config.json").read_text())

    session = config["model"]["decoder"]["session_options"]
    assert session == {
        "log_id": "onnxruntime-genai",
        "provider_options": [],
        "intra_op_num_threads": 2,
        "inter_op_num_threads": 1,
        "graph_optimization_level": "ORT_ENABLE_EXTENDED",
    }
    assert config["search"] == {"max_length": 48, "past_present_share_buffer": False, "top_k": 50, "do_sample": False}
    assert config["model"]["eos_token_id"] == 0 and config["model"]["decoder"]["filename"] == "model.onnx"


def test_ort_session_options_are_written_beside_the_graph(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 7}))
    candidate = CandidateConfig(engine="ort", graph_opt="basic")

    engine_class("ort").write_runtime_config(tmp_path, candidate, RUNTIME)
    settings = json.loads((tmp_path / "ort_session.json").read_text())

    assert settings == {
        "model_file": "model.onnx",
        "graph_optimization_level": "ORT_ENABLE_BASIC",
        "intra_op_num_threads": 2,
        "inter_op_num_threads": 1,
        "execution_mode": "ORT_SEQUENTIAL",
        "providers": ["CPUExecutionProvider"],
        "eos_token_ids": [7],
    }


@pytest.mark.parametrize(("quant", "dtype"), [("none", "float32"), ("bf16", "bfloat16"), ("int8_dynamic", "float32")])
def test_torch_settings_go_into_transformers_files_and_torch_runtime_json(
    tiny_model: Path, tmp_path: Path, quant: str, dtype: str
) -> None:
    candidate = CandidateConfig(engine="torch", quant=quant, kv_cache="static")

    folder = _bundle_copy(tiny_model, tmp_path, candidate, RUNTIME)

    settings = json.loads((folder / "torch_runtime.json").read_text())
    assert settings == {
        "dtype": dtype,
        "quantize_dynamic_int8": quant == "int8_dynamic",
        "threads": 2,
        "device": "cpu",
        "kv_cache": "static",
        "max_length": 48,
        "attn_backend": "auto",
    }
    assert json.loads((folder / "config.json").read_text())["dtype"] == dtype
    assert json.loads((folder / "generation_config.json").read_text())["cache_implementation"] == "static"


def test_a_torch_bundle_generates_greedily_as_measured_whatever_the_checkpoint_suggests(
    tiny_model: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(tiny_model, source)
    suggested = {"eos_token_id": [3, 0], "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                 "repetition_penalty": 1.1}
    (source / "generation_config.json").write_text(json.dumps(suggested))

    folder = _bundle_copy(source, tmp_path / "bundle", CandidateConfig(engine="torch"), RUNTIME)

    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation == {"eos_token_id": [3, 0], "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0,
                          "no_repeat_ngram_size": 0}


def test_loading_a_written_folder_with_other_settings_says_which_differ(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    candidate = CandidateConfig(engine="torch")
    folder = _bundle_copy(tiny_model, tmp_path, candidate, RUNTIME)

    with caplog.at_level(logging.WARNING, logger="autoopt.engines"):
        engine_class("torch").load(folder, candidate, replace(RUNTIME, threads=2)).close()
        assert not caplog.records
        engine_class("torch").load(folder, candidate, replace(RUNTIME, threads=1)).close()

    assert [r.getMessage() for r in caplog.records] == [
        f"torch: threads is 2 in {folder / 'torch_runtime.json'} but loaded with 1"
    ]


class _NoConfigEngine(Engine):
    name = "no_config"

    @classmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> Engine:
        return cls()

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        yield from ()

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        return np.zeros((1, 1, 1), dtype=np.float32)


def test_an_engine_without_a_runtime_config_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError, match="no_config"):
        _NoConfigEngine.write_runtime_config(tmp_path, CandidateConfig(), RUNTIME)
    with pytest.raises(NotImplementedError, match="no_config"):
        _NoConfigEngine.plain_runtime_snippet()


# ---- the snippet decodes what the engine decodes (tiny random model) -------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kv_cache"), PLAIN_ENGINES)
def test_plain_snippet_on_the_written_folder_decodes_the_engines_tokens(
    name: str, kv_cache: str, tiny_model: Path, tmp_path: Path
) -> None:
    candidate = CandidateConfig(engine=name, kv_cache=kv_cache)
    artifact = run_pipeline(tiny_model, "tiny", plan(candidate, "cpu"), tmp_path / "cache").artifact
    folder = _bundle_copy(artifact, tmp_path, candidate, RUNTIME)
    load, generate = _snippet(name)
    prompt = np.random.default_rng(3).integers(1, 500, size=(1, 16), dtype=np.int64)

    engine = engine_class(name).load(folder, candidate, RUNTIME)
    expected = [int(t[0]) for t in engine.generate(prompt, 20)]
    engine.close()
    plain = list(generate(load(folder), prompt[0].tolist(), 20))

    # The plain loop stops at end of text; the engine never does.
    assert plain == expected[: len(plain)] and len(plain) >= 1
    assert len(plain) == 20 or expected[len(plain) - 1] in _eos_ids(folder)


@pytest.mark.slow
def test_genai_alone_drops_a_prompts_trailing_end_of_text_which_the_bundle_readme_says(
    tiny_model: Path, tmp_path: Path
) -> None:
    candidate = CandidateConfig(engine="ort_genai")
    artifact = run_pipeline(tiny_model, "tiny", plan(candidate, "cpu"), tmp_path / "cache").artifact
    folder = _bundle_copy(artifact, tmp_path, candidate, RUNTIME)
    (pad,) = _eos_ids(folder)
    assert json.loads((folder / "genai_config.json").read_text())["model"]["pad_token_id"] == pad
    load, generate = _snippet("ort_genai")
    prompt = np.random.default_rng(3).integers(1, 500, size=(1, 16), dtype=np.int64)
    ended = np.concatenate([prompt, [[pad]]], axis=1)

    model = load(folder)
    plain = [list(generate(model, p[0].tolist(), 8)) for p in (prompt, ended)]
    engine = engine_class("ort_genai").load(folder, candidate, RUNTIME)
    kept = [int(t[0]) for t in engine.generate(ended, 8)]
    engine.close()

    assert plain[1] == plain[0]  # the trailing id was taken for padding
    assert kept != plain[1]  # autoopt's loader decoded after it
    assert any("trailing `pad_token_id`" in line for line in engine_class("ort_genai").plain_runtime_caveats())


def _eos_ids(folder: Path) -> set[int]:
    for name in ("genai_config.json", "config.json"):
        if (folder / name).exists():
            config = json.loads((folder / name).read_text())
            eos = config.get("model", config).get("eos_token_id")
            return set(eos if isinstance(eos, list) else [eos])
    return set()


# ---- the snippet reproduces the measured decode speed (trained built-in model) ---------------------------

PROMPT_LEN, NEW_TOKENS, ROUNDS = 128, 32, 15
TEXTS = ("json", "textwrap", "argparse", "collections", "pathlib", "logging")


def _decode_ms(stream: Iterator[object]) -> tuple[float, int]:
    """The median decode step (every step after the first token, which is the prefill) of one token
    stream run to its end, in ms, and its token count. A median, not a mean: another process's burst can
    stall a few steps."""
    steps = []
    while True:
        t0 = time.perf_counter()
        try:
            next(stream)
        except StopIteration:
            break
        steps.append(time.perf_counter() - t0)
    return statistics.median(steps[1:]) * 1e3, len(steps)


def _prompt_without_eos(folder: Path, engine: Engine, eos: set[int]) -> np.ndarray:
    """128 tokens of stdlib docstrings after which the model does not end the text within 32 tokens, so
    the plain loop (which stops at end of text) and the engine (which never does) time the same steps."""
    import importlib

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for module in TEXTS:
        ids = tokenizer.encode((importlib.import_module(module).__doc__ or "") * 4).ids[:PROMPT_LEN]
        if len(ids) < PROMPT_LEN:
            continue
        prompt = np.asarray([ids], dtype=np.int64)
        if not eos & {int(t[0]) for t in engine.generate(prompt, NEW_TOKENS)}:
            return prompt
    pytest.fail(f"no prompt among the docstrings of {TEXTS} runs {NEW_TOKENS} tokens without end of text")


@pytest.fixture(scope="module")
def trained(cache_dir: Path):
    from autoopt.models.source import resolve_model

    return resolve_model(ModelConfig(), cache_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "quant", "kv_cache"),
    [
        ("ort_genai", "int4", "dynamic"),
        ("ort_genai", "int4", "static"),
        ("torch", "none", "dynamic"),
        ("torch", "none", "static"),
    ],
)
def test_plain_snippet_decodes_within_20_percent_of_the_engine(
    name: str, quant: str, kv_cache: str, trained, cache_dir: Path, tmp_path: Path
) -> None:
    candidate = CandidateConfig(engine=name, quant=quant, kv_cache=kv_cache)
    runtime = RuntimeOptions(device="cpu", threads=2, batch_size=1, max_length=PROMPT_LEN + NEW_TOKENS, max_batch=1)
    artifact = run_pipeline(trained.path, trained.key, plan(candidate, "cpu"), cache_dir).artifact
    folder = _bundle_copy(artifact, tmp_path, candidate, runtime)
    engine = engine_class(name).load(folder, candidate, runtime)  # as `serve` loads a bundle
    load, generate = _snippet(name)
    plain = load(folder)
    prompt = _prompt_without_eos(folder, engine, _eos_ids(folder))

    streams = {
        "engine": lambda: engine.generate(prompt, NEW_TOKENS),
        "plain": lambda: generate(plain, prompt[0].tolist(), NEW_TOKENS),
    }
    timings: dict[str, list[float]] = {"engine": [], "plain": []}
    for round_ in range(ROUNDS):  # which of the two runs first alternates from round to round
        for which in ("engine", "plain") if round_ % 2 == 0 else ("plain", "engine"):
            # Untimed first: right after the other session ran, a 2-core machine's per-token time took one
            # of three modes (0.75x, 1x, 1.3x) from generation to generation; one untimed generation
            # settles it. Token by token interleaving had the same modes, and failed CI once on them.
            for _ in streams[which]():
                pass
            ms, count = _decode_ms(streams[which]())
            assert count == NEW_TOKENS
            timings[which].append(ms)
    engine.close()

    ratios = [p / e for p, e in zip(timings["plain"], timings["engine"], strict=True)]
    ratio = statistics.median(ratios)
    summary = (
        f"plain/engine per-token decode: median ratio {ratio:.3f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)}); "
        f"medians engine {statistics.median(timings['engine']):.3f} ms, plain {statistics.median(timings['plain']):.3f} ms"
    )
    print(summary)
    assert 0.8 <= ratio <= 1.2, summary
