"""The built-in default model: a small Qwen2 LM trained here, deterministically, and cached on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer
from transformers import Qwen2Config

from autoopt.config.schema import ModelShape
from autoopt.models.cache import build_versions, ensure_folder
from autoopt.models.corpus import LICENSE, SOURCE, corpus_fingerprint, load_corpus
from autoopt.models.tokenizer import EOS_TOKEN, save_hf_tokenizer, train_tokenizer
from autoopt.models.train import (
    Schedule,
    build_model,
    deterministic_torch,
    parameter_count,
    perplexity,
    qwen2_config,
    token_stream,
    train,
)

logger = logging.getLogger("autoopt.models")

# Bump whenever the recipe changes in a way the spec does not show (data, schedule, precision...).
RECIPE_VERSION = 3  # 3: held-out text leaves out documents that repeat training text (its figures change)
# RoPE has no hard limit; engines get room for prompt + generation beyond the training length.
MAX_POSITIONS = 2048
ROPE_THETA = 10000.0  # Qwen2Config's default, which the built-in model has always used
METADATA_FILE = "autoopt_model.json"
TINY_TOKENIZER_DOCS = 40


@dataclass(frozen=True)
class BuiltinModelSpec:
    """Architecture and training recipe; every field is part of the cache key."""

    hidden_size: int = 384
    num_layers: int = 4
    num_heads: int = 6
    num_kv_heads: int = 2
    intermediate_size: int = 1024
    vocab_size: int = 8192
    seq_len: int = 128
    batch_size: int = 8
    steps: int = 320
    lr: float = 2e-3
    seed: int = 0


def cache_key(spec: BuiltinModelSpec) -> str:
    payload = {
        "spec": dataclasses.asdict(spec),
        "corpus": corpus_fingerprint(),
        "seed": spec.seed,
        **build_versions(),
        "recipe": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def ensure_builtin_model(spec: BuiltinModelSpec, cache_root: Path) -> Path:
    """The trained model's Hugging Face folder under ``cache_root/models``, training it on first use."""
    key = cache_key(spec)
    folder = Path(cache_root).expanduser() / "models" / f"builtin-{key}"
    return ensure_folder(folder, lambda staging: _build(spec, key, staging))


def tiny_random_model(
    out_dir: Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    seed: int = 0,
) -> Path:
    """An untrained Qwen2 folder with a real tokenizer, for fast engine-conformance tests."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = BuiltinModelSpec(
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        seed=seed,
    )
    tokenizer = train_tokenizer(load_corpus().train[:TINY_TOKENIZER_DOCS], vocab_size)
    save_hf_tokenizer(tokenizer, out_dir, MAX_POSITIONS)
    build_model(_model_config(spec, tokenizer), seed).save_pretrained(out_dir)
    return out_dir


def _build(spec: BuiltinModelSpec, key: str, folder: Path) -> None:
    started = time.perf_counter()
    corpus = load_corpus()
    tokenizer = train_tokenizer(corpus.train, spec.vocab_size)
    save_hf_tokenizer(tokenizer, folder, MAX_POSITIONS)
    config = _model_config(spec, tokenizer)
    schedule = Schedule(steps=spec.steps, batch_size=spec.batch_size, seq_len=spec.seq_len, lr=spec.lr, seed=spec.seed)
    train_ids = token_stream(tokenizer, corpus.train)
    heldout_ids = token_stream(tokenizer, corpus.heldout)
    with deterministic_torch():
        model = build_model(config, spec.seed)
        params = parameter_count(model)
        logger.info(
            "training built-in Qwen2 model: %.2fM parameters, %d train / %d held-out tokens, %s",
            params / 1e6,
            len(train_ids),
            len(heldout_ids),
            spec,
        )
        train_started = time.perf_counter()
        final_loss = train(model, train_ids, schedule)
        train_seconds = time.perf_counter() - train_started
        heldout_ppl = perplexity(model, heldout_ids, spec.seq_len)
    logger.info(
        "held-out perplexity %.1f = %.3f of the vocabulary size (%d); training %.1fs, total %.1fs",
        heldout_ppl,
        heldout_ppl / spec.vocab_size,
        spec.vocab_size,
        train_seconds,
        time.perf_counter() - started,
    )
    model.save_pretrained(folder)
    metadata = {
        "key": key,
        "recipe_version": RECIPE_VERSION,
        "spec": dataclasses.asdict(spec),
        "params": params,
        "vocab_size": spec.vocab_size,
        "train_seq_len": spec.seq_len,
        "train_tokens": len(train_ids),
        "heldout_tokens": len(heldout_ids),
        "steps": spec.steps,
        "final_loss": final_loss,
        "heldout_perplexity": heldout_ppl,
        "heldout_perplexity_over_vocab": heldout_ppl / spec.vocab_size,
        "train_seconds": train_seconds,
        "corpus_fingerprint": corpus.fingerprint,
        "source": SOURCE,
        "license": LICENSE,
        **build_versions(),
        "cpu_count": os.cpu_count(),
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    (folder / "SOURCE.md").write_text(_source_note(spec, heldout_ppl))


def _model_config(spec: BuiltinModelSpec, tokenizer: Tokenizer) -> Qwen2Config:
    shape = ModelShape(
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        num_kv_heads=spec.num_kv_heads,
        intermediate_size=spec.intermediate_size,
        vocab_size=spec.vocab_size,
        tie_word_embeddings=False,
        rope_theta=ROPE_THETA,
        max_position_embeddings=MAX_POSITIONS,
    )
    return qwen2_config(shape, tokenizer.token_to_id(EOS_TOKEN))


def _source_note(spec: BuiltinModelSpec, heldout_ppl: float) -> str:
    return (
        "# autoopt built-in model\n\n"
        f"A Qwen2-architecture causal LM trained from scratch by `autoopt.models` ({spec}).\n\n"
        f"- Training data: {SOURCE}.\n"
        f"- Data license: {LICENSE} (Python Software Foundation License).\n"
        f"- Held-out perplexity: {heldout_ppl:.1f} (whole held-out documents, {spec.seq_len}-token windows).\n"
    )
