"""listen-queue-overflow: listeners whose accept queue is full, and the SYNs that costs.

For a LISTEN socket inet_diag reports the accept queue (connections the application has not
accept()ed yet) as Recv-Q and the backlog as Send-Q. The queue holds backlog + 1
(ACCEPT_QUEUE_SLACK) before the kernel drops: a dropped SYN, or handshake ACK, counts in
ListenOverflows and ListenDrops (ListenDrops also counts other listener drops).

Thresholds:

* a listener with Recv-Q >= its backlog: warning; critical when ListenOverflows rises during
  the watch as well.
* ListenOverflows rising during a watch with no listener full at either sample: warning,
  critical at CRITICAL_RATE (10 drops per second) or more.
* no watch, no listener full, ListenOverflows (or ListenDrops) above 0 since the namespace
  started: info.

Evidence, per listener: listen_address, listen_port, pid, comm, accept_queue, backlog,
queue_full, full_in_first_sample, somaxconn, capped_by_somaxconn, listen_overflows_total
and listen_drops_total (with _delta and _rate during a watch), watch_s,
tcp_abort_on_overflow. Namespace-wide: the counters, fullest_listeners, somaxconn.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, Severity
from tcpdoctor.diagnose.rules._closing import (
    Trend,
    holder_of,
    local_endpoint,
    note_unknown_owners,
    rows_where,
    trend,
    watch_evidence,
)
from tcpdoctor.diagnose.rules._common import in_state, sysctl_line
from tcpdoctor.kernel.constants import ACCEPT_QUEUE_SLACK, SOMAXCONN_DEFAULT
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.kernel.timing import syn_give_up
from tcpdoctor.observe.snapshot import Source

RULE_ID = "listen-queue-overflow"
CRITICAL_RATE = 10.0
SOMAXCONN = "net.core.somaxconn"
ABORT_ON_OVERFLOW = "net.ipv4.tcp_abort_on_overflow"
OVERFLOWS = "TcpExt.ListenOverflows"
DROPS = "TcpExt.ListenDrops"
TOPICS = ("listen-queue", "syn-retries")
_SYN_RETRIES_TEXT = (
    ", ".join(f"{t:g}" for t in syn_give_up().schedule.retransmit_times[:4]) + " ..."
)


def full_listeners(sockets: np.ndarray) -> np.ndarray:
    """Boolean mask: LISTEN rows whose accept queue reached the backlog."""
    listening = sockets["state"] == TcpState.LISTEN
    rq = sockets["rqueue"].astype(np.int64)
    return np.asarray(listening & (rq > 0) & (rq >= sockets["wqueue"]), dtype=np.bool_)


def check(ctx: Context) -> Iterator[Finding]:
    overflows, drops = trend(ctx, OVERFLOWS), trend(ctx, DROPS)
    if ctx.snapshot.meta.source is Source.PROC:
        # /proc/net/tcp prints a listener's Send-Q as 0, not its backlog.
        ctx.limitations.append(
            f"{RULE_ID}: sockets were read from /proc, which does not show a listener's "
            "backlog; only the ListenOverflows/ListenDrops counters were judged"
        )
        rows = np.zeros(0, dtype=np.int64)
    else:
        rows = rows_where(in_state(ctx, TcpState.LISTEN) & full_listeners(ctx.sockets))
    unknown = 0
    fullest = rows[np.argsort(-ctx.sockets["rqueue"][rows].astype(np.int64), kind="stable")]
    for row in fullest.tolist()[: ctx.options.top]:
        finding, known = _listener(ctx, row, overflows, drops)
        unknown += 0 if known else 1
        yield finding
    note_unknown_owners(ctx, RULE_ID, unknown, "LISTEN")
    if len(rows):
        return
    overall = _namespace(ctx, overflows, drops)
    if overall is not None:
        yield overall


def _earlier_full(ctx: Context, row: int) -> bool | None:
    if len(ctx.samples) < 2:
        return None
    first = ctx.samples[0].sockets
    me = ctx.sockets[row]
    same = (first["sport"] == me["sport"]) & np.all(first["src"] == me["src"], axis=1)
    return bool(np.any(same & full_listeners(first)))


def _listener(ctx: Context, row: int, overflows: Trend, drops: Trend) -> tuple[Finding, bool]:
    sock = ctx.sockets[row]
    queue, backlog = int(sock["rqueue"]), int(sock["wqueue"])
    full = queue >= backlog + ACCEPT_QUEUE_SLACK
    somaxconn = ctx.sysctl_int(SOMAXCONN)
    capped = somaxconn is not None and backlog == somaxconn
    holder = holder_of(ctx, int(sock["inode"]))
    port = int(sock["sport"])
    where = local_endpoint(ctx, row)
    earlier = _earlier_full(ctx, row)
    evidence = (
        Evidence("listen_address", "listening on", where),
        Evidence("listen_port", "port", port),
        *holder.evidence(),
        Evidence("accept_queue", "connections waiting for accept() (Recv-Q)", queue, "connections"),
        Evidence("backlog", "backlog (Send-Q)", backlog, "connections"),
        Evidence("queue_full", f"queue holds backlog + {ACCEPT_QUEUE_SLACK} and is full", full),
        Evidence("full_in_first_sample", "already at the backlog at the first sample", earlier),
        Evidence("somaxconn", "net.core.somaxconn", somaxconn),
        Evidence("capped_by_somaxconn", "backlog equals somaxconn (likely capped)", capped),
        *overflows.evidence("listen_overflows", "drops"),
        *drops.evidence("listen_drops", "drops"),
        *watch_evidence(ctx),
        Evidence(
            "tcp_abort_on_overflow", "tcp_abort_on_overflow", ctx.sysctl_int(ABORT_ON_OVERFLOW)
        ),
    )
    severity = Severity.CRITICAL if overflows.rising else Severity.WARNING
    state = "full" if full else "at its backlog"
    title = (
        f"accept queue of {where} ({holder.label}) is {state}: {queue} waiting, backlog {backlog}"
    )
    if overflows.rising:
        title += f"; {overflows.delta:,} SYNs dropped during the watch"
    finding = Finding(
        rule=RULE_ID,
        severity=severity,
        title=title,
        subject=f"{where} ({holder.label})",
        evidence=evidence,
        explanation=_explanation(),
        fixes=_fixes(ctx, holder.comm if holder.known else "the server", port, backlog, capped),
        topics=TOPICS,
    )
    return finding, holder.known


def _explanation() -> str:
    return (
        "The kernel completes handshakes on its own and parks the new connections in the "
        "listener's accept queue until the application calls accept(). That queue holds the "
        "listen() backlog plus one, and the backlog is silently capped at net.core.somaxconn. "
        "When it is full the kernel drops the client's SYN (or its handshake ACK) without a "
        f"word: a Linux client resends its SYN at {_SYN_RETRIES_TEXT} s, so users see "
        "connects that take seconds or time out while the server looks idle. A full queue "
        "means the application accepts too slowly: too few workers, or an accept loop that "
        "blocks."
    )


def _fixes(ctx: Context, who: str, port: int | None, backlog: int, capped: bool) -> tuple[Fix, ...]:
    bigger = max(SOMAXCONN_DEFAULT, backlog * 4)
    watch = (
        f"watch -n1 \"ss -ltn 'sport = :{port}'\"   # Recv-Q should stay near 0"
        if port is not None
        else "watch -n1 ss -ltn   # a Recv-Q close to Send-Q marks the listener"
    )
    listen_line = f"listen(fd, {bigger});" + (
        f"   # nginx: listen {port} backlog={bigger};" if port is not None else ""
    )
    accept = Fix(
        FixKind.APPLICATION,
        f"Make {who} accept faster",
        "Add workers or accept threads, and never block the accept loop on slow work; the "
        "backlog only absorbs bursts, it cannot make up for a slow consumer.",
        watch,
    )
    app_backlog = Fix(
        FixKind.APPLICATION,
        "Ask for a larger backlog in listen()",
        "The application's own backlog is the other half of the limit; it is read when the "
        "socket starts listening, so restart the listener after changing it.",
        listen_line,
    )
    sysctl = Fix(
        FixKind.SYSCTL,
        "Raise net.core.somaxconn so the larger backlog is not cut down",
        "listen() silently caps the backlog at somaxconn (per network namespace); it takes "
        "effect for listeners created afterwards.",
        sysctl_line(SOMAXCONN, bigger),
        sysctl=SOMAXCONN,
    )
    fixes = [accept, sysctl, app_backlog] if capped else [accept, app_backlog, sysctl]
    abort = ctx.sysctl_int(ABORT_ON_OVERFLOW)
    if abort:
        fixes.append(
            Fix(
                FixKind.SYSCTL,
                "Turn tcp_abort_on_overflow back off",
                "With 1 a full queue answers clients with a reset, so a short burst becomes "
                "failed connections instead of a one-second retry.",
                sysctl_line(ABORT_ON_OVERFLOW, 0),
                sysctl=ABORT_ON_OVERFLOW,
            )
        )
    else:
        fixes.append(
            Fix(
                FixKind.INVESTIGATE,
                "Leave tcp_abort_on_overflow at 0",
                "Setting it makes clients fail at once with a reset instead of retrying; only "
                "worth it when the queue is permanently full and failing fast is preferred.",
            )
        )
    return tuple(fixes)


def _namespace(ctx: Context, overflows: Trend, drops: Trend) -> Finding | None:
    if overflows.watched:
        if not (overflows.rising or drops.rising):
            return None
        rate = max(overflows.rate or 0.0, drops.rate or 0.0)
        severity = Severity.CRITICAL if rate >= CRITICAL_RATE else Severity.WARNING
        title = (
            f"{overflows.delta:,} listen-queue overflows during the watch "
            f"({overflows.rate or 0:.2g}/s), no listener full at the samples"
        )
    else:
        if not ((overflows.total or 0) > 0 or (drops.total or 0) > 0):
            return None
        severity = Severity.INFO
        title = (
            f"{overflows.total or 0:,} listen-queue overflows and {drops.total or 0:,} listener "
            "drops since the namespace started"
        )
    sockets = ctx.sockets[ctx.sockets["state"] == TcpState.LISTEN]
    busiest = ""
    if len(sockets):
        fill = sockets["rqueue"].astype(np.float64) / np.maximum(sockets["wqueue"], 1)
        top = np.argsort(-fill, kind="stable")[:3]
        busiest = ", ".join(
            f":{int(sockets['sport'][i])} {int(sockets['rqueue'][i])}/{int(sockets['wqueue'][i])}"
            for i in top.tolist()
        )
    evidence = (
        *overflows.evidence("listen_overflows", "drops"),
        *drops.evidence("listen_drops", "drops"),
        *watch_evidence(ctx),
        Evidence("fullest_listeners", "fullest listeners (queue/backlog)", busiest or None),
        Evidence("somaxconn", "net.core.somaxconn", ctx.sysctl_int(SOMAXCONN)),
    )
    explanation = _explanation()
    if not overflows.watched:
        explanation += (
            " These are totals since boot; watch (--watch) to see whether it still happens."
        )
    else:
        explanation += (
            " The queue emptied again before a sample caught it full: look at the listeners "
            "with bursts of connections."
        )
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=title,
        subject="namespace",
        evidence=evidence,
        explanation=explanation,
        fixes=_fixes(ctx, "the servers", None, 0, capped=False)[:3],
        topics=TOPICS,
    )


RULE = Rule(RULE_ID, "Listeners whose accept queue overflows", check)
