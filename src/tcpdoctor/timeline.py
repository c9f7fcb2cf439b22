"""Timelines: what happened, second by second, in a real-kernel run or a simulated one.

A Timeline is the one shape the lab and the simulator both produce, so comparing them is a
function of two Timelines. It holds per-second buckets (connection attempts that succeeded,
failures by error name, socket counts by state for each host) and point events (time, kind,
detail). Time is seconds since the run started. Nothing here knows about namespaces.

Build one with TimelineRecorder; turn one into plain JSON values with to_json().
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BUCKET_SECONDS = 1.0


@dataclass(frozen=True)
class Bucket:
    """Second `t` (covering [t, t + 1) seconds after the start)."""

    t: int
    successes: int
    failures: Mapping[str, int]  # error name (EADDRNOTAVAIL, ETIMEDOUT, ...) -> count
    states: Mapping[str, Mapping[str, int]]  # host -> state name -> sockets, last sample

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


@dataclass(frozen=True)
class Event:
    t: float
    kind: str
    detail: str = ""


@dataclass(frozen=True)
class Timeline:
    buckets: tuple[Bucket, ...]
    events: tuple[Event, ...]
    bucket_s: float = BUCKET_SECONDS

    @property
    def successes(self) -> int:
        return sum(b.successes for b in self.buckets)

    @property
    def failures(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for bucket in self.buckets:
            for name, count in bucket.failures.items():
                total[name] = total.get(name, 0) + count
        return total

    def peak(self, host: str, state: str) -> int:
        """Largest sampled count of `state` sockets on `host` (0 if never seen)."""
        return max((b.states.get(host, {}).get(state, 0) for b in self.buckets), default=0)

    def first_event(self, kind: str) -> Event | None:
        return next((e for e in self.events if e.kind == kind), None)


@dataclass
class _OpenBucket:
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    states: dict[str, dict[str, int]] = field(default_factory=dict)


class TimelineRecorder:
    """Collects attempts, state samples and events; freeze() returns the Timeline.

    Times before the start (t < 0) are clamped into the first bucket. Every second from 0 to
    the last one seen gets a bucket, so quiet seconds show up as zeros.
    """

    def __init__(self, duration: float | None = None) -> None:
        self._open: dict[int, _OpenBucket] = {}
        self._events: list[Event] = []
        self._last = 0
        if duration is not None and math.isfinite(duration) and duration > 0:
            self._last = math.ceil(duration / BUCKET_SECONDS) - 1

    def _bucket(self, t: float) -> _OpenBucket:
        index = _index(t)
        self._last = max(self._last, index)
        return self._open.setdefault(index, _OpenBucket())

    def attempt(self, t: float, error: str | None = None) -> None:
        bucket = self._bucket(t)
        if error is None:
            bucket.successes += 1
        else:
            bucket.failures[error] = bucket.failures.get(error, 0) + 1

    def states(self, t: float, host: str, counts: Mapping[str, int]) -> None:
        """A socket-state sample; a later sample in the same second replaces an earlier one."""
        self._bucket(t).states[host] = {k: int(v) for k, v in counts.items() if v}

    def event(self, t: float, kind: str, detail: str = "") -> None:
        self._events.append(Event(round(t, 6), kind, detail))

    def freeze(self) -> Timeline:
        empty = _OpenBucket()
        buckets = []
        for index in range(self._last + 1):
            raw = self._open.get(index, empty)
            buckets.append(
                Bucket(
                    t=index,
                    successes=raw.successes,
                    failures=dict(sorted(raw.failures.items())),
                    states={h: dict(sorted(c.items())) for h, c in sorted(raw.states.items())},
                )
            )
        events = tuple(sorted(self._events, key=lambda e: e.t))
        return Timeline(buckets=tuple(buckets), events=events)


@dataclass(frozen=True)
class Phase:
    """Consecutive seconds with the same outcome: "ok", "failing", "mixed" or "idle"."""

    start: int
    end: int  # exclusive
    outcome: str
    successes: int
    failures: Mapping[str, int]


def _outcome(bucket: Bucket) -> str:
    if bucket.successes and bucket.failed:
        return "mixed"
    if bucket.successes:
        return "ok"
    return "failing" if bucket.failed else "idle"


def phases(timeline: Timeline) -> tuple[Phase, ...]:
    """The run told in phases, e.g. ok 0-1 s, failing 1-61 s, mixed 61-66 s."""
    found: list[Phase] = []
    for bucket in timeline.buckets:
        outcome = _outcome(bucket)
        if found and found[-1].outcome == outcome:
            last = found[-1]
            failures = dict(last.failures)
            for name, count in bucket.failures.items():
                failures[name] = failures.get(name, 0) + count
            found[-1] = Phase(
                last.start, bucket.t + 1, outcome, last.successes + bucket.successes, failures
            )
        else:
            found.append(
                Phase(bucket.t, bucket.t + 1, outcome, bucket.successes, dict(bucket.failures))
            )
    return tuple(found)


def _index(t: float) -> int:
    if not math.isfinite(t) or t < 0:
        return 0
    return int(t // BUCKET_SECONDS)


def to_json(timeline: Timeline) -> dict[str, Any]:
    """The timeline as plain JSON values (keys documented in docs/json.md)."""
    return {
        "bucket_s": timeline.bucket_s,
        "buckets": [
            {
                "t": b.t,
                "successes": b.successes,
                "failures": dict(b.failures),
                "states": {host: dict(counts) for host, counts in b.states.items()},
            }
            for b in timeline.buckets
        ],
        "events": [{"t": e.t, "kind": e.kind, "detail": e.detail} for e in timeline.events],
    }


def from_json(data: Mapping[str, Any]) -> Timeline:
    """Inverse of to_json(), for comparing saved runs."""
    buckets = tuple(
        Bucket(
            t=int(b["t"]),
            successes=int(b["successes"]),
            failures={str(k): int(v) for k, v in b["failures"].items()},
            states={
                str(h): {str(s): int(n) for s, n in counts.items()}
                for h, counts in b["states"].items()
            },
        )
        for b in data["buckets"]
    )
    events = tuple(
        Event(float(e["t"]), str(e["kind"]), str(e.get("detail", ""))) for e in data["events"]
    )
    return Timeline(buckets=buckets, events=events, bucket_s=float(data["bucket_s"]))


__all__ = [
    "BUCKET_SECONDS",
    "Bucket",
    "Event",
    "Phase",
    "Timeline",
    "TimelineRecorder",
    "from_json",
    "phases",
    "to_json",
]
