"""Guards shared by the fuzz tests."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Hang(Exception):
    """The code under test did not return in time."""


@contextmanager
def time_limit(seconds: float, what: str = "the parser") -> Iterator[None]:
    """Turn code that never returns into a test failure (SIGALRM; main thread only)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"{what} did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
