"""The settings a runtime is loaded with, resolved once from the candidate, target and workload.

The measurement records them and a bundle's manifest copies them: nothing re-derives them later.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoopt.config.schema import CandidateConfig, TargetConfig, WorkloadConfig

# glibc returns freed memory to the kernel eagerly by default; large tensors then cost page faults on
# every step, and half the CPU time can go to the kernel (measured on this kind of machine). glibc reads
# these at process start, so a process that loads an engine must be started with them.
RUNTIME_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
}


@dataclass(frozen=True)
class RuntimeOptions:
    """Everything an engine needs to know at load time besides the artifact."""

    device: str  # cpu | cuda
    threads: int  # intra-op threads (never 0)
    max_length: int  # longest prompt + output the engine will be asked for (static caches)
    max_batch: int  # most rows per request (static caches, TensorRT profiles)
    batch_size: int = 1  # rows per request the candidate was measured at


def resolve_runtime(
    candidate: CandidateConfig, target: TargetConfig, workload: WorkloadConfig, min_length: int = 0, min_batch: int = 1
) -> RuntimeOptions:
    """`target` must be resolved (cores detected): 0 in a candidate means the target's or workload's value.
    `min_length` and `min_batch` cover what the measurement itself asks beyond the workload (its accuracy
    checks)."""
    batch = candidate.batch_size or workload.batch_size
    return RuntimeOptions(
        device=target.device,
        threads=candidate.threads or target.cores,
        batch_size=batch,
        max_length=max(max(workload.prompt_lengths) + max(workload.output_lengths), min_length),
        max_batch=max(batch, min_batch),
    )
