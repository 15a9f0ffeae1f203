"""Which candidates a target can run. Checked before any build: an invalid candidate is rejected
(or, in a study, pruned) with the reason, never built and never crashed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autoopt.config.knobs import candidate_value_problem, inapplicable_knob, knobs_of
from autoopt.config.schema import QUANT_PRECISION, CandidateConfig, SearchConfig, TargetConfig, WorkloadConfig
from autoopt.config.serving import SERVING_KNOBS
from autoopt.engines.probes import cuda_device
from autoopt.engines.registry import engine_info
from autoopt.models.source import ModelTraits
from autoopt.passes.plan import plan
from autoopt.passes.registry import pass_problem
from autoopt.space.sample import param_choices


def target_problem(c: CandidateConfig, target: TargetConfig) -> str | None:
    """Why `target` cannot run candidate `c`, or None. Assumes its knob values are valid."""
    if c.engine not in target.engines:
        return f"engine={c.engine} is not available on target={target.name}; choose one of: {', '.join(target.engines)}"
    if QUANT_PRECISION[c.quant] not in target.precisions:
        return _lacks_precision(c.quant, target)
    if problem := compute_precision_problem(c, target):
        return problem
    info = engine_info(c.engine)
    quants = info.quants.get(target.device, ())
    if c.quant not in quants:
        runs = ", ".join(quants) or "nothing"
        return f"engine={c.engine} does not run quant={c.quant} on {target.device}; it runs: {runs}"
    if problem := _continuous_device_problem(c, target):
        return problem
    if info.rule and (reason := info.rule(c, target.device)):
        return f"engine={c.engine}: {reason}"
    if target.cores and c.threads > target.cores:
        return (f"threads={c.threads} exceeds the {target.cores} cores of target={target.name}; use at most "
                f"{target.cores} (0 = all cores), or a bigger target.cores")
    return None


def _continuous_device_problem(c: CandidateConfig, target: TargetConfig) -> str | None:
    on = engine_info(c.engine).continuous_devices
    if c.serving_batching != "continuous" or target.device in on:
        return None
    return f"engine={c.engine}: serving_batching=continuous runs on {', '.join(on)} only; use serving_batching=group"


def continuous_problem(c: CandidateConfig, target: TargetConfig, model: ModelTraits) -> str | None:
    """Why `c` (serving_batching=continuous) cannot batch continuously here whatever its other knobs say: its engine
    does not on the target's device, or (ort) not on a model whose cached keys cannot move."""
    return _continuous_device_problem(c, target) or fixed_keys_problem(c, model)


def compute_precision_problem(c: CandidateConfig, target: TargetConfig) -> str | None:
    """A float the engine computes the candidate's activations in that the target lacks, beyond what the quant
    itself needs (`EngineInfo.compute_precision`): torch_compiled's weight-only int8/int4 and float8 kernels take
    bf16 activations (cuda's int4 tinygemm kernel nothing else), so they cannot run on a card without bf16 (t4)."""
    precision = engine_info(c.engine).compute_precision.get(c.quant)
    if precision is None or precision in target.precisions:
        return None
    return (
        f"engine={c.engine} runs quant={c.quant} with {precision} activations, which target={target.name} does "
        f"not support (supports: {', '.join(target.precisions)}); choose another engine for quant={c.quant} there"
    )


def build_problem(c: CandidateConfig, device: str) -> str | None:
    """Why a pass of the candidate's recipe refuses its settings, before any build."""
    for step in plan(c, device):
        problem = pass_problem(step)
        if problem:
            return problem
    return None


def environment_problem(c: CandidateConfig, target: TargetConfig) -> str | None:
    """Why this machine cannot measure `c` for `target` (missing device, package or provider), or None."""
    if target.device == "cuda" and cuda_device():
        return f"target={target.name} needs a CUDA device; this machine has none (measure it on the target itself)"
    for requirement in engine_info(c.engine).requires.get(target.device, ()):
        problem = requirement.problem()
        if problem:
            return f"engine={c.engine} on {target.device} {problem}"
    return None


def unavailable_engines(engines: Sequence[str], target: TargetConfig) -> dict[str, str]:
    """Each of `engines` this machine cannot measure for `target` (not one of the target's engines, or its runtime
    missing here), with the reason. A sweep leaves them out of its space: pruned trial by trial instead, they
    would take most of the sampler's proposals on a machine that lacks most GPU runtimes."""
    out: dict[str, str] = {}
    for engine in engines:
        if engine not in target.engines:
            out[engine] = f"engine={engine} is not one of target={target.name}'s engines ({', '.join(target.engines)})"
        elif problem := environment_problem(CandidateConfig(engine=engine), target):
            out[engine] = problem
    return out


def _lacks_precision(quant: str, target: TargetConfig) -> str:
    precision = QUANT_PRECISION[quant]
    declared = ",".join([*target.precisions, precision])
    return (f"quant={quant} needs {precision}, which target={target.name} does not support (supports: "
            f"{', '.join(target.precisions)}; where this machine runs {precision}, declare it: "
            f"\"target.precisions=[{declared}]\")")


def unsupported_quants(quants: Sequence[str], target: TargetConfig) -> dict[str, str]:
    """Each of `quants` no candidate can run on `target`, because the target lacks the precision it needs, with
    the reason. A sweep leaves them out of its space, as it does unavailable engines. `none` is never among them:
    it is the fp32 reference's, whose own trial says so when the target lacks fp32."""
    return {
        q: _lacks_precision(q, target)
        for q in quants
        if q != "none" and QUANT_PRECISION[q] not in target.precisions
    }


Narrowing = dict[str, tuple[list[Any], str]]  # knob -> (the values left to search, why the others are not)


