"""Resolve the configured model to a local Hugging Face folder and a key that identifies it."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoopt.config.errors import ConfigError
from autoopt.config.schema import ModelConfig
from autoopt.digest import folder_fingerprint
from autoopt.models.rope import rope_of

log = logging.getLogger("autoopt.models")


@dataclass(frozen=True)
class ModelTraits:
    """What the checks a candidate passes before any build know of the model (`space.validity`)."""

    architecture: str  # the HF model class (`config.json`'s `architectures[0]`)
    tied_embeddings: bool = False  # whether the lm_head shares the token embedding table
    fixed_keys: str | None = None  # why its cached keys cannot be moved to other positions, None where they can


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    key: str  # changes whenever the weights or the recipe that made them change

    def hf_config(self) -> dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    @functools.cached_property  # asked for every trial
    def architecture(self) -> str:
        """The HF model class the folder declares (`config.json`'s `architectures[0]`)."""
        return (self.hf_config().get("architectures") or ["?"])[0]

    @functools.cached_property  # asked for every trial; without the key in config.json it loads the config class
    def tied_embeddings(self) -> bool:
        """Whether the lm_head shares the token embedding table (`tie_word_embeddings`, as transformers reads it)."""
        return _tied(self.hf_config(), self.path)

    @functools.cached_property  # asked for every trial
    def traits(self) -> ModelTraits:
        return ModelTraits(self.architecture, self.tied_embeddings, _fixed_keys(self.hf_config()))

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the model was made for (`config.json`'s `max_position_embeddings`), if it says."""
        value = self.hf_config().get("max_position_embeddings")
        return int(value) if value else None

    def describe(self) -> dict[str, object]:
        meta = self.path / "autoopt_model.json"
        info: dict[str, object] = json.loads(meta.read_text()) if meta.is_file() else {}
        info.update(name=self.name, path=str(self.path), key=self.key)
        info.setdefault("architecture", self.architecture)
        return info


BUILTIN_ARCHITECTURE = "Qwen2ForCausalLM"


def model_traits(model: ModelConfig) -> ModelTraits:
    """The traits of the model `model` will resolve to, read without resolving it (no training, no hashing). The
    built-in and shape models are Qwen2s with the default rotary embedding."""
    if model.kind == "builtin":
        return ModelTraits(BUILTIN_ARCHITECTURE)
    if model.kind == "shape":
        assert model.shape is not None  # validated at start-up: kind=shape has a shape
        return ModelTraits(BUILTIN_ARCHITECTURE, model.shape.tie_word_embeddings)
    path = Path(model.path)  # type: ignore[arg-type]
    config = json.loads((path / "config.json").read_text())
    return ModelTraits((config.get("architectures") or ["?"])[0], _tied(config, path), _fixed_keys(config))


def _fixed_keys(config: dict[str, Any]) -> str | None:
    """Why ort's continuous batching cannot move this model's cached keys (`models/rope.py`), or None."""
    rope = rope_of(config)
    return rope if isinstance(rope, str) else None


def _tied(config: dict[str, Any], path: Path) -> bool:
    if "tie_word_embeddings" in config:
        return bool(config["tie_word_embeddings"])
    from transformers import AutoConfig  # the model class's own default

    return bool(AutoConfig.from_pretrained(path).tie_word_embeddings)


def resolve_model(model: ModelConfig, cache_dir: Path) -> ResolvedModel:
    if model.kind == "builtin":
        from autoopt.models.builtin import BuiltinModelSpec, ensure_builtin_model

        path = ensure_builtin_model(BuiltinModelSpec(), cache_dir)
        return ResolvedModel(model.name, path, path.name)
    if model.kind == "shape":
        from autoopt.models.shape import ACCURACY_NOTE, ensure_shape_model

        assert model.shape is not None  # validated at start-up: kind=shape has a shape
        path = ensure_shape_model(model.shape, cache_dir)
        log.warning("model %s has random weights: its accuracy figures are %s", model.name, ACCURACY_NOTE)
        return ResolvedModel(model.name, path, path.name)
    path = Path(model.path).resolve()  # type: ignore[arg-type]  # validated: kind=hf has a path
    check_hf_folder(path)
    return ResolvedModel(model.name, path, f"hf-{folder_fingerprint(path)}")


def check_hf_folder(path: Path) -> None:
    """Raise ConfigError, in one line, unless `path` declares a causal-LM class transformers knows and holds a
    tokenizer. Otherwise AutoModelForCausalLM would load a BertModel folder as BertLMHeadModel with a random
    head, and AutoTokenizer would return an empty tokenizer that only fails later, as text too short. A bundle
    serves with the fast tokenizer's `tokenizer.json`, so that is the file asked for."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architecture = (json.loads((path / "config.json").read_text()).get("architectures") or ["?"])[0]
    if architecture not in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()):
        raise ConfigError(f"model.path={path} declares {architecture} (config.json's architectures), which is not a "
                          f"causal-LM class transformers knows (Qwen2ForCausalLM, LlamaForCausalLM, ...)")
    if not (path / "tokenizer.json").is_file():
        raise ConfigError(f"model.path={path} has no tokenizer.json (the fast tokenizer a bundle serves with); save "
                          f"the checkpoint's: AutoTokenizer.from_pretrained(<its source>).save_pretrained({str(path)!r})")
