"""syn-retries without the kernel: what to expect, how it compares with what was measured.

Every expected number comes from tcpdoctor.kernel.timing.syn_give_up(): the SYN
retransmission schedule (tcp_syn_linear_timeouts waits of the initial 1 s RTO, then
doubling up to rto_max), and the give-up at the first expiry where either the retry count
(tcp_syn_retries or TCP_SYNCNT, plus the linear timeouts) or the time budget
(tcp_model_timeout(retries, 1 s), or TCP_USER_TIMEOUT) is reached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import TCP_RTO_MAX, TCP_SYN_RETRIES
from tcpdoctor.kernel.sysctls import parse_int
from tcpdoctor.lab.model import Check, Measure, between, exact, within
from tcpdoctor.lab.scenarios._timer_model import (
    EarlyGiveUp,
    Lateness,
    Schedule,
    chained,
    chosen,
    early_give_up,
    seconds,
    series,
    verdict,
    wait_checks,
)

ETIMEDOUT = "ETIMEDOUT"
SYN_RETRIES = "net.ipv4.tcp_syn_retries"
LINEAR_TIMEOUTS = "net.ipv4.tcp_syn_linear_timeouts"
RTO_MAX_MS = "net.ipv4.tcp_rto_max_ms"
RELEVANT = (SYN_RETRIES, LINEAR_TIMEOUTS, RTO_MAX_MS)


@dataclass(frozen=True)
class SynKnobs:
    """The client's settings that decide the schedule."""

    syn_retries: int
    linear_timeouts: int  # 0 on kernels before 6.5 (no such sysctl: no linear phase)
    rto_max: float
    syncnt: int | None = None  # TCP_SYNCNT on the socket
    user_timeout_ms: int | None = None  # TCP_USER_TIMEOUT on the socket

    @classmethod
    def from_text(
        cls,
        client: Mapping[str, str | None],
        *,
        syncnt: int | None = None,
        user_timeout_ms: int | None = None,
    ) -> SynKnobs:
        """From values as /proc/sys shows them (None: this kernel has no such knob)."""
        rto_max_ms = _int(client, RTO_MAX_MS)
        return cls(
            syn_retries=_int(client, SYN_RETRIES) or TCP_SYN_RETRIES,
            linear_timeouts=_int(client, LINEAR_TIMEOUTS) or 0,
            rto_max=TCP_RTO_MAX if rto_max_ms is None else rto_max_ms / 1000,
            syncnt=syncnt,
            user_timeout_ms=user_timeout_ms,
        )

    @property
    def retries(self) -> int:
        """tcp_write_timeout(): icsk_syn_retries (TCP_SYNCNT) ?: tcp_syn_retries."""
        return self.syncnt or self.syn_retries

    @property
    def user_timeout(self) -> float | None:
        return None if not self.user_timeout_ms else self.user_timeout_ms / 1000


def _int(values: Mapping[str, str | None], name: str) -> int | None:
    text = values.get(name)
    return None if text is None else parse_int(text, what=name)


@dataclass(frozen=True)
class SynExpectation:
    knobs: SynKnobs
    give_up: timing.SynGiveUp
    nominal: Schedule
    sooner: Schedule | None  # when late timers can make the time budget run out earlier
    early: EarlyGiveUp | None

    def as_dict(self) -> dict[str, Measure]:
        g = self.give_up
        return {
            "syn_retries": self.knobs.retries,
            "linear_timeouts": g.linear_timeouts,
            "max_retransmissions": g.max_retransmits,
            "time_budget_s": g.budget,
            "user_timeout_s": g.user_timeout,
            "syns": len(self.nominal.transmits),
            "syn_times": series(self.nominal.transmits),
            "gives_up_at": g.schedule.gives_up_at,
            "reason": g.schedule.reason.label,
            "error": ETIMEDOUT,
            "syns_if_sooner": len(self.sooner.transmits) if self.sooner else None,
        }


def expect(knobs: SynKnobs, late: Lateness) -> SynExpectation:
    """What the kernel should do, from timing.syn_give_up() only."""
    give_up = timing.syn_give_up(
        knobs.retries,
        linear_timeouts=knobs.linear_timeouts,
        rto_max=knobs.rto_max,
        user_timeout=knobs.user_timeout,
    )
    plan = give_up.schedule
    nominal = Schedule((0.0, *plan.retransmit_times), plan.gives_up_at)
    # Only the time rule can move: the count rule counts retransmissions, not seconds.
    early = early_give_up(plan.retransmit_times, 0.0, give_up.budget, late, first_can_give_up=False)
    sooner = None
    if early is not None:
        sooner = nominal.cut_at(early.at)
    return SynExpectation(knobs, give_up, nominal, sooner, early)


