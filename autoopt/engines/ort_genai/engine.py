"""Run a model-builder artifact with onnxruntime-genai's Generator."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime_genai as og
from onnx import helper

from autoopt.artifacts import GENAI_CONFIG
from autoopt.config.schema import CandidateConfig
from autoopt.engines.base import SETTINGS_DIFFER, Engine, RuntimeOptions, prompt_lengths_of
from autoopt.engines.graph_levels import ORT_GRAPH_LEVELS
from autoopt.engines.info import autoopt_install
from autoopt.engines.ort_genai import INFO
from autoopt.engines.probes import CPU_BUILDS_OUT
from autoopt.engines.sampling import RowSampler, Sampling, drawing, pick, row_samplers
from autoopt.locks import ClaimedFolder

log = logging.getLogger("autoopt.engines")

_LOGITS = "logits"  # the builder's names for the decoder's logits output and token input
_INPUT_IDS = "input_ids"

_SNIPPET = '''\
import onnxruntime_genai as og


def load(folder):
    """Threads, graph optimization level, KV layout (past_present_share_buffer) and max_length all
    come from folder/genai_config.json, as they were measured."""
    return og.Model(str(folder))


def generate(model, prompt_ids, max_new_tokens):
    """Greedy token ids, one per step; stops early at end of text."""
    generator = og.Generator(model, og.GeneratorParams(model))
    generator.append_tokens([prompt_ids])  # the prefill
    for _ in range(max_new_tokens):
        if generator.is_done():
            return
        generator.generate_next_token()
        yield int(generator.get_next_tokens()[0])


if __name__ == "__main__":
    model = load("model")
    print(list(generate(model, [1, 2, 3], 32)))
'''


def runtime_overlay(candidate: CandidateConfig, runtime: RuntimeOptions) -> dict[str, Any]:
    """Every setting `GenaiEngine.load` applies, in `genai_config.json`'s layout: the one source of the
    settings autoopt measures with and writes into a bundle's folder."""
    return {
        "model": {
            "decoder": {
                "session_options": {
                    # Without this the session ran as if on one thread, whatever the machine had.
                    "intra_op_num_threads": runtime.threads,
                    "inter_op_num_threads": 1,
                    "graph_optimization_level": ORT_GRAPH_LEVELS[candidate.graph_opt],
                }
            }
        },
        "search": {
            # static: past and present share one buffer preallocated for max_length tokens;
            # dynamic: present is a new, one-token-longer tensor every step.
            "past_present_share_buffer": candidate.kv_cache == "static",
            "max_length": runtime.max_length,
            "do_sample": False,
        },
    }


