from __future__ import annotations

import optuna

from autoopt.config.knobs import label
from autoopt.config.schema import SpaceConfig
from autoopt.space.sample import AfterRepeats, fit, fitted_params, reference_params, sample

SPACE = SpaceConfig(
    name="t",
    engine=["torch", "ort", "ort_genai"],
    quant=["none", "bf16", "int8_dynamic", "int4"],
    fuse=[False, True],
    quant_block_size=[32, 128],
    kv_cache=["dynamic", "static"],
    threads=[1, 0],
)


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["minimize"] * 3, sampler=optuna.samplers.RandomSampler(seed=0))


def test_reference_params_make_the_fp32_torch_candidate_with_default_knobs() -> None:
    study = _study()
    study.enqueue_trial(reference_params(SPACE))

    candidate = sample(study.ask(), SPACE)

    assert (candidate.engine, candidate.quant, candidate.kv_cache, candidate.threads) == ("torch", "none", "dynamic", 0)


def test_knobs_are_sampled_only_for_engines_they_apply_to() -> None:
    study = _study()
    for _ in range(40):
        trial = study.ask()
        candidate = sample(trial, SPACE)
        params = set(trial.params)
        study.tell(trial, [0.0, 0.0, 0.0])

        assert all(p == "engine" or p.startswith(f"{candidate.engine}.") for p in params)
        if candidate.engine == "torch":
            assert not candidate.fuse and candidate.quant in ("none", "bf16", "int8_dynamic")
        if candidate.quant not in ("int4", "int8_weight"):
            assert f"{candidate.engine}.quant_block_size" not in params


def test_label_names_engine_quant_and_applicable_knobs() -> None:
    study = _study()
    study.enqueue_trial({"engine": "ort", "ort.quant": "int4", "ort.fuse": True, "ort.quant_block_size": 128})

    text = label(sample(study.ask(), SPACE))

    assert text.startswith("ort int4 fused b128 L4 opt=all")


def test_fit_gives_the_candidate_params_produce_and_refuses_foreign_ones() -> None:
    params = {"engine": "ort_genai", "ort_genai.quant": "int4", "ort_genai.quant_block_size": 32,
              "ort_genai.kv_cache": "static", "ort_genai.threads": 0}
    full = {**params, **{k: v for k, v in _asked(params).items() if k not in params}}
    candidate = fit(full, SPACE)
    assert candidate is not None and (candidate.engine, candidate.quant, candidate.kv_cache) == ("ort_genai", "int4", "static")
    assert fit({**full, "ort_genai.quant_block_size": 64}, SPACE) is None  # a value the space lacks
    narrower = SpaceConfig(**{**vars(SPACE), "quant_block_size": [128]})
    assert fit({"engine": "ort_genai", "ort_genai.quant": "int4"}, narrower) is None  # lacks one without its default
    assert fit({**full, "ort_genai.threads": False}, SPACE) is None  # 0 and False are not the same choice


def _asked(params: dict[str, object]) -> dict[str, object]:
    """Every parameter `sample` asks for the candidate `params` start, with the first choice where unset."""
    study = _study()
    study.enqueue_trial(params)
    trial = study.ask()
    sample(trial, SPACE)
    return dict(trial.params)


def test_engine_openers_visit_each_uncovered_engine_once_in_a_seeded_order() -> None:
    from autoopt.space.sample import engine_openers

    space = SpaceConfig(name="t", engine=["torch", "ort", "ort_genai", "torch_compiled"], quant=["none"])
    reference = [reference_params(space)]
    orders = {tuple(p["engine"] for p in engine_openers(space, reference, seed)) for seed in range(8)}

    assert all(sorted(order) == ["ort", "ort_genai", "torch_compiled"] for order in orders)
    assert len(orders) > 1  # the seed shuffles them
    assert engine_openers(space, reference, 3) == engine_openers(space, reference, 3)
    warm = [{"engine": "ort_genai", "ort_genai.quant": "int4"}]
    assert [p["engine"] for p in engine_openers(space, [*reference, *warm], 0)] in (["ort", "torch_compiled"],
                                                                                    ["torch_compiled", "ort"])


def test_enqueued_openers_fix_the_engine_and_leave_the_rest_to_the_sampler() -> None:
    from autoopt.space.sample import engine_openers

    study = _study()
    study.enqueue_trial(reference_params(SPACE))
    for params in engine_openers(SPACE, [reference_params(SPACE)], seed=0):
        study.enqueue_trial(params)

    engines = []
    for _ in range(3):
        trial = study.ask()
        engines.append(sample(trial, SPACE).engine)
        study.tell(trial, [1.0, 1.0, 1.0])

    assert engines[0] == "torch" and sorted(engines[1:]) == ["ort", "ort_genai"]


