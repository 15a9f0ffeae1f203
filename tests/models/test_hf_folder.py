"""A local Hugging Face folder (model=hf) is refused in one line when what it holds would be measured as noise or
fail later with a misleading message: a class that is not a causal LM, no tokenizer, weights missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from autoopt.config.errors import ConfigError
from autoopt.config.schema import CandidateConfig, ModelConfig
from autoopt.engines.base import RuntimeOptions
from autoopt.engines.torch.engine import TorchEngine
from autoopt.models.source import resolve_model


def _copy(tiny_model: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    return folder


def test_a_folder_of_a_class_that_is_not_a_causal_lm_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))

    with pytest.raises(ConfigError, match="declares BertModel .* which is not a causal-LM class transformers knows"):
        resolve_model(ModelConfig(name="hf", kind="hf", path=str(folder)), tmp_path / "cache")


def test_a_folder_without_a_tokenizer_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model, tmp_path)
    (folder / "tokenizer.json").unlink()

    with pytest.raises(ConfigError, match="has no tokenizer.json"):
        resolve_model(ModelConfig(name="hf", kind="hf", path=str(folder)), tmp_path / "cache")
    assert resolve_model(ModelConfig(name="hf", kind="hf", path=str(tiny_model)), tmp_path / "cache").path == tiny_model


def test_weights_missing_from_the_checkpoint_are_refused_not_filled_at_random(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model, tmp_path)
    (weights,) = folder.glob("*.safetensors")
    tensors = load_file(weights)
    del tensors["lm_head.weight"]
    save_file(tensors, weights, metadata={"format": "pt"})
    runtime = RuntimeOptions(device="cpu", threads=1, max_length=64, max_batch=1)

    with pytest.raises(ConfigError, match=r"lacks weights the model needs \(lm_head.weight\)"):
        TorchEngine.load(folder, CandidateConfig(), runtime)
    TorchEngine.load(tiny_model, CandidateConfig(), runtime).close()
