"""keepalive-dead-peer without the kernel: what to expect, how it compares.

Every expected number comes from kernel/timing.keepalive_detection(): the first probe
once the connection has been idle tcp_keepalive_time since the last segment received,
one more every tcp_keepalive_intvl, and the abort (ETIMEDOUT, with an RST) at the firing
after tcp_keepalive_probes unanswered probes, or with TCP_USER_TIMEOUT at the first firing
past it once a probe is out. A second connection without SO_KEEPALIVE sees nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import (
    TCP_KEEPALIVE_INTVL,
    TCP_KEEPALIVE_PROBES,
    TCP_KEEPALIVE_TIME,
)
from tcpdoctor.kernel.sysctls import parse_int
from tcpdoctor.lab.model import Check, Measure, at_least, between, exact, within
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
ESTABLISHED = "ESTABLISHED"
IDLE = "net.ipv4.tcp_keepalive_time"
INTVL = "net.ipv4.tcp_keepalive_intvl"
PROBES = "net.ipv4.tcp_keepalive_probes"
RELEVANT = (IDLE, INTVL, PROBES)


@dataclass(frozen=True)
class KeepaliveKnobs:
    idle: int  # seconds
    intvl: int
    probes: int
    user_timeout_ms: int | None = None

    @classmethod
    def from_text(
        cls, client: Mapping[str, str | None], *, user_timeout_ms: int | None = None
    ) -> KeepaliveKnobs:
        """From values as /proc/sys shows them (None: this kernel has no such knob)."""
        return cls(
            idle=_int(client, IDLE, int(TCP_KEEPALIVE_TIME)),
            intvl=_int(client, INTVL, int(TCP_KEEPALIVE_INTVL)),
            probes=_int(client, PROBES, TCP_KEEPALIVE_PROBES),
            user_timeout_ms=user_timeout_ms,
        )

    @property
    def user_timeout(self) -> float | None:
        return None if not self.user_timeout_ms else self.user_timeout_ms / 1000


def _int(values: Mapping[str, str | None], name: str, default: int) -> int:
    text = values.get(name)
    return default if text is None else parse_int(text, what=name)


@dataclass(frozen=True)
class KeepaliveExpectation:
    knobs: KeepaliveKnobs
    detection: timing.KeepaliveDetection
    nominal: Schedule  # transmits: the last segment received (0), then every probe
    sooner: Schedule | None  # TCP_USER_TIMEOUT crossed one firing early by late timers
    early: EarlyGiveUp | None

    def as_dict(self) -> dict[str, Measure]:
        d = self.detection
        return {
            "idle_s": d.time,
            "intvl_s": d.intvl,
            "probes_allowed": d.probes,
            "user_timeout_s": d.user_timeout,
            "probes": d.probes_sent,
            "probe_times": series(d.probe_times),
            "detected_at": d.detected_at,
            "reason": d.reason.label,
            "error": ETIMEDOUT,
            "rst_sent": 1,
            "control_state": ESTABLISHED,
            "probes_if_sooner": len(self.sooner.transmits) - 1 if self.sooner else None,
        }


def expect(knobs: KeepaliveKnobs, late: Lateness) -> KeepaliveExpectation:
    detection = timing.keepalive_detection(
        knobs.idle, knobs.intvl, knobs.probes, user_timeout=knobs.user_timeout
    )
    nominal = Schedule((0.0, *detection.probe_times), detection.detected_at)
    early = None
    if detection.user_timeout is not None:
        # The abort test compares the idle time (which includes every late firing) with
        # the user timeout, so late timers can cross it one firing early; the probe count
        # rule cannot move.
        early = early_give_up(
            detection.probe_times, 0.0, detection.user_timeout, late, first_can_give_up=False
        )
    sooner = nominal.cut_at(early.at) if early is not None else None
    return KeepaliveExpectation(knobs, detection, nominal, sooner, early)


@dataclass(frozen=True)
class KeepaliveObserved:
    """Times in seconds since the last segment the keepalive connection received."""

    probe_times: tuple[float, ...]
    error: str | None
    error_at: float | None
    rst_sent: int  # RSTs the keepalive connection sent after its last probe
    control_state: str | None  # the connection without keepalive, looked at after the error
    control_checked_at: float | None
    control_sent: int  # segments it sent once the path was dark

    def as_dict(self) -> dict[str, Measure]:
        return {
            "probes": len(self.probe_times),
            "probe_times": series(self.probe_times),
            "detected_at": None if self.error_at is None else round(self.error_at, 6),
            "error": self.error,
            "rst_sent": self.rst_sent,
            "control_state": self.control_state,
            "control_checked_at": _r(self.control_checked_at),
            "control_packets_after_dark": self.control_sent,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def plan_for(exp: KeepaliveExpectation, got: KeepaliveObserved) -> Schedule:
    return chosen(exp.nominal, exp.sooner, 1 + len(got.probe_times))


def compare(exp: KeepaliveExpectation, got: KeepaliveObserved, late: Lateness) -> tuple[Check, ...]:
    plan = plan_for(exp, got)
    fewest = len(exp.sooner.transmits) - 1 if exp.sooner else len(plan.transmits) - 1
    gaps = tuple(b - a for a, b in pairwise((0.0, *got.probe_times)))
    return (
        between(
            "probes",
            "keepalive probes",
            fewest,
            len(exp.nominal.transmits) - 1,
            len(got.probe_times),
            basis="keepalive_detection(): tcp_keepalive_probes, or TCP_USER_TIMEOUT",
        ),
        *wait_checks(
            "gap",
            "wait before keepalive probe",
            plan.gaps,
            gaps,
            late,
            basis="keepalive_detection(): tcp_keepalive_time, then tcp_keepalive_intvl",
        ),
        exact("error", "the socket failed with", ETIMEDOUT, got.error, basis="tcp_write_err()"),
        within(
            "gives_up_at",
            "the peer was declared dead after",
            chained(plan.waits, late),
            got.error_at,
            basis="keepalive_detection(): idle + probes x intvl (or the user timeout)",
        ),
        exact(
            "rst_sent",
            "RST sent when giving up",
            1,
            got.rst_sent,
            basis="tcp_keepalive_timer(): tcp_send_active_reset() before tcp_write_err()",
        ),
        exact(
            "control_state",
            "the connection without keepalive",
            ESTABLISHED,
            got.control_state,
            basis="no SO_KEEPALIVE, no data: no timer runs at all",
        ),
        at_least(
            "control_checked_at",
            "looked at it after",
            round(plan.gives_up_at, 6),
            _r(got.control_checked_at),
            unit="s",
            basis="after the keepalive connection was declared dead",
        ),
        exact(
            "control_sent",
            "packets it sent once the path was dark",
            0,
            got.control_sent,
            basis="nothing probes an idle connection without keepalive",
        ),
    )


def explain(exp: KeepaliveExpectation, got: KeepaliveObserved) -> tuple[str, ...]:
    d, knobs = exp.detection, exp.knobs
    why = [
        f"Idle time counts from the last segment received: the first probe after "
        f"tcp_keepalive_time={knobs.idle} s, then one every tcp_keepalive_intvl={knobs.intvl} s"
    ]
    if d.user_timeout is None:
        why.append(
            f"With no answer to tcp_keepalive_probes={knobs.probes} probes the next firing "
            f"aborts: {knobs.idle} + {knobs.probes} x {knobs.intvl} = {d.detected_at:g} s"
        )
    else:
        why.append(
            f"TCP_USER_TIMEOUT={knobs.user_timeout_ms} ms replaces the probe count: the "
            f"first firing past {d.user_timeout:g} s with a probe out aborts, at "
            f"{d.detected_at:g} s after {d.probes_sent} probe(s)"
        )
    if exp.early is not None and plan_for(exp, got) is exp.sooner:
        why.append(
            f"The timers fired up to {exp.early.lateness:.3f} s late in all, more than the "
            f"{exp.early.headroom:.3f} s left of the user timeout, so it aborted one firing sooner"
        )
    why.append("The connection without keepalive stays ESTABLISHED however long the peer is gone")
    return tuple(why)


def verdict_line(exp: KeepaliveExpectation, got: KeepaliveObserved, checks: Sequence[Check]) -> str:
    plan = plan_for(exp, got)
    parts = [
        f"{len(got.probe_times)} probes at {series(got.probe_times)} s "
        f"(expected {len(plan.transmits) - 1} at {series(plan.transmits[1:])})",
        f"{got.error or 'no error'} after {seconds(got.error_at)} "
        f"(expected {ETIMEDOUT} after {seconds(plan.gives_up_at)})",
        f"without keepalive: {got.control_state or 'gone'} at {seconds(got.control_checked_at)}",
    ]
    return verdict(parts, checks, explain(exp, got))
