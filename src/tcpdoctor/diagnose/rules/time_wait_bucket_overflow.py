"""time-wait-bucket-overflow: closing sockets skip TIME_WAIT because tcp_max_tw_buckets is hit.

tcp_max_tw_buckets caps the TIME_WAIT and orphaned FIN_WAIT2 minisockets of a namespace.
At the cap, tcp_time_wait() destroys the socket at once and counts TCPTimeWaitOverflow:
no TIME_WAIT, no RST, nothing logged (kernel-notes 1.4). The count compared with the cap
is the larger of the dump's TIME_WAIT + FIN_WAIT2 minisockets and sockstat's "tw".

Severity:

- critical: TCPTimeWaitOverflow grew during a watch; or, from one snapshot, it is above 0
  and the minisockets are at 90% of the cap or more (NEAR_LIMIT_SHARE) right now;
- warning: one snapshot with TCPTimeWaitOverflow > 0 (at some time since the namespace
  was created); or minisockets at 90% of the cap or more; or a cap of 0;
- info: a watch saw no new overflow and the count is far from the cap, but the counter
  shows it happened before.

The fixes do not lower the cap, and raise it blindly only as the last step: back to the
default (half the established hash) when it was lowered, otherwise after cutting churn.

Evidence: time_wait, max_tw_buckets, used_pct, overflow_total, default_max_tw_buckets,
server_side_time_wait, client_side_time_wait; with a watch also watch_s,
overflow_during_watch, overflow_rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, RuleSkipped, Severity
from tcpdoctor.diagnose.rules._common import in_state, sysctl_line
from tcpdoctor.diagnose.rules._ports import (
    DO_NOT_SHORTCUT,
    MAX_TW_BUCKETS,
    POOL_EXAMPLE,
    minisock_count,
    pct,
    watching,
)
from tcpdoctor.kernel.constants import (
    TCP_EHASH_ENTRIES_TYPICAL,
    TCP_MAX_TW_BUCKETS_EHASH_DIVISOR,
    TCP_TIMEWAIT_LEN,
)
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.kernel.timing import time_wait_memory

RULE_ID = "time-wait-bucket-overflow"
OVERFLOW = "TcpExt.TCPTimeWaitOverflow"
EHASH_ENTRIES = "net.ipv4.tcp_ehash_entries"  # not catalogued yet: read when it is
NEAR_LIMIT_SHARE = 0.9
TOPICS = ("max-tw-buckets", "time-wait", "fin-wait2")


class _Look(NamedTuple):
    minisocks: int
    limit: int | None
    total: int | None  # TCPTimeWaitOverflow, since the namespace was created
    delta: int | None  # during the watch
    rate: float | None
    default: int
    default_known: bool  # from tcp_ehash_entries, not the typical value

    @property
    def near(self) -> bool:
        """At >= 90% of the cap (always true for a cap of 0: nothing gets a TIME_WAIT)."""
        return self.limit is not None and self.minisocks >= NEAR_LIMIT_SHARE * self.limit


def check(ctx: Context) -> Iterator[Finding]:
    look = _look(ctx)
    severity = _severity(ctx, look)
    if severity is not None:
        yield _finding(ctx, look, severity)


def _look(ctx: Context) -> _Look:
    limit = ctx.sysctl_int(MAX_TW_BUCKETS)
    total = ctx.counter(OVERFLOW)
    if limit is None and total is None:
        raise RuleSkipped("neither tcp_max_tw_buckets nor TCPTimeWaitOverflow could be read")
    ehash = ctx.sysctl_int(EHASH_ENTRIES)  # negative when the namespace shares the host's
    return _Look(
        minisocks=minisock_count(ctx),
        limit=limit,
        total=total,
        delta=ctx.counter_delta(OVERFLOW),
        rate=ctx.counter_rate(OVERFLOW),
        default=abs(ehash or TCP_EHASH_ENTRIES_TYPICAL) // TCP_MAX_TW_BUCKETS_EHASH_DIVISOR,
        default_known=bool(ehash),
    )


def _severity(ctx: Context, look: _Look) -> Severity | None:
    happened = bool(look.total)
    if watching(ctx) and look.delta is not None:
        if look.delta > 0:
            return Severity.CRITICAL
        if look.near:
            return Severity.WARNING
        return Severity.INFO if happened else None
    if happened and look.near:
        return Severity.CRITICAL
    if happened or look.near:
        return Severity.WARNING
    return None


def _finding(ctx: Context, look: _Look, severity: Severity) -> Finding:
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=_title(ctx, look),
        subject="this network namespace",
        evidence=tuple(_evidence(ctx, look)),
        explanation=_explanation(look),
        fixes=tuple(_fixes(look)),
        topics=TOPICS,
    )


def _title(ctx: Context, look: _Look) -> str:
    cap = f"{look.minisocks:,} of {look.limit:,} " if look.limit is not None else ""
    if look.delta:
        return (
            f"{look.delta:,} closing sockets skipped TIME_WAIT during the watch "
            f"({cap}TIME_WAIT slots used)"
        )
    if look.total:
        when = "before the watch" if watching(ctx) else "since the namespace started"
        return f"{look.total:,} closing sockets skipped TIME_WAIT {when} ({cap}slots used)"
    if look.limit == 0:
        return "tcp_max_tw_buckets=0: every closing socket here skips TIME_WAIT"
    return f"TIME_WAIT table nearly full: {cap}tcp_max_tw_buckets slots used"


def _evidence(ctx: Context, look: _Look) -> list[Evidence]:
    server, client = _split(ctx)
    items = [
        Evidence("time_wait", "TIME_WAIT + FIN_WAIT2 minisockets", look.minisocks, "sockets"),
        Evidence("max_tw_buckets", "tcp_max_tw_buckets", look.limit),
        Evidence(
            "used_pct",
            "share of the cap in use",
            pct(look.minisocks, look.limit) if look.limit is not None else None,
            "%",
        ),
        Evidence(
            "overflow_total",
            "TCPTimeWaitOverflow (since the namespace started)",
            look.total,
            "events",
        ),
        Evidence(
            "default_max_tw_buckets",
            "default cap" + ("" if look.default_known else " (typical host)"),
            look.default,
        ),
        Evidence("server_side_time_wait", "TIME_WAIT on listening ports", server, "sockets"),
        Evidence("client_side_time_wait", "TIME_WAIT on other ports", client, "sockets"),
    ]
    if watching(ctx):
        items += [
            Evidence("watch_s", "watched for", ctx.elapsed, "s"),
            Evidence(
                "overflow_during_watch",
                "TCPTimeWaitOverflow during the watch",
                look.delta,
                "events",
            ),
            Evidence("overflow_rate", "skipped TIME_WAITs", look.rate, "/s"),
        ]
    return items


def _split(ctx: Context) -> tuple[int, int]:
    tw = in_state(ctx, TcpState.TIME_WAIT)
    on_listener = np.isin(ctx.sockets["sport"].astype(np.int64), ctx.listening_ports)
    return int(np.count_nonzero(tw & on_listener)), int(np.count_nonzero(tw & ~on_listener))


def _explanation(look: _Look) -> str:
    limit = look.limit if look.limit is not None else look.default
    sustainable = limit / TCP_TIMEWAIT_LEN
    lowered = look.limit is not None and look.limit < look.default
    cause = (
        f"The cap here ({limit:,}) is below the default ({look.default:,}), which is the "
        "usual cause: someone lowered it to get rid of TIME_WAITs."
        if lowered
        else f"With the cap at {limit:,}, this namespace closes connections faster than "
        f"{limit:,} / {TCP_TIMEWAIT_LEN:g} s = {sustainable:,.1f} per second."
    )
    return (
        "net.ipv4.tcp_max_tw_buckets caps how many TIME_WAIT (and orphaned FIN_WAIT2) "
        "sockets this namespace keeps. Over the cap the kernel does not fail anything: a "
        "closing socket is simply destroyed without TIME_WAIT, without an RST and without a "
        "log line; only TCPTimeWaitOverflow counts it. Those connections lose what TIME_WAIT "
        "is for: a delayed segment can land in a new connection on the same addresses and "
        "ports, and if the peer did not get the last ACK, its retransmitted FIN is answered "
        f"with an RST, so the peer sees an error on close. {cause}"
    )


def _fixes(look: _Look) -> list[Fix]:
    raise_fix = _raise_fix(look)
    churn = Fix(
        kind=FixKind.APPLICATION,
        summary="Cut the churn: reuse connections instead of closing one per request",
        detail=(
            "The client_side/server_side evidence says which side closes first. Clients: pool "
            "and keep connections alive; servers: enable keep-alive so clients close first. "
            "Fewer closes means fewer TIME_WAITs, whatever the cap."
        ),
        example=POOL_EXAMPLE,
    )
    if look.limit is not None and look.limit < look.default:
        return [raise_fix, churn]
    return [churn, raise_fix]


def _raise_fix(look: _Look) -> Fix:
    lowered = look.limit is not None and look.limit < look.default
    target = look.default if lowered else 2 * max(look.limit or 0, look.default)
    memory = time_wait_memory(target)
    first = (
        "Raise it back to the default."
        if lowered
        else "Raise it only once the churn is understood, and only if the memory is fine."
    )
    return Fix(
        kind=FixKind.SYSCTL,
        summary=f"Set net.ipv4.tcp_max_tw_buckets to {target:,}",
        detail=(
            f"{first} TIME_WAIT sockets are small minisockets: {target:,} of them take about "
            f"{memory.total_mib:,.0f} MiB of kernel memory at most. A lower cap does not make "
            "connections close any faster; it only decides which of them go without TIME_WAIT. "
            f"Remove any lowered value from /etc/sysctl.conf and /etc/sysctl.d as well. "
            f"{DO_NOT_SHORTCUT}"
        ),
        example=sysctl_line(MAX_TW_BUCKETS, target),
        sysctl=MAX_TW_BUCKETS,
    )


RULE = Rule(RULE_ID, "Closing sockets skipping TIME_WAIT (tcp_max_tw_buckets reached)", check)
