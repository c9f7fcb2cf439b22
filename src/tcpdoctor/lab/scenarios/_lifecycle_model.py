"""Pure pieces shared by the closing-state scenarios (time-wait-duration, time-wait-restart,
tw-bucket-overflow, linger-reset, close-wait-leak): socket samples, following one socket
through them, lifetimes, the timeline of state counts, and the verdict line.

Times are unix seconds (CLOCK_REALTIME): the Snapshot reader stamps each read with it and
packet captures carry kernel timestamps on the same clock, so both line up without
conversion. Nothing here touches the kernel, so it is unit-tested with synthetic samples.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from tcpdoctor.lab.model import Check, Measure, Window, tolerance, within
from tcpdoctor.timeline import Timeline, TimelineRecorder

MS = 0.001


class SockRow(NamedTuple):
    """One socket as a sample saw it (the fields these scenarios use)."""

    state: str  # kernel state name: TIME_WAIT, FIN_WAIT2, CLOSE_WAIT, ...
    local_port: int
    remote_port: int
    timer: str  # "timewait", "on", "off", ...
    expires_ms: int  # what inet_diag reports: the timer's nominal expiry minus now


class SocketSample(NamedTuple):
    at: float  # unix time the read started
    read_s: float  # how long the read took (the rows are from somewhere in between)
    host: str  # role: "client", "server"
    rows: tuple[SockRow, ...]

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in self.rows:
            found[row.state] = found.get(row.state, 0) + 1
        return found

    def find(self, local_port: int, state: str | None = None) -> SockRow | None:
        for row in self.rows:
            if row.local_port == local_port and (state is None or row.state == state):
                return row
        return None


class Track(NamedTuple):
    """One socket (by local port) in one state, followed through a host's samples."""

    port: int
    state: str
    first_seen: float | None
    first_expires: float | None  # seconds left on its timer in the first sample seen
    last_seen: float | None
    gone_at: float | None  # the first sample after last_seen that no longer shows it

    @property
    def seen(self) -> bool:
        return self.first_seen is not None

    @property
    def nominal_expiry(self) -> float | None:
        """When its timer said it would fire, as of the first sample (unix time)."""
        if self.first_seen is None or self.first_expires is None:
            return None
        return self.first_seen + self.first_expires


def of_host(samples: Iterable[SocketSample], host: str) -> list[SocketSample]:
    return sorted((s for s in samples if s.host == host), key=lambda s: s.at)


def follow(samples: Iterable[SocketSample], host: str, port: int, state: str) -> Track:
    first: SocketSample | None = None
    first_row: SockRow | None = None
    last: float | None = None
    gone: float | None = None
    for sample in of_host(samples, host):
        row = sample.find(port, state)
        if row is not None:
            if first is None:
                first, first_row = sample, row
            last, gone = sample.at, None
        elif last is not None and gone is None:
            gone = sample.at
    return Track(
        port=port,
        state=state,
        first_seen=None if first is None else first.at,
        first_expires=None if first_row is None else first_row.expires_ms * MS,
        last_seen=last,
        gone_at=gone,
    )


def lifetime(track: Track, start: float) -> float | None:
    """Seconds from `start` until a sample no longer showed the socket (an upper bound:
    it went somewhere between last_seen and gone_at)."""
    return None if track.gone_at is None else track.gone_at - start


def peak(samples: Iterable[SocketSample], host: str, state: str) -> int:
    return max((s.counts().get(state, 0) for s in samples if s.host == host), default=0)


def last_count(samples: Iterable[SocketSample], host: str, state: str) -> int | None:
    chosen = of_host(samples, host)
    return chosen[-1].counts().get(state, 0) if chosen else None


def max_gap(samples: Iterable[SocketSample], host: str) -> float:
    """The longest wait between two samples of a host: the resolution of 'gone at'."""
    times = [s.at for s in of_host(samples, host)]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def last_at(samples: Iterable[SocketSample]) -> float:
    """When the last sample was taken (0 when there is none): where a timeline ends."""
    return max((s.at for s in samples), default=0.0)


def max_read(samples: Iterable[SocketSample]) -> float:
    return max((s.read_s for s in samples), default=0.0)


# --- checks, verdict, timeline ------------------------------------------------------------


def r6(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(min, max) of the values, None for both when any is missing (a socket not seen)."""
    if not values or any(v is None for v in values):
        return None, None
    known = [v for v in values if v is not None]
    return min(known), max(known)


def within_each(
    name: str, what: str, window: Window, low: float | None, high: float | None, basis: str
) -> tuple[Check, Check]:
    """The smallest and the largest of several measurements, each against one window."""
    return (
        within(f"{name}_min", f"{what} (shortest)", window, low, basis=basis),
        within(f"{name}_max", f"{what} (longest)", window, high, basis=basis),
    )


def lifetime_window(expected: float, slack: float, resolution: float) -> Window:
    """The lab's rule for a kernel timer's length measured by sampling."""
    return tolerance(expected, slack=slack, resolution=resolution)


def verdict(checks: Iterable[Check]) -> str:
    items = list(checks)
    ok = bool(items) and all(c.agree for c in items)
    failed = [c for c in items if not c.agree]
    shown = failed or items
    parts = [f"{c.what} {_show(c.measured, c.unit)} (expected {_expected(c)})" for c in shown]
    head = f"measured vs expected, {len(items) - len(failed)}/{len(items)} checks agree: "
    return head + "; ".join(parts) + (" -> agree" if ok else " -> DISAGREE")


def _show(value: Measure, unit: str) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") + (f" {unit}" if unit else "")
    return f"{value}{' ' + unit if unit else ''}"


def _expected(check: Check) -> str:
    if check.low is not None and check.high is not None:
        return (
            f"{_show(check.expected, check.unit)}, {_show(check.low, '')}-{_show(check.high, '')}"
        )
    if check.low is not None:
        return f">= {_show(check.expected, check.unit)}"
    if check.high is not None:
        return f"<= {_show(check.expected, check.unit)}"
    return _show(check.expected, check.unit)


class Mark(NamedTuple):
    """A point event for the timeline: unix time, kind, detail."""

    at: float
    kind: str
    detail: str = ""


def build_timeline(
    samples: Iterable[SocketSample],
    t0: float,
    end: float,
    marks: Iterable[Mark] = (),
    outcomes: Iterable[tuple[float, str | None]] = (),
) -> Timeline:
    """Socket counts by state per host and second (the last sample of each second wins),
    plus the events and (time, error name or None for success) outcomes, relative to t0."""
    recorder = TimelineRecorder(end - t0)
    for sample in sorted(samples, key=lambda s: s.at):
        recorder.states(sample.at - t0, sample.host, sample.counts())
    for at, error in outcomes:
        recorder.attempt(at - t0, error)
    for mark in marks:
        recorder.event(mark.at - t0, mark.kind, mark.detail)
    return recorder.freeze()


def as_measures(values: Mapping[str, float | int | bool | str | None]) -> dict[str, Measure]:
    """Floats rounded to the microsecond, the rest as they are."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}
