"""The cleanup registry: everything a run creates is undone, newest first, on every exit.

Each resource is registered right after it exists, with a function that removes it. The
registry undoes them in reverse order when its `with` block ends, however it ends: normal
return, exception, Ctrl-C (SIGINT) or SIGTERM. `stop_on_signals()` turns those two
signals into exceptions for the duration of a run only, and restores the previous
handlers afterwards. While the undo runs, further signals are held back so that a second
Ctrl-C cannot leave half the topology behind.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType, TracebackType

from tcpdoctor.errors import ExitCode, TcpDoctorError

UNDO_BUDGET_S = 60.0  # the whole undo never takes longer than this (each step has its own)


class Interrupted(TcpDoctorError):
    """The run was stopped by SIGINT or SIGTERM; everything it created was removed."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class UndoFailure:
    label: str
    error: str


class CleanupRegistry:
    """A stack of undo actions. Use as a context manager; undo_all() is idempotent."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.RLock()  # an undo may register (and so undo) more
        self.closing = False
        self.undone: list[str] = []
        self.failures: list[UndoFailure] = []

    def register(self, label: str, undo: Callable[[], None]) -> None:
        with self._lock:
            if self.closing:
                # Created while we were already tearing down: remove it at once.
                self._run_one(label, undo)
                return
            self._actions.append((label, undo))

    def __len__(self) -> int:
        return len(self._actions)

    def undo_all(self) -> list[UndoFailure]:
        """Undo every registered action, newest first. Failures are collected, not raised."""
        with self._lock:
            self.closing = True
            deadline = time.monotonic() + UNDO_BUDGET_S
            while self._actions:
                label, undo = self._actions.pop()
                if time.monotonic() > deadline:
                    self.failures.append(UndoFailure(label, "skipped: cleanup budget spent"))
                    continue
                self._run_one(label, undo)
        return list(self.failures)

    def _run_one(self, label: str, undo: Callable[[], None]) -> None:
        try:
            undo()
        except Exception as err:  # one failed step must not stop the others
            self.failures.append(UndoFailure(label, str(err) or type(err).__name__))
        else:
            self.undone.append(label)

    def __enter__(self) -> CleanupRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with _signals_held():
                self.undo_all()
        finally:
            if self._actions:  # a signal arrived before the hold began: finish the job
                self.undo_all()
        for failure in self.failures:
            print(
                f"tcpdoctor: warning: could not undo {failure.label}: {failure.error} "
                "(run 'tcpdoctor lab cleanup')",
                file=sys.stderr,
            )


_HANDLED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT/SIGTERM raise Interrupted in the main thread while the block runs.

    Outside the main thread (where Python cannot install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, handler) for sig in _HANDLED}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM until the block is done (main thread only), then re-deliver
    the first one that arrived, so the caller still learns it was asked to stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        pending.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in _HANDLED}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if pending:
            signal.raise_signal(pending[0])
