"""The one contract every runtime meets: load a built artifact, generate greedily with a KV cache,
and return teacher-forced logits. The benchmark and the accuracy measurement only use this; `serve` may also
ask rows to sample (`autoopt.engines.sampling`) where an engine `samples`."""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import CandidateConfig
from autoopt.engines.sampling import Sampling
from autoopt.engines.stream import DecodeStream

__all__ = ["Engine", "RuntimeOptions", "warn_if_written_differs"]

log = logging.getLogger("autoopt.engines")


class Engine(ABC):
    """A loaded candidate. Created by `load`, used from one thread, released by `close`.

    Implementations must make every returned array host-resident, so that when `generate` yields,
    the device has finished that step: the benchmark timestamps each yield and needs no other
    synchronization.
    """

    name: ClassVar[str]
    # Whether `generate` takes rows of different prompt lengths (`prompt_lengths`); where False (the default,
    # or loaded settings that cannot mask padding) the serving scheduler batches equal lengths only.
    mixed_lengths: bool = False
    # Whether `stream()` gives rows that join and leave between decode steps (continuous batching, with prompts
    # prefilled whole or in parts), as loaded.
    continuous: bool = False
    # Whether `generate` and `stream()` rows take a non-greedy `Sampling`; where False, they refuse one.
    samples: bool = False

    @classmethod
    @abstractmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> Engine:
        """Load the artifact built for `candidate`. Called once per process."""

    @abstractmethod
    def generate(
        self, input_ids: np.ndarray, max_new_tokens: int, prompt_lengths: np.ndarray | None = None,
        sampling: Sequence[Sampling | None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Greedy decoding with a KV cache, never stopping early at EOS.

        `input_ids` is int64 (batch, width). Without `prompt_lengths` every row is a prompt of `width` ids.
        With it (where `mixed_lengths`), row r's prompt is its first `prompt_lengths[r]` ids and the rest of
        the row is padding of any value: each row decodes as its prompt would alone, padding masked out (up
        to rounding where an engine's positions count the padding, as ort's do).
        Yields `max_new_tokens` int64 arrays of shape (batch,): the first right after prefill, then one per
        decode step. With `sampling` (one entry per row, where `samples`), a row whose entry is not greedy draws
        its tokens instead (`autoopt.engines.sampling.pick`); the other rows decode as without it.
        """

    def stream(self) -> DecodeStream:
        """A new, empty batch that requests join and leave between decode steps (where `continuous`)."""
        raise NotImplementedError(f"engine {self.name} as loaded has no continuous batching (Engine.continuous)")

    @abstractmethod
    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Teacher-forced float32 logits (batch, seq, vocab) for int64 `input_ids` (batch, seq)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources. Called once; the engine is unusable afterwards."""

    def device_peak_memory_bytes(self) -> int | None:
        """Peak accelerator memory since load, or None where there is no accelerator or the runtime
        offers no reliable figure (then the caller must not compare anything else in its place)."""
        return None

    def compile_seconds(self) -> float | None:
        """Seconds `load` spent compiling graphs (included in load time), or None where nothing is compiled."""
        return None

    def compile_cache_warm(self) -> bool | None:
        """Whether an on-disk compile cache served the graphs `load` compiled; None where nothing was compiled."""
        return None

    def static_kv_allocations(self) -> int | None:
        """How many static KV buffers this engine has allocated since load, or None where its KV cache
        is not static. A static buffer is allocated once per batch size (the first request of that size,
        which warm-up makes) and reset per request: the count must not grow across timed requests."""
        return None

    @classmethod
    def write_runtime_config(cls, folder: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> None:
        """Write the runtime settings `load(folder, candidate, runtime)` applies (threads, graph level, KV
        layout, dtype, lengths, providers) into the runtime's OWN configuration inside `folder`, so that
        `plain_runtime_snippet()` run on `folder` reproduces the measured speed with nothing but the
        runtime's API. `folder` must be a copy of the artifact (a bundle's model folder), never the build
        cache: files in it are rewritten. Loading `folder` with this engine applies the same settings."""
        raise NotImplementedError(
            f"engine {cls.name} does not write its runtime configuration; implement "
            f"{cls.__name__}.write_runtime_config before exporting bundles for it"
        )

    @classmethod
    def write_compiled_graphs(cls, folder: Path) -> str | None:
        """Add to `folder` (a bundle's model folder, its runtime configuration written) the graphs its load
        would otherwise compile, where the engine compiles at load; return the subfolder they are in. Default:
        nothing is compiled at load (None)."""
        return None

    @classmethod
    def read_compiled_graphs(cls, folder: Path, recorded: Mapping[str, str]) -> int:
        """Before `load(folder, ...)`: make what `write_compiled_graphs` added to `folder` available to the load,
        using only files whose SHA-256 matches `recorded` (the manifest's hashes, keyed by path relative to
        `folder`). Returns how many files it used. Default: none."""
        return 0

    @classmethod
    def plain_runtime_caveats(cls) -> list[str]:
        """Lines for a bundle's README where the snippet's runtime, run alone, decodes some input differently
        from autoopt's loader. Default: none."""
        return []

    @classmethod
    def plain_runtime_snippet(cls) -> str:
        """Python source that uses only the runtime's own API (no autoopt) on a folder written by
        `write_runtime_config`. It defines `load(folder)` → a model, and `generate(model, prompt_ids,
        max_new_tokens)` → an iterator of int token ids: greedy, batch 1, `prompt_ids` a list of ints,
        stopping early only at end of text. For a bundle's README, and executed by the tests that
        check it reproduces the measured decode time."""
        raise NotImplementedError(
            f"engine {cls.name} has no plain-runtime snippet; implement {cls.__name__}.plain_runtime_snippet"
        )


SETTINGS_DIFFER = "autoopt_settings_differ"  # set on a log record that says a written setting was overridden


def prompt_lengths_of(input_ids: np.ndarray, prompt_lengths: np.ndarray | list[int]) -> np.ndarray:
    """`prompt_lengths` as int64 (batch,), checked against `input_ids` (batch, width): each in 1..width."""
    lengths = np.asarray(prompt_lengths, dtype=np.int64)
    batch, width = input_ids.shape
    if lengths.shape != (batch,) or lengths.min(initial=1) < 1 or lengths.max(initial=1) > width:
        raise ValueError(f"prompt_lengths {lengths.tolist()} must give each of {batch} rows a length in 1..{width}")
    return lengths


def left_aligned(input_ids: np.ndarray, prompt_lengths: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose prompt is their first `prompt_lengths[r]` ids → each row rotated so that its prompt ends at the
    last column (its padding moved before it), and the attention mask (1 = prompt, 0 = padding)."""
    lengths = prompt_lengths_of(input_ids, prompt_lengths)
    width = input_ids.shape[1]
    mask = np.arange(width)[None, :] >= (width - lengths)[:, None]
    rotated = np.stack([np.roll(row, width - length) for row, length in zip(input_ids, lengths, strict=True)])
    return rotated, mask.astype(np.int64)


def warn_if_written_differs(engine: str, path: Path, settings: dict[str, Any]) -> None:
    """A bundle's folder carries the settings it was measured with (`write_runtime_config`, a JSON file at
    `path`); log when this load applies other values (e.g. `serve --threads`)."""
    if not path.exists():
        return
    written = json.loads(path.read_text())
    for key, value in settings.items():
        if written.get(key, value) != value:
            log.warning("%s: %s is %r in %s but loaded with %r", engine, key, written[key], path, value,
                        extra={SETTINGS_DIFFER: True})