def test_a_pruned_opener_is_enqueued_again_until_its_engine_has_a_trial() -> None:
    from autoopt.space.sample import OpenerRetries

    retries = OpenerRetries([{"engine": "ort"}, {"engine": "ort_genai"}], retries=2)

    assert retries.after("torch", pruned=True) is None  # not an opener's engine
    assert retries.after("ort", pruned=True) == {"engine": "ort"}
    assert retries.after("ort", pruned=False) is None  # ort has a trial: done with it
    assert retries.after("ort", pruned=True) is None
    assert [retries.after("ort_genai", pruned=True) for _ in range(3)] == [{"engine": "ort_genai"}] * 2 + [None]


def test_openers_visit_their_engine_even_where_most_of_its_candidates_are_pruned() -> None:
    from autoopt.space.sample import OpenerRetries, engine_openers

    def cannot_run(c) -> bool:  # half of each opener engine's candidates
        return (c.engine == "ort" and c.fuse) or (c.engine == "ort_genai" and c.kv_cache == "dynamic")

    for seed in range(10):
        study = optuna.create_study(directions=["minimize"] * 3, sampler=optuna.samplers.RandomSampler(seed=seed))
        study.enqueue_trial(reference_params(SPACE))
        openers = engine_openers(SPACE, [reference_params(SPACE)], seed)
        for params in openers:
            study.enqueue_trial(params)
        retries = OpenerRetries(openers)
        measured = []
        while len(measured) < 3:
            trial = study.ask()
            candidate = sample(trial, SPACE)
            pruned = cannot_run(candidate)
            if again := retries.after(candidate.engine, pruned):
                study.enqueue_trial(again)
            if pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, [1.0, 1.0, 1.0])
                measured.append(candidate.engine)

        assert measured[0] == "torch" and sorted(measured[1:]) == ["ort", "ort_genai"], seed


def test_group_batching_knobs_are_not_sampled_where_they_change_nothing() -> None:
    space = SpaceConfig(name="s", engine=["torch"], quant=["none"], serving_max_batch=[1, 4],
                        serving_batching=["group", "continuous"], serving_queue_delay_ms=[0.0, 20.0],
                        serving_mix_lengths=[False, True])
    study, seen = _study(), set()
    for _ in range(60):
        trial = study.ask()
        c = sample(trial, space)
        study.tell(trial, [0.0, 0.0, 0.0])
        grouped = c.serving_batching == "group" and c.serving_max_batch > 1
        assert ("torch.serving_queue_delay_ms" in trial.params) == grouped
        assert ("torch.serving_mix_lengths" in trial.params) == grouped
        seen.add((c.serving_batching, c.serving_max_batch, c.serving_queue_delay_ms, c.serving_mix_lengths))
    assert seen == {("group", 4, d, m) for d in (0.0, 20.0) for m in (False, True)} | {
        ("group", 1, 10.0, False), ("continuous", 1, 10.0, False), ("continuous", 4, 10.0, False)}


def test_a_parameter_an_older_study_never_asked_is_its_knobs_default() -> None:
    """Recorded when the knob did not apply to the candidate (serving_batching before torch_compiled took it), the
    candidate ran at the default: it fits where the space offers that, and is enqueued with it."""
    space = SpaceConfig(name="s", engine=["torch", "torch_compiled"], quant=["none"], serving_batching=["group"])
    older = {"engine": "torch_compiled", "torch_compiled.quant": "none", "torch_compiled.compile_mode": "default",
             "torch_compiled.threads": 0}
    fitted = fitted_params(older, space)
    assert fitted is not None and fitted["torch_compiled.serving_batching"] == "group"
    assert {k: fitted[k] for k in older if k != "engine"} == {k: v for k, v in older.items() if k != "engine"}
    candidate = fit(older, space)
    assert candidate is not None and candidate.serving_batching == "group"
    assert fitted_params(older, SpaceConfig(**{**vars(space), "serving_batching": ["continuous"]})) is None


def test_after_two_repeats_in_a_row_the_next_proposal_is_random_and_seeded_by_the_trial_number() -> None:
    tpe = optuna.samplers.TPESampler(seed=0)
    after = AfterRepeats(tpe, seed=7)

    assert after.next(True, 2) is tpe  # one repeat: TPE again
    assert after.next(False, 3) is tpe and after.next(True, 4) is tpe  # a new candidate between breaks the row
    proposals = []
    for number in (5, 5):
        fresh = AfterRepeats(tpe, seed=7)
        fresh.next(True, number - 1)
        study = optuna.create_study(directions=["minimize"] * 3, sampler=fresh.next(True, number))
        proposals.append(label(sample(study.ask(), SPACE)))
    assert isinstance(after.next(True, 5), optuna.samplers.RandomSampler) and proposals[0] == proposals[1]
    assert isinstance(after.next(True, 6), optuna.samplers.RandomSampler)  # until a new candidate
    assert after.next(False, 7) is tpe
