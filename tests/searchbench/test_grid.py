from __future__ import annotations

from collections import Counter

import optuna

from autoopt.searchbench.grid import Grid, enumerate_grid, parameter_sets
from autoopt.space.sample import sample
from tests.searchbench.conftest import key, problem, small_space


def test_grid_counts_combinations_duplicates_and_rejections(grid: Grid) -> None:
    # torch: quant {none, int8_dynamic} x kv 2 x threads 2 = 8; ort_genai (no int8_dynamic):
    # none: kv 2 x threads 2 = 4, int4: block 2 x kv 2 x threads 2 = 8. threads=0 and threads=2 (the
    # cores) are one candidate by key: half of the 20 combinations are duplicates.
    assert grid.combinations == 20
    assert grid.duplicates == 10
    assert grid.rejected == {"torch int8_dynamic is refused here (test)": 2}
    assert len(grid) == 8
    assert len({p.key for p in grid.points}) == len(grid)


def test_knobs_are_sampled_only_where_they_apply(grid: Grid) -> None:
    by_kind = Counter((p.candidate.engine, p.candidate.quant) for p in grid.points)
    assert by_kind == {("torch", "none"): 2, ("ort_genai", "none"): 2, ("ort_genai", "int4"): 4}
    blocks = {p.candidate.quant_block_size for p in grid.points if p.candidate.quant == "int4"}
    assert blocks == {32, 128}
    for p in grid.points:
        if p.candidate.quant != "int4":
            assert p.candidate.quant_block_size == 32  # the default: not sampled
            assert not any(name.endswith("quant_block_size") for name in p.params)
        assert p.candidate.graph_opt == "all"


def test_each_point_is_what_the_sampler_makes_of_its_parameters(grid: Grid) -> None:
    space = small_space()
    for p in grid.points:
        assert sample(optuna.trial.FixedTrial(p.params), space) == p.candidate
        assert p.params["engine"] == p.candidate.engine


def test_every_optuna_draw_lands_on_an_enumerated_combination() -> None:
    space = small_space()
    combos = {tuple(sorted(params.items())) for params, _ in parameter_sets(space)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(60):
        trial = study.ask()
        sample(trial, space)
        assert tuple(sorted(trial.params.items())) in combos
        study.tell(trial, 0.0)


def test_a_space_with_one_value_per_knob_is_one_candidate() -> None:
    grid = enumerate_grid(small_space(engine=["torch"], quant=["none"], threads=[0], kv_cache=["dynamic"]), key, problem)
    assert (grid.combinations, grid.duplicates, len(grid)) == (1, 0, 1)
    assert "1 parameter combinations" in grid.describe()
