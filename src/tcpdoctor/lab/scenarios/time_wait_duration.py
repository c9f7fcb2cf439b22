"""time-wait-duration: the side that closes first holds TIME_WAIT for TCP_TIMEWAIT_LEN.

Topology: client --veth-- server (198.18.0.1 -> 198.18.0.2:8080). The client opens N
idle connections and closes them `spacing` seconds apart; the server closes each one as
soon as it reads EOF, so every close ends in TIME_WAIT on the client (the active closer)
and in nothing on the server (LAST_ACK, then gone). Socket samples of both namespaces
show each TIME_WAIT's timer (expires_ms) and when it disappears.

Expected, from kernel/: the timer is armed for TCP_TIMEWAIT_LEN (60 s, hard-coded, no
sysctl changes it) and fires up to timer_slack(60 s) late (2.048 s at HZ=250), never
early. Try `--sysctl net.ipv4.tcp_fin_timeout=5`: nothing changes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tcpdoctor.kernel.constants import TCP_TIMEWAIT_LEN
from tcpdoctor.lab.model import (
    ABSOLUTE_TOLERANCE_S,
    Check,
    Measure,
    Param,
    ParamValues,
    RunContext,
    ScenarioResult,
    ScenarioSpec,
    at_least,
    at_most,
    exact,
    tolerance,
)
from tcpdoctor.lab.scenarios import _lifecycle as lc
from tcpdoctor.lab.scenarios._lifecycle_model import (
    Mark,
    SocketSample,
    Track,
    build_timeline,
    follow,
    last_at,
    lifetime,
    lifetime_window,
    max_gap,
    max_read,
    peak,
    r6,
    spread,
    verdict,
    within_each,
)
from tcpdoctor.lab.sysctl_args import SysctlSetting

NAME = "time-wait-duration"
TIME_WAIT = "TIME_WAIT"
WAIT_MARGIN_S = 5.0  # after the latest expected expiry, before giving up on a TIME_WAIT
FIN_TIMEOUT = "net.ipv4.tcp_fin_timeout"

PARAMS = (
    Param("connections", int, 3, 2, "Connections the client opens, then closes.", 1, 32),
    Param("spacing", float, 2.0, 1.0, "Seconds between two closes.", 0.0, 30.0),
    Param("period", float, 0.1, 0.1, "Seconds between socket samples (the resolution).", 0.01, 1.0),
)


@dataclass(frozen=True)
class Expectation:
    connections: int
    time_wait: float  # TCP_TIMEWAIT_LEN
    slack: float  # how late the timer wheel may fire it
    hz: int | None

    @property
    def jiffy(self) -> float:
        """One tick: the resolution of expires_ms (1/HZ; 10 ms, the coarsest, if unknown)."""
        return 1.0 / (self.hz or 100)

    def as_dict(self) -> dict[str, Measure]:
        return {
            "connections": self.connections,
            "time_wait_s": self.time_wait,
            "timer_slack_s": self.slack,
            "latest_end_s": self.time_wait + self.slack,
            "server_time_wait": 0,
        }


def expect(values: ParamValues, slack: float, hz: int | None) -> Expectation:
    return Expectation(int(values["connections"] or 1), TCP_TIMEWAIT_LEN, slack, hz)


@dataclass(frozen=True)
class Measured:
    closes: tuple[float, ...]  # unix time each close() returned
    tracks: tuple[Track, ...]  # each client port in TIME_WAIT
    server_time_wait_peak: int
    resolution: float  # longest gap between client samples, plus the longest read

    @property
    def lifetimes(self) -> list[float | None]:
        return [lifetime(t, c) for t, c in zip(self.tracks, self.closes, strict=True)]

    @property
    def armed_for(self) -> list[float | None]:
        """Nominal expiry (first sample + expires_ms) minus the close: what the timer says."""
        return [
            None if t.nominal_expiry is None else t.nominal_expiry - c
            for t, c in zip(self.tracks, self.closes, strict=True)
        ]

    @property
    def lateness(self) -> list[float | None]:
        """Gone minus nominal expiry: the timer wheel's lateness, plus sampling."""
        return [
            None if t.gone_at is None or t.nominal_expiry is None else t.gone_at - t.nominal_expiry
            for t in self.tracks
        ]

    def as_dict(self) -> dict[str, Measure]:
        life, armed, late = spread(self.lifetimes), spread(self.armed_for), spread(self.lateness)
        return {
            "connections": len(self.closes),
            "time_wait_sockets": sum(1 for t in self.tracks if t.seen),
            "timer_armed_min_s": r6(armed[0]),
            "timer_armed_max_s": r6(armed[1]),
            "lifetime_min_s": r6(life[0]),
            "lifetime_max_s": r6(life[1]),
            "lateness_min_s": r6(late[0]),
            "lateness_max_s": r6(late[1]),
            "server_time_wait_peak": self.server_time_wait_peak,
            "resolution_s": r6(self.resolution),
        }


def measure(samples: Sequence[SocketSample], closes: Sequence[lc.Closed]) -> Measured:
    tracks = tuple(follow(samples, "client", c.port, TIME_WAIT) for c in closes)
    return Measured(
        closes=tuple(c.t for c in closes),
        tracks=tracks,
        server_time_wait_peak=peak(samples, "server", TIME_WAIT),
        resolution=max_gap(samples, "client") + max_read(samples),
    )


