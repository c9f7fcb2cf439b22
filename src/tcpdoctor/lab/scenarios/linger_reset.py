"""linger-reset: SO_LINGER {on, 0} turns close() into an RST; a plain close sends a FIN.

Topology: client --veth-- server (198.18.0.1 -> 198.18.0.2:8080). The client opens 3N idle
connections and closes them three ways, N each:

* plain:   close()                              -> FIN; TIME_WAIT here; the server reads EOF
* linger0: SO_LINGER {1, 0}, then close()       -> RST; nothing left; the server's recv()
                                                   fails with ECONNRESET
* unread:  a reply left unread in the receive   -> RST as well (RFC 2525 2.17), counted as
           queue, then close()                     TCPAbortOnClose instead of TCPAbortOnData

A capture on the client's interface shows which flag each close put on the wire, the
server reports what its recv() returned, socket samples show what stayed behind, and the
namespaces' counters (read inside each) show which abort counter rose.

Expected, from kernel/: close_outcome() mirrors __tcp_close()'s order (unread data first,
then zero linger, else a FIN) and names the counter each path bumps.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tcpdoctor.kernel.timing import CloseOutcome, close_outcome
from tcpdoctor.lab.model import (
    Check,
    Measure,
    Param,
    ParamValues,
    RunContext,
    ScenarioResult,
    ScenarioSpec,
    exact,
)
from tcpdoctor.lab.pcap import Segment, TcpFlags
from tcpdoctor.lab.scenarios import _lifecycle as lc
from tcpdoctor.lab.scenarios._lifecycle_model import (
    Mark,
    SocketSample,
    build_timeline,
    follow,
    last_at,
    of_host,
    verdict,
)
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.observe.counters import CounterSnapshot

NAME = "linger-reset"
TIME_WAIT = "TIME_WAIT"
REPLY_BYTES = len(b"ok\n")  # what the unread close leaves in the receive queue
MODES = ("plain", "linger0", "unread")  # the order the closes are made in
_HOW = {"plain": "close", "linger0": "linger0", "unread": "unread"}  # client commands
CLIENT_COUNTERS = ("TcpExt.TCPAbortOnData", "TcpExt.TCPAbortOnClose", "Tcp.OutRsts")
SERVER_COUNTERS = ("Tcp.EstabResets",)
PERIOD_S = 0.05
_SNAKE = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
SETTLE_S = 0.5  # after the last close: the server's last FIN and reads are in

PARAMS = (
    Param("connections", int, 3, 2, "Connections closed each way (plain, linger0, unread).", 1, 50),
    Param("spacing", float, 0.3, 0.2, "Seconds between two closes.", 0.0, 10.0),
)


def outcome(mode: str) -> CloseOutcome:
    if mode == "linger0":
        return close_outcome(linger=0)
    if mode == "unread":
        return close_outcome(unread_bytes=REPLY_BYTES)
    return close_outcome()


@dataclass(frozen=True)
class Expectation:
    per_mode: int
    outcomes: Mapping[str, CloseOutcome]

    @property
    def resets(self) -> int:
        return self.per_mode * sum(1 for o in self.outcomes.values() if o.sends == "RST")

    def counters(self) -> dict[str, int]:
        """Rise of each counter over the run: client side, then the server's."""
        found = dict.fromkeys(CLIENT_COUNTERS, 0)
        for result in self.outcomes.values():
            if result.counter is not None:
                found[result.counter] = found.get(result.counter, 0) + self.per_mode
        found["Tcp.OutRsts"] = self.resets
        # The server's ESTABLISHED sockets that took an RST go straight to CLOSE.
        found["server Tcp.EstabResets"] = self.resets
        return found

    def as_dict(self) -> dict[str, Measure]:
        found: dict[str, Measure] = {"connections_per_mode": self.per_mode}
        for mode, result in self.outcomes.items():
            found[f"{mode}_sends"] = result.sends
            found[f"{mode}_time_wait"] = self.per_mode if result.time_wait else 0
            found[f"{mode}_peer_reads"] = result.peer_reads
        found.update({_key(name): value for name, value in self.counters().items()})
        return found


def expect(per_mode: int) -> Expectation:
    return Expectation(per_mode, {mode: outcome(mode) for mode in MODES})


def _key(counter: str) -> str:
    """ "TcpExt.TCPAbortOnData" -> "client_tcp_abort_on_data", "server Tcp.EstabResets" ->
    "server_estab_resets": the snake_case keys of `expected` and `measured`."""
    side, _, name = counter.rpartition(" ")
    return f"{side or 'client'}_{_SNAKE.sub('_', name.split('.')[-1]).lower()}"


# --- measurement --------------------------------------------------------------------------


@dataclass(frozen=True)
class Close:
    mode: str
    closed: lc.Closed
    wire: tuple[str, ...]  # FIN / RST the client's port sent after the close, in order
    wire_at: float | None  # when the first of them was captured
    peer_read: str | None  # what the server's recv() returned
    peer_at: float | None
    time_wait: bool  # the port was seen in TIME_WAIT
    left_after_reset: bool  # some socket of the port was still seen after the close

    @property
    def sends(self) -> str:
        return "+".join(dict.fromkeys(self.wire)) or "nothing"


