"""The one contract every runtime meets: load a built artifact, generate greedily with a KV cache,
and return teacher-forced logits. The benchmark and the accuracy measurement only use this."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from autoopt.config.schema import CandidateConfig


@dataclass(frozen=True)
class RuntimeOptions:
    """Everything an engine needs to know at load time besides the artifact."""

    device: str  # cpu | cuda
    threads: int  # intra-op threads, already resolved (never 0)
    max_length: int  # longest prompt + output the engine will be asked for (static caches)
    max_batch: int


class Engine(ABC):
    """A loaded candidate. Created by `load`, used from one thread, released by `close`.

    Implementations must make every returned array host-resident, so that when `generate` yields,
    the device has finished that step: the benchmark timestamps each yield and needs no other
    synchronization.
    """

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> Engine:
        """Load the artifact built for `candidate`. Called once per process."""

    @abstractmethod
    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        """Greedy decoding with a KV cache, never stopping early at EOS.

        `input_ids` is int64 (batch, prompt_len), all rows the same length. Yields `max_new_tokens`
        int64 arrays of shape (batch,): the first right after prefill, then one per decode step.
        """

    @abstractmethod
    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Teacher-forced float32 logits (batch, seq, vocab) for int64 `input_ids` (batch, seq)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources. Called once; the engine is unusable afterwards."""

    def device_peak_memory_bytes(self) -> int | None:
        """Peak accelerator memory since load, or None where there is no accelerator."""
        return None
