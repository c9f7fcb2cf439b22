"""orphans: orphaned TCP sockets near tcp_max_orphans, and orphans killed for it.

An orphan is a socket its application has closed while the kernel still finishes the close
(FIN_WAIT1, LAST_ACK, CLOSING, a full-socket FIN_WAIT2, or data still queued). The count in
/proc/net/sockstat and the limit tcp_max_orphans are both host-wide: every namespace shares
them, and the sysctl exists only in the initial namespace.

Thresholds (share of tcp_max_orphans): tcp_out_of_resources() weighs an idle orphan twice and
one with a soft error twice more (TCP_ORPHAN_PENALTY_SHIFT_MAX = 2), so

* >= max >> 2 (25 %): warning, the most penalised orphans are already being killed;
* >= max >> 1 (50 %): critical, any orphan that has sent nothing for 2 x TCP_RTO_MAX is
  killed on its next timer.

TCPAbortOnMemory rising during a watch is critical whatever the count (memory pressure,
tcp_mem, kills orphans too); without a watch, a non-zero total is info.
When the limit is not visible (a child namespace) the count is reported against nothing and
only TCPAbortOnMemory can raise a finding; a limitation says so.

Evidence: tcp_orphan, tcp_max_orphans, orphan_use_pct, penalised_kill_at,
orphans_in_namespace, host_namespace, abort_on_memory_total (and _delta, _rate, watch_s
during a watch), orphan_give_up_s.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import (
    Evidence,
    Finding,
    Fix,
    FixKind,
    Rule,
    RuleSkipped,
    Severity,
)
from tcpdoctor.diagnose.rules._closing import (
    Trend,
    orphan_end_text,
    orphan_schedule,
    seconds_text,
    trend,
    watch_evidence,
    worst,
)
from tcpdoctor.diagnose.rules._common import sysctl_line
from tcpdoctor.kernel.constants import TCP_ORPHAN_PENALTY_SHIFT_MAX, TCP_ORPHAN_RETRIES
from tcpdoctor.kernel.states import TcpState

RULE_ID = "orphans"
MAX_ORPHANS = "net.ipv4.tcp_max_orphans"
ORPHAN_RETRIES = "net.ipv4.tcp_orphan_retries"
ABORT_ON_MEMORY = "TcpExt.TCPAbortOnMemory"
# Full sockets whose application has closed them: inode 0. FIN_WAIT2 and TIME_WAIT
# minisocks are not counted by the kernel as orphans (they are no longer full sockets).
ORPHAN_STATES = (TcpState.FIN_WAIT1, TcpState.LAST_ACK, TcpState.CLOSING, TcpState.FIN_WAIT2)
_MINISOCK_TIMER = 3


def check(ctx: Context) -> Iterator[Finding]:
    counters = ctx.snapshot.counters
    if counters is None:
        raise RuleSkipped("no counters in this snapshot (sockstat is needed)")
    orphans = counters.sockstat.tcp_orphan
    limit = ctx.sysctl_int(MAX_ORPHANS)
    aborts = trend(ctx, ABORT_ON_MEMORY)
    host = ctx.snapshot.meta.netns.is_host
    if limit is None:
        where = "could not be read" if host else "is not visible from this network namespace"
        ctx.limitations.append(
            f"{RULE_ID}: tcp_max_orphans (host-wide) {where}; the host-wide count of "
            f"{orphans} orphans was compared with no limit, only TCPAbortOnMemory of this "
            "namespace was judged"
        )
    severity = worst(_by_share(orphans, limit), _by_aborts(aborts))
    if severity is None:
        return
    yield _finding(ctx, orphans, limit, aborts, host, severity)


def _by_share(orphans: int, limit: int | None) -> Severity | None:
    if not limit or limit <= 0:
        return None
    if orphans >= limit >> (TCP_ORPHAN_PENALTY_SHIFT_MAX - 1):
        return Severity.CRITICAL
    if orphans >= limit >> TCP_ORPHAN_PENALTY_SHIFT_MAX:
        return Severity.WARNING
    return None


def _by_aborts(aborts: Trend) -> Severity | None:
    if aborts.watched:
        return Severity.CRITICAL if aborts.rising else None
    return Severity.INFO if aborts.total else None


def _local_orphans(ctx: Context) -> int:
    sockets = ctx.sockets
    closing = np.isin(sockets["state"], [int(s) for s in ORPHAN_STATES])
    full = sockets["timer"] != _MINISOCK_TIMER
    return int(np.count_nonzero(closing & full & (sockets["inode"] == 0)))


def _finding(
    ctx: Context,
    orphans: int,
    limit: int | None,
    aborts: Trend,
    host: bool | None,
    severity: Severity,
) -> Finding:
    share = round(100.0 * orphans / limit, 1) if limit else None
    retries = ctx.sysctl_int(ORPHAN_RETRIES)
    retries = TCP_ORPHAN_RETRIES if retries is None else retries
    give_up = orphan_schedule(retries).schedule.gives_up_at
    evidence = (
        Evidence("tcp_orphan", "orphaned TCP sockets (whole host)", orphans, "sockets"),
        Evidence("tcp_max_orphans", "tcp_max_orphans (whole host)", limit, "sockets"),
        Evidence("orphan_use_pct", "share of the limit", share, "%"),
        Evidence(
            "penalised_kill_at",
            "penalised orphans are killed from",
            (limit >> TCP_ORPHAN_PENALTY_SHIFT_MAX) if limit else None,
            "sockets",
        ),
        Evidence(
            "orphans_in_namespace",
            "orphans visible in this namespace",
            _local_orphans(ctx),
            "sockets",
        ),
        Evidence("host_namespace", "looking at the host namespace", host),
        *aborts.evidence("abort_on_memory", "sockets"),
        *watch_evidence(ctx),
        Evidence("orphan_give_up_s", "an unanswered orphan gives up after", give_up, "s"),
    )
    scope = (
        ""
        if host
        else " This namespace is not the host's: the count covers every namespace on the host."
    )
    killing = aborts.rising or (not aborts.watched and bool(aborts.total))
    if limit and share is not None:
        title = f"{orphans:,} orphaned sockets: {share:g} % of tcp_max_orphans ({limit:,})"
    else:
        title = f"orphaned sockets were killed for lack of resources ({aborts.name})"
    if killing and limit:
        title += f"; {aborts.name} {'rising' if aborts.rising else 'non-zero'}"
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=title,
        subject="host" if host else "host (seen from this namespace)",
        evidence=evidence,
        explanation=(
            "Orphans are connections their applications have already closed while the kernel "
            "still delivers the last data and FIN. They are capped host-wide by "
            "tcp_max_orphans; idle orphans and those that got an ICMP error count double or "
            "fourfold against it, and once over it (or when TCP memory runs short) the kernel "
            "kills them, logs 'too many orphaned sockets' and counts TCPAbortOnMemory: peers "
            "may then lose the tail of a response. Many orphans usually mean closes towards "
            f"peers that do not answer; each lingers up to {seconds_text(give_up)}." + scope
        ),
        fixes=_fixes(limit, retries, host),
        topics=("orphans", "retries", "linger"),
    )


def _fixes(limit: int | None, retries: int, host: bool | None) -> tuple[Fix, ...]:
    suggested = 5
    shorter = orphan_schedule(suggested)
    fixes = [
        Fix(
            FixKind.INVESTIGATE,
            "Find which peers the orphans are waiting for",
            "fin-wait1-stuck and last-ack-stuck name the peers that do not acknowledge FINs; "
            "orphans with unsent data point at peers that stopped reading.",
            "ss -tan state fin-wait-1 state last-ack state closing | awk '{print $5}' | "
            "sort | uniq -c | sort -rn | head",
        ),
        Fix(
            FixKind.SYSCTL,
            f"Free unanswered orphans sooner with tcp_orphan_retries (now {retries})",
            f"At the minimum RTO, {suggested} ends an orphan {orphan_end_text(shorter)}; it is "
            "per namespace, so set it where the orphans are.",
            sysctl_line(ORPHAN_RETRIES, suggested),
            sysctl=ORPHAN_RETRIES,
        ),
    ]
    if limit:
        fixes.append(
            Fix(
                FixKind.SYSCTL,
                "Raise tcp_max_orphans if the host has the memory",
                "Each orphan can hold up to its send buffer; the limit protects the host from "
                "running out of memory. It is host-wide: set it in the initial namespace.",
                sysctl_line(MAX_ORPHANS, limit * 2),
                sysctl=MAX_ORPHANS,
            )
        )
    elif not host:
        fixes.append(
            Fix(
                FixKind.INFRASTRUCTURE,
                "Ask the host's administrator to check tcp_max_orphans and tcp_mem",
                "Both are host-wide and invisible from inside this namespace.",
                "on the host: sysctl net.ipv4.tcp_max_orphans net.ipv4.tcp_mem",
            )
        )
    return tuple(fixes)


RULE = Rule(RULE_ID, "Orphaned sockets near tcp_max_orphans or killed for memory", check)