def _wire(segments: Sequence[Segment], port: int, after: float) -> list[Segment]:
    flags = TcpFlags.FIN | TcpFlags.RST
    return [
        s for s in segments if s.outgoing and s.sport == port and s.t >= after and s.flags & flags
    ]


def _flag(segment: Segment) -> str:
    return "RST" if segment.flags & TcpFlags.RST else "FIN"


def _seen_after(samples: Sequence[SocketSample], port: int, after: float) -> bool:
    return any(s.at > after and s.find(port) is not None for s in of_host(samples, "client"))


def read_close(
    mode: str,
    closed: lc.Closed,
    segments: Sequence[Segment],
    samples: Sequence[SocketSample],
    peer: Mapping[str, Any] | None,
) -> Close:
    sent = _wire(segments, closed.port, closed.t_call)
    return Close(
        mode=mode,
        closed=closed,
        wire=tuple(_flag(s) for s in sent),
        wire_at=sent[0].t if sent else None,
        peer_read=None if peer is None else str(peer.get("how")),
        peer_at=None if peer is None else float(peer["t"]),
        time_wait=follow(samples, "client", closed.port, TIME_WAIT).seen,
        left_after_reset=_seen_after(samples, closed.port, closed.t),
    )


@dataclass(frozen=True)
class Measured:
    closes: tuple[Close, ...]
    counters: dict[str, int | None]
    close_errors: int

    def of(self, mode: str) -> list[Close]:
        return [c for c in self.closes if c.mode == mode]

    def sends(self, mode: str) -> str:
        return _same(c.sends for c in self.of(mode))

    def peer_reads(self, mode: str) -> str:
        return _same(c.peer_read or "nothing" for c in self.of(mode))

    def time_waits(self, mode: str) -> int:
        return sum(1 for c in self.of(mode) if c.time_wait)

    def left_behind(self, mode: str) -> int:
        return sum(1 for c in self.of(mode) if c.left_after_reset and not c.time_wait)

    def as_dict(self) -> dict[str, Measure]:
        found: dict[str, Measure] = {"close_errors": self.close_errors}
        for mode in MODES:
            found[f"{mode}_sends"] = self.sends(mode)
            found[f"{mode}_time_wait"] = self.time_waits(mode)
            found[f"{mode}_peer_reads"] = self.peer_reads(mode)
            found[f"{mode}_left_behind"] = self.left_behind(mode)
        found.update({_key(name): value for name, value in self.counters.items()})
        return found


def _same(values: Any) -> str:
    """The one value every connection of a mode showed, or all of them joined."""
    seen = list(dict.fromkeys(values))
    return seen[0] if len(seen) == 1 else "mixed:" + ",".join(seen)


def measure(
    closes: Sequence[tuple[str, lc.Closed]],
    segments: Sequence[Segment],
    samples: Sequence[SocketSample],
    peer_ends: Mapping[int, Mapping[str, Any]],
    client: tuple[CounterSnapshot, CounterSnapshot],
    server: tuple[CounterSnapshot, CounterSnapshot],
) -> Measured:
    found = tuple(
        read_close(mode, c, segments, samples, peer_ends.get(c.port)) for mode, c in closes
    )
    rises = lc.deltas(client[0], client[1], CLIENT_COUNTERS)
    rises.update(
        {f"server {k}": v for k, v in lc.deltas(server[0], server[1], SERVER_COUNTERS).items()}
    )
    return Measured(found, rises, sum(1 for _, c in closes if c.error is not None))


# --- comparison ---------------------------------------------------------------------------


