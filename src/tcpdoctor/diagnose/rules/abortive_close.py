"""abortive-close: connections ended with a reset by this host's own close().

Two counters, two causes, one finding each:

* TCPAbortOnData: close() with SO_LINGER {on, 0 s} (RST instead of FIN, no TIME_WAIT), or
  data arriving after close() in FIN_WAIT1/FIN_WAIT2.
* TCPAbortOnClose: close() while received data was still unread; the data is thrown away
  and an RST is sent.

Thresholds. During a watch, a rising counter is info, and a warning at WARNING_RATE (1 per
second) or more. Without a watch only totals since the namespace started are known; they are
info when at least TOTAL_MIN (100) and at least SHARE_MIN_PCT (1 %) of all connections opened
(Tcp.ActiveOpens + Tcp.PassiveOpens) - a few aborts over a long uptime are normal.

Evidence: abort_on_data_total or abort_on_close_total; during a watch also _delta, _rate,
watch_s and out_rsts_delta; without one connections_total and abort_on_data_share_pct /
abort_on_close_share_pct.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, Severity
from tcpdoctor.diagnose.rules._closing import Trend, plural, trend, watch_evidence

RULE_ID = "abortive-close"
WARNING_RATE = 1.0  # aborts per second during a watch
TOTAL_MIN = 100
SHARE_MIN_PCT = 1.0
OPENS = ("Tcp.ActiveOpens", "Tcp.PassiveOpens")


class Cause(NamedTuple):
    key: str
    stem: str  # evidence key prefix
    what: str  # for the title, after "N closes"
    explanation: str
    fixes: tuple[Fix, ...]


INVESTIGATE = Fix(
    FixKind.INVESTIGATE,
    "Find the process and the code path that resets",
    "Watch for resets leaving this host and match their local ports to processes.",
    "tcpdump -ni any 'tcp[tcpflags] & tcp-rst != 0'; ss -tanp",
)

ON_DATA = Cause(
    key="TcpExt.TCPAbortOnData",
    stem="abort_on_data",
    what="sent a reset (zero linger, or data after close)",
    explanation=(
        "The kernel ended these connections with an RST instead of a FIN. Either the "
        "application set SO_LINGER to {on, 0 s} before close(), which throws the connection "
        "away (no FIN, no TIME_WAIT, unsent data lost), or the peer kept sending after our "
        "close(), so there was no one left to read it. Peers see ECONNRESET and may lose data "
        "that was still in flight; a load balancer may count them as failed requests."
    ),
    fixes=(
        Fix(
            FixKind.APPLICATION,
            "Do not close with a zero linger to avoid TIME_WAIT",
            "TIME_WAIT protects the next connection on the same 4-tuple; reuse connections "
            "(keep-alive, pools) or let the client close first instead. Keep zero linger "
            "for connections you deliberately abort.",
            "remove: setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0}, ...)",
        ),
        Fix(
            FixKind.APPLICATION,
            "Close gracefully when the peer may still be sending",
            "Send your FIN with shutdown(SHUT_WR), read until EOF with a deadline, then close().",
            "sock.shutdown(socket.SHUT_WR)\nsock.settimeout(5)\n"
            "while sock.recv(65536):\n    pass\nsock.close()",
        ),
        INVESTIGATE,
    ),
)

ON_CLOSE = Cause(
    key="TcpExt.TCPAbortOnClose",
    stem="abort_on_close",
    what="with unread received data sent a reset",
    explanation=(
        "The application called close() while data it had received was still unread. The "
        "kernel discards that data and sends an RST instead of a FIN (RFC 2525 2.17), so the "
        "peer gets ECONNRESET and may drop the end of our reply it had not read yet. Typical "
        "causes: a server answering before it read the whole request (an unread body, "
        "pipelined requests), or a client closing a pooled connection with a response pending."
    ),
    fixes=(
        Fix(
            FixKind.APPLICATION,
            "Read what the peer sent before closing",
            "Consume or discard the rest of the request, or drain to EOF after shutdown(SHUT_WR), "
            "so close() finds an empty receive queue and sends a FIN.",
            "nginx does this as lingering_close; in code: shutdown(SHUT_WR), read until EOF "
            "with a deadline, then close()",
        ),
        INVESTIGATE,
    ),
)


def check(ctx: Context) -> Iterator[Finding]:
    opened = [ctx.counter(key) for key in OPENS]
    connections = sum(v for v in opened if v is not None) if any(opened) else None
    for cause in (ON_DATA, ON_CLOSE):
        found = trend(ctx, cause.key)
        severity = _severity(found, connections)
        if severity is not None:
            yield _finding(ctx, cause, found, connections, severity)


def _share_pct(total: int | None, connections: int | None) -> float | None:
    if total is None or not connections:
        return None
    return round(100.0 * total / connections, 2)


def _severity(found: Trend, connections: int | None) -> Severity | None:
    if found.watched:
        if not found.rising:
            return None
        rate = found.rate or 0.0
        return Severity.WARNING if rate >= WARNING_RATE else Severity.INFO
    share = _share_pct(found.total, connections)
    if (found.total or 0) >= TOTAL_MIN and share is not None and share >= SHARE_MIN_PCT:
        return Severity.INFO
    return None


def _finding(
    ctx: Context, cause: Cause, found: Trend, connections: int | None, severity: Severity
) -> Finding:
    resets = trend(ctx, "Tcp.OutRsts")
    evidence = [*found.evidence(cause.stem, "closes"), *watch_evidence(ctx)]
    if found.watched:
        evidence.append(
            Evidence("out_rsts_delta", "resets sent during the watch", resets.delta, "segments")
        )
        title = (
            f"{plural(found.delta or 0, 'close')} {cause.what} during the watch "
            f"({found.rate or 0:.2g}/s)"
        )
    else:
        share = _share_pct(found.total, connections)
        evidence.append(
            Evidence(
                "connections_total", "connections opened since start", connections, "connections"
            )
        )
        evidence.append(Evidence(f"{cause.stem}_share_pct", "share of connections", share, "%"))
        title = (
            f"{plural(found.total or 0, 'close')} {cause.what} since the namespace started "
            f"({share:g} % of connections)"
        )
    explanation = cause.explanation
    if not found.watched:
        explanation += (
            " These are totals since boot; watch (--watch) to see whether it still happens."
        )
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=title,
        subject="namespace",
        evidence=tuple(evidence),
        explanation=explanation,
        fixes=cause.fixes,
        topics=("linger", "time-wait"),
    )


RULE = Rule(RULE_ID, "Connections closed with a reset by this host", check)