class GenaiEngine(Engine):
    """The Generator runs a staged copy of the artifact whose graph has one extra, never-chosen logit (see
    `_stage_with_sentinel`), so generation never stops at EOS during measurement. That Pad node copies the
    logits once per step (batch × vocab floats at decode); a bundle ships the builder's own graph, where
    EOS stops generation, and the per-token time of the two agrees within the noise (a slow test checks
    20 %).

    With `kv_cache=static` one Generator per batch size, sized for `runtime.max_length`, is created on
    that batch size's first request (warm-up) and rewound to position 0 for each later one: the shared
    past/present buffer is allocated once, not inside a timed request. onnxruntime-genai 0.18's
    `rewind_to(0)` then `append_tokens` gives the same tokens as a fresh Generator at every batch size
    tried (1, 2 and 4 by hand; tests check 1 and 2). `kv_cache=dynamic` creates a Generator per request, as a plain
    onnxruntime-genai loop does: its cache is reallocated every step anyway.
    """

    name = "ort_genai"
    mixed_lengths = True
    samples = INFO.samples

    def __init__(
        self,
        model: og.Model,
        staging: ClaimedFolder,
        vocab: int,
        static_kv: bool,
        max_length: int,
    ):
        self._model = model
        self._staging = staging
        self._vocab = vocab
        self._static_kv = static_kv
        self._max_length = max_length
        self._generators: dict[int, tuple[og.Generator, int]] = {}  # batch → (generator, its max_length)
        self._allocations = 0

    @classmethod
    def load(
        cls, artifact: Path, candidate: CandidateConfig, runtime: RuntimeOptions, *, profile_prefix: str | None = None
    ) -> GenaiEngine:
        """`profile_prefix` (autoopt.bench.profile only, never for timed runs): the decoder session's ONNX Runtime
        profiling (genai_config `session_options.enable_profiling`), written to `<profile_prefix>_<timestamp>.json`
        when the model and every generator are released (`close`)."""
        if runtime.device == "cuda":
            _require_cuda()
        overlay = runtime_overlay(candidate, runtime)
        _warn_if_written_differs(Path(artifact), overlay)
        # --- profiling hook (autoopt.bench.profile) ---
        if profile_prefix is not None:
            overlay["model"]["decoder"]["session_options"]["enable_profiling"] = profile_prefix
        # --- end profiling hook ---
        staging, vocab = _stage_with_sentinel(Path(artifact))
        config = og.Config(str(staging.path))
        config.overlay(json.dumps(overlay))
        config.clear_providers()
        if runtime.device == "cuda":
            config.append_provider("cuda")
        return cls(og.Model(config), staging, vocab, candidate.kv_cache == "static", runtime.max_length)

    @classmethod
    def write_runtime_config(cls, folder: Path, candidate: CandidateConfig, runtime: RuntimeOptions) -> None:
        """Merge `runtime_overlay` into `folder/genai_config.json` and set its providers (none = CPU, or
        CUDA), so `og.Model(folder)` runs with the measured threads, graph level, KV layout and max_length.
        The folder keeps the builder's graph and EOS id (no sentinel logit), so a plain run stops at end of
        text."""
        path = Path(folder) / GENAI_CONFIG
        config = json.loads(path.read_text())
        _merge(config, runtime_overlay(candidate, runtime))
        session = config["model"]["decoder"]["session_options"]
        cuda = [p for p in session.get("provider_options", []) if "cuda" in p] or [{"cuda": {}}]
        session["provider_options"] = cuda if runtime.device == "cuda" else []
        path.write_text(json.dumps(config, indent=4) + "\n")

    @classmethod
    def plain_runtime_caveats(cls) -> list[str]:
        return [
            "onnxruntime-genai takes a prompt's trailing `pad_token_id` ids (genai_config.json) for padding and "
            "drops them. The builder set that id to end-of-text, so run alone, a prompt that ends in end-of-text "
            "decodes as if it did not; autoopt's loader keeps every prompt id.",
        ]

    @classmethod
    def plain_runtime_snippet(cls) -> str:
        return _SNIPPET

    def generate(
        self, input_ids: np.ndarray, max_new_tokens: int, prompt_lengths: np.ndarray | None = None,
        sampling: Sequence[Sampling | None] | None = None,
    ) -> Iterator[np.ndarray]:
        samplers = row_samplers(self.name, self.samples, sampling, input_ids.shape[0])
        batch, width = input_ids.shape
        generator = self._request_generator(batch, width + max_new_tokens)
        ids = input_ids.astype(np.int32)
        if prompt_lengths is not None:
            # The Generator masks a row's trailing pad ids and positions each row from its own start.
            for row, length in enumerate(prompt_lengths_of(input_ids, prompt_lengths)):
                ids[row, length:] = self._vocab
        # append_tokens runs the prefill; the first generate_next_token only picks from its logits.
        generator.append_tokens(ids)
        for _ in range(max_new_tokens):
            if drawing(samplers):
                self._force_draws(generator, samplers)
            generator.generate_next_token()
            yield generator.get_next_tokens().astype(np.int64)

    def _force_draws(self, generator: og.Generator, samplers: list[RowSampler | None]) -> None:
        """Draw the sampling rows' next tokens from the logits the Generator is about to pick from, and leave each
        of those rows one finite logit, its draw: the Generator's greedy pick then takes it. The other rows'
        logits are left as they are."""
        logits = np.array(generator.get_logits(), dtype=np.float32)  # (batch, 1, vocab + the sentinel)
        last = logits[:, -1, :]
        drawn = pick(last[:, : self._vocab].argmax(axis=-1), samplers, lambda rows: last[rows, : self._vocab])
        for row, sampler in enumerate(samplers):
            if sampler is not None:
                last[row] = -np.inf
                last[row, drawn[row]] = 0.0
        generator.set_logits(logits)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        batch, seq = input_ids.shape
        generator = self._new_generator(batch, max(seq, self._max_length) if self._static_kv else seq)
        generator.append_tokens(input_ids.astype(np.int32))
        logits = np.asarray(generator.get_output(_LOGITS), dtype=np.float32)[..., : self._vocab]
        if logits.shape[1] != seq:
            raise RuntimeError(
                f"ort_genai artifact returns logits for {logits.shape[1]} of {seq} positions "
                "(built with prune_lm_head?); teacher-forced logits need every position"
            )
        return logits

    def static_kv_allocations(self) -> int | None:
        return self._allocations if self._static_kv else None

    def device_peak_memory_bytes(self) -> int | None:
        """None: onnxruntime-genai's Python API exposes no allocator statistics, and NVML's per-process
        figure (whole process, CUDA context included; often unavailable in containers) is not this
        engine's peak."""
        return None

    def close(self) -> None:
        self._generators.clear()
        del self._model
        self._staging.cleanup()

    def _request_generator(self, batch: int, length: int) -> og.Generator:
        if not self._static_kv:
            return self._new_generator(batch, length)
        held = self._generators.get(batch)
        if held is not None and held[1] >= length:
            held[0].rewind_to(0)
            return held[0]
        # A static cache is sized once for the longest request, as a server would preallocate it.
        max_length = max(length, self._max_length)
        generator = self._new_generator(batch, max_length)
        self._generators[batch] = (generator, max_length)
        self._allocations += 1
        return generator

    def _new_generator(self, batch: int, max_length: int) -> og.Generator:
        params = og.GeneratorParams(self._model)
        params.set_search_options(batch_size=batch, max_length=max_length, do_sample=False)
        return og.Generator(self._model, params)


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _warn_if_written_differs(artifact: Path, overlay: dict[str, Any]) -> None:
    """A bundle's folder carries the settings it was measured with; say so when this load overrides them."""
    path = artifact / GENAI_CONFIG
    if not path.exists():
        return
    written = json.loads(path.read_text())
    session = written.get("model", {}).get("decoder", {}).get("session_options", {})
    wanted = overlay["model"]["decoder"]["session_options"]
    pairs = [(f"session_options.{k}", session.get(k), v) for k, v in wanted.items()]
    pairs += [(f"search.{k}", written.get("search", {}).get(k), v) for k, v in overlay["search"].items()]
    for key, found, applied in pairs:
        # The builder's own config sets none of the session options; only a written one can disagree.
        if "intra_op_num_threads" in session and found is not None and found != applied:
            log.warning("ort_genai: %s is %r in %s but loaded with %r", key, found, path, applied,
                        extra={SETTINGS_DIFFER: True})


