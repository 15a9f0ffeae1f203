"""The fp32 torch reference on held-out text, computed once per (model, evaluation text, windows,
decode sizes, library versions) and cached on disk: token windows and their teacher-forced logits
(the prefill path), and greedy continuations of held-out prompts (the decode path, with a KV cache)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autoopt.accuracy.decode import (
    DECODE_MAX_LENGTH,
    DECODE_NEW_TOKENS,
    DECODE_POOL,
    DECODE_PROMPT_LEN,
    DECODE_PROMPTS,
    DECODE_ROWS_PER_CALL,
    decode_prompts,
    greedy_continuations,
    most_varied,
)
from autoopt.config.errors import ConfigError
from autoopt.config.schema import CandidateConfig, WorkloadConfig
from autoopt.digest import source_digest
from autoopt.engines.base import Engine, RuntimeOptions
from autoopt.locks import exclusive_lock, lock_beside

if TYPE_CHECKING:
    from autoopt.models.source import ResolvedModel

log = logging.getLogger("autoopt.accuracy")

CHUNK_ROWS = 4  # windows per forward pass, the same for the reference and every candidate
FORMAT = 3  # 2: adds decode_prompts and decode_tokens; 3: the most varied of a pool. Older files are not reused


@dataclass(frozen=True)
class Reference:
    """An .npz holding, all int64 but logits:
    stream (tokens,): the held-out text, tokenized whole; benchmark requests are cut from it
    ids (windows, len) and logits float32 (windows, len, vocab): teacher-forced windows and their logits
    decode_prompts (DECODE_PROMPTS, DECODE_PROMPT_LEN) and decode_tokens (DECODE_PROMPTS, DECODE_NEW_TOKENS):
      held-out prompts and the reference's greedy continuation of them (`accuracy.decode`)
    """

    path: Path

    def load(self) -> dict[str, np.ndarray]:
        with np.load(self.path) as z:
            return {k: z[k] for k in z.files}

    def stream(self) -> np.ndarray:
        with np.load(self.path) as z:
            return z["stream"]


def eval_text(workload: WorkloadConfig) -> str:
    if workload.eval_text == "builtin_heldout":
        from autoopt.models.corpus import load_corpus

        return "<|endoftext|>".join(load_corpus().heldout)
    return Path(workload.eval_text).read_text(encoding="utf-8")


def teacher_forced_logits(engine: Engine, ids: np.ndarray) -> np.ndarray:
    return np.concatenate([engine.logits(ids[i : i + CHUNK_ROWS]) for i in range(0, len(ids), CHUNK_ROWS)])


def _windows(stream: np.ndarray, count: int, length: int) -> np.ndarray:
    if len(stream) < count * length:
        raise ConfigError(
            f"workload.eval_windows={count} x workload.eval_window_len={length} need {count * length} tokens, but the "
            f"evaluation text (workload.eval_text) has {len(stream)}; lower them or use a longer eval_text"
        )
    stride = len(stream) // count
    return np.stack([stream[i * stride : i * stride + length] for i in range(count)]).astype(np.int64)


def _key(model: ResolvedModel, workload: WorkloadConfig, text: str) -> str:
    payload = {
        "model": model.key,
        "text": hashlib.sha256(text.encode()).hexdigest(),
        "windows": [workload.eval_windows, workload.eval_window_len],
        "decode": [DECODE_PROMPTS, DECODE_POOL, DECODE_PROMPT_LEN, DECODE_NEW_TOKENS, DECODE_ROWS_PER_CALL],
        "format": FORMAT,
        "libs": [metadata.version(p) for p in ("torch", "transformers", "tokenizers", "numpy")],  # tokenizers: the stream
        "code": source_digest(__name__),  # this module and what it imports (the decode, the torch engine)
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def ensure_reference(model: ResolvedModel, workload: WorkloadConfig, cache_dir: Path) -> Reference:
    text = eval_text(workload)
    path = cache_dir / "reference" / f"{model.key}-{_key(model, workload, text)}.npz"
    if path.exists():
        return Reference(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Runs started together (two sweeps on one cache) wait here: the first computes it, the others reuse it.
    with exclusive_lock(lock_beside(path)):
        if not path.exists():
            _compute_reference(model, workload, text, path)
    return Reference(path)


def _compute_reference(model: ResolvedModel, workload: WorkloadConfig, text: str, path: Path) -> None:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from autoopt.engines.torch.engine import TorchEngine

    # The held-out text is tokenized whole and then cut into windows: the length warning does not apply.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    log.info(
        "computing the fp32 torch reference on %d held-out windows and %d decode prompts",
        workload.eval_windows,
        DECODE_PROMPTS,
    )
    tokenizer = AutoTokenizer.from_pretrained(model.path)
    stream = np.asarray(tokenizer(text)["input_ids"], dtype=np.int64)
    ids = _windows(stream, workload.eval_windows, workload.eval_window_len)
    pool = decode_prompts(stream, max(DECODE_PROMPTS, min(DECODE_POOL, len(stream) // DECODE_PROMPT_LEN)))
    runtime = RuntimeOptions(
        device="cpu",
        threads=len(os.sched_getaffinity(0)),
        max_length=max(ids.shape[1], DECODE_MAX_LENGTH),
        max_batch=max(CHUNK_ROWS, DECODE_ROWS_PER_CALL),
    )
    engine = TorchEngine.load(model.path, CandidateConfig(), runtime)
    logits = teacher_forced_logits(engine, ids)
    pooled = greedy_continuations(engine, pool)
    engine.close()
    keep = most_varied(pooled, DECODE_PROMPTS)
    prompts, continuations = pool[keep], pooled[keep]
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, stream=stream, ids=ids, logits=logits, decode_prompts=prompts, decode_tokens=continuations)
    tmp.rename(path)
