"""The run's signal watch: while Ray starts, a signal is only remembered; afterwards it interrupts the driver."""
from __future__ import annotations

import os
import signal
import time

import pytest

from oba.suite.interrupt import stop_on_signals


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary


def test_a_signal_while_recording_is_remembered_and_raises_nothing_then_the_watch_interrupts() -> None:
    before = {each: signal.getsignal(each) for each in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_signals() as watch:
        watch.record_only()
        _deliver(signal.SIGTERM)
        _deliver(signal.SIGINT)
        assert watch.received == signal.SIGTERM  # the first one counts
        watch.install()
        with pytest.raises(KeyboardInterrupt):
            _deliver(signal.SIGTERM)
    assert {each: signal.getsignal(each) for each in before} == before  # the previous handlers are back
