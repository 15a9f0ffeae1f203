"""Signals that stop a long command: inside `stopping_on_signals` one raises `Stopped` where the main thread is;
inside `signals_held` it waits for the block to end (the cleanup an interrupted trial needs), then acts."""

from __future__ import annotations

import signal

import pytest

from autoopt.signals import Stopped, signals_held, stopping_on_signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_the_block_where_it_is(signum: int) -> None:
    with pytest.raises(Stopped) as stopped, stopping_on_signals():
        signal.raise_signal(signum)
        pytest.fail("the block went on after the signal")
    assert stopped.value.signum == signum


def test_a_held_signal_lets_the_block_finish_then_stops_once() -> None:
    finished = []
    with pytest.raises(Stopped) as stopped, stopping_on_signals():
        with signals_held():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)  # a second one while held is not raised again
            finished.append(True)
        pytest.fail("the held signal did not act once the block ended")
    assert finished == [True] and stopped.value.signum == signal.SIGTERM


def test_the_handlers_before_are_restored() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with stopping_on_signals(), signals_held():
        pass
    assert {sig: signal.getsignal(sig) for sig in before} == before