def compare(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    life_low, life_high = spread(got.lifetimes)
    armed_low, armed_high = spread(got.armed_for)
    late_low, late_high = spread(got.lateness)
    basis = "TCP_TIMEWAIT_LEN (include/net/tcp.h), armed by tcp_time_wait()"
    return (
        exact(
            "time_wait_sockets",
            "client sockets that entered TIME_WAIT",
            exp.connections,
            sum(1 for t in got.tracks if t.seen),
            basis="the client closes first: the active closer holds TIME_WAIT",
        ),
        *within_each(
            "timer_armed",
            "TIME_WAIT timer armed for",
            tolerance(exp.time_wait, resolution=exp.jiffy),
            armed_low,
            armed_high,
            basis,
        ),
        *within_each(
            "lifetime",
            "TIME_WAIT lasted",
            lifetime_window(exp.time_wait, exp.slack, got.resolution),
            life_low,
            life_high,
            basis + " + timer_slack()",
        ),
        at_least(
            "lateness_min",
            "fired after the nominal expiry by at least",
            -(ABSOLUTE_TOLERANCE_S + exp.jiffy),
            r6(late_low),
            unit="s",
            basis="a wheel timer never fires early (kernel/time/timer.c rounds up)",
        ),
        at_most(
            "lateness_max",
            "fired after the nominal expiry by at most",
            round(tolerance(exp.slack, resolution=got.resolution + exp.jiffy).high, 6),
            r6(late_high),
            unit="s",
            basis="timer_slack(60 s), one granule of its wheel level, by the lab's rule",
        ),
        exact(
            "server_time_wait_peak",
            "server TIME_WAIT sockets",
            0,
            got.server_time_wait_peak,
            basis="the passive closer goes LAST_ACK -> CLOSED, no TIME_WAIT",
        ),
    )


# --- the run ------------------------------------------------------------------------------


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    started = time.monotonic()
    count, spacing = int(values["connections"] or 1), float(values["spacing"] or 0.0)
    period = float(values["period"] or 0.1)
    pair = lc.build_pair(ctx, client=ctx.sysctls, server=ctx.sysctls, show=(FIN_TIMEOUT,))
    exp = expect(values, ctx.hz.max_lateness(TCP_TIMEWAIT_LEN), ctx.hz.hz)
    lc.LabServer.start(ctx.topology, pair.server, pair.server_address, on_eof="close")
    client = lc.LabClient.start(ctx.topology, pair.client, pair.server_address, count)
    sampler = lc.SocketSampler([pair.client, pair.server], period).start()
    try:
        closes = _close_all(ctx, client, spacing, started)
        deadline = closes[-1].t + exp.time_wait + exp.slack + WAIT_MARGIN_S
        done = lc.gone_from("client", client.ports, TIME_WAIT)
        lc.wait_reporting(sampler, done, deadline, ctx.progress, started, "TIME_WAIT running")
    finally:
        samples = sampler.stop()
    got = measure(samples, closes)
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
        timeline=build_timeline(samples, closes[0].t, last_at(samples), _marks(closes, got)),
        duration_s=time.monotonic() - started,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=_notes(exp, got, pair),
    )


def _close_all(
    ctx: RunContext, client: lc.LabClient, spacing: float, started: float
) -> list[lc.Closed]:
    first = time.time() + 0.2  # a couple of samples before the first close
    closes = []
    for index in range(len(client.ports)):
        lc.sleep_until(first + index * spacing)
        closes.append(client.close(index, "close"))
        ctx.progress(time.monotonic() - started, f"closed {index + 1}/{len(client.ports)}")
    return closes


def _marks(closes: Sequence[lc.Closed], got: Measured) -> list[Mark]:
    marks = [Mark(c.t, "close", f"port {c.port}") for c in closes]
    for track in got.tracks:
        if track.nominal_expiry is not None:
            marks.append(Mark(track.nominal_expiry, "nominal_expiry", f"port {track.port}"))
        if track.gone_at is not None:
            marks.append(Mark(track.gone_at, "time_wait_end", f"port {track.port}"))
    return marks


def _notes(exp: Expectation, got: Measured, pair: lc.Pair) -> tuple[str, ...]:
    notes = [
        "lifetime = close() to the first sample without the socket (an upper bound, "
        f"resolution {got.resolution:.3f} s); the timer's own figure is the first sample's "
        "expires_ms, which is the nominal expiry, not the wheel-rounded one"
    ]
    late = spread(got.lateness)[1]
    if late is not None and late > got.resolution:
        notes.append(
            f"expires_ms read 0 for up to {late:.2f} s before a TIME_WAIT went: its timer was "
            f"due, waiting for its timer-wheel bucket (granule {exp.slack:g} s at this HZ)"
        )
    fin_timeout = pair.sysctls.get("client", {}).get(FIN_TIMEOUT)
    if fin_timeout is not None:
        notes.append(f"tcp_fin_timeout is {fin_timeout} here and plays no part: TIME_WAIT is fixed")
    return tuple(notes)


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    return None  # every combination of the flags' ranges is fine


def estimate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> float:
    count, spacing = int(values["connections"] or 1), float(values["spacing"] or 0.0)
    return (count - 1) * spacing + TCP_TIMEWAIT_LEN + 2.5


def draw(result: ScenarioResult, plt: Any) -> Any:
    """`--plot`: each TIME_WAIT from close to gone against 60 s and the wheel's slack."""
    from tcpdoctor.lab.scenarios._lifecycle_plot import draw_time_wait_duration

    return draw_time_wait_duration(result, plt)


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="The active closer's TIME_WAIT lasts TCP_TIMEWAIT_LEN (60 s) plus timer-wheel slack",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=(
        "TIME_WAIT is held by whichever side closes first, for a fixed 60 s that no sysctl "
        "changes (tcp_fin_timeout governs orphaned FIN_WAIT2 only). The timer never fires "
        "early and may fire one timer-wheel granule late: about 2 s at HZ=250."
    ),
)
