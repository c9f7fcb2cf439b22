"""retransmission-timeout without the kernel: what to expect, how it compares.

The first RTO comes from the RTT samples the capture saw (the handshake and the request
before the path went dark), fed to kernel/timing.RttEstimator the way tcp_rtt_estimator()
takes them, with the namespace's rto_min and HZ. From there
kernel/timing.blackhole_retransmissions() gives every transmission: the tail loss probe,
the RTO retransmissions doubling up to rto_max, and the give-up once tcp_retries2's budget
(tcp_model_timeout with TCP_RTO_MIN), counted from the first RTO retransmission, is spent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import (
    TCP_EARLY_RETRANS_TLP,
    TCP_RETR2,
    TCP_RTO_MAX,
    TCP_RTO_MIN,
)
from tcpdoctor.kernel.sysctls import parse_int
from tcpdoctor.lab.model import Check, Measure, between, exact, tolerance, within
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
RETRIES2 = "net.ipv4.tcp_retries2"
RTO_MIN_US = "net.ipv4.tcp_rto_min_us"
RTO_MAX_MS = "net.ipv4.tcp_rto_max_ms"
EARLY_RETRANS = "net.ipv4.tcp_early_retrans"
SACK = "net.ipv4.tcp_sack"
RELEVANT = (RETRIES2, RTO_MIN_US, RTO_MAX_MS, EARLY_RETRANS, SACK)
_DEFAULT_EARLY_RETRANS = 3  # tcp_sk_init(): TLP on, RACK-style early retransmit off


@dataclass(frozen=True)
class RtoKnobs:
    retries2: int
    rto_min: float  # tcp_rto_min_us (6.11+) or TCP_RTO_MIN
    rto_max: float  # tcp_rto_max_ms (6.15+) or TCP_RTO_MAX
    loss_probe: bool  # tcp_early_retrans 3 or 4 and SACK on both ends
    hz: int | None

    @classmethod
    def from_text(
        cls,
        client: Mapping[str, str | None],
        server: Mapping[str, str | None],
        hz: int | None,
    ) -> RtoKnobs:
        """From values as /proc/sys shows them (None: this kernel has no such knob)."""
        rto_min_us, rto_max_ms = _int(client, RTO_MIN_US), _int(client, RTO_MAX_MS)
        early = _int(client, EARLY_RETRANS)
        sack = all(_int(side, SACK) != 0 for side in (client, server))
        retries2 = _int(client, RETRIES2)
        return cls(
            retries2=TCP_RETR2 if retries2 is None else retries2,
            rto_min=TCP_RTO_MIN if rto_min_us is None else rto_min_us / 1_000_000,
            rto_max=TCP_RTO_MAX if rto_max_ms is None else rto_max_ms / 1000,
            loss_probe=sack
            and (_DEFAULT_EARLY_RETRANS if early is None else early) in TCP_EARLY_RETRANS_TLP,
            hz=hz,
        )


def _int(values: Mapping[str, str | None], name: str) -> int | None:
    text = values.get(name)
    return None if text is None else parse_int(text, what=name)


@dataclass(frozen=True)
class RtoExpectation:
    knobs: RtoKnobs
    rtt_samples: tuple[float, ...]
    estimate: timing.EstimatorState
    plan: timing.BlackholeRetransmissions
    nominal: Schedule
    sooner: Schedule | None  # when late timers can spend the budget one expiry sooner
    early: EarlyGiveUp | None

    def as_dict(self) -> dict[str, Measure]:
        plan = self.plan
        return {
            "retries2": self.knobs.retries2,
            "rto_min_s": self.knobs.rto_min,
            "rto_max_s": plan.rto_max,
            "srtt_s": round(self.estimate.srtt, 6),
            "first_rto_s": plan.initial_rto,
            "loss_probe_at": plan.loss_probe_at,
            "transmissions": len(self.nominal.transmits),
            "transmit_times": series(self.nominal.transmits),
            "budget_s": plan.budget,
            "budget_from": plan.budget_from,
            "gives_up_at": plan.gives_up_at,
            "error": ETIMEDOUT,
            "transmissions_if_sooner": len(self.sooner.transmits) if self.sooner else None,
        }


def expect(knobs: RtoKnobs, rtt_samples: Sequence[float], late: Lateness) -> RtoExpectation:
    """What the kernel should do, from kernel/timing only. Needs at least one RTT sample
    (the handshake always gives one)."""
    estimator = timing.RttEstimator(rto_min=knobs.rto_min, rto_max=knobs.rto_max, hz=knobs.hz)
    state = None
    for rtt in rtt_samples:
        state = estimator.sample(rtt)
    if state is None:
        raise ValueError("no RTT sample")
    plan = timing.blackhole_retransmissions(
        knobs.retries2,
        initial_rto=state.rto,
        srtt=state.srtt,
        loss_probe=knobs.loss_probe,
        rto_min=knobs.rto_min,
        rto_max=knobs.rto_max,
        hz=knobs.hz,
    )
    nominal = Schedule(plan.transmit_times, plan.gives_up_at)
    early = early_give_up(
        plan.rto_retransmit_times, plan.budget_from, plan.budget, late, first_can_give_up=False
    )
    sooner = nominal.cut_at(early.at) if early is not None else None
    return RtoExpectation(knobs, tuple(rtt_samples), state, plan, nominal, sooner, early)


@dataclass(frozen=True)
class RtoObserved:
    """Times in seconds since the original transmission of the data."""

    rtt_samples: tuple[float, ...]  # from the capture, before the path went dark
    tcpi_rto: float | None  # the socket's RTO just before (TCP_INFO)
    tcpi_rtt: float | None
    transmit_times: tuple[float, ...]
    error: str | None
    error_at: float | None

    def as_dict(self) -> dict[str, Measure]:
        return {
            "rtt_samples_us": ", ".join(f"{s * 1e6:.0f}" for s in self.rtt_samples),
            "first_rto_s": self.tcpi_rto,
            "srtt_s": self.tcpi_rtt,
            "transmissions": len(self.transmit_times),
            "transmit_times": series(self.transmit_times),
            "gives_up_at": None if self.error_at is None else round(self.error_at, 6),
            "error": self.error,
        }


def plan_for(exp: RtoExpectation, got: RtoObserved) -> Schedule:
    return chosen(exp.nominal, exp.sooner, len(got.transmit_times))


def compare(exp: RtoExpectation, got: RtoObserved, late: Lateness) -> tuple[Check, ...]:
    plan = plan_for(exp, got)
    fewest = len(exp.sooner.transmits) if exp.sooner else len(plan.transmits)
    tick = 1 / exp.knobs.hz if exp.knobs.hz else 0.0
    return (
        within(
            "first_rto",
            "RTO when the path went dark (tcpi_rto)",
            tolerance(exp.estimate.rto, resolution=tick),
            got.tcpi_rto,
            basis="RttEstimator over the captured RTT samples: srtt + max(4 x rttvar, rto_min)",
        ),
        between(
            "transmissions",
            "data transmissions",
            fewest,
            len(exp.nominal.transmits),
            len(got.transmit_times),
            basis="blackhole_retransmissions(): original, loss probe, RTO retransmissions",
        ),
        *wait_checks(
            "gap",
            "wait before retransmission",
            plan.gaps,
            tuple(b - a for a, b in pairwise(got.transmit_times)),
            late,
            basis="blackhole_retransmissions(): the loss probe, then the RTO doubling",
        ),
        exact("error", "the socket failed with", ETIMEDOUT, got.error, basis="tcp_write_err()"),
        within(
            "gives_up_at",
            "the socket failed after",
            chained(plan.waits, late),
            got.error_at,
            basis="blackhole_retransmissions(): first expiry with the budget spent",
        ),
    )


def explain(exp: RtoExpectation, got: RtoObserved) -> tuple[str, ...]:
    knobs, plan = exp.knobs, exp.plan
    why = [_first_rto(exp)]
    if plan.loss_probe_at is not None:
        why.append(
            f"A tail loss probe resent the data after {plan.loss_probe_at:.3f} s (2 x srtt + "
            "rto_min, at most the RTO) and re-armed a full RTO; it does not start the budget"
        )
    why.append(
        f"tcp_retries2={knobs.retries2} is a budget of {plan.budget:g} s "
        f"(tcp_model_timeout with TCP_RTO_MIN, rto_max {plan.rto_max:g} s), counted from the "
        f"first RTO retransmission at {plan.budget_from:.3f} s, so the socket gives up at the "
        f"first expiry after {plan.budget_from + plan.budget:.3f} s"
    )
    if exp.early is not None and plan_for(exp, got) is exp.sooner:
        why.append(
            f"The timers fired up to {exp.early.lateness:.3f} s late in all, more than the "
            f"{exp.early.headroom:.3f} s left of the budget, so it gave up one expiry sooner"
        )
    return tuple(why)


def _first_rto(exp: RtoExpectation) -> str:
    state, knobs = exp.estimate, exp.knobs
    variance = state.rttvar_us / 1_000_000  # max(4 x rttvar, rto_min), as the kernel adds it
    raw = state.srtt + variance
    text = (
        f"The first RTO is {state.rto * 1000:.0f} ms: srtt {state.srtt * 1000:.3f} ms + "
        f"max(4 x rttvar, rto_min) {variance * 1000:g} ms = {raw * 1000:.3f} ms"
    )
    if abs(variance - knobs.rto_min) > 1e-9 and variance > knobs.rto_min:
        text += f" (rto_min {knobs.rto_min * 1000:g} ms is kept in whole ticks)"
    ticked = bool(knobs.hz) and abs(state.rto - raw) > 1e-9
    if ticked:
        text += f", rounded up to {round(state.rto * (knobs.hz or 1))} ticks at HZ={knobs.hz}"
    if abs(state.rto - knobs.rto_min) > 1e-9:
        adds = "the RTT and the ticks add" if ticked else "the RTT adds"
        text += f"; not {knobs.rto_min * 1000:g} ms: {adds} to the minimum"
    return text


def verdict_line(exp: RtoExpectation, got: RtoObserved, checks: Sequence[Check]) -> str:
    plan = plan_for(exp, got)
    parts = [
        f"first RTO {seconds(got.tcpi_rto)} (expected {seconds(exp.estimate.rto)})",
        f"{len(got.transmit_times)} transmissions at {series(got.transmit_times)} s "
        f"(expected {len(plan.transmits)} at {series(plan.transmits)})",
        f"{got.error or 'no error'} after {seconds(got.error_at)} "
        f"(expected {ETIMEDOUT} after {seconds(plan.gives_up_at)})",
    ]
    return verdict(parts, checks, explain(exp, got))
