"""A job's steps reach whoever listens, in this process or through a child's stderr, and nobody else."""

from __future__ import annotations

import pytest

from autoopt.progress import CHILD_ENV, LINE_PREFIX, listening, said, say


def test_each_step_reaches_the_innermost_listener_and_the_outer_one_after_it() -> None:
    outer: list[str] = []
    inner: list[str] = []
    with listening(outer.append):
        say("a")
        with listening(inner.append):
            say("b")
        say("c")
    say("d")  # nobody listening
    assert (outer, inner) == (["a", "c"], ["b"])


def test_a_child_whose_launcher_reads_its_steps_writes_each_as_one_marked_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    say("unheard")
    monkeypatch.setenv(CHILD_ENV, "1")
    say("capacity probe 1: 2 req/s")
    err = capsys.readouterr().err
    assert err == LINE_PREFIX + "capacity probe 1: 2 req/s\n"
    assert said(err) == "capacity probe 1: 2 req/s" and said("[INFO] capacity probe 1\n") is None
