"""A time bound on pure-Python work (Torch-Pruning's graph build) in any thread.

Torch-Pruning can loop forever on some graphs (torchvision ``swin_t``), and a
Python thread cannot be killed. :func:`call_with_deadline` therefore runs the work in the
*calling* thread and starts a watchdog thread that, once the time is up, raises
an exception inside the caller with ``PyThreadState_SetAsyncExc``. That works
from any thread (SIGALRM works only in the main thread), costs nothing while the
work runs (unlike a trace function, which slows every Python line), and needs no
pickling of the model (unlike a subprocess, which also could not hand back a
graph that refers to the caller's modules). The exception unwinds the work
itself, so nothing keeps running afterwards. It is raised again every
:data:`REPEAT_SECONDS` in case a bare ``except:`` swallows it (Torch-Pruning's
trace retries once under one; work that swallows it every time cannot be stopped
from inside its thread), and a pending one is withdrawn when the work ends, so it
never lands in unrelated code.
A long C call (one big tensor operation) is interrupted when it returns.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from types import FrameType
from typing import Callable, TypeVar

from oba._errors import UserError

GRAPH_BUILD_SECONDS = 60.0
ENV_VAR = "OBA_GRAPH_BUILD_SECONDS"
REPEAT_SECONDS = 0.1
T = TypeVar("T")


class GraphBuildTimeout(UserError):
    """Building a model's pruning groups took longer than the time bound."""


class _Expired(BaseException):
    """Raised inside the timed thread; a BaseException so ``except Exception`` lets it pass."""


def build_seconds(seconds: float | None = None) -> float:
    """``seconds`` if given, else ``$OBA_GRAPH_BUILD_SECONDS``, else :data:`GRAPH_BUILD_SECONDS`."""
    if seconds is not None:
        return float(seconds)
    value = os.environ.get(ENV_VAR)
    if value is None:
        return GRAPH_BUILD_SECONDS
    try:
        return float(value)
    except ValueError:
        raise UserError(f"{ENV_VAR}={value!r} is not a number of seconds") from None


def _set_async_exc(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``thread_id`` at its next bytecode; ``None`` withdraws a pending one."""
    exc = ctypes.py_object(exc_type) if exc_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exc)


def call_stack(frame: FrameType | None) -> list[FrameType]:
    """``frame`` and its callers, innermost first."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


def call_with_deadline(fn: Callable[[], T], until: float, message: str,
                       where: Callable[[FrameType], str | None] | None = None) -> T:
    """``fn()``, or :class:`GraphBuildTimeout` with ``message`` if it runs past the monotonic time ``until``.

    ``where(frame)`` may describe where ``fn`` was when time ran out (``None`` if
    it cannot tell); it is appended to the message. The clean-up sits in a
    ``finally`` whose first instruction is inside its own ``try``, so a late
    exception cannot skip it.
    """
    watchdog = _Watchdog(until - time.monotonic(), where)
    try:
        watchdog.start()
        return fn()
    except _Expired:
        at = f" (stuck in {watchdog.location})" if watchdog.location else ""
        raise GraphBuildTimeout(message + at) from None
    finally:
        while True:
            try:
                watchdog.stop()
                break
            except _Expired:
                continue


class _Watchdog:
    """Raises :class:`_Expired` in the thread that created it once ``seconds`` have passed, until stopped."""

    def __init__(self, seconds: float, where: Callable[[FrameType], str | None] | None) -> None:
        self.seconds, self.where = seconds, where
        self.location: str | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._fired = False
        self._target = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, name="oba-graph-deadline", daemon=True)

    def start(self) -> None:
        """Start counting."""
        self._thread.start()

    def stop(self) -> None:
        """Stop for good, withdraw an exception not yet delivered and wait for the watchdog thread."""
        with self._lock:
            self._stopped.set()
            if self._fired:
                _set_async_exc(self._target, None)
        if self._thread.ident is not None:
            self._thread.join()

    def _watch(self) -> None:
        if self._stopped.wait(max(self.seconds, 0.0)):
            return
        self.location = self._describe()
        while True:
            with self._lock:
                if self._stopped.is_set():
                    return
                self._fired = True
                _set_async_exc(self._target, _Expired)
            if self._stopped.wait(REPEAT_SECONDS):
                return

    def _describe(self) -> str | None:
        frame = sys._current_frames().get(self._target)
        if frame is None or self.where is None:
            return None
        try:
            return self.where(frame)
        except Exception:  # a best-effort hint must never hide the timeout itself
            return None

