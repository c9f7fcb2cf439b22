"""idle-timeout-middlebox without the kernel: what to expect and how it compares (pure).

Two connections through a conntrack middlebox (DNAT load balancer + stateful filter) pause
for the same time; one has TCP keepalive. Expectations, all from tcpdoctor.kernel:

* conntrack.idle_flow(): the box forgets a flow that stays silent for its
  nf_conntrack_tcp_timeout_established; keepalive probes (timing.keepalive_answered():
  first at TCP_KEEPIDLE, then every max(TCP_KEEPIDLE, TCP_KEEPINTVL)) are traffic and keep
  it as long as they come more often than that.
* conntrack.midstream_state(): the first segment after the entry is gone has no SYN, so
  conntrack makes it a NEW entry (nf_conntrack_tcp_loose=1, the default) or leaves it
  untracked, INVALID (0). NEW: the box's filter, like most stateful firewalls, only lets
  new flows in with a SYN, so it drops the request and every retransmission; the client's
  request times out (no RST: nobody answers). INVALID: no entry means no DNAT, the
  segment stays addressed to the VIP, which the box does not route, so it is dropped
  before the filter with an ICMP unreachable that TCP treats as a soft error: a timeout
  again. With --open-forward the box has no SYN rule: the NEW entry is NATed to the only
  backend again and the connection carries on as if nothing happened.
* the entry vanishes exactly ct_timeout after the flow's last packet (nf_ct_is_expired()
  on every lookup; no timer to be late), seen at the next sample of the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tcpdoctor.kernel.conntrack import IdleFlow, Midstream, idle_flow, midstream_state
from tcpdoctor.kernel.timing import KeepaliveAnswered, keepalive_answered
from tcpdoctor.lab.model import Check, Measure, at_least, exact, tolerance, within
from tcpdoctor.lab.scenarios._variant_model import range_check

PLAIN, KEEPALIVE = "plain", "keepalive"
OK, TIMEOUT = "ok", "TIMEOUT"
PROBE_MARGIN_S = 0.05  # a probe this close to the end of the pause may land either side


@dataclass(frozen=True)
class Plan:
    ct_timeout: int  # s, the box's nf_conntrack_tcp_timeout_established
    idle: float  # s, the pause between the two requests
    keepalive_idle: int  # s, TCP_KEEPIDLE of the keepalive connection
    keepalive_intvl: int  # s, TCP_KEEPINTVL
    request_timeout: float  # s, how long the client waits for a reply
    open_forward: bool  # the box forwards NEW flows without a SYN too


@dataclass(frozen=True)
class Expectation:
    plan: Plan
    tcp_loose: int
    answered: KeepaliveAnswered
    plain: IdleFlow
    keepalive: IdleFlow
    midstream: Midstream
    plain_outcome: str
    keepalive_outcome: str
    first_probe_slack: float  # timer-wheel lateness of the first probe
    probes_low: int
    probes_high: int

    def as_dict(self) -> dict[str, Measure]:
        return {
            "plain_forgotten": self.plain.forgotten,
            "keepalive_forgotten": self.keepalive.forgotten,
            "midstream_state": self.midstream.label if self.plain.forgotten else None,
            "plain_outcome": self.plain_outcome,
            "keepalive_outcome": self.keepalive_outcome,
            "ct_forgotten_after_s": float(self.plan.ct_timeout) if self.plain.forgotten else None,
            "keepalive_first_probe_s": self.answered.first_probe,
            "keepalive_period_s": self.answered.period,
            "keepalive_longest_silence_s": round(self.keepalive.longest_silence, 6),
            "keepalive_probes_low": self.probes_low,
            "keepalive_probes_high": self.probes_high,
        }


def outcome(flow: IdleFlow, midstream: Midstream, open_forward: bool) -> str:
    """What the request after the pause gets."""
    if not flow.forgotten:
        return OK
    if open_forward and midstream is Midstream.NEW:
        return OK  # picked up mid-stream and DNATed to the same (only) backend
    return TIMEOUT  # dropped at the box every time it is retransmitted


def expect(
    plan: Plan, tcp_loose: int, first_probe_slack: float, period_slack: float
) -> Expectation:
    answered = keepalive_answered(plan.keepalive_idle, plan.keepalive_intvl)
    plain = idle_flow(plan.idle, plan.ct_timeout)
    keepalive = idle_flow(plan.idle, plan.ct_timeout, answered, slack=period_slack)
    midstream = midstream_state(tcp_loose)
    low, high = probe_count_range(answered, plan.idle, period_slack)
    return Expectation(
        plan=plan,
        tcp_loose=tcp_loose,
        answered=answered,
        plain=plain,
        keepalive=keepalive,
        midstream=midstream,
        plain_outcome=outcome(plain, midstream, plan.open_forward),
        keepalive_outcome=outcome(keepalive, midstream, plan.open_forward),
        first_probe_slack=first_probe_slack,
        probes_low=low,
        probes_high=high,
    )


def probe_count_range(answered: KeepaliveAnswered, idle: float, slack: float) -> tuple[int, int]:
    """Probes sent before the pause ends: each is due one period after the previous one
    was answered, and each may be up to `slack` late, so the n-th leaves between
    first + (n-1) x period and n x that plus n x slack."""
    step = answered.period
    first = answered.first_probe

    def count(extra: float, margin: float) -> int:
        if first + extra + margin >= idle:
            return 0
        return 1 + math.floor((idle - first - extra - margin) / (step + extra) + 1e-9)

    return count(slack, PROBE_MARGIN_S), count(0.0, -PROBE_MARGIN_S)


@dataclass(frozen=True)
class Observed:
    outcomes: Mapping[str, str]  # connection -> "ok" or the error name
    ct_listing: bool  # /proc/net/nf_conntrack of the box could be read
    ct_gone_after: float | None  # plain's entry vanished this long after its last packet
    keepalive_entry_kept: bool | None  # the keepalive flow's entry was in every sample
    first_probe_after: float | None  # first probe, after the last segment the client got
    probes_before_request: int
    arrived_after_pause: int  # plain's request transmissions that reached the box
    forwarded_after_pause: int  # ... and left it towards the server
    counters: Mapping[str, int]  # midstream state label -> packets the filter counted
    icmp_unreachable: int | None = None  # ICMP destination unreachables the box sent

    def as_dict(self) -> dict[str, Measure]:
        return {
            "plain_outcome": self.outcomes.get(PLAIN),
            "keepalive_outcome": self.outcomes.get(KEEPALIVE),
            "ct_forgotten_after_s": _r(self.ct_gone_after),
            "keepalive_entry_kept": self.keepalive_entry_kept,
            "keepalive_first_probe_s": _r(self.first_probe_after),
            "keepalive_probes": self.probes_before_request,
            "plain_transmissions_after_pause": self.arrived_after_pause,
            "plain_forwarded_after_pause": self.forwarded_after_pause,
            "midstream_new_packets": self.counters.get(Midstream.NEW.label, 0),
            "midstream_invalid_packets": self.counters.get(Midstream.INVALID.label, 0),
            "box_icmp_unreachable": self.icmp_unreachable,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def compare(exp: Expectation, got: Observed, sample_period: float) -> tuple[Check, ...]:
    checks = [
        exact(
            "plain_outcome",
            "request after the pause, no keepalive",
            exp.plain_outcome,
            got.outcomes.get(PLAIN),
            basis=_plain_basis(exp),
        ),
        exact(
            "keepalive_outcome",
            "request after the pause, with keepalive",
            exp.keepalive_outcome,
            got.outcomes.get(KEEPALIVE),
            basis=f"probes every max(TCP_KEEPIDLE, TCP_KEEPINTVL) = {exp.answered.period:g} s "
            f"refresh the entry before its {exp.plan.ct_timeout} s run out",
        ),
        *_probe_checks(exp, got),
        *_box_checks(exp, got),
    ]
    if got.ct_listing:
        checks += _table_checks(exp, got, sample_period)
    return tuple(checks)


def _plain_basis(exp: Expectation) -> str:
    if not exp.plain.forgotten:
        return "the pause is shorter than the conntrack timeout"
    if exp.plain_outcome == OK:
        return "the entry is gone, but the box picks the flow up again (tcp_loose) and NATs it"
    return (
        f"the entry is gone after {exp.plan.ct_timeout} s; the next segment is ct state "
        f"{exp.midstream.label} without SYN and the filter drops it, retransmissions too"
    )


def _probe_checks(exp: Expectation, got: Observed) -> list[Check]:
    if exp.answered.first_probe >= exp.plan.idle:
        return []
    return [
        within(
            "keepalive_first_probe_s",
            "first keepalive probe after the last segment received",
            tolerance(exp.answered.first_probe, slack=exp.first_probe_slack),
            got.first_probe_after,
            basis="tcp_keepalive_timer(): TCP_KEEPIDLE of idleness",
        ),
        range_check(
            "keepalive_probes",
            "keepalive probes during the pause",
            exp.probes_low,
            exp.probes_high,
            got.probes_before_request,
            f"first at {exp.answered.first_probe:g} s, then every {exp.answered.period:g} s, "
            "each answered",
        ),
    ]


def _box_checks(exp: Expectation, got: Observed) -> list[Check]:
    if not exp.plain.forgotten:
        return []
    checks = [
        at_least(
            "plain_transmissions_after_pause",
            "request transmissions that reached the box",
            1,
            got.arrived_after_pause,
            basis="the client sends, then retransmits while no ACK comes",
        )
    ]
    if exp.midstream is Midstream.INVALID:
        return [*checks, *_untracked_checks(got)]
    other = Midstream.INVALID
    if exp.plain_outcome == TIMEOUT:
        checks += [
            exact(
                "plain_forwarded_after_pause",
                "of them forwarded to the server",
                0,
                got.forwarded_after_pause,
                basis="dropped by the box's filter",
            ),
            exact(
                f"midstream_{exp.midstream.label}_packets",
                f"packets the box classified ct state {exp.midstream.label}",
                got.arrived_after_pause,
                got.counters.get(exp.midstream.label, 0),
                basis=f"conntrack.midstream_state(nf_conntrack_tcp_loose={exp.tcp_loose})",
            ),
        ]
    else:
        checks.append(
            exact(
                f"midstream_{exp.midstream.label}_packets",
                f"packets the box classified ct state {exp.midstream.label}",
                1,
                got.counters.get(exp.midstream.label, 0),
                basis="the first one starts a new entry; later ones belong to it",
            )
        )
    checks.append(
        exact(
            f"midstream_{other.label}_packets",
            f"packets the box classified ct state {other.label}",
            0,
            got.counters.get(other.label, 0),
            basis=f"conntrack.midstream_state(nf_conntrack_tcp_loose={exp.tcp_loose})",
        )
    )
    return checks


def _untracked_checks(got: Observed) -> list[Check]:
    """nf_conntrack_tcp_loose=0: the segment gets no entry, so the nat hook never sees it
    and it stays addressed to the VIP, which is on no interface of the box: routing fails
    (ip_route_input_slow() -> ip_error()) before the forward filter, and the box answers
    with ICMP destination unreachable (rate-limited), a soft error the client ignores
    while it retransmits [measured on 6.18]."""
    basis = "untracked, not NATed: no route to the VIP, dropped before the filter"
    return [
        exact(
            "plain_forwarded_after_pause",
            "of them forwarded to the server",
            0,
            got.forwarded_after_pause,
            basis=basis,
        ),
        exact(
            "midstream_invalid_packets",
            "packets the box's filter saw as ct state invalid",
            0,
            got.counters.get(Midstream.INVALID.label, 0),
            basis=basis,
        ),
        exact(
            "midstream_new_packets",
            "packets the box's filter saw as ct state new",
            0,
            got.counters.get(Midstream.NEW.label, 0),
            basis=basis,
        ),
        at_least(
            "box_icmp_unreachable",
            "ICMP destination unreachables from the box",
            1,
            got.icmp_unreachable,
            basis="ip_error(): icmp_send(ICMP_DEST_UNREACH)",
        ),
    ]


def _table_checks(exp: Expectation, got: Observed, sample_period: float) -> list[Check]:
    checks = []
    if exp.plain.forgotten:
        checks.append(
            within(
                "ct_forgotten_after_s",
                "conntrack entry gone after the flow's last packet",
                # No timer: the entry is dead from ct_timeout on and vanishes at the next
                # read of the table, so lateness is only the sampling step.
                tolerance(float(exp.plan.ct_timeout), resolution=sample_period),
                got.ct_gone_after,
                basis="nf_conntrack_tcp_timeout_established; nf_ct_is_expired()",
            )
        )
    if exp.keepalive.survives:
        checks.append(
            exact(
                "keepalive_entry_kept",
                "keepalive flow's entry present in every sample",
                True,
                got.keepalive_entry_kept,
                basis="every probe and its ACK refresh the entry",
            )
        )
    return checks


__all__ = [
    "KEEPALIVE",
    "OK",
    "PLAIN",
    "TIMEOUT",
    "Expectation",
    "Observed",
    "Plan",
    "compare",
    "expect",
    "outcome",
    "probe_count_range",
]