@dataclass(frozen=True)
class SynObserved:
    """From the capture and the client; times in seconds since the first SYN."""

    syn_times: tuple[float, ...]
    error: str | None  # what connect() failed with (None: it succeeded)
    error_at: float | None
    answered: bool  # a SYN-ACK came back: the black hole did not hold

    def as_dict(self) -> dict[str, Measure]:
        return {
            "syns": len(self.syn_times),
            "syn_times": series(self.syn_times),
            "gives_up_at": None if self.error_at is None else round(self.error_at, 6),
            "error": self.error,
            "syn_ack_seen": self.answered,
        }


def plan_for(exp: SynExpectation, got: SynObserved) -> Schedule:
    return chosen(exp.nominal, exp.sooner, len(got.syn_times))


def compare(exp: SynExpectation, got: SynObserved, late: Lateness) -> tuple[Check, ...]:
    plan = plan_for(exp, got)
    fewest = len(exp.sooner.transmits) if exp.sooner else len(plan.transmits)
    measured_gaps = tuple(b - a for a, b in pairwise(got.syn_times))
    return (
        between(
            "syns",
            "SYNs sent",
            fewest,
            len(exp.nominal.transmits),
            len(got.syn_times),
            basis="syn_give_up(): 1 + retransmissions before the give-up",
        ),
        *wait_checks(
            "gap",
            "wait before SYN retransmission",
            plan.gaps,
            measured_gaps,
            late,
            basis="syn_give_up(): linear timeouts keep 1 s, then the RTO doubles",
        ),
        exact(
            "error",
            "connect() failed with",
            ETIMEDOUT,
            got.error,
            basis="tcp_write_err() after the last SYN timer",
        ),
        within(
            "gives_up_at",
            "connect() failed after",
            chained(plan.waits, late),
            got.error_at,
            basis=f"syn_give_up(): {exp.give_up.schedule.reason.label.replace('_', ' ')}",
        ),
        exact(
            "syn_ack_seen",
            "SYN-ACK seen",
            False,
            got.answered,
            basis="the path drops every packet (nft drop on the router)",
        ),
    )


def explain(exp: SynExpectation, got: SynObserved) -> tuple[str, ...]:
    g, knobs = exp.give_up, exp.knobs
    source = (
        f"TCP_SYNCNT={knobs.syncnt}" if knobs.syncnt else f"tcp_syn_retries={knobs.syn_retries}"
    )
    why = [
        f"{source} with tcp_syn_linear_timeouts={g.linear_timeouts}: the first "
        f"{g.linear_timeouts + 1} waits keep the initial 1 s RTO, later ones double"
    ]
    if g.user_timeout is not None:
        why.append(f"TCP_USER_TIMEOUT ({g.user_timeout:g} s) replaces the time budget")
    if g.schedule.reason is timing.GiveUpReason.RETRY_COUNT:
        why.append(f"It gives up on the count: {g.max_retransmits} retransmissions")
    else:
        why.append(
            f"It gives up on time, {g.budget:g} s after the first SYN, before the count "
            f"limit of {g.max_retransmits} retransmissions is reached"
        )
    if exp.early is not None and plan_for(exp, got) is exp.sooner:
        why.append(
            f"The timers fired up to {exp.early.lateness:.3f} s late in all, more than the "
            f"{exp.early.headroom:.3f} s left of the budget, so it gave up one expiry sooner"
        )
    return tuple(why)


def verdict_line(exp: SynExpectation, got: SynObserved, checks: Sequence[Check]) -> str:
    plan = plan_for(exp, got)
    parts = [
        f"{len(got.syn_times)} SYNs at {series(got.syn_times)} s "
        f"(expected {len(plan.transmits)} at {series(plan.transmits)})",
        f"{got.error or 'no error'} after {seconds(got.error_at)} "
        f"(expected {ETIMEDOUT} after {seconds(plan.gives_up_at)})",
    ]
    return verdict(parts, checks, explain(exp, got))
