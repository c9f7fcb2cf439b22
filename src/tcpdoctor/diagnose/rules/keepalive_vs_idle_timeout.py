"""Idle ESTABLISHED connections that a load balancer, NAT or firewall will forget.

A middlebox drops a flow that carried no packet for its idle timeout, usually without
telling either end; the sockets stay ESTABLISHED and the next request on them is reset or
hangs in retransmission. The rule compares every ESTABLISHED socket with an idle timeout:
`--idle-timeout` (seconds or a preset such as `aws-nlb`), else the namespace's
`nf_conntrack_tcp_timeout_established` when conntrack is loaded.

A socket (ESTABLISHED, with no timer or the keepalive timer: no data in flight) is at
risk when it has been silent (tcp_info: the least of last data received, last data sent,
last ACK received) for at least half the timeout AND it has no keepalive timer (timer
code 2), or its keepalive allows a silence at least as long as the timeout. That silence
is estimated per socket as time since the last received segment plus the keepalive
timer's time to expiry: the keepalive time before the first probe, then
max(TCP_KEEPIDLE, TCP_KEEPINTVL) while probes are answered (so TCP_KEEPIDLE below the
timeout is not enough when TCP_KEEPINTVL is above it). Behind HTTP proxies (the
`aws-alb`, `aws-clb`, `gcp-alb` presets) keepalive probes carry no data and do not count,
so only data silence matters. Findings are grouped by peer (address:port), or by local
port for connections a local listener accepted; severity is warning when a socket is
already silent for longer than a timeout given with --idle-timeout, else info. Accepted
connections stay info without a --watch, because the peer's keepalive probes do not show
in this side's tcp_info; during a watch, sockets whose segment counters moved are counted
as active.

Without any idle timeout the rule reports (info) connections without keepalive that are
silent for at least the shortest common cloud timeout among the presets (240 s), when a
group has at least 10 of them or one silent for an hour, and says that --idle-timeout
would make it exact.

Evidence keys: `idle_timeout_s`, `idle_timeout_source`, `at_risk_connections`,
`without_keepalive`, `keepalive_too_slow`, `longest_idle_s`, `idle_past_timeout`,
`keepalive_gap_s` (only when some socket has keepalive), `tcp_keepalive_time_s`,
`keepalive_detection_s`; without a timeout: `idle_without_keepalive`, `longest_idle_s`,
`reference_timeout_s`, `tcp_keepalive_time_s`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.idle_timeouts import PRESETS, preset_names
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, RuleSkipped, Severity
from tcpdoctor.diagnose.rules._common import in_state, sysctl_line
from tcpdoctor.diagnose.rules._liveness import (
    Group,
    IdleTimeout,
    KeepaliveSettings,
    groups,
    has_info,
    idle_timeout,
    info_column,
    keepalive_gap_ms,
    keepalive_settings,
    min_known,
    retransmit_settings,
    seconds_text,
    silent_ms,
    top_groups,
)
from tcpdoctor.kernel.constants import MAX_TCP_KEEPIDLE, TCP_KEEPALIVE_INTVL, TCP_KEEPALIVE_TIME
from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.kernel.timing import established_give_up, keepalive_detection

RULE_ID = "keepalive-vs-idle-timeout"
IDLE_FRACTION = 0.5  # silent for at least this share of the timeout counts as idle
UNTUNED_MIN_SOCKETS = 10  # without a timeout: report a group this large ...
UNTUNED_LONG_IDLE_S = 3600.0  # ... or one with a socket silent this long
# Without a timeout, compare with the shortest default among L4 presets (Azure's 4 min).
UNTUNED_REFERENCE_S = min(p.seconds for p in PRESETS if p.keepalive_resets and p.vendor)
SUGGESTED_KEEPCNT = 3
TOPICS = ("keepalive", "idle-timeout", "user-timeout")  # tcpdoctor explain


def check(ctx: Context) -> Iterator[Finding]:
    if not has_info(ctx):
        raise RuleSkipped(
            "needs tcp_info from the sock_diag netlink dump; the /proc/net/tcp fallback "
            "has no idle times"
        )
    # Idle means no timer but keepalive's: retransmitting or persist sockets are stuck, not
    # idle (slow-failure-detection), and keepalive never probes while data is in flight.
    timers = ctx.sockets["timer"]
    established = in_state(ctx, TcpState.ESTABLISHED) & np.isin(
        timers, (TimerCode.NONE, TimerCode.KEEPALIVE)
    )
    if not established.any():
        return
    settings = keepalive_settings(ctx)
    keepalive = established & (timers == TimerCode.KEEPALIVE)
    silent = silent_ms(ctx)
    gap = keepalive_gap_ms(ctx, settings.time)
    timeout = idle_timeout(ctx)
    reported = np.zeros(len(ctx.sockets), dtype=bool)
    if timeout is not None:
        limit_ms = timeout.seconds * 1000
        if timeout.keepalive_resets:
            quiet = silent
            unprotected = ~keepalive | (gap >= limit_ms)
        else:  # a proxy: only data keeps the flow; keepalive probes do not count
            quiet = _data_silent_ms(ctx)
            unprotected = np.ones(len(ctx.sockets), dtype=bool)
        risk = established & (quiet >= IDLE_FRACTION * limit_ms) & unprotected
        for group in top_groups(ctx, groups(ctx, np.flatnonzero(risk))):
            yield _risk_finding(ctx, group, timeout, quiet, keepalive, gap, settings)
        reported = risk
    if timeout is None or not timeout.from_user:
        candidates = established & ~keepalive & ~reported
        yield from _untuned(ctx, candidates, silent, settings, timeout)


def _data_silent_ms(ctx: Context) -> np.ndarray:
    """Time since data went either way: what a proxy counts (ms, -1 unknown)."""
    return min_known(info_column(ctx, "last_data_recv_ms"), info_column(ctx, "last_data_sent_ms"))


# --- with an idle timeout -------------------------------------------------------------------


def _risk_finding(
    ctx: Context,
    group: Group,
    timeout: IdleTimeout,
    silent: np.ndarray,
    keepalive: np.ndarray,
    gap: np.ndarray,
    settings: KeepaliveSettings,
) -> Finding:
    rows = group.rows
    limit_ms = timeout.seconds * 1000
    with_ka = keepalive[rows]
    longest_ms = int(silent[rows].max())
    past = int((silent[rows] >= limit_ms).sum())
    gaps = gap[rows][with_ka]
    watched = len(ctx.samples) >= 2
    confident = timeout.from_user and (watched or not group.inbound)
    severity = Severity.WARNING if confident and past else Severity.INFO
    without = int((~with_ka).sum())
    slow = int(with_ka.sum())
    detection = settings.detection()
    evidence = (
        Evidence("idle_timeout_s", "middlebox idle timeout", timeout.seconds, "s"),
        Evidence("idle_timeout_source", "timeout from", timeout.source),
        Evidence("at_risk_connections", "idle connections at risk", len(rows), "sockets"),
        Evidence("without_keepalive", "of which without keepalive", without, "sockets"),
        Evidence(
            "keepalive_too_slow",
            "of which with keepalive no faster than the timeout",
            slow,
            "sockets",
        ),
        Evidence("longest_idle_s", "longest silence so far", round(longest_ms / 1000, 1), "s"),
        Evidence("idle_past_timeout", "already silent longer than the timeout", past, "sockets"),
        *_gap_evidence(gaps),
        Evidence("tcp_keepalive_time_s", "tcp_keepalive_time here", settings.time, "s"),
        Evidence(
            "keepalive_detection_s",
            "dead peer noticed after, with SO_KEEPALIVE and this namespace's defaults",
            detection.detected_at,
            "s",
        ),
    )
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=_risk_title(group, timeout, without, slow),
        subject=group.subject,
        evidence=evidence,
        explanation=_risk_explanation(ctx, group, timeout, watched),
        fixes=_fixes(ctx, timeout.seconds, timeout, settings),
        topics=TOPICS,
    )


def _gap_evidence(gaps_ms: np.ndarray) -> tuple[Evidence, ...]:
    """The longest keepalive gap, only when some socket of the group has keepalive."""
    if not len(gaps_ms):
        return ()
    longest = round(float(gaps_ms.max()) / 1000, 1)
    return (Evidence("keepalive_gap_s", "longest silence keepalive allows", longest, "s"),)


def _risk_title(group: Group, timeout: IdleTimeout, without: int, slow: int) -> str:
    total = without + slow
    noun = "connection" if total == 1 else "connections"
    if not timeout.keepalive_resets:
        how = "without data (keepalive probes do not count at a proxy)"
    elif slow == 0:
        how = "with no keepalive"
    elif without == 0:
        how = "with keepalive slower than the timeout"
    else:
        how = f"({without} without keepalive, {slow} with keepalive slower than the timeout)"
    return f"{total} idle {noun} {group.target} {how} can outlive the {timeout.label} idle timeout"


def _risk_explanation(ctx: Context, group: Group, timeout: IdleTimeout, watched: bool) -> str:
    retries = retransmit_settings(ctx)
    stall = established_give_up(retries.retries2, rto_max=retries.rto_max).budget
    parts = [
        f"A load balancer, NAT or firewall that sees no packet on a flow for "
        f"{seconds_text(timeout.seconds)} forgets it, normally without telling either end, "
        "so both sockets stay ESTABLISHED. The next request on such a connection is "
        "answered with an RST, or vanishes and is retransmitted until tcp_retries2 gives up "
        f"(about {seconds_text(stall)} here). Linux sends nothing on an idle connection "
        "unless SO_KEEPALIVE is set, and then only after tcp_keepalive_time "
        f"({seconds_text(keepalive_settings(ctx).time)} here) unless the socket sets "
        "TCP_KEEPIDLE; once probing, the gap is max(TCP_KEEPIDLE, TCP_KEEPINTVL).",
    ]
    if timeout.preset is not None:
        parts.append(f"{timeout.preset.what}: {timeout.preset.notes} ({timeout.preset.caveat}).")
    if not timeout.from_user:
        parts.append(
            "The timeout is this namespace's conntrack setting; it matters only if these "
            "flows are tracked here (NAT or stateful rules). Give the real middlebox with "
            f"--idle-timeout ({preset_names()})."
        )
    if group.inbound and not watched:
        parts.append(
            "These connections were accepted here: the client's keepalive probes do not "
            "show in this side's tcp_info, so check the clients, or run with --watch to see "
            "whether segments still arrive."
        )
    return " ".join(parts)


# --- without an idle timeout ----------------------------------------------------------------


def _untuned(
    ctx: Context,
    candidates: np.ndarray,
    silent: np.ndarray,
    settings: KeepaliveSettings,
    timeout: IdleTimeout | None,
) -> Iterator[Finding]:
    reference_ms = UNTUNED_REFERENCE_S * 1000
    idle = candidates & (silent >= reference_ms)
    for group in top_groups(ctx, groups(ctx, np.flatnonzero(idle))):
        longest_s = float(silent[group.rows].max()) / 1000
        if len(group.rows) < UNTUNED_MIN_SOCKETS and longest_s < UNTUNED_LONG_IDLE_S:
            continue
        yield _untuned_finding(ctx, group, longest_s, settings, timeout)


def _untuned_finding(
    ctx: Context,
    group: Group,
    longest_s: float,
    settings: KeepaliveSettings,
    timeout: IdleTimeout | None,
) -> Finding:
    count = len(group.rows)
    noun = "connection" if count == 1 else "connections"
    reference = ", ".join(p.name for p in PRESETS if p.seconds == UNTUNED_REFERENCE_S)
    evidence = (
        Evidence(
            "idle_without_keepalive", "silent connections without keepalive", count, "sockets"
        ),
        Evidence("longest_idle_s", "longest silence so far", round(longest_s, 1), "s"),
        Evidence(
            "reference_timeout_s",
            f"shortest common middlebox default ({reference})",
            UNTUNED_REFERENCE_S,
            "s",
        ),
        Evidence("tcp_keepalive_time_s", "tcp_keepalive_time here", settings.time, "s"),
    )
    known = (
        f" The only timeout known here is conntrack's {seconds_text(timeout.seconds)}."
        if timeout is not None
        else ""
    )
    explanation = (
        f"These sockets have been silent for {seconds_text(UNTUNED_REFERENCE_S)} or more and "
        "have no keepalive timer. Cloud load balancers and NAT gateways forget idle flows "
        f"after minutes ({_preset_examples()}), without telling either end; the next request "
        f"is then reset or hangs.{known} Pass --idle-timeout SECONDS or a preset "
        f"({preset_names()}) to compare with the middlebox on this path; the rule is sharper "
        "with it."
    )
    return Finding(
        rule=RULE_ID,
        severity=Severity.INFO,
        title=(
            f"{count} {noun} {group.target} silent for "
            f"{seconds_text(UNTUNED_REFERENCE_S)}+ with no keepalive "
            "(middlebox idle timeout unknown)"
        ),
        subject=group.subject,
        evidence=evidence,
        explanation=explanation,
        fixes=_fixes(ctx, UNTUNED_REFERENCE_S, None, settings),
        topics=TOPICS,
    )


def _preset_examples() -> str:
    return ", ".join(f"{p.name} {seconds_text(p.seconds)}" for p in PRESETS if p.vendor)


# --- fixes ----------------------------------------------------------------------------------


def suggested_keepalive(timeout_s: float) -> tuple[int, int, int]:
    """(TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) that keep a flow alive through a middlebox
    with this idle timeout: half the timeout, never above the kernel default time."""
    idle = int(max(1, min(timeout_s // 2, TCP_KEEPALIVE_TIME, MAX_TCP_KEEPIDLE)))
    intvl = int(max(1, min(idle, TCP_KEEPALIVE_INTVL, timeout_s // 4)))
    return idle, intvl, SUGGESTED_KEEPCNT


def _fixes(
    ctx: Context,
    timeout_s: float,
    timeout: IdleTimeout | None,
    settings: KeepaliveSettings,
) -> tuple[Fix, ...]:
    idle, intvl, cnt = suggested_keepalive(timeout_s)
    detected = keepalive_detection(idle, intvl, cnt).detected_at
    limit = seconds_text(timeout_s)
    keepalive = Fix(
        kind=FixKind.SOCKET_OPTION,
        summary=(
            f"Turn on SO_KEEPALIVE with TCP_KEEPIDLE={idle} s and TCP_KEEPINTVL={intvl} s "
            f"(both below {limit})"
        ),
        detail=(
            "Set it on the side that keeps idle connections (pools, long-lived clients; "
            "servers may set it on accepted sockets too). Both values must stay below the "
            "timeout: after the first answered probe the kernel waits max(TCP_KEEPIDLE, "
            f"TCP_KEEPINTVL) before the next one. With TCP_KEEPCNT={cnt} a dead peer is "
            f"noticed after {seconds_text(detected)}. Go's net.Dialer already probes every "
            "15 s unless KeepAlive is negative."
        ),
        example=(
            "Python: s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)\n"
            f"        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, {idle})\n"
            f"        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, {intvl})\n"
            f"        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, {cnt})\n"
            "Go:     net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, "
            f"Idle: {idle} * time.Second, Interval: {intvl} * time.Second, Count: {cnt}}}}}\n"
            "Java:   sock.setKeepAlive(true); "
            f"sock.setOption(ExtendedSocketOptions.TCP_KEEPIDLE, {idle}); "
            f"sock.setOption(ExtendedSocketOptions.TCP_KEEPINTERVAL, {intvl})"
        ),
    )
    pool = Fix(
        kind=FixKind.APPLICATION,
        summary=(
            f"Evict pooled connections idle longer than {seconds_text(max(1, idle))}, or "
            "ping at the application level"
        ),
        detail=(
            "A connection pool that closes idle connections before the middlebox forgets "
            "them never hands out a dead one; an application ping (HTTP/2 PING, a "
            "database's keepalive query, a WebSocket ping) keeps data flowing, which is "
            "the only thing an HTTP proxy counts."
        ),
        example=(
            f"Go: http.Transport{{IdleConnTimeout: {idle} * time.Second}}; "
            f"HikariCP: idleTimeout / keepaliveTime below {limit}; "
            f"aiohttp: TCPConnector(keepalive_timeout={idle})"
        ),
    )
    sysctl = Fix(
        kind=FixKind.SYSCTL,
        summary=f"Lower tcp_keepalive_time in this namespace below {limit}",
        detail=(
            "Changes the default for every SO_KEEPALIVE socket in the namespace that did "
            f"not set TCP_KEEPIDLE (now {seconds_text(settings.time)}); it does nothing for "
            "sockets without SO_KEEPALIVE, which most applications do not set by default. "
            "Lower tcp_keepalive_intvl too if it is above the timeout."
        ),
        example="\n".join(
            (
                sysctl_line("net.ipv4.tcp_keepalive_time", idle),
                sysctl_line("net.ipv4.tcp_keepalive_intvl", intvl),
            )
        ),
        sysctl="net.ipv4.tcp_keepalive_time",
    )
    retries = retransmit_settings(ctx)
    stall = established_give_up(retries.retries2, rto_max=retries.rto_max).budget
    user_timeout = Fix(
        kind=FixKind.SOCKET_OPTION,
        summary="Bound the hang with TCP_USER_TIMEOUT",
        detail=(
            "When the middlebox drops the forgotten flow's packets instead of resetting, "
            f"a request retransmits for about {seconds_text(stall)} (tcp_retries2) before "
            "the application hears of it. TCP_USER_TIMEOUT (milliseconds) aborts sooner, "
            "and with keepalive it also replaces TCP_KEEPCNT as the deadline."
        ),
        example="s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 30_000)",
    )
    infra = Fix(
        kind=FixKind.INFRASTRUCTURE,
        summary="Or lengthen the middlebox idle timeout, or make it reset instead of drop",
        detail=(
            "Most cloud timeouts are configurable (an NLB TCP listener 60-6000 s, Azure "
            "4-100 min, Cloud NAT's tcpEstablishedIdleTimeoutSec); Azure's 'TCP reset on "
            "idle' turns a silent hang into an immediate, retryable error."
        ),
    )
    if timeout is not None and not timeout.keepalive_resets:
        return (pool, user_timeout, infra)
    return (keepalive, pool, sysctl, user_timeout, infra)


RULE = Rule(
    id=RULE_ID,
    title="Idle connections a load balancer, NAT or firewall will silently forget",
    check=check,
)
