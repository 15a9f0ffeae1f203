"""Typed serving settings: traffic (rate, arrivals, class mix), priority classes with deadlines, and the
batcher/scheduler knobs. Plain dataclasses, so OmegaConf can use them as structured configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autoopt.config.errors import ConfigError

ARRIVALS = ("poisson", "gamma")
# ServingConfig fields that a candidate carries as search knobs (CandidateConfig), never the workload.
SERVING_KNOBS = {"max_batch": "serving_max_batch", "max_queue_delay_ms": "serving_queue_delay_ms", "policy": "serving_policy",
                 "mix_lengths": "serving_mix_lengths", "batching": "serving_batching",
                 "prefill_chunk": "serving_prefill_chunk"}
POLICIES = ("strict", "weighted")
BATCHING = ("group", "continuous")
ON_FULL = ("reject", "delay")


@dataclass
class ServingClassConfig:
    """One priority class and its deadlines, each 0 when not set: `slo_ms` for the last token and `ttft_slo_ms` for
    the first, counted from the scheduled send time, and `itl_slo_ms` for the longest wait between two consecutive
    tokens (what a streaming client sees stall). A request meets its class's SLO when it completed within every
    deadline set; a class with none is best effort."""

    name: str = "P3"
    priority: int = 3  # 0 = most urgent
    slo_ms: float = 0.0  # 0 = best effort (no deadline)
    share: float = 0.25  # fraction of the offered traffic
    queue_limit: int = 64  # requests waiting in this class at most
    on_full: str = "reject"  # reject (HTTP 429) | delay (held back until the class queue has room; rejected
    # once saturation_queue requests wait in all)
    weight: float = 1.0  # policy=weighted: relative share of the batch rows this class's requests take
    ttft_slo_ms: float = 0.0  # first token's deadline (0: none)
    itl_slo_ms: float = 0.0  # longest wait between two tokens (0: none)


# Each deadline a class may set, and the figure whose p99 it bounds, as reasons and tables name it.
DEADLINES = {"slo_ms": "e2e", "ttft_slo_ms": "TTFT", "itl_slo_ms": "longest ITL"}
# ... and the stem that figure has in the serving metrics (ClassMetrics.<stem>) and results (<stem>_p99_ms)
DEADLINE_STEMS = {"slo_ms": "e2e", "ttft_slo_ms": "ttft", "itl_slo_ms": "itl_max"}
# The deadlines added after studies were recorded: fingerprints leave them out at their default (0).
STREAMING_SLOS = tuple(DEADLINES)[1:]


def default_classes() -> list[ServingClassConfig]:
    """P0 payment checks (200 ms), P1 review summaries (500 ms), P2 report drafts (1 s), P3 best effort."""
    return [
        ServingClassConfig("P0", 0, 200.0, 0.1, 32, "reject", 8.0),
        ServingClassConfig("P1", 1, 500.0, 0.3, 64, "reject", 4.0),
        ServingClassConfig("P2", 2, 1000.0, 0.3, 64, "reject", 2.0),
        ServingClassConfig("P3", 3, 0.0, 0.3, 128, "delay", 1.0),
    ]


@dataclass
class ServingConfig:
    """Open-loop traffic and the batcher/scheduler that serves it."""

    rate_rps: float = 4.0  # offered requests per second
    arrival: str = "poisson"  # poisson | gamma (bursty)
    burstiness: float = 1.0  # gamma: coefficient of variation of inter-arrival times (1 = poisson)
    duration_s: float = 20.0  # a run offers rate x duration_s requests over this much scheduled time ...
    max_requests: int = 200  # ... or this many, if fewer (single runs only: a capacity probe offers its whole duration)
    warmup_s: float = 2.0  # a capacity probe first offers this much of the same traffic, served but not judged
    # A capacity probe judges at least this many requests: its judged phase lasts min_judged / rate where that is
    # longer than duration_s, up to 8 x duration_s (at a low rate duration_s alone judges a handful, and a p99 of
    # them is their maximum)
    min_judged: int = 0
    seed: int = 0
    classes: list[ServingClassConfig] = field(default_factory=default_classes)
    policy: str = "strict"  # strict: most urgent class first | weighted: by class weight
    max_batch: int = 4  # rows per engine call
    max_queue_delay_ms: float = 10.0  # a partial batch is released once its oldest request waited this long
    mix_lengths: bool = False  # rows left after the lead's prompt length take shorter prompts, padded to it
    batching: str = "group"  # group: a batch runs to its longest row | continuous: rows join and leave between steps
    prefill_chunk: int = 0  # continuous: joiners' prompts get at most this many tokens before each step (0: whole)
    starvation_ms: float = 2000.0  # a request waiting longer is served next, whatever its class ...
    starvation_every: int = 4  # ... but such requests lead at most one batch in this many
    peak_rate_rps: float = 0.0  # the rate replicas are sized for; 0 = rate_rps
    saturation_lag_factor: float = 10.0  # stop a run once the oldest waiting request lags this x the largest
    # deadline on a first or last token
    saturation_queue: int = 512  # ... or once this many requests wait (a server rejects a "delay" class's beyond it)
    min_attainment: float = 0.99  # capacity: every class with an SLO meets it for at least this fraction


# Serving fields added after studies were recorded, and the value they were measured with before: left out there.
_ADDED = {"min_judged": 0}


def without_serving_knobs(workload: dict[str, Any]) -> dict[str, Any]:
    """A workload's fields (`asdict`) without the serving settings that are candidate knobs (SERVING_KNOBS, held at
    their defaults in a workload), without fields added later where they hold their old behaviour (_ADDED) and
    without the classes' streaming deadlines where unset: what fingerprints record, so that a new knob or field does
    not make earlier studies and ground truths look measured under another workload."""
    serving = workload.get("serving")
    if not isinstance(serving, dict):
        return workload
    kept = {k: v for k, v in serving.items() if k not in SERVING_KNOBS and not (k in _ADDED and v == _ADDED[k])}
    if isinstance(kept.get("classes"), list):
        kept["classes"] = [{k: v for k, v in c.items() if not (k in STREAMING_SLOS and not v)} for c in kept["classes"]]
    return {**workload, "serving": kept}


def default_traffic_note(workload: str, cfg: ServingConfig) -> str | None:
    """A line saying that `workload` declares no serving traffic of its own where `cfg` is the default (a workload
    without a `serving:` section gets it), naming what is measured instead; None where the workload declares any."""
    if cfg != ServingConfig():
        return None
    classes = ", ".join(f"{c.name} {f'{c.slo_ms:.0f} ms' if c.slo_ms else 'best effort'} ({c.share:.0%})"
                        for c in cfg.classes)
    return (f"workload {workload} declares no serving traffic: measuring the default, classes {classes}, {cfg.arrival} "
            f"arrivals, rate_rps {cfg.rate_rps:g} (workload=serve and workload=stream declare their own; "
            "workload.serving.* overrides any field)")


def check_serving(cfg: ServingConfig) -> None:
    """Raise ConfigError (one line: key, value, fix) for the first setting that cannot work."""
    _positive("serving.rate_rps", cfg.rate_rps)
    _choice("serving.arrival", cfg.arrival, ARRIVALS)
    _positive("serving.burstiness", cfg.burstiness)
    _positive("serving.duration_s", cfg.duration_s)
    _non_negative("serving.warmup_s", cfg.warmup_s)
    _non_negative("serving.min_judged", cfg.min_judged)
    _positive("serving.max_requests", cfg.max_requests)
    _choice("serving.policy", cfg.policy, POLICIES)
    _choice("serving.batching", cfg.batching, BATCHING)
    _non_negative("serving.prefill_chunk", cfg.prefill_chunk)
    if cfg.prefill_chunk and cfg.batching != "continuous":
        raise ConfigError(f"serving.prefill_chunk={cfg.prefill_chunk} changes nothing with batching={cfg.batching} "
                          "(a group batch prefills its prompts together); use batching=continuous or prefill_chunk=0")
    _positive("serving.max_batch", cfg.max_batch)
    _non_negative("serving.max_queue_delay_ms", cfg.max_queue_delay_ms)
    _positive("serving.starvation_ms", cfg.starvation_ms)
    _positive("serving.starvation_every", cfg.starvation_every)
    _non_negative("serving.peak_rate_rps", cfg.peak_rate_rps)
    _positive("serving.saturation_lag_factor", cfg.saturation_lag_factor)
    _positive("serving.saturation_queue", cfg.saturation_queue)
    if not 0.0 < cfg.min_attainment <= 1.0:
        raise ConfigError(f"serving.min_attainment={cfg.min_attainment} must be in (0, 1]; e.g. 0.99")
    if not cfg.classes:
        raise ConfigError("serving.classes is empty; give at least one class, e.g. the default P0..P3")
    names = [c.name for c in cfg.classes]
    priorities = [c.priority for c in cfg.classes]
    for key, values in (("name", names), ("priority", priorities)):
        duplicates = sorted({str(v) for v in values if values.count(v) > 1})
        if duplicates:
            raise ConfigError(f"serving.classes[].{key} repeats {', '.join(duplicates)}; give each class its own")
    for i, c in enumerate(cfg.classes):
        key = f"serving.classes[{i}]"
        if not c.name:
            raise ConfigError(f"{key}.name is empty; name the class, e.g. P{i}")
        if "." in c.name or "|" in c.name:
            raise ConfigError(f"{key}.name={c.name} has a '.' or '|' (figures are keyed serving.classes.<name>.<figure>, "
                              "and tables split on '|'); rename it without them")
        _non_negative(f"{key}.priority", c.priority)
        _non_negative(f"{key}.slo_ms", c.slo_ms)
        _non_negative(f"{key}.ttft_slo_ms", c.ttft_slo_ms)
        _non_negative(f"{key}.itl_slo_ms", c.itl_slo_ms)
        for name, value in (("ttft_slo_ms", c.ttft_slo_ms), ("itl_slo_ms", c.itl_slo_ms)):
            if c.slo_ms > 0 and value > c.slo_ms:
                raise ConfigError(f"{key}.{name}={value} is longer than its slo_ms={c.slo_ms} (the last token's "
                                  "deadline), so it checks nothing; lower it or set it to 0")
        _non_negative(f"{key}.share", c.share)
        _positive(f"{key}.queue_limit", c.queue_limit)
        _choice(f"{key}.on_full", c.on_full, ON_FULL)
        _positive(f"{key}.weight", c.weight)
    if sum(c.share for c in cfg.classes) <= 0:
        raise ConfigError("serving.classes[].share are all 0; give at least one class a positive share")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{key}={value} must be positive")


def _non_negative(key: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{key}={value} must be zero or positive")


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not known; choose one of: {', '.join(choices)}")
