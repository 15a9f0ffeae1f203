"""From Hydra's DictConfig to validated dataclasses, failing with one line on a bad value."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import psutil
from omegaconf import DictConfig, OmegaConf

from autoopt.config.errors import ConfigError
from autoopt.config.knobs import ENGINES, candidate_value_problem, check_space, inapplicable_knob, typed_by_engine
from autoopt.config.schema import (
    BenchConfig,
    CandidateConfig,
    MeasureConfig,
    ModelConfig,
    SweepConfig,
    TargetConfig,
    WorkloadConfig,
    bench_problem,
    decoding_problem,
)
from autoopt.config.serving import SERVING_KNOBS, ServingConfig, check_serving

T = TypeVar("T")

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int4", "fp8")
MODEL_KINDS = ("builtin", "hf", "shape")
SHAPE_POSITIVE = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size",
                  "max_position_embeddings")

log = logging.getLogger("autoopt")


def to_typed(cfg: DictConfig | dict[str, Any], schema: type[T]) -> T:
    """Merge `cfg` onto `schema` and return the dataclass instance (raises ConfigError)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except Exception as e:  # OmegaConf's errors name the key in `full_key`; keep their first line and the key
        key = getattr(e, "full_key", None)
        raise ConfigError(str(e).splitlines()[0] + (f" (at {key})" if key else "")) from None


def resolve_target(t: TargetConfig) -> TargetConfig:
    """Fill in what is detected on the measuring machine (CPU cores, RAM) where the config says 0, and warn where the
    cores the candidates run on are more than this machine lets them use, or not the cores the price buys."""
    usable = len(os.sched_getaffinity(0))
    cores = t.cores or usable
    memory = t.memory_gb or psutil.virtual_memory().total / 2**30
    if t.device == "cpu" and cores > usable:  # allowed: a config for a bigger box, measured here, is still a config
        log.warning("target %s: target.cores=%d but this process may use %d CPUs here, so a candidate that takes its "
                    "threads from target.cores runs %d threads oversubscribing %d CPUs: its speed figures are not "
                    "the target's", t.name, cores, usable, cores, usable)
    if t.device == "cpu" and t.priced_cores and cores != t.priced_cores:
        log.warning("target %s: candidates run on %d cores but target.price_per_hour ($%g) is for %d vCPUs, so every "
                    "cost figure prices %d cores' throughput at %d vCPUs' price; set target.price_per_hour (and "
                    "target.priced_cores) for this machine, or target.cores=%d", t.name, cores, t.price_per_hour,
                    t.priced_cores, cores, t.priced_cores, t.priced_cores)
    return replace(t, cores=cores, memory_gb=round(memory, 1))


def check_target(t: TargetConfig) -> None:
    if t.device not in DEVICES:
        raise ConfigError(f"target.device={t.device} is not valid; choose one of: {', '.join(DEVICES)}")
    bad = [p for p in t.precisions if p not in PRECISIONS]
    if bad:
        raise ConfigError(f"target.precisions has {bad[0]}; choose from: {', '.join(PRECISIONS)}")
    bad = [e for e in t.engines if e not in ENGINES]
    if bad:
        raise ConfigError(f"target.engines has {bad[0]}; choose from: {', '.join(ENGINES)}")
    if t.price_per_hour < 0:
        raise ConfigError(f"target.price_per_hour={t.price_per_hour} must be >= 0 (USD per hour)")
    for key in ("cores", "memory_gb"):
        if getattr(t, key) < 0:
            raise ConfigError(f"target.{key}={getattr(t, key)} must be >= 0 (0 = detect)")
    if t.priced_cores < 0:
        raise ConfigError(f"target.priced_cores={t.priced_cores} must be >= 0 (0 = not stated)")
    check_bandwidth(t)


def check_bandwidth(t: TargetConfig) -> None:
    """The roofline's bandwidth: measured on CPU targets (0), declared with its source everywhere else."""
    if t.memory_bandwidth_gbps < 0:
        raise ConfigError(
            f"target.memory_bandwidth_gbps={t.memory_bandwidth_gbps} must be >= 0 (GB/s; 0 = measure it on a CPU target)"
        )
    if t.memory_bandwidth_gbps == 0 and t.device != "cpu":
        raise ConfigError(
            f"target.memory_bandwidth_gbps is 0 on {t.device} target={t.name}, where it cannot be measured; set it to "
            "the card's memory bandwidth in GB/s (datasheet) and target.bandwidth_source to where that figure is from"
        )
    if t.memory_bandwidth_gbps > 0 and not t.bandwidth_source.strip():
        raise ConfigError(
            f"target.bandwidth_source is empty for target.memory_bandwidth_gbps={t.memory_bandwidth_gbps}; "
            "say where the figure comes from (e.g. the vendor datasheet and when it was read)"
        )


