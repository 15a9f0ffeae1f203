"""Qwen2-architecture models of a named shape with random weights, for speed work.

A shape model (`ModelConfig.kind=shape`) has the published dimensions of a real checkpoint (e.g. Qwen2-0.5B)
and seeded random weights, built here and cached under ``<cache>/models/shape-<key>``; nothing is downloaded.
It moves the same bytes and launches the same kernels as the checkpoint, so its speed figures stand for it;
its accuracy figures do not (a random model agrees with itself by chance), which is why sweeps refuse it
(`autoopt.config.load.check_sweep_model`) and its metadata says so (`ACCURACY_NOTE`).

Tokenizer: the built-in model's byte-level BPE, trained the same deterministic way at
min(vocab_size, the built-in's 8192) entries. Its ids are a subset of the model's vocabulary (the rest of the
vocabulary is never produced by the tokenizer, only by the model), which is all speed work needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

from autoopt.config.schema import ModelShape
from autoopt.models.builtin import METADATA_FILE, BuiltinModelSpec
from autoopt.models.cache import build_versions, ensure_folder
from autoopt.models.corpus import corpus_fingerprint, load_corpus
from autoopt.models.tokenizer import EOS_TOKEN, save_hf_tokenizer, train_tokenizer
from autoopt.models.train import build_model, parameter_count, qwen2_config

logger = logging.getLogger("autoopt.models")

# Bump whenever the build changes in a way the shape does not show (init, tokenizer, stored dtype).
RECIPE_VERSION = 1
ACCURACY_NOTE = (
    "not meaningful: random weights (a shape model for speed work); accuracy figures come from model=builtin"
)


def shape_cache_key(shape: ModelShape) -> str:
    payload = {
        "shape": dataclasses.asdict(shape),
        "tokenizer_corpus": corpus_fingerprint(),  # the tokenizer is trained on it
        **build_versions(),
        "recipe": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def ensure_shape_model(shape: ModelShape, cache_root: Path) -> Path:
    """The shape model's Hugging Face folder under ``cache_root/models``, built (seconds) on first use."""
    key = shape_cache_key(shape)
    folder = Path(cache_root).expanduser() / "models" / f"shape-{key}"
    return ensure_folder(folder, lambda staging: _build(shape, key, staging))


def _build(shape: ModelShape, key: str, folder: Path) -> None:
    started = time.perf_counter()
    tokenizer_vocab = min(shape.vocab_size, BuiltinModelSpec().vocab_size)
    tokenizer = train_tokenizer(load_corpus().train, tokenizer_vocab)
    save_hf_tokenizer(tokenizer, folder, shape.max_position_embeddings)
    model = build_model(qwen2_config(shape, tokenizer.token_to_id(EOS_TOKEN)), shape.seed)
    params = parameter_count(model)
    model.save_pretrained(folder)
    metadata = {
        "key": key,
        "kind": "shape",
        "recipe_version": RECIPE_VERSION,
        "shape": dataclasses.asdict(shape),
        "params": params,
        "weights": f"random: seeded init (seed {shape.seed}), never trained",
        "accuracy": ACCURACY_NOTE,
        "tokenizer": f"the built-in byte-level BPE at {tokenizer.get_vocab_size()} entries (ids < vocab_size)",
        **build_versions(),
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    logger.info("built shape model %s: %.1fM parameters, random weights, in %.1fs", key, params / 1e6,
                time.perf_counter() - started)