def compare(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    checks = [exact("close_errors", "closes that failed", 0, got.close_errors, basis="setup")]
    for mode, result in exp.outcomes.items():
        checks += _mode_checks(mode, result, exp.per_mode, got)
    basis = "close_outcome(): __tcp_close() (notes 8, 9)"
    for name, value in exp.counters().items():
        checks.append(exact(_key(name), f"{name} rise", value, got.counters.get(name), basis=basis))
    return tuple(checks)


def _mode_checks(mode: str, result: CloseOutcome, count: int, got: Measured) -> list[Check]:
    basis = (
        "close_outcome("
        + {"plain": "", "linger0": "linger=0", "unread": "unread_bytes>0"}[mode]
        + ")"
    )
    checks = [
        exact(
            f"{mode}_sends",
            f"{mode}: close() put on the wire",
            result.sends,
            got.sends(mode),
            basis=basis,
        ),
        exact(
            f"{mode}_peer_reads",
            f"{mode}: the server's recv() returned",
            result.peer_reads,
            got.peer_reads(mode),
            basis="a FIN reads as EOF; tcp_reset() on ESTABLISHED sets ECONNRESET",
        ),
        exact(
            f"{mode}_time_wait",
            f"{mode}: client sockets in TIME_WAIT",
            count if result.time_wait else 0,
            got.time_waits(mode),
            basis="only a FIN close can end in TIME_WAIT",
        ),
    ]
    if not result.time_wait:
        checks.append(
            exact(
                f"{mode}_left_behind",
                f"{mode}: client sockets seen after close()",
                0,
                got.left_behind(mode),
                basis="an RST close goes straight to CLOSE and frees the port",
            )
        )
    return checks


# --- the run ------------------------------------------------------------------------------


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    started = time.monotonic()
    per_mode, spacing = int(values["connections"] or 1), float(values["spacing"] or 0.0)
    exp = expect(per_mode)
    pair = lc.build_pair(ctx, client=ctx.sysctls, server=ctx.sysctls)
    server = lc.LabServer.start(ctx.topology, pair.server, pair.server_address, on_eof="close")
    client = lc.LabClient.start(
        ctx.topology, pair.client, pair.server_address, per_mode * len(MODES)
    )
    packets = lc.Packets(ctx, pair.client, [pair.link.a.device])
    before = lc.counters(pair.client), lc.counters(pair.server)
    sampler = lc.SocketSampler([pair.client, pair.server], PERIOD_S).start()
    try:
        closes = _close_all(ctx, client, per_mode, spacing, started)
        ends = server.wait_peer_ends(len(closes), time.monotonic() + lc.REPLY_TIMEOUT_S)
        time.sleep(SETTLE_S)
        after = lc.counters(pair.client), lc.counters(pair.server)
    finally:
        samples = sampler.stop()
        segments = packets.stop()
    got = measure(closes, segments, samples, ends, (before[0], after[0]), (before[1], after[1]))
    checks = compare(exp, got)
    return ScenarioResult(
        scenario=NAME,
        run_id=ctx.topology.run_id,
        params=dict(values),
        sysctls=pair.sysctls,
        expected=exp.as_dict(),
        measured=got.as_dict(),
        checks=checks,
        verdict=verdict(checks),
        timeline=build_timeline(
            samples, closes[0][1].t_call, last_at(samples), _marks(got), _reads(got)
        ),
        duration_s=time.monotonic() - started,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=(
            "zero linger counts as TCPAbortOnData, not TCPAbortOnLinger (that one is for "
            "TCP_LINGER2 < 0 in FIN_WAIT2); unread data at close() wins over any SO_LINGER",
            "an RST close frees the port at once: no TIME_WAIT protects the next user of the "
            "4-tuple from this connection's stray segments",
        ),
        pcap=packets.pcap,
    )


def _close_all(
    ctx: RunContext, client: lc.LabClient, per_mode: int, spacing: float, started: float
) -> list[tuple[str, lc.Closed]]:
    closes = []
    first = time.time() + 0.1
    for index in range(per_mode * len(MODES)):
        mode = MODES[index // per_mode]
        lc.sleep_until(first + index * spacing)
        closes.append((mode, client.close(index, _HOW[mode])))
        ctx.progress(time.monotonic() - started, f"{mode} close {index % per_mode + 1}")
    return closes


def _marks(got: Measured) -> list[Mark]:
    marks = []
    for close in got.closes:
        port = close.closed.port
        marks.append(Mark(close.closed.t_call, "close", f"port {port} {close.mode}"))
        if close.wire_at is not None:
            marks.append(Mark(close.wire_at, "wire", f"port {port} {close.sends}"))
        if close.peer_at is not None:
            marks.append(Mark(close.peer_at, "peer_read", f"port {port} {close.peer_read}"))
        if close.time_wait:
            marks.append(Mark(close.closed.t, "time_wait", f"port {port}"))
    return marks


def _reads(got: Measured) -> list[tuple[float, str | None]]:
    """The server's reads as the timeline's outcomes: EOF succeeded, anything else is the
    error it saw (ECONNRESET)."""
    return [
        (c.peer_at, None if c.peer_read == "EOF" else c.peer_read)
        for c in got.closes
        if c.peer_at is not None
    ]


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    return None


def estimate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> float:
    count = int(values["connections"] or 1) * len(MODES)
    return count * float(values["spacing"] or 0.0) + SETTLE_S + 1.0


def draw(result: ScenarioResult, plt: Any) -> Any:
    """`--plot`: per connection, what close() sent and what the server's recv() saw."""
    from tcpdoctor.lab.scenarios._lifecycle_plot import draw_linger_reset

    return draw_linger_reset(result, plt)


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="SO_LINGER {1, 0} (or unread data) makes close() send an RST: no TIME_WAIT, "
    "the peer gets ECONNRESET",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=(
        "A zero-linger close aborts the connection: an RST instead of a FIN, no TIME_WAIT on "
        "this side, and the peer's next read fails with ECONNRESET instead of returning EOF. "
        "Closing with unread data does the same. It frees ports at once, at the price of "
        "discarding unsent data and TIME_WAIT's protection; TCPAbortOnData and "
        "TCPAbortOnClose count each kind."
    ),
)
