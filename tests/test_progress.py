"""A job's steps reach whoever listens, in this process or from a child through the file its launcher follows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autoopt.progress import CHILD_ENV, Follower, listening, say


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


def test_a_child_whose_launcher_follows_its_steps_appends_each_as_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "steps.txt"
    say("unheard")
    monkeypatch.setenv(CHILD_ENV, str(path))
    say("capacity probe 1: 2 req/s")
    say("two\nlines")
    assert path.read_text() == "capacity probe 1: 2 req/s\ntwo lines\n"


def test_the_follower_hands_on_each_whole_line_as_it_is_written_and_the_last_ones_at_stop(tmp_path: Path) -> None:
    path, heard = tmp_path / "steps.txt", []
    follower = Follower(path, heard.append)  # before the file exists, as before the child's first step
    with open(path, "a") as f:
        f.write("load\nwarm")
    deadline = time.monotonic() + 10
    while not heard and time.monotonic() < deadline:
        time.sleep(0.05)
    assert heard == ["load"]  # "warm" is not a whole line yet
    with open(path, "a") as f:
        f.write(" up\naccuracy\n")
    follower.stop()
    assert heard == ["load", "warm up", "accuracy"]
