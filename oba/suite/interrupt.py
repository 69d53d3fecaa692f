"""Stopping a run on SIGINT or SIGTERM: interrupt the driver, so that it shuts Ray down and reports what is stored.

Every stored cell is an atomically written Parquet part, so stopping loses only
the cells in flight; the next run skips what is stored. A second signal while
the run shuts down acts as the default action (the process ends at once).
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalWatch:
    """Turns the first SIGINT or SIGTERM into ``KeyboardInterrupt`` in the main thread and remembers which it was.

    ``received`` is None until a signal arrives. The signal is remembered apart
    from the exception because Ray turns any exception raised inside its
    blocking calls into a bare ``KeyboardInterrupt``.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    def install(self) -> None:
        """Handle SIGINT and SIGTERM here (again: ``ray.init`` replaces the SIGTERM handler)."""
        for each in SIGNALS:
            signal.signal(each, self._handle)

    def record_only(self) -> None:
        """Remember SIGINT and SIGTERM without raising (while Ray starts: an exception raised inside ``ray.init``
        can be swallowed there, or leave it half started); :meth:`install` handles them again."""
        for each in SIGNALS:
            signal.signal(each, self._record)

    def _record(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum)
        for each in SIGNALS:
            signal.signal(each, signal.SIG_DFL)
        raise KeyboardInterrupt(self.received.name)


@contextmanager
def stop_on_signals() -> Iterator[SignalWatch]:
    """Within the block, the first SIGINT or SIGTERM raises ``KeyboardInterrupt``; the yielded watch says which.

    The previous handlers are restored on leaving. Outside the main thread,
    where Python delivers no signal, nothing is installed.
    """
    watch = SignalWatch()
    if threading.current_thread() is not threading.main_thread():
        yield watch
        return
    previous = {each: signal.getsignal(each) for each in SIGNALS}
    watch.install()
    try:
        yield watch
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)