def check_model(m: ModelConfig) -> None:
    if m.kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind={m.kind} is not valid; choose one of: {', '.join(MODEL_KINDS)}")
    if m.kind == "hf":
        if not m.path:
            raise ConfigError("model.path is required for model=hf: a local Hugging Face model folder")
        if not (Path(m.path) / "config.json").is_file():
            raise ConfigError(f"model.path={m.path} is not a Hugging Face model folder (no config.json there)")
    if m.kind == "shape":
        check_shape(m)


def check_shape(m: ModelConfig) -> None:
    """A shape the Qwen2 architecture can build and run: positive sizes, heads dividing the width, KV heads the
    heads, and an even head size (rotary embeddings rotate pairs of channels)."""
    s = m.shape
    if s is None:
        raise ConfigError("model.shape is required for model.kind=shape: hidden_size, num_layers, num_heads, ...")
    for key in SHAPE_POSITIVE:
        if getattr(s, key) < 1:
            raise ConfigError(f"model.shape.{key}={getattr(s, key)} must be >= 1")
    if s.rope_theta <= 0:
        raise ConfigError(f"model.shape.rope_theta={s.rope_theta} must be > 0")
    if s.hidden_size % s.num_heads or s.num_heads % s.num_kv_heads:
        raise ConfigError(
            f"model.shape: hidden_size={s.hidden_size}, num_heads={s.num_heads}, num_kv_heads={s.num_kv_heads}: "
            "num_heads must divide hidden_size and num_kv_heads must divide num_heads"
        )
    if (s.hidden_size // s.num_heads) % 2:
        raise ConfigError(
            f"model.shape: hidden_size={s.hidden_size} / num_heads={s.num_heads} gives head_dim "
            f"{s.hidden_size // s.num_heads}, which must be even (rotary embeddings rotate pairs of channels); "
            "change num_heads or hidden_size"
        )


def check_sweep_model(m: ModelConfig) -> None:
    """A sweep's accuracy bar needs a model that has learned something: refuse random-weight shape models."""
    if m.kind == "shape":
        raise ConfigError(
            f"model={m.name} has random weights (model.kind=shape), so a sweep's accuracy bar would rank noise; "
            f"shape models are for speed work (python -m autoopt.measure model={m.name} for speed figures, "
            "scripts/gpu_decode_bench.py on a card); sweep model=builtin, where accuracy comes from"
        )


def check_workload(w: WorkloadConfig) -> None:
    for key, least in (("prompt_lengths", 1), ("output_lengths", 2)):
        values = getattr(w, key)
        if not values or min(values) < least:
            raise ConfigError(f"workload.{key}={values} must be a non-empty list of lengths >= {least}")
    for key in ("batch_size", "eval_windows", "eval_window_len"):
        if getattr(w, key) < 1:
            raise ConfigError(f"workload.{key}={getattr(w, key)} must be >= 1")
    try:
        check_serving(w.serving)
    except ConfigError as e:  # its keys read from the serving config; here they sit under workload
        raise ConfigError(f"workload.{e}") from None
    for key, knob_name in SERVING_KNOBS.items():
        if getattr(w.serving, key) != getattr(ServingConfig(), key):
            raise ConfigError(f"workload.serving.{key} is a search knob: set candidate.{knob_name} or space.{knob_name}")
    if problem := decoding_problem(w.decoding.temperature, w.decoding.top_p, w.decoding.top_k):
        raise ConfigError(f"workload.decoding.{problem}")
    d = w.decoding
    cuts = [f"top_p={d.top_p}"] * (d.top_p < 1) + [f"top_k={d.top_k}"] * (d.top_k > 1)  # top_k=1 is greedy anyway
    if d.temperature == 0 and cuts:
        raise ConfigError(f"workload.decoding.{' and '.join(cuts)} {'has' if len(cuts) == 1 else 'have'} no effect "
                          "at temperature 0 (greedy); set workload.decoding.temperature > 0 to sample, or drop "
                          "top_p/top_k")
    if w.eval_text != "builtin_heldout" and not Path(w.eval_text).is_file():
        raise ConfigError(f"workload.eval_text={w.eval_text} is neither builtin_heldout nor a readable text file")


def check_bench(b: BenchConfig) -> None:
    problem = bench_problem(b)
    if problem:
        raise ConfigError(problem)


def check_cache_dir(cache_dir: str) -> None:
    """Created here, so that a path that cannot be a writable folder fails before any work, in one line."""
    path = Path(cache_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cache_dir={cache_dir} cannot be created ({e.strerror}); set cache_dir= or AUTOOPT_CACHE "
                          "to a writable folder") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"cache_dir={cache_dir} is not writable; set cache_dir= or AUTOOPT_CACHE to a writable folder")


