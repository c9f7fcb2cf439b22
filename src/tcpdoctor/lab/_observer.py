"""Socket states of the lab's hosts over time, read with the same Snapshot reader as
`tcpdoctor scan` (observe/snapshot.take), from a background thread at a fixed period."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Self, TypeVar

from tcpdoctor.errors import TcpDoctorError
from tcpdoctor.lab.topology import Host
from tcpdoctor.observe import snapshot

DEFAULT_PERIOD_S = 1.0
MAX_SAMPLES = 100_000  # bound on memory whatever the run length
T = TypeVar("T")


@dataclass(frozen=True)
class StateSample:
    at: float  # time.monotonic()
    host: str  # role
    counts: dict[str, int]  # state label -> sockets


def sample(host: Host) -> StateSample:
    snap = snapshot.take(host.target)
    counts = {state.label: n for state, n in snap.count_by_state().items()}
    return StateSample(time.monotonic(), host.role, counts)


class Periodic(Generic[T]):
    """Calls `take` every `period` seconds in a thread until stop(); bounded in count. The
    first error is kept and raised by stop(), never lost."""

    def __init__(
        self, take: Callable[[], Iterable[T]], period: float, name: str = "lab-sampler"
    ) -> None:
        self._take = take
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.samples: list[T] = []
        self.error: TcpDoctorError | None = None

    def start(self) -> Self:
        self._thread.start()
        return self

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set() and len(self.samples) < MAX_SAMPLES:
            try:
                self.samples.extend(self._take())
            except TcpDoctorError as err:
                self.error = err
                return
            next_at += self._period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> list[T]:
        self._stop.set()
        self._thread.join(timeout=10 * self._period + 5)
        if self.error is not None:
            raise self.error
        return list(self.samples)


class StateSampler(Periodic[StateSample]):
    """Socket counts by state of every host, each `period` seconds."""

    def __init__(self, hosts: Sequence[Host], period: float = DEFAULT_PERIOD_S) -> None:
        chosen = tuple(hosts)
        super().__init__(lambda: [sample(host) for host in chosen], period)
