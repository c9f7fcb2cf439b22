"""What redis-pool and nginx-keepalive measure about each variant, and the checks they share.

Pure: built from the capture's Connections (who closed first, when) and socket-state
samples, so it is unit-tested with synthetic records. The expected TIME_WAIT counts are
not guessed from the application: they follow from the first-FIN side seen in the capture
and the kernel rule in _closes.time_wait_expected().
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tcpdoctor.lab.model import Check, Measure
from tcpdoctor.lab.scenarios._closes import (
    Closer,
    Connection,
    closer_summary,
    closers,
    time_wait_expected,
)

TIME_WAIT = "TIME_WAIT"
ESTABLISHED = "ESTABLISHED"
TW_BASIS = (
    "the side that sent the first FIN (capture) holds TIME_WAIT for TCP_TIMEWAIT_LEN = 60 s "
    "(tcp_time_wait(), notes 1.2); the passive side keeps nothing"
)


@dataclass(frozen=True)
class StateCount:
    """Socket states one side showed at one moment (taken_at: CLOCK_REALTIME)."""

    taken_at: float
    counts: Mapping[str, int]

    def get(self, state: str) -> int:
        return int(self.counts.get(state, 0))


@dataclass(frozen=True)
class VariantFacts:
    """Everything measured about one variant."""

    key: str
    label: str
    requests: int
    successes: int
    failures: Mapping[str, int]
    rate: float | None  # successful requests per second
    conns: tuple[Connection, ...]  # from the capture, this variant's server address only
    held: tuple[StateCount, StateCount]  # (client, server) with the client's sockets open
    after: tuple[StateCount, StateCount]  # (client, server) after the client closed them
    client_tw_before_close: int  # largest client TIME_WAIT sampled before the close

    @property
    def handshakes(self) -> int:
        return len(self.conns)

    def closed_by(self, side: Closer) -> int:
        return closers(self.conns).get(side.label, 0)

    def as_dict(self) -> dict[str, Measure]:
        """Flat measured values, keys prefixed with the variant."""
        k = self.key
        client_after, server_after = self.after
        client_held, server_held = self.held
        return {
            f"{k}_attempts": self.requests,
            f"{k}_successes": self.successes,
            f"{k}_failures": sum(self.failures.values()),
            f"{k}_errors": ",".join(sorted(self.failures)) or None,
            f"{k}_rate": None if self.rate is None else round(self.rate, 1),
            f"{k}_handshakes": self.handshakes,
            f"{k}_first_fin_by": closer_summary(self.conns),
            f"{k}_client_time_wait_held": client_held.get(TIME_WAIT),
            f"{k}_server_time_wait_held": server_held.get(TIME_WAIT),
            f"{k}_client_established_held": client_held.get(ESTABLISHED),
            f"{k}_client_time_wait_after": client_after.get(TIME_WAIT),
            f"{k}_server_time_wait_after": server_after.get(TIME_WAIT),
        }


def _check(name: str, what: str, low: int, high: int, measured: int | None, basis: str) -> Check:
    agree = measured is not None and low <= measured <= high
    if low == high:
        return Check(name, what, low, measured, agree, basis=basis)
    return Check(name, what, low, measured, agree, "", low, high, basis)


def count_check(name: str, what: str, expected: int, measured: int | None, basis: str) -> Check:
    return _check(name, what, expected, expected, measured, basis)


def range_check(
    name: str, what: str, low: int, high: int, measured: int | None, basis: str
) -> Check:
    return _check(name, what, low, high, measured, basis)


def time_wait_check(
    facts: VariantFacts,
    side: Closer,
    moment: str,
    *,
    slack: float,
    max_buckets: int | None,
) -> Check:
    """The TIME_WAITs `side` showed at `moment` ("held" or "after") against the count the
    capture's closers predict for the time that sample was taken."""
    pair = facts.held if moment == "held" else facts.after
    sample = pair[0] if side is Closer.CLIENT else pair[1]
    expected = time_wait_expected(
        facts.conns, side, sample.taken_at, slack=slack, max_buckets=max_buckets
    )
    when = "with the connections open" if moment == "held" else "after the client closed"
    return range_check(
        f"{facts.key}_{side.label}_time_wait_{moment}",
        f"{facts.label}: {side.label} TIME_WAIT {when}",
        expected.low,
        expected.high,
        sample.get(TIME_WAIT),
        TW_BASIS,
    )


@dataclass(frozen=True)
class Knobs:
    """What the TIME_WAIT counts depend on besides the closes themselves."""

    time_wait_slack: float  # timer-wheel lateness of the 60 s TIME_WAIT timer
    client_max_tw_buckets: Mapping[str, int | None]  # variant key -> tcp_max_tw_buckets
    server_max_tw_buckets: int | None


def tw_check(facts: VariantFacts, side: Closer, moment: str, knobs: Knobs) -> Check:
    """time_wait_check() with the namespace's slack and tcp_max_tw_buckets."""
    buckets = (
        knobs.client_max_tw_buckets.get(facts.key)
        if side is Closer.CLIENT
        else knobs.server_max_tw_buckets
    )
    return time_wait_check(facts, side, moment, slack=knobs.time_wait_slack, max_buckets=buckets)


def closer_check(facts: VariantFacts, expected: str, basis: str) -> Check:
    return Check(
        f"{facts.key}_first_fin_by",
        f"{facts.label}: side that sent the first FIN",
        expected,
        closer_summary(facts.conns),
        closer_summary(facts.conns) == expected,
        basis=basis,
    )


def failures_check(facts: VariantFacts) -> Check:
    return count_check(
        f"{facts.key}_failures",
        f"{facts.label}: failed requests",
        0,
        sum(facts.failures.values()),
        "a healthy server on an idle link answers every request",
    )


def verdict(checks: Iterable[Check]) -> str:
    """One line: every check, measured (expected), and whether they all agree."""
    items = list(checks)
    parts = [f"{c.what} {_show(c.measured, c.unit)} (expected {_expected(c)})" for c in items]
    ok = bool(items) and all(c.agree for c in items)
    return "measured vs expected: " + "; ".join(parts) + (" -> agree" if ok else " -> DISAGREE")


def _show(value: Measure, unit: str) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.3f}".rstrip("0").rstrip(".")
        return f"{text} {unit}".rstrip()
    return f"{value} {unit}".rstrip()


def _expected(check: Check) -> str:
    if check.low is not None and check.high is not None:
        return f"{_show(check.low, '')}-{_show(check.high, check.unit)}"
    if check.low is not None:
        return f">= {_show(check.expected, check.unit)}"
    if check.high is not None:
        return f"<= {_show(check.expected, check.unit)}"
    return _show(check.expected, check.unit)


def merged(items: Sequence[VariantFacts]) -> dict[str, Measure]:
    out: dict[str, Measure] = {}
    for facts in items:
        out.update(facts.as_dict())
    return out


__all__ = [
    "TW_BASIS",
    "Knobs",
    "StateCount",
    "VariantFacts",
    "closer_check",
    "count_check",
    "failures_check",
    "merged",
    "range_check",
    "time_wait_check",
    "tw_check",
    "verdict",
]
