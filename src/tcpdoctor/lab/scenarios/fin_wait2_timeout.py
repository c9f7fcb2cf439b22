"""fin-wait2-timeout: how long an orphaned FIN_WAIT2 lives when the peer never closes.

Topology: client --veth-- server. The server answers one request and then never closes its
end (it stays in CLOSE_WAIT). The client closes: its FIN is acknowledged, the socket is in
FIN_WAIT2, orphaned, and only tcp_fin_timeout ends it. The lab reads the client
namespace's sockets every few tens of milliseconds (the same reader as `tcpdoctor scan`)
and notes the state, the timer code and the time left on the timer.

Expected (kernel/timing.fin_wait2_lifetime): F = max(tcp_fin_timeout, 3.5 x RTO); a
minisock for F when F <= 60 s; above 60 s the full socket first (keepalive timer,
F - 60), then a minisock for F - 60: 2 x (F - 60) in all. --fin-timeout sets the client
namespace's net.ipv4.tcp_fin_timeout (--sysctl wins).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from tcpdoctor.errors import InputError, ScenarioError
from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import TCP_RTO_MIN
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.lab import _observer
from tcpdoctor.lab.model import Param, ParamValues, RunContext, ScenarioResult, ScenarioSpec
from tcpdoctor.lab.pcap import Flow
from tcpdoctor.lab.scenarios import _timers
from tcpdoctor.lab.scenarios._fin_wait2_timeout_model import (
    FIN_TIMEOUT,
    RELEVANT,
    FinExpectation,
    FinKnobs,
    FinObserved,
    SocketSample,
    compare,
    expect,
    fin_acked_at,
    measure,
    verdict_line,
)
from tcpdoctor.lab.scenarios._timer_model import rtt_samples
from tcpdoctor.lab.scenarios._timer_plot import Point, draw_schedule
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.lab.topology import Host
from tcpdoctor.observe import snapshot
from tcpdoctor.timeline import Timeline, TimelineRecorder

NAME = "fin-wait2-timeout"
PERIOD_S = 0.02  # one socket read takes about a millisecond
GRACE_S = 10.0
MAX_SAMPLES = 100_000
MAX_FIN_TIMEOUT = 600  # the lab's own bound; the kernel takes any value

PARAMS = (
    Param(
        "fin_timeout",
        int,
        70,
        3,
        "net.ipv4.tcp_fin_timeout in the client, seconds; above 60 the socket lives "
        "2 x (F - 60) (--sysctl wins).",
        0,
        MAX_FIN_TIMEOUT,
    ),
)


def client_settings(
    values: ParamValues, user: tuple[SysctlSetting, ...]
) -> tuple[SysctlSetting, ...]:
    return _timers.with_flags(user, {FIN_TIMEOUT: values.get("fin_timeout")})


def _planned(values: ParamValues, user: tuple[SysctlSetting, ...]) -> FinKnobs:
    texts: dict[str, str | None] = {s.name: s.text for s in client_settings(values, user)}
    return FinKnobs.from_text(texts, None)


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    knobs = _planned(values, user)
    if knobs.fin_timeout > MAX_FIN_TIMEOUT:
        raise InputError(
            f"{FIN_TIMEOUT} above {MAX_FIN_TIMEOUT} s would keep the lab waiting too long"
        )


def estimate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> float:
    knobs = _planned(values, user)
    life = timing.fin_wait2_lifetime(knobs.fin_timeout, rto=max(knobs.rto_min, TCP_RTO_MIN))
    return (life.lifetime or 0.0) * 1.05 + 1.0


# --- the run ------------------------------------------------------------------------------


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    topo = ctx.topology
    ctx.progress(0.0, "building the namespaces")
    client, server, link = _timers.build_pair(ctx, client_settings(values, ctx.sysctls))
    read_back = {"client": _timers.read_back(topo, client, RELEVANT)}
    planned = _planned(values, ctx.sysctls)
    deadline_s = estimate(values, ctx.sysctls) * 1.5 + GRACE_S
    address = str(link.b.address)
    _timers.start_server(topo, server, address, deadline_s + 60)
    capture = _timers.Capturing(ctx, client, link.a.device)
    lines = _timers.start_client(topo, client, address, "hold", deadline_s)
    ready = lines.expect("established", _timers.READY_TIMEOUT_S, "the lab client did not connect")
    port = int(ready["port"])

    lines.send("close")
    closed = lines.expect("closed", _timers.READY_TIMEOUT_S, "the lab client did not close")
    closed_at = float(closed["mono"])
    raw = _follow(ctx, client, port, closed_at, deadline_s, planned.fin_timeout)
    server_after = _observer.sample(server)
    segments = capture.segments()

    flow = Flow(str(link.a.address), port, address, _timers.SERVER_PORT)
    acked = fin_acked_at(segments, flow)
    if acked is None:
        raise ScenarioError("the capture shows no ACK of the client's FIN")
    knobs = FinKnobs.from_text(read_back["client"], ctx.hz.hz)
    exp = expect(knobs, rtt_samples(segments, flow, acked + 1.0), ctx.hz.max_lateness)
    start = acked - _timers.realtime_offset()  # on the monotonic clock of the samples
    samples = [SocketSample(s.t - (start - closed_at), s.state, s.timer, s.expires) for s in raw]
    got = measure(samples, start - closed_at, int(closed["rto_us"]) / 1e6)
    tick = 1 / ctx.hz.hz if ctx.hz.hz else 0.01
    checks = compare(exp, got, tick)
    return ScenarioResult(
        scenario=NAME,
        run_id=topo.run_id,
        params=dict(values),
        sysctls=_timers.present(read_back),
        expected=exp.as_dict(),
        measured=got.as_dict(),
        checks=checks,
        verdict=verdict_line(exp, got, checks),
        timeline=_timeline(samples, got.gone_at, server_after.counts),
        duration_s=got.gone_at or 0.0,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=_notes(exp, got, ctx),
        pcap=capture.saved,
    )


def _follow(
    ctx: RunContext, host: Host, port: int, closed_at: float, limit_s: float, fin: int
) -> list[SocketSample]:
    """Read the socket every PERIOD_S until it is gone (bounded in time and count)."""
    limit = closed_at + limit_s
    samples: list[SocketSample] = []
    while time.monotonic() < limit and len(samples) < MAX_SAMPLES:
        before = time.monotonic()
        found = _socket(host, port)
        at = (before + time.monotonic()) / 2 - closed_at  # the read took about a millisecond
        samples.append(SocketSample(at, *found) if found else SocketSample(at, None))
        if found is None:
            return samples
        ctx.progress(at, f"FIN_WAIT2 (tcp_fin_timeout={fin})")
        time.sleep(max(0.0, before + PERIOD_S - time.monotonic()))
    raise ScenarioError(f"the FIN_WAIT2 socket was still there after {limit_s:.0f} s")


def _socket(host: Host, port: int) -> tuple[str, int, float] | None:
    """(state, timer code, seconds left on the timer) of our socket, or None if gone."""
    snap = snapshot.take(host.target)
    rows = snap.sockets[snap.sockets["sport"] == port]
    for state, timer, expires in zip(
        np.asarray(rows["state"]).tolist(),
        np.asarray(rows["timer"]).tolist(),
        np.asarray(rows["expires_ms"]).tolist(),
        strict=True,
    ):
        if int(state) != TcpState.LISTEN:
            return TcpState(int(state)).label, int(timer), int(expires) / 1000
    return None


def _timeline(
    samples: list[SocketSample], gone_at: float | None, server: dict[str, int]
) -> Timeline:
    recorder = TimelineRecorder((gone_at or 0.0) + 1.0)
    recorder.event(0.0, "fin_acked", "the server acknowledged the client's FIN")
    previous: tuple[str | None, int] | None = None
    for s in samples:
        recorder.states(s.t, "client", {s.state: 1} if s.state else {})
        if (s.state, s.timer) != previous:
            label = _phase_label(s)
            recorder.event(s.t, label, f"{s.state or 'gone'} (timer {s.timer})")
            previous = (s.state, s.timer)
    recorder.states(gone_at or 0.0, "server", server)
    return recorder.freeze()


def _phase_label(sample: SocketSample) -> str:
    if sample.state is None:
        return "gone"
    return "minisock" if sample.timer == 3 else "full_socket"


def _notes(exp: FinExpectation, got: FinObserved, ctx: RunContext) -> tuple[str, ...]:
    notes = [
        "times count from the ACK of the client's FIN, when FIN_WAIT2 begins (FIN_WAIT1 "
        f"lasted {(got.fin_wait1 or 0.0) * 1000:.0f} ms: the server delays that ACK); the "
        f"socket was read every {PERIOD_S * 1000:g} ms (largest gap {got.step * 1000:.0f} ms)",
        f"the RTO was {(got.rto_at_close or 0.0) * 1000:g} ms at close and "
        f"{exp.life.rto * 1000:g} ms once the FIN was acknowledged (the ACK is an RTT sample); "
        f"the 3.5 x RTO floor is {_floor(exp):.3f} s",
    ]
    if ctx.hz.hz is None:
        notes.append(f"CONFIG_HZ {ctx.hz.source}")
    return tuple(notes)


def _floor(exp: FinExpectation) -> float:
    return timing.fin_wait2_lifetime(0, rto=exp.life.rto, hz=exp.knobs.hz).fin_time or 0.0


def draw(result: ScenarioResult, plt: Any) -> Any:
    """`lab run --plot`: when the phases ended, against fin_wait2_lifetime()."""
    by_name = {c.name: c for c in result.checks}
    points = []
    for name in ("full_socket_s", "lifetime_s"):
        check = by_name.get(name)
        if check is not None:
            points.append(
                Point(
                    "full socket became a minisock" if name == "full_socket_s" else "gone",
                    _f(check.expected),
                    check.low,
                    check.high,
                    _f(check.measured),
                )
            )
    fin = _f(result.expected.get("fin_time_s"))
    lifetime = _f(result.expected.get("lifetime_s"))
    reference = None
    if fin is not None and lifetime is not None and abs(fin - lifetime) > 1e-6:
        reference = (fin, f"tcp_fin_timeout = {fin:g} s (not the lifetime)")
    return draw_schedule(result, plt, points, origin="FIN_WAIT2 began", reference=reference)


def _f(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="an orphaned FIN_WAIT2 whose peer never closes: its lifetime against "
    "tcp_fin_timeout, including the 2 x (F - 60) rule above 60 s",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=(
        "tcp_fin_timeout bounds only orphaned FIN_WAIT2 sockets (the application closed, "
        "the peer never did). Up to 60 s it is the lifetime; above 60 s the kernel keeps "
        "the full socket for F - 60, then a minisock for F - 60 again, so 90 gives 60 s, "
        "not 90 s. It never goes below 3.5 x RTO."
    ),
)

__all__ = ["NAME", "SCENARIO", "draw"]
