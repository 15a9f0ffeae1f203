"""The knobs that feed a pass take only values the pass declares (the pass's tables are its home; the knob
declarations in the config layer cannot import them, so this test keeps the two in step)."""

from __future__ import annotations

from autoopt.config.knobs import knobs_of
from autoopt.config.schema import CandidateConfig
from autoopt.passes import genai_build, ort_static
from autoopt.passes.plan import GENAI_LEVERS

KNOBS = knobs_of(CandidateConfig)


def test_genai_lever_knobs_take_only_values_the_builder_pass_declares() -> None:
    tables = {"algo": genai_build.ALGOS, "lm_head": genai_build.LM_HEAD, "embeddings": genai_build.EMBEDDINGS,
              "mixed_layers": genai_build.MIXED_LAYERS, "symmetric": {True: "", False: ""}}
    for knob, setting in GENAI_LEVERS.items():
        assert set(KNOBS[knob].choices) <= set(tables[setting]), knob
    assert set(KNOBS["quant_block_size"].choices) <= set(genai_build.BLOCK_SIZES)
    assert set(KNOBS["quant_accuracy_level"].choices) <= set(genai_build.ACCURACY_LEVELS)


def test_static_int8_knobs_take_only_values_the_calibration_pass_declares() -> None:
    assert set(KNOBS["calib_method"].choices) == set(ort_static.METHODS)
    assert set(KNOBS["calib_samples"].choices) == set(ort_static.SAMPLE_COUNTS)