def engine_narrowing(space: Any, target: TargetConfig, model: ModelTraits) -> dict[str, Narrowing]:
    """Per engine of `space`, each knob whose choices for it (`param_choices`) hold values that engine can never
    run here, whatever its other knobs say: the values left (possibly none) and why the others are not searched.
    Those are the quants the engine does not run on the target's device, and serving_batching=continuous where
    `continuous_problem` refuses it. A sweep narrows its space to them (`space.by_engine`): pruned trial by trial
    instead, each would cost the sampler an ask."""
    out: dict[str, Narrowing] = {}
    for engine in space.engine:
        runs = engine_info(engine).quants.get(target.device, ())
        quants = param_choices(space, f"{engine}.quant") or []
        if refused := [q for q in quants if q not in runs]:
            out.setdefault(engine, {})["quant"] = (
                [q for q in quants if q in runs],
                f"engine={engine} does not run quant={','.join(refused)} on {target.device}; it runs: "
                f"{', '.join(runs) or 'nothing'}")
        batching = param_choices(space, f"{engine}.serving_batching") or []
        continuous = CandidateConfig(engine=engine, serving_batching="continuous")
        if "continuous" in batching and (problem := continuous_problem(continuous, target, model)):
            out.setdefault(engine, {})["serving_batching"] = ([v for v in batching if v != "continuous"], problem)
    return out


def inert_without_load(space: Any, search: SearchConfig) -> dict[str, tuple[list[Any], str]]:
    """Under any objective but serving, each `serving_*` knob of `space` with several values: the one value left
    to search (its default where the space has it) and why the others are not searched. Those knobs set the
    batcher and the scheduler, which only the serving objective's open-loop traffic runs; elsewhere each value
    would be another candidate of the same measurement, and the bundle would carry settings never measured."""
    if search.objective == "serving":
        return {}
    knobs = knobs_of(CandidateConfig)
    out = {}
    for name in SERVING_KNOBS.values():
        values = list(getattr(space, name))
        if len(values) > 1:
            kept = knobs[name].default if knobs[name].default in values else values[0]
            dropped = ",".join(str(v).lower() for v in values if v != kept)
            out[name] = ([kept], f"{name}={dropped} (search.objective={search.objective} times requests without the "
                                 "batcher and scheduler these knobs set; search.objective=serving measures them)")
    return out


def inert_under_workload(mix_lengths: Sequence[bool], workload: WorkloadConfig) -> str | None:
    """Why the space's `serving_mix_lengths` values (`mix_lengths`) other than false change nothing under
    `workload`, or None. A sweep searches only false there, as it leaves out unavailable engines: otherwise
    every group-batching candidate would be measured twice over."""
    lengths = sorted(set(workload.prompt_lengths))
    if len(lengths) > 1 or not any(mix_lengths):
        return None
    return (
        f"serving_mix_lengths=true changes nothing where every prompt has one length "
        f"(workload={workload.name}: prompt_lengths={lengths})"
    )


def tied_embeddings_problem(c: CandidateConfig) -> str | None:
    """Why onnxruntime-genai's builder cannot build `c` as asked from a checkpoint whose lm_head shares the embedding
    table (Qwen2.5 up to 3B, say): it quantizes the tied table with an int4 body whatever quant_embeddings says (the
    lookup reads the lm_head's table, or, with quant_lm_head=fp32, one of its own), and with an int8 lm_head it
    writes a lookup that reads a tensor nothing defines (the graph does not load)."""
    if c.engine != "ort_genai" or c.quant != "int4":
        return None
    if c.quant_lm_head == "int8":
        return ("engine=ort_genai: with tied embeddings the builder's quant_lm_head=int8 graph reads a tensor it never "
                "writes; choose quant_lm_head=same or fp32")
    if c.quant_embeddings != "int4":
        return ("engine=ort_genai: with tied embeddings the builder quantizes the embedding table with the int4 body, "
                f"so quant_embeddings={c.quant_embeddings} would be ignored; choose quant_embeddings=int4")
    return None


def fixed_keys_problem(c: CandidateConfig, model: ModelTraits) -> str | None:
    """Why ort cannot batch `c` continuously on `model`: its stream moves each row's cached keys when the batch's
    padding changes (`models/rope.py`), which holds for a whole-head default rotary embedding only."""
    if c.engine != "ort" or c.serving_batching != "continuous" or model.fixed_keys is None:
        return None
    return (f"engine=ort: serving_batching=continuous moves cached keys to other positions, which this model's cannot "
            f"be: {model.fixed_keys}; use serving_batching=group")


def decoding_problem_of(engine: str, workload: WorkloadConfig) -> str | None:
    """Why `engine` cannot decode as `workload` does (sampling, where its rows can only take the argmax), or None."""
    if workload.decoding.greedy or engine_info(engine).samples:
        return None
    return (f"engine={engine} decodes greedily only, and workload={workload.name} samples "
            f"(workload.decoding.temperature={workload.decoding.temperature})")


def candidate_problem(c: CandidateConfig, target: TargetConfig, model: ModelTraits,
                      workload: WorkloadConfig | None = None) -> str | None:
    """Every check a candidate must pass before it is built, in order; None when it can be measured here (under
    `workload`, where given)."""
    return (
        candidate_value_problem(c)
        or inapplicable_knob(c)
        or (decoding_problem_of(c.engine, workload) if workload is not None else None)
        or target_problem(c, target)
        or engine_info(c.engine).model_problem(model.architecture)
        or (tied_embeddings_problem(c) if model.tied_embeddings else None)
        or fixed_keys_problem(c, model)
        or build_problem(c, target.device)
        or environment_problem(c, target)
    )
