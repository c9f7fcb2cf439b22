"""Work in a daemon thread whose result (or error) is collected later by the caller."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """Starts `work` at once; result() waits for it and returns its value or raises its
    error in the caller's thread, so a failure reads as if the work had run inline."""

    def __init__(self, work: Callable[[], T], name: str) -> None:
        self._work = work
        self._outcome: list[T] = []
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._body, name=name, daemon=True)
        self._thread.start()

    def _body(self) -> None:
        try:
            self._outcome.append(self._work())
        except BaseException as err:  # handed back to the caller's thread in result()
            self._failure.append(err)

    def result(self) -> T:
        self._thread.join()
        if self._failure:
            raise self._failure[0]
        return self._outcome[0]