def _stage_with_sentinel(artifact: Path) -> tuple[ClaimedFolder, int]:
    """A folder of links to the artifact whose graph has one extra, never-chosen logit: the EOS and pad id.

    The Generator stops a row at any `eos_token_id` (an empty list falls back to the pad id), and treats a
    prompt's trailing pad ids as padding; every id in the vocabulary can be generated or prompted, and
    `min_length` would forbid EOS instead, changing greedy tokens. A -inf logit at index `vocab` is never
    chosen and never appears in a prompt. Returns the folder and the model's real vocabulary size.
    """
    staging = _staging_folder(artifact)
    folder = staging.path
    config = json.loads((artifact / GENAI_CONFIG).read_text())
    graph_file = config["model"]["decoder"]["filename"]
    for entry in artifact.iterdir():
        if entry.name not in (GENAI_CONFIG, graph_file):
            _link_or_copy(entry, folder / entry.name)
    vocab = config["model"]["vocab_size"]
    _append_sentinel_logit(artifact / graph_file, folder / graph_file, vocab)
    config["model"].update(vocab_size=vocab + 1, eos_token_id=[vocab], pad_token_id=vocab)
    (folder / GENAI_CONFIG).write_text(json.dumps(config))
    return staging, vocab


def _staging_folder(artifact: Path) -> ClaimedFolder:
    # onnxruntime refuses external data outside the graph's folder, symbolic links resolved; beside the
    # artifact, hard links to its weights cost nothing (while they last: an abandoned folder's links keep a
    # removed artifact's weights on disk, hence the claim).
    try:
        return ClaimedFolder(artifact.parent, f".{artifact.name}-run-")
    except OSError:  # a read-only artifact folder
        return ClaimedFolder(Path(tempfile.gettempdir()), f"autoopt_genai_{os.getuid()}_")


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
    _clamp_input_ids(graph, vocab - 1)
    onnx.save(model, str(target))


def _clamp_input_ids(graph: onnx.GraphProto, largest: int) -> None:
    """Feed the graph min(input_ids, `largest`): the Generator passes a padded prompt's pad ids (the sentinel,
    one past the vocabulary) through the embedding, masked out of attention but still gathered."""
    (ids,) = [i for i in graph.input if i.name == _INPUT_IDS]
    for node in graph.node:
        node.input[:] = ["input_ids_clamped" if name == _INPUT_IDS else name for name in node.input]
    bound = helper.make_tensor("input_ids_largest", ids.type.tensor_type.elem_type, [], [largest])
    graph.initializer.append(bound)
    graph.node.insert(0, helper.make_node("Min", [_INPUT_IDS, bound.name], ["input_ids_clamped"], name="/autoopt/clamp_ids"))


def _require_cuda() -> None:
    if not og.is_cuda_available():
        providers = ["cpu"] + [
            name
            for name, available in (("dml", og.is_dml_available), ("webgpu", og.is_webgpu_available))
            if available()
        ]
        raise RuntimeError(
            "engine ort_genai on device cuda needs onnxruntime-genai-cuda "
            f"({CPU_BUILDS_OUT}, then {autoopt_install('gpu')}) and a CUDA device; found providers: {', '.join(providers)}"
        )