def check_output(output: str | None) -> None:
    """Before the measurement, not after it: the result is written only at the end."""
    if output and not Path(output).parent.is_dir():
        raise ConfigError(f"output={output}: folder {Path(output).parent} does not exist; create it or choose another path")
    if output and Path(output).is_dir():
        raise ConfigError(f"output={output} is a folder; give a file path such as output={Path(output) / 'result.json'}")


def load_measure_config(cfg: DictConfig | dict[str, Any]) -> MeasureConfig:
    m = to_typed(cfg, MeasureConfig)
    check_cache_dir(m.cache_dir)
    check_output(m.output)
    check_target(m.target)
    check_model(m.model)
    check_workload(m.workload)
    check_bench(m.bench)
    problem = candidate_value_problem(m.candidate) or inapplicable_knob(m.candidate)
    if problem:
        raise ConfigError(problem)
    if not m.serving:
        defaults = CandidateConfig()
        for knob in SERVING_KNOBS.values():
            if getattr(m.candidate, knob) != getattr(defaults, knob):
                raise ConfigError(f"candidate.{knob}={getattr(m.candidate, knob)} shapes serving under load, which "
                                  "this measurement does not run; add serving=true to measure the capacity with it")
    m.target = resolve_target(m.target)
    return m


SAMPLERS = ("tpe", "nsga2", "random")
OBJECTIVES = ("latency", "serving")
LATENCIES = tuple(f"{m}_{p}" for m in ("ttft", "tpot", "e2e") for p in ("p50", "p90", "p99"))
PICKS = ("fastest", "knee", "min_latency", "min_cost", "max_accuracy", "weights")


def load_sweep_config(cfg: DictConfig | dict[str, Any]) -> SweepConfig:
    s = to_typed(cfg, SweepConfig)
    check_cache_dir(s.cache_dir)
    check_target(s.target)
    check_model(s.model)
    check_sweep_model(s.model)
    check_workload(s.workload)
    check_bench(s.bench)
    s.space.by_engine = typed_by_engine(s.space, CandidateConfig)
    check_space(s.space, CandidateConfig)
    if s.search.sampler not in SAMPLERS:
        raise ConfigError(f"search.sampler={s.search.sampler} is not valid; choose one of: {', '.join(SAMPLERS)}")
    if s.search.objective not in OBJECTIVES:
        raise ConfigError(f"search.objective={s.search.objective} is not valid; choose one of: {', '.join(OBJECTIVES)}")
    if s.search.latency not in LATENCIES:
        raise ConfigError(f"search.latency={s.search.latency} is not valid; choose one of: {', '.join(LATENCIES)}")
    if s.search.n_trials < 1:
        raise ConfigError(f"search.n_trials={s.search.n_trials} must be >= 1")
    if s.search.confirm_rounds < 0:
        raise ConfigError(f"search.confirm_rounds={s.search.confirm_rounds} must be >= 0 (0 = no confirmation)")
    if not 0.0 <= s.search.min_top1_agreement <= 1.0:
        raise ConfigError(f"search.min_top1_agreement={s.search.min_top1_agreement} must be within [0, 1]")
    if not 0.0 <= s.search.min_decode_prefix_agreement <= 1.0:
        raise ConfigError(
            f"search.min_decode_prefix_agreement={s.search.min_decode_prefix_agreement} must be within [0, 1] (0 = no bar)"
        )
    if not 0.0 <= s.search.min_decode_self_agreement <= 1.0:
        raise ConfigError(
            f"search.min_decode_self_agreement={s.search.min_decode_self_agreement} must be within [0, 1] (0 = no bar)"
        )
    if s.export.pick not in PICKS:
        raise ConfigError(f"export.pick={s.export.pick} is not valid; choose one of: {', '.join(PICKS)}")
    if not 0.0 <= s.export.runoff_margin <= 1.0:
        raise ConfigError(f"export.runoff_margin={s.export.runoff_margin} must be within [0, 1] (0 = no runoff)")
    if not 0.0 <= s.export.runoff_min_gain < 1.0:
        raise ConfigError(f"export.runoff_min_gain={s.export.runoff_min_gain} must be within [0, 1) (0.03: faster by "
                          "more than 3 % in every round)")
    if len(s.export.weights) != 3:
        raise ConfigError(f"export.weights={s.export.weights} needs 3 numbers: latency, cost, accuracy loss")
    if min(s.export.weights) < 0 or not any(s.export.weights):
        raise ConfigError(f"export.weights={s.export.weights} must be non-negative and not all zero, e.g. [1, 1, 1]")
    s.target = resolve_target(s.target)
    return s
