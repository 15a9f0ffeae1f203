"""The search benchmark's command line refuses what it cannot replay, in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autoopt.searchbench.__main__ import _options


def test_the_serving_objective_is_refused_in_one_line_before_any_measurement(tmp_path) -> None:
    cmd = [sys.executable, "-m", "autoopt.searchbench", "search.objective=serving", f"workspace={tmp_path}"]

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "search.objective=serving" in proc.stderr
    assert not (tmp_path / "searchbench").exists()


@pytest.mark.parametrize("flag", ["--truth", "--prior"])
def test_a_missing_ground_truth_file_is_refused_before_any_measurement(
    flag: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _options([flag, str(tmp_path / "gone.json")])

    assert exit_.value.code == 2
    assert f"{flag} {tmp_path / 'gone.json'}: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "said"), [
    (["--samplers", "tpe,foo"], "--samplers foo: no such sampler; choose from "),
    (["--seeds", "0"], "--seeds 0 must be >= 1"),
    (["--max-trials", "-1"], "--max-trials -1 must be >= 1"),
])
def test_each_bad_flag_is_named_in_its_refusal(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _options(argv)

    assert exit_.value.code == 2 and said in capsys.readouterr().err
