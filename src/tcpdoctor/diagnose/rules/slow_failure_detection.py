"""Connections stuck retransmitting, and how long the kernel will keep them waiting.

When a peer or the path goes silent, Linux keeps retransmitting and tells the application
nothing until a time budget runs out: for data, tcp_retries2 converted into time by
tcp_model_timeout() (924.6 s with the defaults), for connect() tcp_syn_retries plus
tcp_syn_linear_timeouts (131 s). The rule finds sockets in that state and says how far
each group is and when the kernel will give up, from kernel/timing.

It looks at ESTABLISHED and CLOSE_WAIT sockets whose retransmission timer runs (timer
code 1) with at least 2 consecutive retransmissions (the largest of idiag_retrans,
tcp_info retransmits and backoff), and at SYN_SENT sockets whose SYN has been
retransmitted at least once. Closing states with an unacknowledged FIN belong to
fin-wait1-stuck and last-ack-stuck. How far a socket is comes from placing its
retransmission count and timer expiry on the idealised schedule, with the initial RTO
taken from tcp_info (rto_us halved `backoff` times). The tcp_retries2 budget runs from
the first RTO retransmission (the kernel's retrans_stamp), not from the lost segment's
first transmission; times reported count from that first transmission, tail loss probes
not included. Groups are per peer (address:port), separately for data and for SYNs.
Severity is warning when the kernel would keep the application waiting more than 30 s
from the first loss, else info. When late timers may end the schedule one RTO expiry
early (judged at HZ=250), the explanation says so.
TCP_USER_TIMEOUT and TCP_SYNCNT set by the application are not visible from outside and
would shorten what is reported.

Evidence keys (data): `retransmitting_connections`, `max_retransmits`, `rto_s`,
`peer_silent_s`, `retransmitting_for_s`, `give_up_budget_s`, `gives_up_after_s`,
`gives_up_in_s`, `unacked_segments`, `tcp_retries2`. SYN_SENT: `syn_sent_connections`,
`max_syn_retransmits`, `connecting_for_s`, `syn_give_up_s`, `gives_up_in_s`,
`syn_retransmit_times`, `tcp_syn_retries`, `tcp_syn_linear_timeouts`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, Severity
from tcpdoctor.diagnose.rules._common import in_state, sysctl_line
from tcpdoctor.diagnose.rules._liveness import (
    Group,
    RetransmitSettings,
    elapsed_in_schedule,
    established_schedule,
    groups,
    has_info,
    info_column,
    initial_rto,
    retransmit_settings,
    seconds_text,
    syn_schedule,
    top_groups,
)
from tcpdoctor.kernel.constants import TCP_TIMEOUT_INIT
from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.kernel.timing import established_give_up, syn_give_up

RULE_ID = "slow-failure-detection"
STALLED_RETRANSMITS = 2  # one RTO is routine loss; two in a row with no ACK is a stall
SYN_RETRANSMITS = 1  # the first SYN went unanswered for the whole initial RTO
SLOW_GIVE_UP_S = 30.0  # waiting longer than this for the kernel's verdict is slow
SUGGESTED_RETRIES2 = 8  # 102.2 s: the smallest value that keeps RFC 1122's 100 s minimum
SUGGESTED_SYN_RETRIES = 3
SUGGESTED_SYNCNT = 2
SUGGESTED_USER_TIMEOUT_S = 30
SUGGESTED_CONNECT_TIMEOUT_S = 3  # covers the SYN retransmissions at 1 and 2 s
TOPICS = ("retries", "rto", "user-timeout", "syn-retries")  # tcpdoctor explain


class Progress(NamedTuple):
    """Where one socket is on its retransmission schedule."""

    retransmits: int
    elapsed: float  # seconds since the first unacknowledged transmission (or first SYN)
    gives_up_at: float  # on the same schedule
    budget: float
    sooner: float | None = None  # an expiry at which late timers may already give up

    @property
    def remaining(self) -> float:
        return max(0.0, self.gives_up_at - self.elapsed)


def check(ctx: Context) -> Iterator[Finding]:
    settings = retransmit_settings(ctx)
    sockets = ctx.sockets
    retransmitting = sockets["timer"] == TimerCode.RETRANSMIT
    counts = _retransmits(ctx)
    data = in_state(ctx, TcpState.ESTABLISHED, TcpState.CLOSE_WAIT)
    stalled = data & retransmitting & (counts >= STALLED_RETRANSMITS)
    syn = in_state(ctx, TcpState.SYN_SENT) & retransmitting & (counts >= SYN_RETRANSMITS)
    if (stalled.any() or syn.any()) and not has_info(ctx):
        ctx.limitations.append(
            f"{RULE_ID}: no tcp_info (the /proc fallback), so RTOs are assumed to start at "
            "200 ms and the peer's silence is unknown"
        )
    for group in top_groups(ctx, groups(ctx, np.flatnonzero(stalled))):
        yield _data_finding(ctx, group, counts, settings)
    for group in top_groups(ctx, groups(ctx, np.flatnonzero(syn))):
        yield _syn_finding(ctx, group, counts, settings)


def _retransmits(ctx: Context) -> np.ndarray:
    """Consecutive retransmissions: idiag_retrans is icsk_retransmits on timer 1."""
    columns = (
        ctx.sockets["retrans"].astype(np.int64),
        info_column(ctx, "retransmits"),
        info_column(ctx, "backoff"),
    )
    return np.asarray(np.maximum.reduce(columns), dtype=np.int64)


# --- data: tcp_retries2 -----------------------------------------------------------------


def _data_progress(ctx: Context, index: int, retransmits: int, s: RetransmitSettings) -> Progress:
    rto_us = int(info_column(ctx, "rto_us")[index])
    backoff = int(info_column(ctx, "backoff")[index])
    start = initial_rto(rto_us, backoff if backoff >= 0 else retransmits, s.rto_max)
    give_up = established_schedule(s.retries2, s.rto_max, start)
    expires = float(ctx.sockets["expires_ms"][index]) / 1000
    elapsed = elapsed_in_schedule(give_up.schedule, retransmits, expires)
    return Progress(
        retransmits,
        elapsed,
        give_up.schedule.gives_up_at,
        give_up.budget,
        give_up.sooner_give_up_at,
    )


def _data_finding(
    ctx: Context, group: Group, counts: np.ndarray, settings: RetransmitSettings
) -> Finding:
    rows = group.rows
    progress = [_data_progress(ctx, int(i), int(counts[i]), settings) for i in rows]
    furthest = max(progress, key=lambda p: p.elapsed)
    rto = info_column(ctx, "rto_us")[rows]
    silent = info_column(ctx, "last_ack_recv_ms")[rows]
    unacked = info_column(ctx, "unacked")[rows]
    n = len(rows)
    severity = Severity.WARNING if furthest.gives_up_at > SLOW_GIVE_UP_S else Severity.INFO
    evidence = (
        Evidence("retransmitting_connections", "connections retransmitting", n, "sockets"),
        Evidence("max_retransmits", "consecutive retransmissions (most)", furthest.retransmits),
        Evidence("rto_s", "current RTO (largest)", _known_max(rto, 1_000_000, 3), "s"),
        Evidence("peer_silent_s", "nothing acknowledged for", _known_max(silent, 1000, 1), "s"),
        Evidence(
            "retransmitting_for_s",
            "retransmitting for (estimated)",
            round(furthest.elapsed, 1),
            "s",
        ),
        Evidence("give_up_budget_s", "tcp_retries2 time budget", furthest.budget, "s"),
        Evidence(
            "gives_up_after_s",
            "kernel reports ETIMEDOUT after (from the first loss)",
            round(furthest.gives_up_at, 1),
            "s",
        ),
        Evidence("gives_up_in_s", "which is in about", round(furthest.remaining, 1), "s"),
        Evidence("unacked_segments", "unacknowledged segments (most)", _known_max(unacked)),
        Evidence("tcp_retries2", "tcp_retries2 here", settings.retries2),
    )
    noun = "connection" if n == 1 else "connections"
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=(
            f"{n} {noun} {group.target} retransmitting for "
            f"{seconds_text(round(furthest.elapsed, 1))}; the kernel gives up only after "
            f"{seconds_text(round(furthest.gives_up_at, 1))} (tcp_retries2={settings.retries2})"
        ),
        subject=group.subject,
        evidence=evidence,
        explanation=_data_explanation(settings, furthest),
        fixes=_data_fixes(settings, furthest),
        topics=TOPICS,
    )


def _data_explanation(settings: RetransmitSettings, furthest: Progress) -> str:
    return (
        "Data on these connections has gone unacknowledged: the peer, or the path to it, "
        "went silent. The kernel retransmits with a doubling RTO (capped at "
        f"{seconds_text(settings.rto_max)}) and reports ETIMEDOUT only at the first RTO "
        "expiry after the time since the first RTO retransmission passes the budget "
        f"tcp_retries2={settings.retries2} stands for ({seconds_text(furthest.budget)}); "
        "counted from the first unacknowledged transmission, on this RTO that is about "
        f"{seconds_text(round(furthest.gives_up_at, 1))}.{_sooner_text(furthest)} Until "
        "then a blocked read or write in the application simply waits. A TCP_USER_TIMEOUT "
        "set by the application replaces the budget but cannot be seen from outside."
    )


def _sooner_text(furthest: Progress) -> str:
    if furthest.sooner is None:
        return ""
    return (
        " Timers fire late, though, and the retransmission due at about "
        f"{seconds_text(round(furthest.sooner, 1))} comes so close to the budget that their "
        "lateness can use up the difference: the kernel may give up there instead."
    )


def _data_fixes(settings: RetransmitSettings, furthest: Progress) -> tuple[Fix, ...]:
    capped = established_give_up(
        settings.retries2, rto_max=settings.rto_max, user_timeout=SUGGESTED_USER_TIMEOUT_S
    ).schedule.gives_up_at
    fixes = [
        Fix(
            kind=FixKind.SOCKET_OPTION,
            summary=(
                f"Set TCP_USER_TIMEOUT on these sockets (e.g. {SUGGESTED_USER_TIMEOUT_S} s) "
                "so a dead peer fails the call in bounded time"
            ),
            detail=(
                "The kernel aborts with ETIMEDOUT once that long has passed since the first "
                "RTO retransmission, shortening the last RTO to meet it (about "
                f"{seconds_text(round(capped, 1))} after the first transmission instead of "
                f"{seconds_text(round(furthest.gives_up_at, 1))}). It is per socket, in "
                "milliseconds, and also bounds connect() and keepalive. Keep it above the "
                "longest outage you want to ride out."
            ),
            example=(
                "Python: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, "
                f"{SUGGESTED_USER_TIMEOUT_S * 1000})\n"
                "Go:     unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, "
                f"{SUGGESTED_USER_TIMEOUT_S * 1000})  // in net.Dialer.Control"
            ),
        )
    ]
    if settings.retries2 > SUGGESTED_RETRIES2:
        lower = established_give_up(SUGGESTED_RETRIES2, rto_max=settings.rto_max)
        fixes.append(
            Fix(
                kind=FixKind.SYSCTL,
                summary=(
                    f"Lower tcp_retries2 to {SUGGESTED_RETRIES2} in this namespace "
                    f"(budget {seconds_text(lower.budget)} instead of "
                    f"{seconds_text(furthest.budget)})"
                ),
                detail=(
                    "Applies to every connection in the namespace, including ones that "
                    f"should survive a long outage. {SUGGESTED_RETRIES2} keeps RFC 1122's "
                    "minimum of 100 s; smaller values (5 means 12.6 s) turn short network "
                    "blips into broken connections."
                ),
                example=sysctl_line("net.ipv4.tcp_retries2", SUGGESTED_RETRIES2),
                sysctl="net.ipv4.tcp_retries2",
            )
        )
    fixes += [
        Fix(
            kind=FixKind.SOCKET_OPTION,
            summary="Turn on keepalive for connections that sit idle",
            detail=(
                "Retransmission timeouts only run while there is data to send; a dead peer "
                "on an idle connection is found by keepalive probes (or when the next "
                "request starts this same wait). See keepalive-vs-idle-timeout."
            ),
        ),
        Fix(
            kind=FixKind.APPLICATION,
            summary="Give every request a deadline in the application",
            detail=(
                "A read/request timeout lets the application give up, close the socket and "
                "retry elsewhere long before the kernel's verdict."
            ),
        ),
        Fix(
            kind=FixKind.INVESTIGATE,
            summary="Find out why the peer stopped acknowledging",
            detail=(
                "A crashed or overloaded peer, a firewall drop, a routing change, or a "
                "middlebox that forgot an idle flow (then its packets are dropped silently)."
            ),
        ),
    ]
    return tuple(fixes)


# --- connect(): tcp_syn_retries -------------------------------------------------------------


def _syn_progress(ctx: Context, index: int, retransmits: int, s: RetransmitSettings) -> Progress:
    give_up = syn_schedule(s.syn_retries, s.syn_linear_timeouts, s.rto_max)
    expires = float(ctx.sockets["expires_ms"][index]) / 1000
    elapsed = elapsed_in_schedule(give_up.schedule, retransmits, expires)
    return Progress(retransmits, elapsed, give_up.schedule.gives_up_at, give_up.budget)


def _syn_finding(
    ctx: Context, group: Group, counts: np.ndarray, settings: RetransmitSettings
) -> Finding:
    rows = group.rows
    progress = [_syn_progress(ctx, int(i), int(counts[i]), settings) for i in rows]
    furthest = max(progress, key=lambda p: p.elapsed)
    schedule = syn_schedule(settings.syn_retries, settings.syn_linear_timeouts, settings.rto_max)
    times = ", ".join(f"{t:g}" for t in schedule.schedule.retransmit_times)
    n = len(rows)
    severity = Severity.WARNING if furthest.gives_up_at > SLOW_GIVE_UP_S else Severity.INFO
    evidence = (
        Evidence("syn_sent_connections", "connect() calls without an answer", n, "sockets"),
        Evidence("max_syn_retransmits", "SYN retransmissions (most)", furthest.retransmits),
        Evidence("connecting_for_s", "connecting for (estimated)", round(furthest.elapsed, 1), "s"),
        Evidence(
            "syn_give_up_s",
            "connect() fails with ETIMEDOUT after",
            round(furthest.gives_up_at, 1),
            "s",
        ),
        Evidence("gives_up_in_s", "which is in about", round(furthest.remaining, 1), "s"),
        Evidence("syn_retransmit_times", "SYN retransmissions at (s)", times),
        Evidence("tcp_syn_retries", "tcp_syn_retries here", settings.syn_retries),
        Evidence(
            "tcp_syn_linear_timeouts", "tcp_syn_linear_timeouts here", settings.syn_linear_timeouts
        ),
    )
    noun = "connect() call" if n == 1 else "connect() calls"
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=(
            f"{n} {noun} {group.target} unanswered for "
            f"{seconds_text(round(furthest.elapsed, 1))}; they fail only after "
            f"{seconds_text(round(furthest.gives_up_at, 1))} (tcp_syn_retries="
            f"{settings.syn_retries})"
        ),
        subject=group.subject,
        evidence=evidence,
        explanation=_syn_explanation(settings, furthest.gives_up_at),
        fixes=_syn_fixes(settings, furthest.gives_up_at),
        topics=TOPICS,
    )


def _syn_explanation(settings: RetransmitSettings, gives_up_at: float) -> str:
    first = seconds_text(TCP_TIMEOUT_INIT)
    return (
        "No SYN-ACK has come back. connect() retransmits the SYN after the initial RTO of "
        f"{first} (TCP_TIMEOUT_INIT), keeps that interval for tcp_syn_linear_timeouts="
        f"{settings.syn_linear_timeouts} more tries, then doubles it, and fails with ETIMEDOUT "
        f"after {seconds_text(round(gives_up_at, 1))} unless the application gives up sooner. "
        f"A connect timeout below {first} never sees a SYN retransmission: a single lost SYN "
        "fails the connect."
    )


def _syn_fixes(settings: RetransmitSettings, gives_up_at: float) -> tuple[Fix, ...]:
    first = seconds_text(TCP_TIMEOUT_INIT)
    syncnt = syn_give_up(
        SUGGESTED_SYNCNT,
        linear_timeouts=settings.syn_linear_timeouts,
        rto_max=settings.rto_max,
    ).schedule.gives_up_at
    fixes = [
        Fix(
            kind=FixKind.APPLICATION,
            summary=(
                f"Set a connect timeout in the client (for example "
                f"{SUGGESTED_CONNECT_TIMEOUT_S} s, never below {first})"
            ),
            detail=(
                f"With a timeout below the {first} initial RTO (TCP_TIMEOUT_INIT) the kernel "
                "never retransmits the SYN before the application gives up, so one lost "
                f"packet fails the connect; {SUGGESTED_CONNECT_TIMEOUT_S} s allows the "
                "retransmissions at 1 s and 2 s. Then retry, ideally another address."
            ),
            example=(
                f"Python: socket.create_connection(addr, timeout={SUGGESTED_CONNECT_TIMEOUT_S})\n"
                f"Go:     net.Dialer{{Timeout: {SUGGESTED_CONNECT_TIMEOUT_S} * time.Second}}"
            ),
        ),
        Fix(
            kind=FixKind.SOCKET_OPTION,
            summary=(
                f"Or cap the SYN retries per socket: TCP_SYNCNT={SUGGESTED_SYNCNT} fails after "
                f"{seconds_text(syncnt)}"
            ),
            detail=(
                "TCP_SYNCNT replaces tcp_syn_retries for one socket; TCP_USER_TIMEOUT also "
                "bounds connect() in milliseconds."
            ),
            example=f"s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, {SUGGESTED_SYNCNT})",
        ),
    ]
    if settings.syn_retries > SUGGESTED_SYN_RETRIES:
        lower = syn_give_up(
            SUGGESTED_SYN_RETRIES,
            linear_timeouts=settings.syn_linear_timeouts,
            rto_max=settings.rto_max,
        ).schedule.gives_up_at
        fixes.append(
            Fix(
                kind=FixKind.SYSCTL,
                summary=(
                    f"Lower tcp_syn_retries to {SUGGESTED_SYN_RETRIES} in this namespace "
                    f"(fails after {seconds_text(lower)} instead of "
                    f"{seconds_text(round(gives_up_at, 1))})"
                ),
                detail=(
                    "Namespace-wide, for every client in it; RFC 1122 asks TCP to keep "
                    "trying a SYN for 3 minutes and leave shorter limits to applications, so "
                    "prefer the connect timeout."
                ),
                example=sysctl_line("net.ipv4.tcp_syn_retries", SUGGESTED_SYN_RETRIES),
                sysctl="net.ipv4.tcp_syn_retries",
            )
        )
    fixes.append(
        Fix(
            kind=FixKind.INVESTIGATE,
            summary="Find out why no SYN-ACK comes back",
            detail=(
                "Nothing listening behind a firewall that drops (instead of rejecting), a "
                "wrong address, or a server whose accept queue is full (its ListenOverflows "
                "counter grows: run tcpdoctor doctor there)."
            ),
        )
    )
    return tuple(fixes)


# --- helpers --------------------------------------------------------------------------------


def _known_max(values: np.ndarray, scale: int = 1, digits: int = 0) -> float | int | None:
    known = values[values >= 0]
    if not len(known):
        return None
    if scale == 1:
        return int(known.max())
    return round(float(known.max()) / scale, digits)


RULE = Rule(
    id=RULE_ID,
    title="Connections retransmitting into silence, and how long until the kernel gives up",
    check=check,
)
