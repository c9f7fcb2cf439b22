"""close-wait-leak: CLOSE_WAIT sockets an application never closes, per process.

The peer has closed; the kernel acknowledged its FIN and now waits for the local application
to call close(). No kernel timer ends CLOSE_WAIT, so a forgotten socket stays until the
process exits (or an RST arrives).

Thresholds, per process (a few young CLOSE_WAITs are normal: a socket is in CLOSE_WAIT
between the FIN's arrival and the application's close(), usually microseconds):

| sockets in CLOSE_WAIT | stale ones (older than STALE_AFTER_S) | severity |
|-----------------------|---------------------------------------|----------|
| < 10                  | 0                                     | silent   |
| >= 10                 | >= 1                                  | info     |
| >= 100                | >= 10                                 | warning  |
| >= 1000               | >= 500                                | critical |

The highest severity reached by either column wins. STALE_AFTER_S is the default orphaned
FIN_WAIT2 lifetime (tcp_fin_timeout, 60 s): past it a Linux peer has usually forgotten the
connection, so the local socket talks to nobody. Ages are lower bounds: the time since the
peer last sent anything (tcp_info), or the watch span for sockets seen in both samples.
One finding per process, the top N (--top) by severity and count; sockets whose owner cannot
be found (not root) are grouped as one unidentified process and a limitation says why.

Evidence: pid, comm, close_wait, fin_unread (Recv-Q 1), data_unread (Recv-Q > 1), eof_read
(Recv-Q 0), oldest_age_s, stale, stale_after_s, watch_s, persisted_over_watch, outbound,
keepalive_armed, top_peers, processes_with_close_wait.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, Severity
from tcpdoctor.diagnose.rules._closing import (
    Holder,
    age_lower_bound_s,
    by_row,
    grade,
    group_by_holder,
    inbound,
    max_or_none,
    note_unknown_owners,
    persisted,
    plural,
    ranked,
    rows_where,
    top_peers_text,
    watch_evidence,
    worst,
)
from tcpdoctor.diagnose.rules._common import in_state
from tcpdoctor.kernel.constants import TCP_FIN_TIMEOUT, TCP_KEEPALIVE_TIME
from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.kernel.timing import fin_wait2_lifetime
from tcpdoctor.observe._records import pick

RULE_ID = "close-wait-leak"
STALE_AFTER_S = fin_wait2_lifetime(TCP_FIN_TIMEOUT).lifetime or TCP_FIN_TIMEOUT
COUNT_LEVELS = ((10, Severity.INFO), (100, Severity.WARNING), (1000, Severity.CRITICAL))
STALE_LEVELS = ((1, Severity.INFO), (10, Severity.WARNING), (500, Severity.CRITICAL))
FIN_ONLY = 1  # Recv-Q of a CLOSE_WAIT socket whose only unread "byte" is the FIN

EXPLANATION = (
    "The peer closed its end: its FIN arrived and this kernel acknowledged it. The socket now "
    "waits for the application to call close(), and nothing else ends it: CLOSE_WAIT has no "
    "kernel timer, and tcp_fin_timeout does not apply to it. Each one keeps a file descriptor, "
    "buffers and the 4-tuple until the process closes it or exits. A Recv-Q of 1 is the FIN "
    "itself, still unread: the application has not even called read() since the peer left. "
    "Recv-Q 0 means read() returned 0 and the application still did not close."
)


def check(ctx: Context) -> Iterator[Finding]:
    rows = rows_where(in_state(ctx, TcpState.CLOSE_WAIT))
    if not len(rows):
        return
    ages = by_row(ctx, rows, age_lower_bound_s(ctx, rows, TcpState.CLOSE_WAIT))
    kept = by_row(ctx, rows, persisted(ctx, rows, TcpState.CLOSE_WAIT))
    groups = group_by_holder(ctx, rows)
    graded: list[tuple[Holder, np.ndarray, Severity]] = []
    for holder, found in ranked(groups, len(groups)):
        group_ages = ages[found]
        stale = int(np.count_nonzero(group_ages >= STALE_AFTER_S))
        severity = worst(grade(len(found), COUNT_LEVELS), grade(stale, STALE_LEVELS))
        if severity is not None:
            graded.append((holder, found, severity))
    unknown = sum(len(found) for holder, found, _ in graded if not holder.known)
    note_unknown_owners(ctx, RULE_ID, unknown, "CLOSE_WAIT")
    graded.sort(key=lambda item: (-item[2], -len(item[1]), item[0]))
    for holder, found, severity in graded[: ctx.options.top]:
        still = int(np.count_nonzero(kept[found]))
        yield _finding(ctx, holder, found, ages[found], still, severity, len(groups))


def _finding(
    ctx: Context,
    holder: Holder,
    rows: np.ndarray,
    ages: np.ndarray,
    still: int,
    severity: Severity,
    processes: int,
) -> Finding:
    sockets = pick(ctx.sockets, rows)
    rqueue = sockets["rqueue"].astype(np.int64)
    fin_unread = int(np.count_nonzero(rqueue == FIN_ONLY))
    data_unread = int(np.count_nonzero(rqueue > FIN_ONLY))
    eof_read = int(np.count_nonzero(rqueue == 0))
    stale = int(np.count_nonzero(ages >= STALE_AFTER_S))
    keepalive = int(np.count_nonzero(sockets["timer"] == TimerCode.KEEPALIVE))
    count = len(rows)
    outbound = int(np.count_nonzero(~inbound(ctx, rows)))
    oldest = max_or_none(ages)
    evidence = (
        *holder.evidence(),
        Evidence("close_wait", "sockets in CLOSE_WAIT", count, "sockets"),
        Evidence("fin_unread", "with only the FIN unread (Recv-Q 1)", fin_unread, "sockets"),
        Evidence(
            "data_unread", "with data and the FIN unread (Recv-Q > 1)", data_unread, "sockets"
        ),
        Evidence("eof_read", "EOF already read, still open (Recv-Q 0)", eof_read, "sockets"),
        Evidence("oldest_age_s", "oldest, at least", oldest, "s"),
        Evidence("stale", f"older than {STALE_AFTER_S:g} s", stale, "sockets"),
        Evidence("stale_after_s", "stale after", STALE_AFTER_S, "s"),
        *watch_evidence(ctx),
        *(
            (Evidence("persisted_over_watch", "seen in both samples", still, "sockets"),)
            if len(ctx.samples) > 1
            else ()
        ),
        Evidence("outbound", "opened by this process (connect())", outbound, "sockets"),
        Evidence("keepalive_armed", "with a keepalive timer", keepalive, "sockets"),
        Evidence("top_peers", "peers", top_peers_text(ctx, rows)),
        Evidence("processes_with_close_wait", "processes holding CLOSE_WAIT", processes),
    )
    age_text = f", oldest at least {oldest:g} s" if oldest is not None else ""
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=f"{plural(count, 'socket')} left in CLOSE_WAIT by {holder.label}{age_text}",
        subject=holder.label,
        evidence=evidence,
        explanation=EXPLANATION,
        fixes=_fixes(holder, fin_unread, data_unread, count, outbound),
        topics=("close-wait", "keepalive", "fd-limits"),
    )


def _fixes(
    holder: Holder, fin_unread: int, data_unread: int, count: int, outbound: int
) -> tuple[Fix, ...]:
    who = holder.comm if holder.known else "the application"
    close = Fix(
        FixKind.APPLICATION,
        f"Make {who} close a connection as soon as the peer closes it",
        "read() returning 0 (or EPOLLRDHUP / POLLHUP in an event loop) means the peer is gone; "
        "close the socket on that path and on every error path. No kernel setting can do this "
        "for the application.",
        "data = sock.recv(65536)\nif not data:\n    sock.close()  # peer closed: leave CLOSE_WAIT",
    )
    pool = Fix(
        FixKind.APPLICATION,
        "Validate pooled connections and drop idle ones before the server does",
        "An idle pooled connection that the server closed sits in CLOSE_WAIT with the FIN "
        "unread until the pool next touches it. Check connections when borrowing them and set "
        "the pool's idle timeout below the server's.",
        "Go: http.Transport{IdleConnTimeout: 30 * time.Second}; "
        "HikariCP: idleTimeout/maxLifetime below the server's wait_timeout",
    )
    find = Fix(
        FixKind.INVESTIGATE,
        "Find the code path that holds them",
        "Unread data plus the FIN (Recv-Q > 1) points at a reader that stopped: look for a "
        "blocked or deadlocked thread. Recv-Q 0 points at a missing close() after EOF.",
        f"ss -tanp state close-wait | grep 'pid={holder.pid},'; ls -l /proc/{holder.pid}/fd"
        if holder.known
        else "sudo ss -tanp state close-wait",
    )
    keepalive = Fix(
        FixKind.SOCKET_OPTION,
        "SO_KEEPALIVE only reaps them when the peer answers a probe with a reset",
        f"After tcp_keepalive_time ({TCP_KEEPALIVE_TIME:g} s by default) idle, a probe reaches a "
        "peer that has forgotten the connection and gets an RST, which frees the socket. It "
        "hides the leak; it does not fix it, and does nothing while the peer still remembers.",
        "setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);",
    )
    if outbound * 2 <= count:
        # Mostly accepted connections: a server, where pools do not apply.
        idle = Fix(
            FixKind.APPLICATION,
            "Give client connections an idle timeout in the server",
            "A server that waits for requests on many connections must notice when a client "
            "hangs up; an idle timeout also closes connections whose EOF was never looked at.",
            "e.g. a read deadline per connection, closed on expiry or on EOF",
        )
        return (close, idle, find, keepalive)
    pool_first = fin_unread * 2 > count and data_unread == 0
    ordered = (pool, close) if pool_first else (close, pool)
    return (*ordered, find, keepalive)


RULE = Rule(RULE_ID, "CLOSE_WAIT sockets the application never closes", check)
