"""Load an exported bundle and generate text with it, without the search machinery.

Reads only `manifest.json` (JSON) and the engine's own artifact files; imports no Optuna, MLflow,
Hydra or OmegaConf, so a deployment needs autoopt's core and the candidate's runtime only.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from autoopt.artifacts import TOKENIZER
from autoopt.bundle.layout import MODEL_DIR
from autoopt.bundle.manifest import read_manifest
from autoopt.config.errors import ConfigError
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig
from autoopt.config.serde import from_dict
from autoopt.engines.base import Engine
from autoopt.engines.registry import engine_class, engine_info
from autoopt.serving.runner import warm_up


@dataclass
class LoadedBundle:
    """A bundle's engine, ready to generate. Use from one thread; `close` (or `with`) releases it."""

    path: Path
    manifest: dict[str, Any]
    candidate: CandidateConfig
    runtime: RuntimeOptions
    engine: Engine
    tokenizer: Tokenizer
    end_ids: frozenset[int]  # `end_of_text_ids`

    def generate_text(self, prompt: str, max_new_tokens: int = 32) -> str:
        """Greedy completion of `prompt`, cut at the first end-of-text token (`end_ids`)."""
        ids = self.tokenizer.encode(prompt).ids
        if not ids:
            raise ValueError("the prompt is empty after tokenization; give at least one character")
        needed = len(ids) + max_new_tokens
        if needed > self.runtime.max_length:
            raise ValueError(
                f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) = {needed} exceeds the "
                f"bundle's max_length {self.runtime.max_length}; load it with a max_length of {needed} or more "
                "(python -m autoopt.serve --max-length, or load_bundle(..., max_length=))"
            )
        completion = []
        # Stopping the iteration stops the engine: generation past the end of text is never run.
        for step in self.engine.generate(np.asarray([ids], dtype=np.int64), max_new_tokens):
            token = int(step[0])
            if token in self.end_ids:
                break
            completion.append(token)
        return self.tokenizer.decode(completion)

    def warm_up(self, max_batch: int = 1, stream: bool = False, prefill_chunk: int = 0) -> float:
        """What to run before taking traffic: a 2-token generation per prompt length of the measured workload, at
        each batch size up to `max_batch` (with `stream`, continuous batching's joins, in parts of `prefill_chunk`
        tokens where it is set, and steps too). It covers the candidate's own warm-up strategy, after which the
        manifest's `speed.cold_first_request_ms` was measured; without it the first requests pay the runtime's
        one-time costs. Returns the seconds it took."""
        lengths = list(self.manifest["workload"]["prompt_lengths"])
        ids = np.arange(max(lengths), dtype=np.int64) % self.tokenizer.get_vocab_size()  # the shapes matter, not the text
        t0 = time.perf_counter()
        warm_up(self.engine, ids, lengths, max_batch, stream, prefill_chunk)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> LoadedBundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def runtime_options(
    manifest: dict[str, Any], threads: int | None, device: str | None, max_length: int | None
) -> RuntimeOptions:
    """The runtime the bundle was measured with (the manifest's copy), with the given overrides."""
    measured = from_dict(RuntimeOptions, manifest["runtime"])
    return replace(
        measured,
        device=device or measured.device,
        threads=threads or measured.threads,
        max_length=max_length or measured.max_length,
    )


def model_context_length(folder: Path) -> int | None:
    """The longest sequence the model folder declares (HF `config.json`'s `max_position_embeddings`, or
    onnxruntime-genai's `context_length`); None where it declares none."""
    for name, keys in (("config.json", ("max_position_embeddings",)), ("genai_config.json", ("model", "context_length"))):
        try:
            value: Any = json.loads((folder / name).read_text())
            for key in keys:
                value = value[key]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(value, int):
            return value
    return None


def special_token_ids(tokenizer: Tokenizer) -> frozenset[int]:
    return frozenset(i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special)


def end_of_text_ids(folder: Path, tokenizer: Tokenizer) -> frozenset[int]:
    """The tokens a reply ends at: the tokenizer's special tokens and every `eos_token_id` the model folder declares
    (`generation_config.json`, onnxruntime-genai's `genai_config.json`, `config.json`; one id or a list), as
    `model.generate` stops at them."""
    ids = set(special_token_ids(tokenizer))
    for name, keys in (("generation_config.json", ()), ("genai_config.json", ("model",)), ("config.json", ())):
        try:
            value: Any = json.loads((folder / name).read_text())
            for key in (*keys, "eos_token_id"):
                value = value[key]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        ids.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int))
    return frozenset(ids)


def runtime_env_missing(manifest: dict[str, Any]) -> dict[str, str]:
    """The manifest's process environment (allocator settings read at process start) that this process
    lacks; empty when the process already runs as the measurement did."""
    return {k: v for k, v in manifest.get("runtime_env", {}).items() if os.environ.get(k) != v}


def reexec_with_runtime_env(bundle: Path, module: str, argv: list[str]) -> None:
    """Start `python -m module argv` again with the bundle's runtime environment, unless this process has it.
    glibc reads its allocator settings at start-up, so they cannot be applied later."""
    try:
        missing = runtime_env_missing(read_manifest(bundle))
    except (OSError, ValueError):
        return  # no readable manifest: the command itself reports that
    if missing:
        os.execve(sys.executable, [sys.executable, "-m", module, *argv], {**os.environ, **missing})


def load_bundle(
    path: Path | str, threads: int | None = None, device: str | None = None, max_length: int | None = None
) -> LoadedBundle:
    """Load the bundle at `path` with its manifest's engine, candidate and runtime options.

    `threads`, `device` and `max_length` (longest prompt + completion, in tokens) override the
    manifest's. The bundle's integrity is not checked here (that is `python -m autoopt.bundle verify`), except
    that compiled graphs it ships are used only where their SHA-256 is the one its manifest lists.
    """
    path = Path(path)
    manifest = read_manifest(path)
    candidate = from_dict(CandidateConfig, manifest["candidate"])
    runtime = runtime_options(manifest, threads, device, max_length)
    for requirement in engine_info(candidate.engine).requires.get(runtime.device, ()):
        if problem := requirement.problem():  # before importing the runtime, which would raise ImportError
            raise RuntimeError(f"bundle {path}: engine={candidate.engine} on {runtime.device} {problem}")
    context = model_context_length(path / MODEL_DIR)
    if context is not None and runtime.max_length > context:
        raise ConfigError(f"bundle {path}: max_length {runtime.max_length} exceeds the model's context length "
                          f"{context}; give a max_length of {context} or less")
    tokenizer_path = path / MODEL_DIR / TOKENIZER
    if not tokenizer_path.is_file():  # tokenizers' own error names no path
        raise FileNotFoundError(
            f"bundle {path} has no {MODEL_DIR}/{TOKENIZER}: restore it or export the bundle again "
            f"(`python -m autoopt.bundle verify {path}` lists every missing or changed file)"
        )
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    cls = engine_class(candidate.engine)
    # What the engine shipped to skip work at load (compiled graphs), used only where it hashes as the manifest says.
    prefix = f"{MODEL_DIR}/"
    recorded = {rel[len(prefix):]: sha for rel, sha in manifest.get("files", {}).items() if rel.startswith(prefix)}
    cls.read_compiled_graphs(path / MODEL_DIR, recorded)
    engine = cls.load(path / MODEL_DIR, candidate, runtime)
    return LoadedBundle(path, manifest, candidate, runtime, engine, tokenizer,
                        end_of_text_ids(path / MODEL_DIR, tokenizer))
