"""syn-retries: connect() to a server behind a path that drops every packet.

Topology: client --veth-- router --veth-- server; the router's forward chain drops all TCP
(nft drop: no RST, no ICMP), so no SYN-ACK ever comes back. The client's connect() keeps
resending its SYN on the retransmission timer and finally fails with ETIMEDOUT. A capture
on the client's link gives the SYN times; the client reports when connect() failed.

Expected (kernel/timing.syn_give_up): with tcp_syn_linear_timeouts = L (6.5+, default 4)
the first L + 1 waits are the initial RTO of 1 s, later ones double up to rto_max; the
kernel gives up at the first expiry where the retransmissions reach tcp_syn_retries + L or
the time since the first SYN reaches tcp_model_timeout(tcp_syn_retries, 1 s), or
TCP_USER_TIMEOUT when set. TCP_SYNCNT (--syncnt) replaces tcp_syn_retries for one socket.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tcpdoctor.errors import ScenarioError
from tcpdoctor.kernel.sysctls import lookup_sysctl
from tcpdoctor.lab import _observer
from tcpdoctor.lab.model import Param, ParamValues, RunContext, ScenarioResult, ScenarioSpec
from tcpdoctor.lab.pcap import Flow, in_flow, retransmission_times
from tcpdoctor.lab.scenarios import _timers
from tcpdoctor.lab.scenarios._syn_retries_model import (
    RELEVANT,
    SYN_RETRIES,
    SynExpectation,
    SynKnobs,
    SynObserved,
    compare,
    expect,
    verdict_line,
)
from tcpdoctor.lab.scenarios._timer_plot import draw_schedule, schedule_points
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.timeline import Timeline, TimelineRecorder

NAME = "syn-retries"
GRACE_S = 10.0  # beyond the expected give-up (and its timer slack) before the lab stops
MAX_SYNCNT = 127  # TCP_SYNCNT and tcp_syn_retries: 1..MAX_TCP_SYNCNT
MAX_USER_TIMEOUT_MS = 3_600_000  # the lab's own bound: an hour

PARAMS = (
    Param(
        "syn_retries",
        int,
        None,
        2,
        "net.ipv4.tcp_syn_retries in the client (default: the kernel's, 6); "
        "--sysctl net.ipv4.tcp_syn_retries wins.",
        1,
        MAX_SYNCNT,
    ),
    Param(
        "syncnt",
        int,
        None,
        None,
        "TCP_SYNCNT on the connecting socket: its own tcp_syn_retries.",
        1,
        MAX_SYNCNT,
    ),
    Param(
        "user_timeout",
        int,
        None,
        None,
        "TCP_USER_TIMEOUT on the connecting socket, in ms (replaces the time budget).",
        1,
        MAX_USER_TIMEOUT_MS,
    ),
)


def client_settings(
    values: ParamValues, user: tuple[SysctlSetting, ...]
) -> tuple[SysctlSetting, ...]:
    return _timers.with_flags(user, {SYN_RETRIES: values.get("syn_retries")})


def _knobs(values: ParamValues, client: dict[str, str | None]) -> SynKnobs:
    syncnt, user_timeout = values.get("syncnt"), values.get("user_timeout")
    return SynKnobs.from_text(
        client,
        syncnt=None if syncnt is None else int(syncnt),
        user_timeout_ms=None if user_timeout is None else int(user_timeout),
    )


def _planned(values: ParamValues, user: tuple[SysctlSetting, ...]) -> SynKnobs:
    texts: dict[str, str | None] = {}
    for name in RELEVANT:
        spec = lookup_sysctl(name)
        texts[name] = spec.format(spec.default) if spec.default is not None else None
    texts.update({s.name: s.text for s in client_settings(values, user)})
    return _knobs(values, texts)


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    _planned(values, user)  # every value parses


def estimate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> float:
    exp = expect(_planned(values, user), _late)
    return exp.give_up.schedule.gives_up_at * 1.05


def _late(nominal: float) -> float:
    from tcpdoctor.lab._hz import kernel_hz

    return kernel_hz().max_lateness(nominal)


# --- the run ------------------------------------------------------------------------------


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    topo = ctx.topology
    ctx.progress(0.0, "building the namespaces")
    path = _timers.build_path(ctx, client_settings(values, ctx.sysctls), "meta l4proto tcp")
    read_back = {
        "client": _timers.read_back(topo, path.client, RELEVANT),
        "server": {s.name: topo.read_sysctl(path.server, s.name) for s in ctx.sysctls},
    }
    knobs = _knobs(values, read_back["client"])
    late = ctx.hz.max_lateness
    exp = expect(knobs, late)
    deadline_s = exp.give_up.schedule.gives_up_at * 1.2 + GRACE_S

    capture = _timers.Capturing(ctx, path.client, path.near.a.device)
    path.blackhole.on()
    sampler = _observer.StateSampler([path.client]).start()
    try:
        started, outcome, port = _connect(ctx, path, values, deadline_s, exp)
    finally:
        samples = sampler.stop()
    segments = capture.segments()

    flow = Flow(path.client_address, port, path.server_address, _timers.SERVER_PORT)
    absolute = retransmission_times(segments, flow)
    first = absolute[0] if absolute else started
    error_at = outcome.get("t")
    got = SynObserved(
        syn_times=tuple(t - first for t in absolute),
        error=outcome.get("error"),
        error_at=None if error_at is None else float(error_at) - first,
        answered=any(s.src == path.server_address for s in in_flow(segments, flow)),
    )
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
        timeline=_timeline(got, [(s.at + offset - first, s) for s in samples]),
        duration_s=got.error_at or 0.0,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=_notes(exp, ctx),
        pcap=capture.saved,
    )


def _connect(
    ctx: RunContext,
    path: _timers.Path3,
    values: ParamValues,
    deadline_s: float,
    exp: SynExpectation,
) -> tuple[float, dict[str, Any], int]:
    """Start the client's connect(); wait (bounded) for its outcome."""
    extra: list[str] = []
    if values.get("syncnt") is not None:
        extra += ["--syncnt", str(values["syncnt"])]
    if values.get("user_timeout") is not None:
        extra += ["--user-timeout-ms", str(values["user_timeout"])]
    lines = _timers.start_client(
        ctx.topology, path.client, path.server_address, "syn", deadline_s, *extra
    )
    first = lines.expect("connecting", _timers.READY_TIMEOUT_S, "the lab client did not start")
    started, port = float(first["t"]), int(first["port"])
    limit = time.monotonic() + deadline_s
    expected = exp.give_up.schedule.gives_up_at
    while time.monotonic() < limit:
        record = lines.next(0.5)
        ctx.progress(time.time() - started, f"connect() waiting, {expected:g} s expected")
        if record is not None and record.get("kind") == "result":
            return started, record, port
        if record is None and lines.ended:
            break
    raise ScenarioError(f"connect() did not finish: {lines.child.stderr_tail() or 'no output'}")


