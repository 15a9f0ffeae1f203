"""The study's sampler, as the sweep builds it."""

from __future__ import annotations

import warnings

import pytest

from autoopt.config.schema import SearchConfig
from autoopt.study.runner import make_sampler


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_building_the_sampler_prints_no_experimental_warning_to_the_user(sampler: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_sampler(SearchConfig(sampler=sampler))

    assert [str(w.message) for w in caught] == []
