"""retransmission-timeout: data written on an established connection whose path goes dark.

Topology: client --veth-- router --veth-- server (a server that answers and never closes).
The client connects and makes one request, so the kernel has RTT samples; then the router
starts dropping every TCP packet (nft drop: no RST, no ICMP) and the client writes 100
bytes. The data is retransmitted with a growing RTO until the socket fails with ETIMEDOUT.
A capture on the client's link gives every transmission; the client reports the error.

Expected (kernel/timing): the first RTO from RttEstimator over the captured RTT samples
(srtt + max(4 x rttvar, rto_min), in ticks); then blackhole_retransmissions(): a tail loss
probe, RTO retransmissions doubling up to tcp_rto_max_ms, and the give-up at the first
expiry once tcp_retries2's budget, counted from the first RTO retransmission, is spent.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tcpdoctor.errors import ScenarioError
from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import TCP_RTO_MAX
from tcpdoctor.kernel.sysctls import lookup_sysctl
from tcpdoctor.lab import _observer
from tcpdoctor.lab.model import Param, ParamValues, RunContext, ScenarioResult, ScenarioSpec
from tcpdoctor.lab.pcap import Flow, retransmission_times
from tcpdoctor.lab.scenarios import _timers
from tcpdoctor.lab.scenarios._retransmission_timeout_model import (
    RELEVANT,
    RETRIES2,
    RTO_MAX_MS,
    SACK,
    RtoExpectation,
    RtoKnobs,
    RtoObserved,
    compare,
    expect,
    verdict_line,
)
from tcpdoctor.lab.scenarios._timer_model import rtt_samples
from tcpdoctor.lab.scenarios._timer_plot import draw_schedule, schedule_points
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.timeline import Timeline, TimelineRecorder

NAME = "retransmission-timeout"
DATA_BYTES = 100  # one segment: the loss probe timeout then includes the delayed-ACK room
GRACE_S = 10.0
VETH_RTO_S = 0.204  # for the estimate only: an RTT of microseconds, HZ=250
MAX_RETRIES2 = 255  # proc_dou8vec_minmax

PARAMS = (
    Param(
        "retries2",
        int,
        5,
        3,
        "net.ipv4.tcp_retries2 in the client (the kernel's 15 takes over 15 minutes); "
        "--sysctl net.ipv4.tcp_retries2 wins.",
        0,
        MAX_RETRIES2,
    ),
)


def client_settings(
    values: ParamValues, user: tuple[SysctlSetting, ...]
) -> tuple[SysctlSetting, ...]:
    return _timers.with_flags(user, {RETRIES2: values.get("retries2")})


def _planned(values: ParamValues, user: tuple[SysctlSetting, ...]) -> tuple[int, float]:
    chosen = {s.name: s.text for s in client_settings(values, user)}
    retries2 = int(chosen.get(RETRIES2, "15"))
    rto_max_ms = chosen.get(RTO_MAX_MS)
    return retries2, TCP_RTO_MAX if rto_max_ms is None else int(rto_max_ms) / 1000


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    lookup_sysctl(RETRIES2)
    _planned(values, user)


def estimate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> float:
    retries2, rto_max = _planned(values, user)
    plan = timing.blackhole_retransmissions(
        retries2, initial_rto=VETH_RTO_S, srtt=0.0, rto_max=rto_max
    )
    return plan.gives_up_at * 1.1 + 1.0


# --- the run ------------------------------------------------------------------------------


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    topo = ctx.topology
    ctx.progress(0.0, "building the namespaces")
    path = _timers.build_path(ctx, client_settings(values, ctx.sysctls), "meta l4proto tcp")
    read_back = {
        "client": _timers.read_back(topo, path.client, RELEVANT),
        "server": _timers.read_back(topo, path.server, (SACK,)),
    }
    knobs = RtoKnobs.from_text(read_back["client"], read_back["server"], ctx.hz.hz)
    late = ctx.hz.max_lateness
    retries2, rto_max = knobs.retries2, knobs.rto_max
    deadline_s = _deadline(retries2, rto_max)
    _timers.start_server(topo, path.server, path.server_address, deadline_s + 60)
    capture = _timers.Capturing(ctx, path.client, path.near.a.device)
    lines = _timers.start_client(topo, path.client, path.server_address, "hold", deadline_s)
    ready = lines.expect("established", _timers.READY_TIMEOUT_S, "the lab client did not connect")
    path.blackhole.on()
    dark_at = time.time()
    sampler = _observer.StateSampler([path.client]).start()
    try:
        sent_at, failure = _send_and_wait(ctx, lines, deadline_s)
    finally:
        samples = sampler.stop()
    segments = capture.segments()

    flow = Flow(path.client_address, int(ready["port"]), path.server_address, _timers.SERVER_PORT)
    trains = retransmission_times(segments, flow)
    first = trains[0] if trains else sent_at
    rtts = rtt_samples(segments, flow, dark_at)
    if not rtts:
        raise ScenarioError("the capture holds no RTT sample of the handshake")
    exp = expect(knobs, rtts, late)
    got = RtoObserved(
        rtt_samples=rtts,
        tcpi_rto=int(ready["rto_us"]) / 1_000_000,
        tcpi_rtt=int(ready["rtt_us"]) / 1_000_000,
        transmit_times=tuple(t - first for t in trains),
        error=failure.get("error"),
        error_at=float(failure["t"]) - first if "t" in failure else None,
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
        timeline=_timeline(got, dark_at - first, [(s.at + offset - first, s) for s in samples]),
        duration_s=got.error_at or 0.0,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=_notes(exp, ctx),
        pcap=capture.saved,
    )


def _deadline(retries2: int, rto_max: float) -> float:
    """A generous bound on the wait: the schedule for a 1 s RTO, plus grace."""
    plan = timing.blackhole_retransmissions(retries2, initial_rto=1.0, srtt=0.0, rto_max=rto_max)
    return plan.gives_up_at * 1.5 + GRACE_S


def _send_and_wait(
    ctx: RunContext, lines: _timers.Lines, deadline_s: float
) -> tuple[float, dict[str, Any]]:
    lines.send(f"send {DATA_BYTES}")
    sent = lines.expect("sent", _timers.READY_TIMEOUT_S, "the lab client did not send")
    sent_at = float(sent["t"])
    limit = time.monotonic() + deadline_s
    while time.monotonic() < limit:
        record = lines.next(0.5)
        ctx.progress(time.time() - sent_at, "retransmitting into the black hole")
        if record is not None and record.get("kind") == "error":
            return sent_at, record
        if record is None and lines.ended:
            break
    raise ScenarioError(f"the socket never failed: {lines.child.stderr_tail() or 'no output'}")


def _timeline(
    got: RtoObserved, dark_at: float, samples: list[tuple[float, _observer.StateSample]]
) -> Timeline:
    recorder = TimelineRecorder((got.error_at or 0.0) + 1.0)
    recorder.event(dark_at, "blackhole_on", "the router drops every TCP packet")
    for index, t in enumerate(got.transmit_times):
        kind = "sent" if index == 0 else "retransmit"
        recorder.event(t, kind, f"transmission {index + 1}")
    if got.error_at is not None:
        recorder.attempt(got.error_at, got.error)
        recorder.event(got.error_at, "gave_up", got.error or "")
    for t, sample in samples:
        recorder.states(t, sample.host, sample.counts)
    return recorder.freeze()


def _notes(exp: RtoExpectation, ctx: RunContext) -> tuple[str, ...]:
    notes = [
        "times count from the original transmission of the data as the capture saw it",
        "RTT samples from the capture (us): "
        + ", ".join(f"{s * 1e6:.0f}" for s in exp.rtt_samples),
    ]
    if not exp.knobs.loss_probe:
        notes.append("no tail loss probe: tcp_early_retrans is not 3 or 4, or SACK is off")
    if ctx.hz.hz is None:
        notes.append(f"CONFIG_HZ {ctx.hz.source}")
    return tuple(notes)


def draw(result: ScenarioResult, plt: Any) -> Any:
    """`lab run --plot`: every transmission against the schedule (tcpdoctor.lab.plot)."""
    probe = "loss probe" if result.expected.get("loss_probe_at") is not None else None
    points = schedule_points(
        result.checks, "gap", "RTO retransmission", ("gives_up_at",), first_label=probe
    )
    return draw_schedule(result, plt, points, origin="the data was sent")


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="data into a path that went dark: RTO backoff and ETIMEDOUT against "
    "tcp_retries2 and tcp_rto_max_ms",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=(
        "When a peer vanishes mid-connection, a writer learns it only when the "
        "retransmission timer gives up: a tail loss probe, then RTOs doubling from about "
        "200 ms, and ETIMEDOUT once tcp_retries2's time budget is spent, counted from the "
        "first RTO retransmission (about 15 minutes with the defaults; TCP_USER_TIMEOUT or "
        "a lower tcp_retries2 cut it)."
    ),
)

__all__ = ["NAME", "SCENARIO", "draw"]
