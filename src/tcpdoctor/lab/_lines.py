"""JSON lines from a lab child's stdout, read by a thread so every wait is bounded."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import IO, Any


class JsonLines:
    """JSON objects, one per line; other lines are skipped. The reading thread ends with
    the stream, so a child that dies or hangs never blocks a scenario past its deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.ended = False
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    self._queue.put(record)
        except (OSError, ValueError):
            pass
        self._queue.put(None)

    def get(self, deadline: float) -> dict[str, Any] | None:
        """The next record, or None at the deadline (time.monotonic()) or once the stream
        has ended."""
        if self.ended:
            return None
        try:
            record = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if record is None:
            self.ended = True
        return record

    def wait_for(
        self, kind: str, deadline: float
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """Records up to the first of `kind` (None if it never came in time), and the
        others seen meanwhile."""
        others: list[dict[str, Any]] = []
        while (record := self.get(deadline)) is not None:
            if record.get("kind") == kind:
                return record, others
            others.append(record)
        return None, others
