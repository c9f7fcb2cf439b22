"""keepalive-dead-peer: two idle connections to a peer that silently disappears.

Topology: client --veth-- router --veth-- server (a server that answers and never closes).
Two client connections each make one request; one has SO_KEEPALIVE (and TCP_USER_TIMEOUT
with --user-timeout), the other has nothing. Then the router drops every TCP packet, like
an iptables DROP rule or a peer that lost power. The keepalive connection sends its probes
into the void and fails with ETIMEDOUT; the other one is looked at afterwards and is still
ESTABLISHED. A capture on the client's link gives the probe times.

Expected (kernel/timing.keepalive_detection): the first probe tcp_keepalive_time after the
last segment received, then every tcp_keepalive_intvl, the abort at idle + probes x intvl
(or, with TCP_USER_TIMEOUT, at the first firing past it with a probe out). --idle, --intvl
and --cnt set the client namespace's tcp_keepalive_* sysctls (--sysctl wins).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from tcpdoctor.errors import ScenarioError
from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import MAX_TCP_KEEPCNT, MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.lab import _observer
from tcpdoctor.lab.model import Param, ParamValues, RunContext, ScenarioResult, ScenarioSpec
from tcpdoctor.lab.pcap import Flow, Segment, TcpFlags, in_flow, keepalive_probes
from tcpdoctor.lab.scenarios import _timers
from tcpdoctor.lab.scenarios._keepalive_dead_peer_model import (
    IDLE,
    INTVL,
    PROBES,
    RELEVANT,
    KeepaliveExpectation,
    KeepaliveKnobs,
    KeepaliveObserved,
    compare,
    expect,
    verdict_line,
)
from tcpdoctor.lab.scenarios._timer_plot import draw_schedule, schedule_points
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.lab.topology import Host
from tcpdoctor.observe import snapshot
from tcpdoctor.timeline import Timeline, TimelineRecorder

NAME = "keepalive-dead-peer"
GRACE_S = 10.0
MAX_USER_TIMEOUT_MS = 3_600_000  # the lab's own bound: an hour

PARAMS = (
    Param(
        "idle",
        int,
        10,
        2,
        "net.ipv4.tcp_keepalive_time in the client, seconds (--sysctl wins).",
        1,
        MAX_TCP_KEEPIDLE,
    ),
    Param(
        "intvl",
        int,
        2,
        1,
        "net.ipv4.tcp_keepalive_intvl in the client, seconds (--sysctl wins).",
        1,
        MAX_TCP_KEEPINTVL,
    ),
    Param(
        "cnt",
        int,
        3,
        3,
        "net.ipv4.tcp_keepalive_probes in the client (--sysctl wins).",
        1,
        MAX_TCP_KEEPCNT,
    ),
    Param(
        "user_timeout",
        int,
        None,
        None,
        "TCP_USER_TIMEOUT on the keepalive connection, in ms (replaces the probe count).",
        1,
        MAX_USER_TIMEOUT_MS,
    ),
)


def client_settings(
    values: ParamValues, user: tuple[SysctlSetting, ...]
) -> tuple[SysctlSetting, ...]:
    flags = {IDLE: values.get("idle"), INTVL: values.get("intvl"), PROBES: values.get("cnt")}
    return _timers.with_flags(user, flags)


def _knobs(values: ParamValues, client: dict[str, str | None]) -> KeepaliveKnobs:
    user_timeout = values.get("user_timeout")
    return KeepaliveKnobs.from_text(
        client, user_timeout_ms=None if user_timeout is None else int(user_timeout)
    )


def _planned(values: ParamValues, user: tuple[SysctlSetting, ...]) -> KeepaliveKnobs:
    return _knobs(values, {s.name: s.text for s in client_settings(values, user)})


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    knobs = _planned(values, user)
    timing.keepalive_detection(knobs.idle, knobs.intvl, knobs.probes)  # in range


def estimate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> float:
    knobs = _planned(values, user)
    detection = timing.keepalive_detection(
        knobs.idle, knobs.intvl, knobs.probes, user_timeout=knobs.user_timeout
    )
    return detection.detected_at * 1.05 + 1.0


# --- the run ------------------------------------------------------------------------------


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    topo = ctx.topology
    ctx.progress(0.0, "building the namespaces")
    path = _timers.build_path(ctx, client_settings(values, ctx.sysctls), "meta l4proto tcp")
    read_back = {"client": _timers.read_back(topo, path.client, RELEVANT)}
    knobs = _knobs(values, read_back["client"])
    late = ctx.hz.max_lateness
    exp = expect(knobs, late)
    deadline_s = exp.detection.detected_at * 1.5 + GRACE_S
    _timers.start_server(topo, path.server, path.server_address, deadline_s + 60)
    capture = _timers.Capturing(ctx, path.client, path.near.a.device)
    keepalive, control = _connect_both(ctx, path, values, deadline_s)
    ka_port = int(keepalive[1]["port"])
    control_port = int(control[1]["port"])

    path.blackhole.on()
    dark_at = time.time()
    sampler = _observer.StateSampler([path.client]).start()
    try:
        keepalive[0].send("wait")
        failure = _wait_for_error(ctx, keepalive[0], deadline_s, exp)
        state, checked_at = _state_of(path.client, control_port)
    finally:
        samples = sampler.stop()
    segments = capture.segments()

    server = (path.server_address, _timers.SERVER_PORT)
    ka_flow = Flow(path.client_address, ka_port, *server)
    control_flow = Flow(path.client_address, control_port, *server)
    last_rx = _last_received(segments, ka_flow, float(keepalive[1]["t_reply"]))
    got = _observe(segments, ka_flow, control_flow, last_rx, dark_at, failure, state, checked_at)
    checks = compare(exp, got, late)
    offset = _timers.realtime_offset()
    return ScenarioResult(
        scenario=NAME,
        run_id=topo.run_id,
        params=dict(values),
        sysctls=_timers.present(read_back),
        expected=exp.as_dict(),
        measured=got.as_dict(),
        checks=checks,
        verdict=verdict_line(exp, got, checks),
        timeline=_timeline(got, dark_at - last_rx, [(s.at + offset - last_rx, s) for s in samples]),
        duration_s=got.error_at or 0.0,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=_notes(ctx),
        pcap=capture.saved,
    )


def _connect_both(
    ctx: RunContext, path: _timers.Path3, values: ParamValues, deadline_s: float
) -> tuple[tuple[_timers.Lines, dict[str, Any]], tuple[_timers.Lines, dict[str, Any]]]:
    extra = ["--keepalive"]
    if values.get("user_timeout") is not None:
        extra += ["--user-timeout-ms", str(values["user_timeout"])]
    topo, address = ctx.topology, path.server_address
    ka = _timers.start_client(topo, path.client, address, "hold", deadline_s, *extra)
    plain = _timers.start_client(topo, path.client, address, "hold", deadline_s)
    what = "the lab client did not connect"
    ka_ready = ka.expect("established", _timers.READY_TIMEOUT_S, what)
    plain_ready = plain.expect("established", _timers.READY_TIMEOUT_S, what)
    return (ka, ka_ready), (plain, plain_ready)


def _wait_for_error(
    ctx: RunContext, lines: _timers.Lines, deadline_s: float, exp: KeepaliveExpectation
) -> dict[str, Any]:
    started = time.monotonic()
    limit = started + deadline_s
    while time.monotonic() < limit:
        record = lines.next(0.5)
        done = time.monotonic() - started
        ctx.progress(done, f"idle, {exp.detection.detected_at:g} s until the peer is declared dead")
        if record is not None and record.get("kind") == "error":
            return record
        if record is None and lines.ended:
            break
    raise ScenarioError(f"keepalive never failed: {lines.child.stderr_tail() or 'no output'}")


def _state_of(host: Host, port: int) -> tuple[str | None, float]:
    """The state of our socket with local `port` (None: gone), and when it was read."""
    snap = snapshot.take(host.target)
    checked_at = time.time()
    rows = snap.sockets[snap.sockets["sport"] == port]
    if len(rows) == 0:
        return None, checked_at
    listening = int(TcpState.LISTEN)
    states = [int(s) for s in np.asarray(rows["state"]).tolist() if int(s) != listening]
    return (TcpState(states[0]).label if states else None), checked_at


def _last_received(segments: tuple[Segment, ...], flow: Flow, fallback: float) -> float:
    """When the keepalive connection last heard from the server: its idle clock's start."""
    back = [s.t for s in in_flow(segments, flow) if Flow.of(s) == flow.reverse()]
    return back[-1] if back else fallback


