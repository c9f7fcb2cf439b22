"""fin-wait2-timeout without the kernel: what to expect, what the samples show, how they
compare.

Every expected number comes from kernel/timing.fin_wait2_lifetime(): an orphaned FIN_WAIT2
lives F = max(tcp_fin_timeout, 3.5 x RTO) as a minisock when F <= 60 s; above 60 s the
full socket first waits F - 60 on its keepalive timer (timer code 2), then becomes a
minisock for F - 60 again (timer code 3), 2 x (F - 60) in all (notes 1.5).

The measurement is a series of socket snapshots of the client namespace (state, timer code,
time left on the timer), taken every few tens of milliseconds from the close().
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import TCP_FIN_TIMEOUT, TCP_RTO_MIN
from tcpdoctor.kernel.states import TimerCode
from tcpdoctor.kernel.sysctls import parse_int
from tcpdoctor.lab.model import Check, Measure, exact, tolerance, within
from tcpdoctor.lab.pcap import Flow, Segment, TcpFlags
from tcpdoctor.lab.scenarios._timer_model import Lateness, acknowledges, seconds, verdict

FIN_TIMEOUT = "net.ipv4.tcp_fin_timeout"
RTO_MIN_US = "net.ipv4.tcp_rto_min_us"
RELEVANT = (FIN_TIMEOUT, RTO_MIN_US)
FIN_WAIT1 = "FIN_WAIT1"
FIN_WAIT2 = "FIN_WAIT2"
# A read that began just before the ACK of our FIN arrived may still show FIN_WAIT1.
READ_SPAN_S = 0.005
MINISOCK = timing.FinWait2Outcome.MINISOCK.label
FULL_THEN_MINI = timing.FinWait2Outcome.FULL_SOCKET_THEN_MINISOCK.label


@dataclass(frozen=True)
class FinKnobs:
    fin_timeout: int  # seconds, as the client namespace has it
    rto_min: float  # tcp_rto_min_us (6.11+) or TCP_RTO_MIN: the estimator's floor
    hz: int | None

    @classmethod
    def from_text(cls, client: Mapping[str, str | None], hz: int | None) -> FinKnobs:
        text, rto_min = client.get(FIN_TIMEOUT), client.get(RTO_MIN_US)
        return cls(
            fin_timeout=int(TCP_FIN_TIMEOUT) if text is None else parse_int(text, what=FIN_TIMEOUT),
            rto_min=TCP_RTO_MIN if rto_min is None else parse_int(rto_min, what=RTO_MIN_US) / 1e6,
            hz=hz,
        )


@dataclass(frozen=True)
class FinExpectation:
    knobs: FinKnobs
    rtt_samples: tuple[float, ...]  # handshake, request and FIN, as the capture saw them
    life: timing.FinWait2Lifetime  # with the RTO after the last of them
    full_slack: float  # how late the full socket's timer may fire
    mini_slack: float

    @property
    def lifetime(self) -> float:
        assert self.life.lifetime is not None  # orphaned: always a timer
        return self.life.lifetime

    @property
    def two_phases(self) -> bool:
        return self.life.outcome is timing.FinWait2Outcome.FULL_SOCKET_THEN_MINISOCK

    def as_dict(self) -> dict[str, Measure]:
        life = self.life
        return {
            "fin_timeout_s": life.fin_timeout,
            "rto_s": life.rto,
            "fin_time_s": life.fin_time,
            "outcome": life.outcome.label,
            "full_socket_s": life.full_socket_phase if self.two_phases else None,
            "minisock_s": life.minisock_phase,
            "lifetime_s": life.lifetime,
        }


def expect(knobs: FinKnobs, rtt_samples: Sequence[float], late: Lateness) -> FinExpectation:
    """The floor of 3.5 x RTO uses the RTO when FIN_WAIT2 begins: the ACK of our FIN (which
    the peer may delay by tens of milliseconds) is the estimator's last sample."""
    estimator = timing.RttEstimator(rto_min=knobs.rto_min, hz=knobs.hz)
    rto = knobs.rto_min
    for rtt in rtt_samples:
        rto = estimator.sample(rtt).rto
    life = timing.fin_wait2_lifetime(knobs.fin_timeout, rto=rto, hz=knobs.hz)
    return FinExpectation(
        knobs, tuple(rtt_samples), life, late(life.full_socket_phase), late(life.minisock_phase)
    )


