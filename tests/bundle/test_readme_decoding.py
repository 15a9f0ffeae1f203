"""The bundle README says how the measured requests chose their tokens, next to the figures."""

from __future__ import annotations

from dataclasses import asdict

from autoopt.bundle.write import _decoding
from autoopt.config.schema import DecodingConfig


def test_the_readme_says_greedy_or_the_sampling_the_figures_include() -> None:
    assert _decoding({}) == "greedy decoding"  # a manifest from before the decoding was recorded
    assert _decoding({"decoding": asdict(DecodingConfig(temperature=0.9, top_k=1))}) == "greedy decoding"
    text = _decoding({"decoding": asdict(DecodingConfig(temperature=0.8, top_p=0.9))})
    assert text.startswith("every row sampling at temperature 0.8, top_p 0.9 (") and "top_k" not in text
    assert "the snippet below decodes greedily" in text
