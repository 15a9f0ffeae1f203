from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoopt.config.errors import ConfigError
from autoopt.config.schema import WorkloadConfig
from autoopt.jobs.prepare import check_context
from autoopt.models.source import ResolvedModel


def _model(tmp_path: Path, positions: int | None) -> ResolvedModel:
    config = {"architectures": ["Qwen2ForCausalLM"]} | ({"max_position_embeddings": positions} if positions else {})
    (tmp_path / "config.json").write_text(json.dumps(config))
    return ResolvedModel("m", tmp_path, "k")


def test_requests_past_the_models_positions_are_refused_in_one_line(tmp_path: Path) -> None:
    workload = WorkloadConfig(prompt_lengths=[64, 2000], output_lengths=[8, 50])
    with pytest.raises(ConfigError) as err:
        check_context(_model(tmp_path, 2048), workload)
    assert str(err.value) == ("workload.prompt_lengths + output_lengths need 2049 positions, past the 2048 of model m "
                              "(config.json max_position_embeddings); shorten the prompts or outputs")


def test_requests_that_fit_or_a_model_that_does_not_say_pass(tmp_path: Path) -> None:
    check_context(_model(tmp_path, 2048), WorkloadConfig(prompt_lengths=[2000], output_lengths=[49]))  # 2048 fed
    check_context(_model(tmp_path, None), WorkloadConfig(prompt_lengths=[5000], output_lengths=[48]))