def fin_acked_at(segments: Sequence[Segment], flow: Flow) -> float | None:
    """When the first segment acknowledging `flow.src`'s FIN came back: FIN_WAIT2 begins."""
    fin = next((s for s in segments if Flow.of(s) == flow and s.flags & TcpFlags.FIN), None)
    if fin is None:
        return None
    back = flow.reverse()
    for s in segments:
        covered = acknowledges(s.ack, fin.end_seq)
        if Flow.of(s) == back and s.t >= fin.t and s.flags & TcpFlags.ACK and covered:
            return s.t
    return None


@dataclass(frozen=True)
class SocketSample:
    """One look at the socket, `t` seconds after FIN_WAIT2 began (the peer's ACK of our
    FIN arrived; earlier looks have t < 0); state None: it is gone."""

    t: float
    state: str | None
    timer: int = 0
    expires: float = 0.0  # seconds left on that timer


@dataclass(frozen=True)
class FinObserved:
    outcome: str | None  # MINISOCK, FULL_THEN_MINI, or what else was seen
    full_until: float | None  # first sample that was no longer the full socket
    full_armed: float | None  # close + time left on the full socket's first timer
    mini_from: float | None  # first sample of the minisock
    mini_armed: float | None  # time left on the minisock's first timer, from mini_from
    gone_at: float | None  # first sample without the socket
    step: float  # the largest gap between samples: the resolution of every time above
    other_states: str | None  # states other than FIN_WAIT2 seen on the way
    fin_wait1: float | None = None  # close() to the ACK of our FIN (the peer may delay it)
    rto_at_close: float | None = None  # tcpi_rto just before close()

    @property
    def minisock_phase(self) -> float | None:
        if self.gone_at is None:
            return None
        start = self.full_until if self.outcome == FULL_THEN_MINI else 0.0
        return None if start is None else self.gone_at - start

    def as_dict(self) -> dict[str, Measure]:
        return {
            "outcome": self.outcome,
            "full_socket_s": _r(self.full_until),
            "full_timer_armed_s": _r(self.full_armed),
            "minisock_s": _r(self.minisock_phase),
            "minisock_timer_armed_s": _r(self.mini_armed),
            "lifetime_s": _r(self.gone_at),
            "sample_step_s": _r(self.step),
            "other_states": self.other_states,
            "fin_wait1_s": _r(self.fin_wait1),
            "rto_at_close_s": self.rto_at_close,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def measure(
    all_samples: Sequence[SocketSample],
    fin_wait1: float | None = None,
    rto_at_close: float | None = None,
) -> FinObserved:
    """Phases from the samples (in time order) taken once FIN_WAIT2 had begun."""
    samples = [s for s in all_samples if s.t >= 0 or s.state == FIN_WAIT2]
    full = [s for s in samples if s.state == FIN_WAIT2 and s.timer == TimerCode.KEEPALIVE]
    mini = [s for s in samples if s.state == FIN_WAIT2 and s.timer == TimerCode.TIMEWAIT]
    gone = next((s.t for s in samples if s.state is None), None)
    others = sorted(
        {
            s.state
            for s in samples
            if s.state not in (None, FIN_WAIT2) and not (s.state == FIN_WAIT1 and s.t < READ_SPAN_S)
        }
    )
    times = [0.0, *(s.t for s in samples)]
    step = max((b - a for a, b in pairwise(times)), default=0.0)
    if full and mini:
        outcome: str | None = FULL_THEN_MINI
    elif mini:
        outcome = MINISOCK
    else:
        outcome = None
    full_until = None
    if full:
        full_until = next((s.t for s in samples if s.t > full[-1].t), None)
    return FinObserved(
        outcome=outcome,
        full_until=full_until,
        full_armed=full[0].t + full[0].expires if full else None,
        mini_from=mini[0].t if mini else None,
        mini_armed=mini[0].expires + (mini[0].t if not full else 0.0) if mini else None,
        gone_at=gone,
        step=step,
        other_states=",".join(s for s in others if s) or None,
        fin_wait1=fin_wait1,
        rto_at_close=rto_at_close,
    )


def compare(exp: FinExpectation, got: FinObserved, tick: float) -> tuple[Check, ...]:
    """Times measured by sampling are late by up to one step (the socket changed just after
    a look) and the minisock phase, a difference of two such times, by a step either way."""
    life, step = exp.life, got.step
    checks = [
        exact(
            "outcome",
            "FIN_WAIT2 went",
            life.outcome.label.replace("_", " "),
            None if got.outcome is None else got.outcome.replace("_", " "),
            basis="fin_wait2_lifetime(): a minisock at once when F <= 60 s",
        )
    ]
    if exp.two_phases:
        checks += [
            within(
                "full_socket_s",
                "full socket for",
                tolerance(life.full_socket_phase, slack=exp.full_slack, resolution=step),
                got.full_until,
                basis="fin_wait2_lifetime(): F - 60 on the keepalive timer",
            ),
            within(
                "full_timer_armed_s",
                "its timer was armed for",
                tolerance(life.full_socket_phase, resolution=step + tick),
                got.full_armed,
                basis="inet_csk_reset_keepalive_timer(sk, tmo - TCP_TIMEWAIT_LEN)",
            ),
            # With one phase the minisock's time is the lifetime, checked below.
            within(
                "minisock_s",
                "FIN_WAIT2 minisock for",
                tolerance(life.minisock_phase, slack=exp.mini_slack, resolution=step, early=step),
                got.minisock_phase,
                basis="tcp_time_wait(sk, TCP_FIN_WAIT2, tmo)",
            ),
        ]
    checks += [
        within(
            "minisock_timer_armed_s",
            "the minisock's timer was armed for",
            tolerance(
                life.minisock_phase,
                resolution=tick + (0.0 if exp.two_phases else step),
                early=step if exp.two_phases else 0.0,
            ),
            got.mini_armed,
            basis="F - 60 again, recomputed by tcp_keepalive_timer()"
            if exp.two_phases
            else "max(tcp_fin_timeout, 3.5 x RTO)",
        ),
        within(
            "lifetime_s",
            "FIN_WAIT2 lasted",
            tolerance(exp.lifetime, slack=exp.full_slack + exp.mini_slack, resolution=step),
            got.gone_at,
            basis="fin_wait2_lifetime(): F, or 2 x (F - 60) above 60 s",
        ),
        exact(
            "other_states",
            "other states seen",
            None,
            got.other_states,
            basis="the orphan goes from FIN_WAIT2 straight to gone",
        ),
    ]
    return tuple(checks)


def explain(exp: FinExpectation) -> tuple[str, ...]:
    life, knobs = exp.life, exp.knobs
    floor = 3.5 * life.rto
    fin = life.fin_time or 0.0
    why = []
    if fin > knobs.fin_timeout:
        why.append(
            f"tcp_fin_timeout={knobs.fin_timeout} is below 3.5 x RTO ({floor:.3f} s), so the "
            f"floor decides: {fin:.3f} s"
        )
    if exp.two_phases:
        why.append(
            f"F = {fin:g} s is above 60 s: the full socket waits F - 60 = "
            f"{life.full_socket_phase:g} s, then the keepalive timer hands it to a minisock for "
            f"F - 60 again, so it lives 2 x (F - 60) = {exp.lifetime:g} s, not {fin:g} s"
        )
    else:
        why.append(
            f"F = {fin:g} s is at most 60 s: the orphan becomes a FIN_WAIT2 minisock at once "
            f"and lives F"
        )
    return tuple(why)


def verdict_line(exp: FinExpectation, got: FinObserved, checks: Sequence[Check]) -> str:
    parts = [
        f"FIN_WAIT2 lasted {seconds(got.gone_at)} (expected {seconds(exp.lifetime)})",
    ]
    if exp.two_phases:
        parts.insert(
            0,
            f"full socket {seconds(got.full_until)} then minisock "
            f"{seconds(got.minisock_phase)} (expected {seconds(exp.life.full_socket_phase)} "
            f"then {seconds(exp.life.minisock_phase)})",
        )
    return verdict(parts, checks, explain(exp))
