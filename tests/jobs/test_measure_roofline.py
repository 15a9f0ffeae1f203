"""The measuring job's roofline: a model whose stored bytes are not counted gets none, the trial goes on."""

from __future__ import annotations

import json
from pathlib import Path

from autoopt.bench.roofline import declared_bandwidth
from autoopt.config.runtime import RuntimeOptions
from autoopt.config.schema import BenchConfig, CandidateConfig, TargetConfig, WorkloadConfig
from autoopt.jobs.measure import MeasureJob, _roofline
from autoopt.result import Built


def _job(artifact: Path, candidate: CandidateConfig, max_length: int) -> MeasureJob:
    """A job on an 8-token prompt with 4 new tokens (mean decode context within 12), at 10 GB/s."""
    return MeasureJob(
        candidate=candidate,
        target=TargetConfig(name="cpu", memory_gb=1.0, price_per_hour=1.0, price_source="test"),
        workload=WorkloadConfig(name="w", prompt_lengths=[8], output_lengths=[4]),
        bench=BenchConfig(),
        runtime=RuntimeOptions(device="cpu", threads=1, max_length=max_length, max_batch=4),
        model={},
        reference="",
        built=Built(artifact, "key", "sha", [], cached=True, seconds=0.0, build_seconds=0.0),
        bandwidth=declared_bandwidth(10.0, "test"),
    )


def test_a_torch_model_stored_as_pytorch_model_bin_gets_no_roofline_instead_of_failing(tmp_path: Path) -> None:
    # transformers loads a .bin-only HF folder, and torch's artifact is the model folder itself; only
    # safetensors headers are counted.
    artifact = tmp_path / "model"
    artifact.mkdir()
    (artifact / "pytorch_model.bin").write_bytes(b"weights")
    (artifact / "config.json").write_text(json.dumps({"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 8}))
    assert _roofline(_job(artifact, CandidateConfig(engine="torch"), max_length=12), artifact, tpot_ms=1.0) is None


def test_a_static_cache_is_read_whole_a_dynamic_one_at_the_mean_context(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    artifact = tmp_path / "model"
    artifact.mkdir()
    save_file({"model.layers.0.mlp.up_proj.weight": np.zeros((8, 8), np.float32)}, str(artifact / "model.safetensors"))
    (artifact / "config.json").write_text(json.dumps({"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 8}))

    def context(candidate: CandidateConfig) -> float:
        roofline = _roofline(_job(artifact, candidate, max_length=64), artifact, tpot_ms=1.0)
        assert roofline is not None
        return roofline.mean_context

    assert context(CandidateConfig(engine="torch", kv_cache="dynamic")) < 12  # within the 8 + 4 tokens
    assert context(CandidateConfig(engine="torch", kv_cache="static")) == 64
    assert context(CandidateConfig(engine="torch_compiled")) == 64