def _timeline(got: SynObserved, samples: list[tuple[float, _observer.StateSample]]) -> Timeline:
    recorder = TimelineRecorder((got.error_at or 0.0) + 1.0)
    for index, t in enumerate(got.syn_times):
        recorder.event(t, "syn" if index == 0 else "syn_retransmit", f"SYN {index + 1}")
    if got.error_at is not None:
        recorder.attempt(got.error_at, got.error)
        recorder.event(got.error_at, "gave_up", got.error or "connected")
    for t, sample in samples:
        recorder.states(t, sample.host, sample.counts)
    return recorder.freeze()


def _notes(exp: SynExpectation, ctx: RunContext) -> tuple[str, ...]:
    notes = ["times count from the first SYN as the capture saw it leave the client"]
    if exp.knobs.linear_timeouts == 0:
        notes.append("no tcp_syn_linear_timeouts on this kernel (< 6.5): the RTO doubles at once")
    if ctx.hz.hz is None:
        notes.append(f"CONFIG_HZ {ctx.hz.source}")
    return tuple(notes)


def draw(result: ScenarioResult, plt: Any) -> Any:
    """`lab run --plot`: SYN times against the schedule (tcpdoctor.lab.plot calls this)."""
    points = schedule_points(result.checks, "gap", "SYN retransmission", ("gives_up_at",))
    return draw_schedule(result, plt, points, origin="the first SYN")


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="connect() into a silent path: SYN retransmissions and ETIMEDOUT against "
    "tcp_syn_retries, tcp_syn_linear_timeouts and TCP_SYNCNT",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=(
        "A connect() to a host that drops SYNs does not fail at once: the kernel resends "
        "the SYN 1 s apart (tcp_syn_linear_timeouts), then doubling, and gives up only "
        "after about 131 s with the defaults. tcp_syn_retries, TCP_SYNCNT or "
        "TCP_USER_TIMEOUT shorten that; an application-level connect timeout is another way."
    ),
)

__all__ = ["NAME", "SCENARIO", "draw"]
