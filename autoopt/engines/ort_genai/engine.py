"""Run a model-builder artifact with onnxruntime-genai's Generator."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime_genai as og
from onnx import helper

from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import Engine, RuntimeOptions

_GRAPH_OPT = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_CONFIG = "genai_config.json"
_LOGITS = "logits"  # the builder's name for the decoder's logits output


class GenaiEngine(Engine):
    name = "ort_genai"

    def __init__(
        self,
        model: og.Model,
        staging: tempfile.TemporaryDirectory[str],
        vocab: int,
        static_kv: bool,
        max_length: int,
    ):
        self._model = model
        self._staging = staging
        self._vocab = vocab
        self._static_kv = static_kv
        self._max_length = max_length

    @classmethod
    def load(cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> GenaiEngine:
        if runtime.device == "cuda":
            _require_cuda()
        staging, vocab = _stage_with_sentinel(Path(artifact))
        config = og.Config(staging.name)
        # Without this overlay the session ran as if on one thread, whatever the machine had.
        session_options = {
            "intra_op_num_threads": runtime.threads,
            "inter_op_num_threads": 1,
            "graph_optimization_level": _GRAPH_OPT[candidate.graph_opt],
        }
        # static: past and present share one buffer preallocated for max_length tokens;
        # dynamic: present is a new, one-token-longer tensor every step.
        static_kv = candidate.kv_cache == "static"
        config.overlay(
            json.dumps(
                {
                    "model": {"decoder": {"session_options": session_options}},
                    "search": {"past_present_share_buffer": static_kv},
                }
            )
        )
        config.clear_providers()
        if runtime.device == "cuda":
            config.append_provider("cuda")
        return cls(og.Model(config), staging, vocab, static_kv, runtime.max_length)

    def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> Iterator[np.ndarray]:
        batch, prompt_len = input_ids.shape
        generator = self._generator(batch, prompt_len + max_new_tokens)
        # append_tokens runs the prefill; the first generate_next_token only picks from its logits.
        generator.append_tokens(input_ids.astype(np.int32))
        for _ in range(max_new_tokens):
            generator.generate_next_token()
            yield generator.get_next_tokens().astype(np.int64)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        batch, seq = input_ids.shape
        generator = self._generator(batch, seq)
        generator.append_tokens(input_ids.astype(np.int32))
        logits = np.asarray(generator.get_output(_LOGITS), dtype=np.float32)[..., : self._vocab]
        if logits.shape[1] != seq:
            raise RuntimeError(
                f"ort_genai artifact returns logits for {logits.shape[1]} of {seq} positions "
                "(built with prune_lm_head?); teacher-forced logits need every position"
            )
        return logits

    def close(self) -> None:
        del self._model
        self._staging.cleanup()

    def _generator(self, batch: int, length: int) -> og.Generator:
        params = og.GeneratorParams(self._model)
        # A static cache is sized once for the longest request, as a server would preallocate it.
        max_length = max(length, self._max_length) if self._static_kv else length
        params.set_search_options(batch_size=batch, max_length=max_length, do_sample=False)
        return og.Generator(self._model, params)


def _stage_with_sentinel(artifact: Path) -> tuple[tempfile.TemporaryDirectory[str], int]:
    """A folder of links to the artifact whose graph has one extra, never-chosen logit: the EOS and pad id.

    The Generator stops a row at any `eos_token_id` (an empty list falls back to the pad id), and treats a
    prompt's trailing pad ids as padding; every id in the vocabulary can be generated or prompted, and
    `min_length` would forbid EOS instead, changing greedy tokens. A -inf logit at index `vocab` is never
    chosen and never appears in a prompt. Returns the folder and the model's real vocabulary size.
    """
    staging = _staging_folder(artifact)
    folder = Path(staging.name)
    config = json.loads((artifact / _CONFIG).read_text())
    graph_file = config["model"]["decoder"]["filename"]
    for entry in artifact.iterdir():
        if entry.name not in (_CONFIG, graph_file):
            _link_or_copy(entry, folder / entry.name)
    vocab = config["model"]["vocab_size"]
    _append_sentinel_logit(artifact / graph_file, folder / graph_file, vocab)
    config["model"].update(vocab_size=vocab + 1, eos_token_id=[vocab], pad_token_id=vocab)
    (folder / _CONFIG).write_text(json.dumps(config))
    return staging, vocab


def _staging_folder(artifact: Path) -> tempfile.TemporaryDirectory[str]:
    # onnxruntime refuses external data outside the graph's folder, symbolic links resolved; beside the
    # artifact, hard links to its weights cost nothing.
    try:
        return tempfile.TemporaryDirectory(prefix=f".{artifact.name}-run-", dir=artifact.parent)
    except OSError:  # a read-only artifact folder
        return tempfile.TemporaryDirectory(prefix="autoopt_genai_")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _append_sentinel_logit(source: Path, target: Path, vocab: int) -> None:
    """Copy the graph (weights stay external), its `logits` padded with one -inf column on the vocab axis."""
    model = onnx.load(str(source), load_external_data=False)
    graph = model.graph
    (output,) = [o for o in graph.output if o.name == _LOGITS]
    rank = len(output.type.tensor_type.shape.dim)
    for node in graph.node:
        node.output[:] = ["logits_vocab" if name == _LOGITS else name for name in node.output]
    pads = helper.make_tensor(
        "logits_sentinel_pads", onnx.TensorProto.INT64, [2 * rank], [0] * (2 * rank - 1) + [1]
    )
    fill = helper.make_tensor("logits_sentinel_value", output.type.tensor_type.elem_type, [], [float("-inf")])
    graph.initializer.extend([pads, fill])
    graph.node.append(
        helper.make_node(
            "Pad", ["logits_vocab", pads.name, fill.name], [_LOGITS], name="/autoopt/sentinel_logit"
        )
    )
    output.type.tensor_type.shape.dim[rank - 1].dim_value = vocab + 1
    onnx.save(model, str(target))


def _require_cuda() -> None:
    if not og.is_cuda_available():
        providers = ["cpu"] + [
            name
            for name, available in (("dml", og.is_dml_available), ("webgpu", og.is_webgpu_available))
            if available()
        ]
        raise RuntimeError(
            "engine ort_genai on device cuda needs onnxruntime-genai-cuda "
            f"(pip install 'autoopt[genai-cuda]') and a CUDA device; found providers: {', '.join(providers)}"
        )