def _observe(
    segments: tuple[Segment, ...],
    ka_flow: Flow,
    control_flow: Flow,
    last_rx: float,
    dark_at: float,
    failure: dict[str, Any],
    control_state: str | None,
    checked_at: float,
) -> KeepaliveObserved:
    probes = [p.t for p in keepalive_probes(segments, ka_flow)]
    after = probes[-1] if probes else last_rx
    resets = [
        s
        for s in in_flow(segments, ka_flow)
        if Flow.of(s) == ka_flow and s.flags & TcpFlags.RST and s.t >= after
    ]
    control_sent = [
        s for s in in_flow(segments, control_flow) if Flow.of(s) == control_flow and s.t > dark_at
    ]
    error_t = failure.get("t")
    return KeepaliveObserved(
        probe_times=tuple(t - last_rx for t in probes),
        error=failure.get("error"),
        error_at=None if error_t is None else float(error_t) - last_rx,
        rst_sent=len(resets),
        control_state=control_state,
        control_checked_at=checked_at - last_rx,
        control_sent=len(control_sent),
    )


def _timeline(
    got: KeepaliveObserved, dark_at: float, samples: list[tuple[float, _observer.StateSample]]
) -> Timeline:
    recorder = TimelineRecorder((got.control_checked_at or got.error_at or 0.0) + 1.0)
    recorder.event(0.0, "last_received", "the last segment from the server")
    recorder.event(dark_at, "blackhole_on", "the router drops every TCP packet")
    for index, t in enumerate(got.probe_times):
        recorder.event(t, "keepalive_probe", f"probe {index + 1}")
    if got.error_at is not None:
        recorder.attempt(got.error_at, got.error)
        recorder.event(got.error_at, "gave_up", got.error or "")
    if got.control_checked_at is not None:
        detail = f"the connection without keepalive: {got.control_state or 'gone'}"
        recorder.event(got.control_checked_at, "control_checked", detail)
    for t, sample in samples:
        recorder.states(t, sample.host, sample.counts)
    return recorder.freeze()


def _notes(ctx: RunContext) -> tuple[str, ...]:
    notes = ["times count from the last segment the keepalive connection received"]
    if ctx.hz.hz is None:
        notes.append(f"CONFIG_HZ {ctx.hz.source}")
    return tuple(notes)


def draw(result: ScenarioResult, plt: Any) -> Any:
    """`lab run --plot`: probe times against the schedule (tcpdoctor.lab.plot calls this)."""
    points = schedule_points(result.checks, "gap", "keepalive probe", ("gives_up_at",))
    return draw_schedule(result, plt, points, origin="the last segment received")


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="a peer that vanishes: keepalive probes and ETIMEDOUT at idle + cnt x intvl "
    "(or TCP_USER_TIMEOUT); without keepalive the connection stays ESTABLISHED",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=(
        "An idle connection whose peer disappears without a FIN or RST stays ESTABLISHED "
        "for ever: nothing is sent, so nothing fails. SO_KEEPALIVE notices after "
        "tcp_keepalive_time + probes x intvl of silence (2 h 11 min with the defaults); "
        "TCP_USER_TIMEOUT can cut that after the first probe."
    ),
)

__all__ = ["NAME", "SCENARIO", "draw"]
