"""Pure pieces shared by the timer scenarios' models: checks over a schedule of waits, the
sooner give-up that late timers can cause, and the verdict line.

A kernel timer never fires early but may fire late (the timer wheel rounds its expiry up,
kernel/timing.timer_slack), so every expected wait is compared with
tolerance(wait, slack=late(wait)), where `late` is the lateness for the running kernel's
CONFIG_HZ. A time measured over several chained timers allows the sum of their lateness.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

from tcpdoctor.lab.model import Check, Measure, Window, tolerance, within
from tcpdoctor.lab.pcap import Flow, Segment, TcpFlags, in_flow

Lateness = Callable[[float], float]  # nominal timer length (s) -> how late it may fire (s)


def no_lateness(_seconds: float) -> float:
    return 0.0


def chained(waits: Sequence[float], late: Lateness, *, resolution: float = 0.0) -> Window:
    """The window for the end of a chain of timers, each re-armed when the last fired."""
    return tolerance(sum(waits), slack=sum(late(w) for w in waits), resolution=resolution)


def wait_checks(
    prefix: str,
    what: str,
    expected: Sequence[float],
    measured: Sequence[float],
    late: Lateness,
    basis: str,
) -> tuple[Check, ...]:
    """One check per wait `prefix_1`, `prefix_2`, ...: a wait the kernel did not make
    fails with measured None, one it made beyond the schedule fails with expected None."""
    checks: list[Check] = []
    for index in range(max(len(expected), len(measured))):
        name, label = f"{prefix}_{index + 1}", f"{what} {index + 1}"
        got = measured[index] if index < len(measured) else None
        if index < len(expected):
            wait = expected[index]
            window = tolerance(wait, slack=late(wait))
            checks.append(within(name, label, window, got, basis=basis))
        else:
            extra = None if got is None else round(got, 6)
            checks.append(Check(name, label, None, extra, False, "s", basis="not in the schedule"))
    return tuple(checks)


@dataclass(frozen=True)
class Schedule:
    """Transmission times since the first one, and when the socket gives up."""

    transmits: tuple[float, ...]
    gives_up_at: float

    @property
    def gaps(self) -> tuple[float, ...]:
        return tuple(b - a for a, b in pairwise(self.transmits))

    @property
    def waits(self) -> tuple[float, ...]:
        """Every timer the kernel armed: the gaps, then the wait that ended in the give-up."""
        return (*self.gaps, self.gives_up_at - self.transmits[-1])

    def cut_at(self, expiry: float) -> Schedule:
        """The same run, giving up at `expiry` instead of retransmitting there."""
        return Schedule(tuple(t for t in self.transmits if t < expiry), expiry)


def chosen(nominal: Schedule, sooner: Schedule | None, transmissions: int) -> Schedule:
    """The nominal schedule, or the sooner one when late timers explain what was seen."""
    if sooner is not None and transmissions == len(sooner.transmits):
        return sooner
    return nominal


class EarlyGiveUp(NamedTuple):
    """A give-up one expiry sooner than the nominal schedule, caused by late timers."""

    expiry: int  # index into the expiries that retransmitted in the nominal schedule
    at: float  # when that expiry happens (nominal, same clock as the expiries)
    headroom: float  # budget - elapsed at that expiry, nominally
    lateness: float  # how late the timers before it may have fired, together


def early_give_up(
    expiries: Sequence[float],
    clock_start: float,
    budget: float,
    late: Lateness,
    *,
    first_can_give_up: bool = True,
) -> EarlyGiveUp | None:
    """The first retransmitting expiry where a late clock could already reach the budget.

    retransmits_timed_out() compares the time since retrans_stamp with the budget at each
    expiry. Nominally `expiries[k] - clock_start < budget` (the timer retransmitted), but
    each timer since the clock started may have fired late, and the lateness adds up. When
    it can exceed the headroom, the kernel may give up at that expiry instead.
    """
    previous = clock_start
    lateness = 0.0
    for index, at in enumerate(expiries):
        if at < clock_start:
            continue
        if at > previous:  # the expiry that started the clock has no wait of its own
            lateness += late(at - previous)
        previous = at
        headroom = budget - (at - clock_start)
        if index == 0 and not first_can_give_up:
            continue
        if 0 < headroom <= lateness:
            return EarlyGiveUp(index, at, headroom, lateness)
    return None


# --- RTT samples from a capture ---------------------------------------------------------

_SEQ_MOD = 1 << 32


def acknowledges(ack: int, end_seq: int) -> bool:
    """ack covers end_seq (RFC 1982 serial arithmetic, as the kernel's !before())."""
    return (ack - end_seq) % _SEQ_MOD < _SEQ_MOD // 2


def rtt_samples(segments: Sequence[Segment], flow: Flow, before: float) -> tuple[float, ...]:
    """The RTT samples the sender took, as the capture saw them: SYN to SYN-ACK, then each
    data segment to the first ACK covering it, for segments sent before `before` and sent
    once only (Karn: a retransmitted segment gives no sample)."""
    both = in_flow(segments, flow)
    sent = [s for s in both if Flow.of(s) == flow and s.t < before]
    back = [s for s in both if Flow.of(s) != flow]
    seen: dict[int, int] = {}
    for s in sent:
        if s.seq_space:
            seen[s.seq] = seen.get(s.seq, 0) + 1
    samples = []
    for s in sent:
        if not s.seq_space or seen[s.seq] > 1:
            continue
        syn = bool(s.flags & TcpFlags.SYN)
        reply = next(
            (
                r
                for r in back
                if r.t >= s.t
                and r.flags & TcpFlags.ACK
                and (not syn or r.flags & TcpFlags.SYN)
                and acknowledges(r.ack, s.end_seq)
            ),
            None,
        )
        if reply is not None:
            samples.append(max(reply.t - s.t, 1e-6))  # the estimator wants > 0
    return tuple(samples)


# --- the verdict --------------------------------------------------------------------------


def seconds(value: Measure) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool | str):
        return str(value)
    return f"{value:.3f}".rstrip("0").rstrip(".") + " s"


def series(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.3f}".rstrip("0").rstrip(".") for v in values) or "none"


def verdict(parts: Sequence[str], checks: Sequence[Check], why: Sequence[str] = ()) -> str:
    """'measured vs expected: <parts> -> agree' (or DISAGREE, naming the checks that
    failed), then the sentences that explain the numbers."""
    ok = bool(checks) and all(c.agree for c in checks)
    text = "measured vs expected: " + "; ".join(parts)
    if ok:
        text += " -> agree"
    else:
        failed = ", ".join(c.what for c in checks if not c.agree)
        text += f" -> DISAGREE ({failed or 'nothing was checked'})"
    return text + "".join(f". {sentence}" for sentence in why if sentence)
