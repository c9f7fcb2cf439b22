"""server-time-wait: TIME_WAITs on a listening port, so this server closes first.

The side that closes a connection first is the one left in TIME_WAIT. A TIME_WAIT whose
local port is one this namespace listens on was accepted here and closed here first,
typically because HTTP keep-alive is off or shorter than the clients' gap between
requests. Such TIME_WAITs all share the listening port, so they use up no ephemeral
ports and never block new connections (a new SYN for the same 4-tuple takes the
TIME_WAIT over, whatever tcp_tw_reuse says); the cost is one handshake per request and a
little kernel memory (kernel/timing.time_wait_memory).

Per listening port:

- warning from 1000 TIME_WAITs (SIGNIFICANT_TIME_WAIT: about 17 server-side closes per
  second, sustained over the last TIME_WAIT period);
- info from 100 TIME_WAITs (PATTERN_TIME_WAIT) when they are at least half of the port's
  connections (PATTERN_SHARE): the pattern is clear, the volume small.

Evidence: listening_port, time_wait, established, time_wait_pct, distinct_clients,
server_close_rate, time_wait_memory_kib; with a watch also passive_open_rate.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, Severity
from tcpdoctor.diagnose.rules._common import in_state
from tcpdoctor.diagnose.rules._ports import DO_NOT_SHORTCUT, pct, watching
from tcpdoctor.kernel.constants import TCP_TIMEWAIT_LEN
from tcpdoctor.kernel.states import CONNECTED_STATES, TcpState
from tcpdoctor.kernel.timing import time_wait_memory
from tcpdoctor.observe._records import pick
from tcpdoctor.observe.addresses import format_column

RULE_ID = "server-time-wait"
SIGNIFICANT_TIME_WAIT = 1000
PATTERN_TIME_WAIT = 100
PATTERN_SHARE = 0.5
TOPICS = ("time-wait", "tw-reuse")

_CONNECTED = np.array(sorted(int(s) for s in CONNECTED_STATES), dtype=np.uint8)


def check(ctx: Context) -> Iterator[Finding]:
    listening = ctx.listening_ports
    if not len(listening):
        return
    sport = ctx.sockets["sport"].astype(np.int64)
    on_listener = np.isin(sport, listening)
    tw = in_state(ctx, TcpState.TIME_WAIT) & on_listener
    if not tw.any():
        return
    ports, counts = np.unique(sport[tw], return_counts=True)
    for port, count in zip(ports.tolist(), counts.tolist(), strict=True):
        if count < PATTERN_TIME_WAIT:
            continue
        rows = on_listener & (sport == port) & np.isin(ctx.sockets["state"], _CONNECTED)
        finding = _assess(ctx, int(port), int(count), rows)
        if finding is not None:
            yield finding


def _assess(ctx: Context, port: int, time_wait: int, rows: np.ndarray) -> Finding | None:
    sockets = pick(ctx.sockets, rows)
    total = len(sockets)
    share = time_wait / total if total else 1.0
    if time_wait >= SIGNIFICANT_TIME_WAIT:
        severity = Severity.WARNING
    elif share >= PATTERN_SHARE:
        severity = Severity.INFO
    else:
        return None
    established = int(np.count_nonzero(sockets["state"] == TcpState.ESTABLISHED))
    tw_rows = sockets[sockets["state"] == TcpState.TIME_WAIT]
    peers = len(set(format_column(tw_rows["family"], tw_rows["dst"]).tolist()))
    close_rate = time_wait / TCP_TIMEWAIT_LEN
    memory = time_wait_memory(time_wait)
    evidence = [
        Evidence("listening_port", "listening port", port),
        Evidence("time_wait", "TIME_WAIT on this port", time_wait, "sockets"),
        Evidence("established", "ESTABLISHED on this port", established, "sockets"),
        Evidence(
            "time_wait_pct",
            "TIME_WAIT share of this port's connections",
            pct(time_wait, total),
            "%",
        ),
        Evidence("distinct_clients", "client addresses among the TIME_WAITs", peers),
        Evidence(
            "server_close_rate",
            f"closes by this server (average over the last {TCP_TIMEWAIT_LEN:g} s)",
            close_rate,
            "conn/s",
        ),
        Evidence(
            "time_wait_memory_kib",
            "kernel memory of these TIME_WAITs",
            round(memory.total_bytes / 1024, 1),
            "KiB",
        ),
    ]
    if watching(ctx):
        evidence.append(
            Evidence(
                "passive_open_rate",
                "accepted connections, whole namespace",
                ctx.counter_rate("Tcp.PassiveOpens"),
                "conn/s",
            )
        )
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=(
            f"port {port}: {time_wait:,} TIME_WAITs on a listening port "
            f"({share:.0%} of its connections): this server closes connections first"
        ),
        subject=f"listening port {port}",
        evidence=tuple(evidence),
        explanation=_explanation(port, time_wait, close_rate, memory.total_bytes),
        fixes=_fixes(port),
        topics=TOPICS,
    )


def _explanation(port: int, time_wait: int, close_rate: float, memory_bytes: int) -> str:
    return (
        f"Whoever closes a TCP connection first keeps it in TIME_WAIT for {TCP_TIMEWAIT_LEN:g} s. "
        f"These {time_wait:,} TIME_WAITs sit on port {port}, which this namespace listens on, so "
        f"the connections were accepted here and this server sent the first FIN: about "
        f"{close_rate:,.1f} per second over the last {TCP_TIMEWAIT_LEN:g} s. That usually means "
        "HTTP keep-alive is off, or its idle timeout is shorter than the clients' pause between "
        "requests, so every request costs the client a new handshake (and TLS setup). They do "
        "not use up ports: all of them share the listening port, and a client's new SYN for the "
        "same 4-tuple takes a TIME_WAIT over. Their memory is small "
        f"({memory_bytes / 1024:,.0f} KiB). tcp_tw_reuse does not apply to accepted "
        "connections, so changing it here does nothing."
    )


def _fixes(port: int) -> tuple[Fix, ...]:
    return (
        Fix(
            kind=FixKind.APPLICATION,
            summary=f"Turn on (or lengthen) keep-alive for the service on port {port}",
            detail=(
                "Let one connection carry many requests: enable persistent connections and "
                "make the server's idle timeout longer than the clients' (so the client, not "
                "the server, ends idle connections). Check a proxy or load balancer in front, "
                "too: its connections to this server should be pooled as well. "
                f"{DO_NOT_SHORTCUT}"
            ),
            example="keepalive_timeout 75s;  # nginx; or the keep-alive setting of your server",
        ),
        Fix(
            kind=FixKind.APPLICATION,
            summary="Where a connection must end after one exchange, let the client close first",
            detail=(
                "The TIME_WAIT then stays on the client, spread over its ephemeral ports, "
                "instead of piling up here: after the reply the server waits (with a timeout) "
                "for the client's FIN, read() returning 0, and only then closes. The client "
                "must close promptly once it has the reply, or the timeout decides."
            ),
            example="while (read(fd, buf, sizeof buf) > 0) {}  close(fd);  /* after the reply */",
        ),
    )


RULE = Rule(RULE_ID, "TIME_WAIT piling up on a listening port (server closes first)", check)
