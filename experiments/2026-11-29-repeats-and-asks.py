"""How many distinct candidates a sweep measures before its asks run out: the sweep's own loop (`run_trial`, `Known`,
the engine openers, `AfterRepeats`) over space=default on a cpu target, with synthetic outcomes instead of builds and
measurements (latency and accuracy drawn from a hash of the candidate), so it says how the loop spends its asks, not
how good its pick is.

    .venv/bin/python experiments/2026-11-29-repeats-and-asks.py [--trials 50] [--seeds 4] [--failing] [--old]
        [--streak 2]

`--failing`: every ort_genai int4 build fails. `--old`: the loop as it was before (no random proposal after a
repeat; a repeated failure told FAIL). `--streak N`: the random proposal comes after N repeats in a row (the
sweep's rule: 2; 1 was its first rule).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoopt.config.schema import ModelConfig, SearchConfig, SpaceConfig, SweepConfig, TargetConfig, WorkloadConfig
from autoopt.jobs.launch import JobFailed
from autoopt.models.source import ModelTraits
from autoopt.space.sample import AfterRepeats, OpenerRetries, engine_openers, reference_params
from autoopt.study import trial as study_trial
from autoopt.study.runner import MAX_ASKS_PER_TRIAL, make_sampler
from autoopt.study.trial import Known, run_trial
from tests.study.results import result

QUALITY = {"none": 1.0, "bf16": 0.98, "int8_dynamic": 0.96, "int8_static": 0.96, "int8_weight": 0.97, "int4": 0.93}


def _draw(candidate: object, salt: str) -> float:
    text = json.dumps(asdict(candidate), sort_keys=True) + salt  # type: ignore[call-overload]
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


class Synthetic:
    def __init__(self, failing: bool) -> None:
        self.failing = failing

    def launch(self, job: tuple) -> object:
        kind, candidate = job[0], job[1]
        if kind == "build":
            if self.failing and candidate.engine == "ort_genai" and candidate.quant == "int4":
                raise JobFailed("RuntimeError: the builder crashed", "")
            return SimpleNamespace(cached=True)
        latency = 100 * (0.3 + _draw(candidate, "latency"))
        top1 = min(1.0, QUALITY[candidate.quant] + 0.03 * _draw(candidate, "accuracy"))
        return result(latency, latency / 100, top1, candidate=candidate)


def sweep(seed: int, n_trials: int, failing: bool, old: bool, streak: int) -> tuple[int, int, dict[str, int]]:
    space = SpaceConfig(**OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf/space/default.yaml")))
    target = TargetConfig(name="cpu", device="cpu", precisions=["fp32", "bf16", "int8", "int4"],
                          engines=["torch", "ort", "ort_genai", "torch_compiled"], memory_gb=4, cores=2,
                          price_per_hour=0.09, price_source="synthetic")
    workload = WorkloadConfig(name="w", prompt_lengths=[8, 16])
    cfg = SweepConfig(target=target, model=ModelConfig(name="m"), workload=workload, space=space, cache_dir="-",
                      workspace="-", search=SearchConfig(n_trials=n_trials, seed=seed, min_decode_self_agreement=0))
    model = SimpleNamespace(traits=ModelTraits("Qwen2ForCausalLM"))
    prep = SimpleNamespace(target=target, workload=workload, model=model,
                           build_job=lambda c: ("build", c), measure_job=lambda c, built: ("measure", c))
    study = optuna.create_study(directions=["minimize"] * 3, sampler=make_sampler(cfg.search))
    study.enqueue_trial(reference_params(space))
    openers = engine_openers(space, [reference_params(space)], seed)
    for params in openers:
        study.enqueue_trial(params)
    retries, known, launcher = OpenerRetries(openers), Known.of(study), Synthetic(failing)
    after = AfterRepeats(study.sampler, seed, streak)
    new = asked = 0
    states: collections.Counter[str] = collections.Counter()
    while new < n_trials and asked < MAX_ASKS_PER_TRIAL * n_trials:
        outcome = run_trial(study, prep, cfg, known, launcher)  # type: ignore[arg-type]
        asked += 1
        if not old:
            study.sampler = after.next(outcome.reused, outcome.number)
        if again := retries.after(outcome.record.candidate.engine, outcome.state == "pruned"):
            study.enqueue_trial(again)
        states[outcome.state + (" (repeat)" if outcome.reused else "")] += 1
        new += outcome.state in ("failed", "complete") and not outcome.reused
    return new, asked, dict(states)


def _fail_as_before(study: optuna.Study, trial: optuna.Trial, record: object, name: str, note: str = "") -> object:
    record.write(trial)  # type: ignore[attr-defined]
    study.tell(trial, state=TrialState.FAIL)
    return study_trial.TrialOutcome(trial.number, "failed", record)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--failing", action="store_true")
    parser.add_argument("--old", action="store_true")
    parser.add_argument("--streak", type=int, default=2)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.disable(logging.CRITICAL)
    if args.old:
        study_trial._fail = _fail_as_before
    for seed in range(args.seeds):
        measured, asked, states = sweep(seed, args.trials, args.failing, args.old, args.streak)
        print(json.dumps({"loop": "old" if args.old else f"streak {args.streak}", "failing": args.failing, "seed": seed,
                          "n_trials": args.trials, "measured": measured, "asks": asked, "trials": states}))


if __name__ == "__main__":
    main()
