"""tw-bucket-overflow: past net.ipv4.tcp_max_tw_buckets, closing sockets skip TIME_WAIT.

Topology: client --veth-- server (198.18.0.1 -> 198.18.0.2:8080). The client namespace gets
a tiny tcp_max_tw_buckets (the limit is per namespace). The client opens N connections and
closes them one after another with shutdown(SHUT_WR), waits for the server's FIN, then
close(): so every close goes FIN_WAIT2 -> TIME_WAIT on a full socket and the ACK of the
server's FIN always goes out before the kernel decides about the minisock. The counters
of the client's namespace (/proc/net/netstat, snmp, sockstat, read inside it) are read
before, after every close and at the end; socket samples show which ports hold TIME_WAIT.

Expected, from kernel/: time_wait_overflow() (inet_twsk_alloc()) keeps the first
max_tw_buckets TIME_WAITs and destroys the rest at once, counting TCPTimeWaitOverflow and
sending nothing; minisock_counter(60 s) says each kept one counts as TcpExt.TW.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tcpdoctor.kernel.constants import TCP_TIMEWAIT_LEN
from tcpdoctor.kernel.counters import COUNTERS
from tcpdoctor.kernel.timing import TimeWaitOverflow, minisock_counter, time_wait_overflow
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
from tcpdoctor.lab.scenarios import _lifecycle as lc
from tcpdoctor.lab.scenarios._lifecycle_model import (
    Mark,
    SocketSample,
    build_timeline,
    follow,
    last_at,
    last_count,
    peak,
    verdict,
)
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.lab.topology import Host
from tcpdoctor.observe.counters import CounterSnapshot

NAME = "tw-bucket-overflow"
TIME_WAIT = "TIME_WAIT"
MAX_TW = "net.ipv4.tcp_max_tw_buckets"
OVERFLOW = "TcpExt.TCPTimeWaitOverflow"
OUT_RSTS = "Tcp.OutRsts"
TW_GAUGE = COUNTERS["TCP.tw"]  # sockstat: minisocks alive in the namespace
PERIOD_S = 0.05
GAP_S = 0.05  # between two closes: each one's samples stay apart in the picture

PARAMS = (
    Param(
        "limit",
        int,
        4,
        3,
        "net.ipv4.tcp_max_tw_buckets in the client (a --sysctl value wins).",
        0,
        10_000,
    ),
    Param("connections", int, 10, 6, "Connections the client opens and closes.", 1, 500),
    Param(
        "hold",
        float,
        2.0,
        1.0,
        "Seconds to keep watching after the last close (under 60: nothing expires).",
        0.0,
        50.0,
    ),
)


@dataclass(frozen=True)
class Expectation:
    overflow: TimeWaitOverflow
    counter: str  # what each kept TIME_WAIT bumps

    def as_dict(self) -> dict[str, Measure]:
        return {
            "connections": self.overflow.closes,
            "max_tw_buckets": self.overflow.max_tw_buckets,
            "time_wait_in_use_before": self.overflow.in_use,
            "time_wait_kept": self.overflow.kept,
            "overflowed": self.overflow.overflowed,
            "tw_counter": self.counter,
            "out_rsts": 0,
        }


def expect(connections: int, limit: int, in_use: int) -> Expectation:
    return Expectation(
        time_wait_overflow(connections, limit, in_use=in_use), minisock_counter(TCP_TIMEWAIT_LEN)
    )


class Step:
    """One close and the counters read right after it."""

    def __init__(self, closed: lc.Closed, after: CounterSnapshot, before: CounterSnapshot) -> None:
        self.closed = closed
        self.tw_alive = after.value(TW_GAUGE)
        self.overflow = after.delta(before, OVERFLOW)


@dataclass(frozen=True)
class Measured:
    ports: tuple[int, ...]  # in close order
    in_time_wait: tuple[bool, ...]  # per port: ever seen in TIME_WAIT
    peak: int
    final: int | None
    deltas: dict[str, int | None]
    tw_alive_after: int | None
    close_errors: int

    @property
    def kept(self) -> int:
        return sum(self.in_time_wait)

    @property
    def first_ones_kept(self) -> bool:
        """The TIME_WAITs are exactly the first closes: the limit bit in close order."""
        return list(self.in_time_wait) == sorted(self.in_time_wait, reverse=True)

    def as_dict(self, counter: str) -> dict[str, Measure]:
        return {
            "connections": len(self.ports),
            "time_wait_kept": self.kept,
            "kept_are_the_first_closes": self.first_ones_kept,
            "time_wait_peak": self.peak,
            "time_wait_at_end": self.final,
            "overflowed": self.deltas.get(OVERFLOW),
            "tw_counter_rise": self.deltas.get(counter),
            "out_rsts": self.deltas.get(OUT_RSTS),
            "sockstat_tw_at_end": self.tw_alive_after,
            "close_errors": self.close_errors,
        }


def measure(
    samples: Sequence[SocketSample],
    closes: Sequence[lc.Closed],
    before: CounterSnapshot,
    after: CounterSnapshot,
    counter: str,
) -> Measured:
    seen = tuple(follow(samples, "client", c.port, TIME_WAIT).seen for c in closes)
    return Measured(
        ports=tuple(c.port for c in closes),
        in_time_wait=seen,
        peak=peak(samples, "client", TIME_WAIT),
        final=last_count(samples, "client", TIME_WAIT),
        deltas=lc.deltas(before, after, (OVERFLOW, counter, OUT_RSTS)),
        tw_alive_after=after.value(TW_GAUGE),
        close_errors=sum(1 for c in closes if c.error is not None),
    )


def compare(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    ov = exp.overflow
    rule = "time_wait_overflow(): inet_twsk_alloc() refuses past tcp_max_tw_buckets"
    return (
        exact("close_errors", "closes that failed", 0, got.close_errors, basis="orderly closes"),
        exact(
            "time_wait_kept", "client sockets that got a TIME_WAIT", ov.kept, got.kept, basis=rule
        ),
        exact(
            "kept_are_the_first_closes",
            "the TIME_WAITs are the first closes",
            True,
            got.first_ones_kept,
            basis="a slot is taken at each close and none frees within 60 s",
        ),
        exact("time_wait_peak", "client TIME_WAIT peak", ov.kept, got.peak, basis=rule),
        exact(
            "overflowed",
            "TCPTimeWaitOverflow rise",
            ov.overflowed,
            got.deltas.get(OVERFLOW),
            basis="tcp_time_wait() counts every close that got no minisock",
        ),
        exact(
            "tw_counter_rise",
            f"{exp.counter.split('.')[-1]} rise",
            ov.kept,
            got.deltas.get(exp.counter),
            basis="minisock_counter(60 s): __inet_twsk_schedule() of each kept one",
        ),
        exact(
            "out_rsts",
            "RSTs the client sent",
            0,
            got.deltas.get(OUT_RSTS),
            basis="the overflowed socket is tcp_done()d silently (notes 1.4)",
        ),
        exact(
            "sockstat_tw_at_end",
            "sockstat TCP tw at the end",
            ov.in_use + ov.kept,
            got.tw_alive_after,
            basis="tw_refcount - 1: the namespace's live minisocks",
        ),
    )


# --- the run ------------------------------------------------------------------------------


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    started = time.monotonic()
    count, hold = int(values["connections"] or 1), float(values["hold"] or 0.0)
    limit = lc.chosen(ctx.sysctls, MAX_TW, str(values["limit"]))
    client_settings = lc.with_setting(ctx.sysctls, MAX_TW, limit)
    pair = lc.build_pair(ctx, client=client_settings, server=ctx.sysctls, show=(MAX_TW,))
    lc.LabServer.start(ctx.topology, pair.server, pair.server_address, on_eof="close")
    client = lc.LabClient.start(ctx.topology, pair.client, pair.server_address, count)
    before = lc.counters(pair.client)
    exp = expect(count, int(pair.sysctls["client"].get(MAX_TW, limit)), before.value(TW_GAUGE) or 0)
    sampler = lc.SocketSampler([pair.client, pair.server], PERIOD_S).start()
    try:
        steps = _close_all(ctx, client, pair.client, before, started)
        time.sleep(hold)
        after = lc.counters(pair.client)
    finally:
        samples = sampler.stop()
    closes = [s.closed for s in steps]
    got = measure(samples, closes, before, after, exp.counter)
    checks = compare(exp, got)
    t0 = closes[0].t_call
    return ScenarioResult(
        scenario=NAME,
        run_id=ctx.topology.run_id,
        params=dict(values),
        sysctls=pair.sysctls,
        expected=exp.as_dict(),
        measured=got.as_dict(exp.counter),
        checks=checks,
        verdict=verdict(checks),
        timeline=build_timeline(samples, t0, last_at(samples), _marks(steps, got)),
        duration_s=time.monotonic() - started,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=(
            "each close is shutdown(SHUT_WR), read to EOF, close(): the TIME_WAIT decision "
            "then always comes after the ACK of the server's FIN, so no RST is expected",
            "overflowed sockets never appear in a sample: tcp_done() unhashes them at once",
        ),
    )


def _close_all(
    ctx: RunContext, client: lc.LabClient, host: Host, before: CounterSnapshot, started: float
) -> list[Step]:
    steps = []
    for index in range(len(client.ports)):
        closed = client.close(index, "shutdown")
        steps.append(Step(closed, lc.counters(host), before))
        ctx.progress(time.monotonic() - started, f"closed {index + 1}/{len(client.ports)}")
        time.sleep(GAP_S)
    return steps


def _marks(steps: Sequence[Step], got: Measured) -> list[Mark]:
    marks = []
    for step, kept in zip(steps, got.in_time_wait, strict=True):
        fate = "time_wait" if kept else "overflow"
        marks.append(Mark(step.closed.t_call, "close", f"port {step.closed.port} {fate}"))
        detail = f"tw={step.tw_alive} overflow={step.overflow}"
        marks.append(Mark(step.closed.t, "counters", detail))
    return marks


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    return None


def estimate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> float:
    return int(values["connections"] or 1) * 0.1 + float(values["hold"] or 0.0) + 1.0


def draw(result: ScenarioResult, plt: Any) -> Any:
    """`--plot`: TIME_WAITs held and overflows counted, close after close."""
    from tcpdoctor.lab.scenarios._lifecycle_plot import draw_tw_bucket_overflow

    return draw_tw_bucket_overflow(result, plt)


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="Past tcp_max_tw_buckets, closing sockets skip TIME_WAIT and TCPTimeWaitOverflow rises",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=(
        "tcp_max_tw_buckets is a per-namespace cap, not a timer: once it is reached, every "
        "further active close is destroyed on the spot, with no TIME_WAIT, no RST and no log "
        "line; only TcpExt TCPTimeWaitOverflow counts it. It hides port pressure and gives up "
        "TIME_WAIT's protection against stray old segments."
    ),
)
