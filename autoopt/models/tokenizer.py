"""Byte-level BPE tokenizer trained deterministically on the corpus' train split."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
MIN_FREQUENCY = 2
# Qwen2Tokenizer's pre-tokenizer. AutoTokenizer loads a qwen2 model folder as Qwen2Tokenizer, which
# rebuilds the pipeline (NFC, this split, byte-level) around the saved vocabulary, so training must
# use exactly this pipeline for every loader to produce the ids the model was trained on.
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE with Qwen2's normalizer and pre-tokenizer (no prefix space)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=MIN_FREQUENCY,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_hf_tokenizer(tokenizer: Tokenizer, folder: Path, max_length: int) -> PreTrainedTokenizerFast:
    """Write ``tokenizer.json``/``tokenizer_config.json``/``special_tokens_map.json``.

    ``<|endoftext|>`` doubles as bos/eos/pad/unk, as in GPT-2.
    """
    special_tokens = {name: EOS_TOKEN for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length, **special_tokens)
    hf_tokenizer.save_pretrained(folder)
    # transformers 5 no longer writes this file; older loaders and model builders still read it.
    (folder / "special_tokens_map.json").write_text(json.dumps(special_tokens, indent=2) + "\n")
    return hf_tokenizer
