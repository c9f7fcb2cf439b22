"""port-exhaustion: a client with K ephemeral ports opens a new connection per request.

Topology: client --veth-- server (198.18.0.1 -> 198.18.0.2:8080). The client namespace
gets ip_local_port_range = [32768, 32768 + K - 1]. A load generator inside it makes R
requests per second, each on a fresh connection that the client closes first, so every
request leaves a 60 s TIME_WAIT on one of the K ports. After about K requests connect()
fails with EADDRNOTAVAIL until the first TIME_WAIT expires, then the ports come back in
the order they were taken: the on/off pattern seen in production.

Variants (flags): --tw-reuse 1 lets connect() take over a TIME_WAIT older than
tcp_tw_reuse_delay (timestamps on); --tw-reuse 2 only does that for loopback, so over veth
it changes nothing; --pool keeps one connection; --server-closes-first moves the TIME_WAIT
to the server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tcpdoctor.errors import InputError, ScenarioError
from tcpdoctor.kernel.constants import DEFAULT_PORT_RANGE, PROT_SOCK, TCP_TIMEWAIT_LEN
from tcpdoctor.kernel.sysctls import lookup_sysctl, parse_port_range
from tcpdoctor.lab import _observer
from tcpdoctor.lab._lines import JsonLines
from tcpdoctor.lab.model import Param, ParamValues, RunContext, ScenarioResult, ScenarioSpec
from tcpdoctor.lab.scenarios._port_exhaustion_model import (
    EADDRNOTAVAIL,
    TIME_WAIT,
    Attempt,
    ClientKnobs,
    Expectation,
    Mode,
    Observed,
    auto_duration,
    compare,
    expect,
    measure,
    verdict,
)
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.lab.topology import Child, Host, Topology
from tcpdoctor.observe import snapshot
from tcpdoctor.timeline import TimelineRecorder

NAME = "port-exhaustion"
SERVER_PORT = 8080
PORT_LOW = DEFAULT_PORT_RANGE[0]
MAX_PORTS = DEFAULT_PORT_RANGE[1] - DEFAULT_PORT_RANGE[0] + 1
READY_TIMEOUT_S = 15.0  # python start-up inside a namespace on a busy 2-core machine
SETTLE_S = 0.3  # after the load: let the last closes finish before the final sample
RUN_GRACE_S = 30.0  # the client must be done within duration + this
CONNECT_TIMEOUT_S = 2.0
PROGRESS_EVERY_S = 0.5
COUNTERS = ("TcpExt.TWRecycled", "TcpExt.TCPTimeWaitOverflow")
RELEVANT = (
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_max_tw_buckets",
)
_RANGE = "net.ipv4.ip_local_port_range"
_REUSE = "net.ipv4.tcp_tw_reuse"

PARAMS = (
    Param("ports", int, 64, 32, "K: ephemeral ports the client has.", 1, MAX_PORTS),
    Param("rate", float, 50.0, 64.0, "R: requests per second.", 0.1, 5000.0),
    Param(
        "duration",
        float,
        None,
        None,
        "Seconds of load (default: until the ports have come back once).",
        1.0,
        3600.0,
    ),
    Param(
        "tw_reuse",
        int,
        None,
        None,
        "net.ipv4.tcp_tw_reuse in the client (default: the kernel's, 2).",
        choices=(0, 1, 2),
    ),
    Param("pool", bool, False, False, "One pooled connection for every request."),
    Param(
        "server_closes_first",
        bool,
        False,
        False,
        "The server closes each connection first (TIME_WAIT moves to it).",
    ),
)


# --- parameters -> settings ---------------------------------------------------------------


def _mode(values: ParamValues) -> Mode:
    if values.get("pool"):
        return Mode.POOL
    if values.get("server_closes_first"):
        return Mode.SERVER_CLOSES_FIRST
    return Mode.CLOSE


def _rate(values: ParamValues) -> float:
    return float(values["rate"] or 0.0)


def client_settings(
    values: ParamValues, user: Sequence[SysctlSetting]
) -> tuple[SysctlSetting, ...]:
    """The client's sysctls: the user's, plus the port range and tw_reuse from flags.

    An ip_local_port_range given with --sysctl wins over --ports.
    """
    chosen = {s.name: s for s in user}
    if _RANGE not in chosen:
        ports = int(values["ports"] or 1)
        chosen[_RANGE] = _setting(_RANGE, f"{PORT_LOW} {PORT_LOW + ports - 1}")
    if values.get("tw_reuse") is not None:
        chosen[_REUSE] = _setting(_REUSE, str(values["tw_reuse"]))
    return tuple(chosen.values())


def _setting(name: str, text: str) -> SysctlSetting:
    spec = lookup_sysctl(name)
    value = spec.parse(text)
    return SysctlSetting(spec, value, spec.format(value))


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    if values.get("pool") and values.get("server_closes_first"):
        raise InputError("--pool and --server-closes-first exclude each other")
    given = {s.name: s for s in user}
    reuse = values.get("tw_reuse")
    if reuse is not None and _REUSE in given and given[_REUSE].value != reuse:
        raise InputError(f"--tw-reuse {reuse} contradicts --sysctl {_REUSE}={given[_REUSE].text}")
    if _RANGE in given:
        low, _high = parse_port_range(given[_RANGE].text)
        if low < PROT_SOCK:
            raise InputError(
                f"{_RANGE} must start at {PROT_SOCK} or above: the kernel refuses a range "
                "that reaches below ip_unprivileged_port_start"
            )


def _planned_knobs(values: ParamValues, user: Sequence[SysctlSetting]) -> ClientKnobs:
    """The knobs as they will be, from flags, --sysctl and catalogue defaults."""
    texts: dict[str, str | None] = {}
    for name in RELEVANT:
        spec = lookup_sysctl(name)
        texts[name] = spec.format(spec.default) if spec.default is not None else None
    texts.update({s.name: s.text for s in client_settings(values, user)})
    return ClientKnobs.from_text(texts)


def estimate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> float:
    if values.get("duration"):
        return float(values["duration"] or 0.0)
    knobs = _planned_knobs(values, user)
    lateness = _lateness_upper_bound()
    return auto_duration(_mode(values), _rate(values), knobs, lateness)


def _lateness_upper_bound() -> float:
    from tcpdoctor.lab._hz import kernel_hz

    return kernel_hz().max_lateness(TCP_TIMEWAIT_LEN)


# --- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Load:
    attempts: tuple[Attempt, ...]
    t0: float  # monotonic time of attempt 0
    ended: float  # monotonic time the load generator finished
    pool_closed: float | None


@dataclass(frozen=True)
class _Built:
    client: Host
    server: Host
    server_address: str
    client_device: str
    read_back: dict[str, dict[str, str | None]]  # host role -> knob -> value as read back


def _build(ctx: RunContext, values: ParamValues) -> _Built:
    """Two hosts on one veth pair, their sysctls applied and read back."""
    topo = ctx.topology
    client, server = topo.add_host("client"), topo.add_host("server")
    link = topo.link(client, server)
    topo.apply(server, ctx.sysctls)
    topo.apply(client, client_settings(values, ctx.sysctls))
    knobs = (*RELEVANT, *(s.name for s in ctx.sysctls))
    read_back = {
        host.role: {name: topo.read_sysctl(host, name) for name in dict.fromkeys(knobs)}
        for host in (client, server)
    }
    return _Built(client, server, str(link.b.address), link.a.device, read_back)


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    topo = ctx.topology
    mode, rate = _mode(values), _rate(values)
    ctx.progress(0.0, "building the namespaces")
    built = _build(ctx, values)
    client, server = built.client, built.server
    knobs = ClientKnobs.from_text(built.read_back["client"], built.read_back["server"])
    lateness = ctx.hz.max_lateness(TCP_TIMEWAIT_LEN)
    duration = float(values.get("duration") or auto_duration(mode, rate, knobs, lateness))
    exp = expect(mode, rate, duration, knobs, lateness)

    server_child = _start_server(topo, server, built.server_address, mode, duration)
    capture = ctx.start_capture(client, [built.client_device])
    before = _counters(client)
    sampler = _observer.StateSampler([client, server]).start()
    try:
        load = _run_load(topo, client, built.server_address, mode, exp.attempts, rate, ctx)
        time.sleep(SETTLE_S)
        final = [_observer.sample(client), _observer.sample(server)]
    finally:
        samples = sampler.stop()
        if capture is not None:
            capture.stop()
    server_child.close_stdin()
    observed = _observe(load, [*samples, *final], before, _counters(client))
    measured = measure(observed, exp.port_hold)
    checks = compare(exp, measured)
    return ScenarioResult(
        scenario=NAME,
        run_id=topo.run_id,
        params=dict(values),
        sysctls={
            role: {k: v for k, v in vals.items() if v is not None}
            for role, vals in built.read_back.items()
        },
        expected=exp.as_dict(),
        measured=measured.as_dict(),
        checks=checks,
        verdict=verdict(checks),
        timeline=observed.timeline,
        duration_s=load.ended - load.t0,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=_notes(exp, knobs, ctx),
        pcap=str(capture.pcap) if capture is not None else None,
    )


def _start_server(topo: Topology, server: Host, address: str, mode: Mode, duration: float) -> Child:
    lifetime = duration + READY_TIMEOUT_S + RUN_GRACE_S + SETTLE_S
    args = ["--host", address, "--port", str(SERVER_PORT), "--max-seconds", f"{lifetime:.0f}"]
    if mode is Mode.SERVER_CLOSES_FIRST:
        args.append("--server-closes-first")
    child = topo.spawn(server, "tcpdoctor.lab._server", args)
    lines = JsonLines(child.stdout)
    first = lines.get(time.monotonic() + READY_TIMEOUT_S)
    if first is None or first.get("kind") != "ready":
        raise ScenarioError(f"the lab server did not start: {child.stderr_tail() or 'no output'}")
    return child


def _run_load(
    topo: Topology,
    client: Host,
    address: str,
    mode: Mode,
    count: int,
    rate: float,
    ctx: RunContext,
) -> _Load:
    args = ["--host", address, "--port", str(SERVER_PORT), "--rate", repr(rate)]
    args += ["--count", str(count), "--mode", mode.label, "--timeout", str(CONNECT_TIMEOUT_S)]
    child = topo.spawn(client, "tcpdoctor.lab._client", args)
    lines = JsonLines(child.stdout)
    deadline = time.monotonic() + READY_TIMEOUT_S + count / rate + RUN_GRACE_S
    t0: float | None = None
    attempts: list[Attempt] = []
    pool_closed: float | None = None
    shown, failed = 0.0, 0
    while True:
        record = lines.get(min(deadline, time.monotonic() + PROGRESS_EVERY_S))
        now = time.monotonic()
        if t0 is not None and now - shown >= PROGRESS_EVERY_S:
            ctx.progress(now - t0, f"{len(attempts)} requests, {failed} failed")
            shown = now
        if record is None:
            if lines.ended or now >= deadline:
                detail = child.stderr_tail() or "no output"
                raise ScenarioError(f"the lab client stopped early: {detail}")
            continue
        kind = record.get("kind")
        if kind == "start":
            t0 = float(record["t0"])
        elif kind == "attempt" and t0 is not None:
            attempts.append(_attempt(record, t0))
            failed += not attempts[-1].ok
        elif kind == "done" and t0 is not None:
            closed = record.get("pool_closed")
            pool_closed = None if closed is None else float(closed)
            break
    if t0 is None:
        raise ScenarioError("the lab client finished without starting")
    child.close_stdin()
    return _Load(tuple(attempts), t0, time.monotonic(), pool_closed)


def _attempt(record: dict[str, Any], t0: float) -> Attempt:
    try:
        closed = record.get("closed")
        port = record.get("port")
        return Attempt(
            index=int(record["i"]),
            t=float(record["t"]) - t0,
            ok=bool(record["ok"]),
            error=None if record.get("error") is None else str(record["error"]),
            port=None if port is None else int(port),
            closed=None if closed is None else float(closed) - t0,
        )
    except (KeyError, TypeError, ValueError):
        raise ScenarioError(f"the lab client reported a malformed attempt: {record}") from None


def _observe(
    load: _Load,
    samples: Sequence[_observer.StateSample],
    before: dict[str, int | None],
    after: dict[str, int | None],
) -> Observed:
    recorder = TimelineRecorder(load.ended - load.t0)
    recorder.event(0.0, "load_start", f"{len(load.attempts)} requests")
    first_failure = next((a for a in load.attempts if not a.ok), None)
    for a in load.attempts:
        recorder.attempt(a.t, a.error)
    if first_failure is not None:
        done = sum(1 for a in load.attempts if a.ok and a.t < first_failure.t)
        recorder.event(first_failure.t, "first_failure", f"{first_failure.error} after {done}")
        back = next((a for a in load.attempts if a.ok and a.t > first_failure.t), None)
        if back is not None:
            recorder.event(back.t, "recovery", f"port {back.port} usable again")
    for s in samples:
        recorder.states(s.at - load.t0, s.host, s.counts)
    recorder.event(load.ended - load.t0, "load_end", "")
    if load.pool_closed is not None:
        recorder.event(load.pool_closed - load.t0, "pool_closed", "the pooled connection closed")
    during_end = load.pool_closed if load.pool_closed is not None else float("inf")
    client_tw = [s.counts.get(TIME_WAIT, 0) for s in samples if s.host == "client"]
    client_tw_during = [
        s.counts.get(TIME_WAIT, 0) for s in samples if s.host == "client" and s.at < during_end
    ]
    server_final = [s for s in samples if s.host == "server" and s.at >= load.ended]
    return Observed(
        attempts=load.attempts,
        timeline=recorder.freeze(),
        client_time_wait_during=max(client_tw_during or client_tw or [0]),
        server_time_wait_after=server_final[-1].counts.get(TIME_WAIT, 0) if server_final else None,
        tw_recycled=_grew(before, after, "TcpExt.TWRecycled"),
        tw_overflow=_grew(before, after, "TcpExt.TCPTimeWaitOverflow"),
    )


def _counters(host: Host) -> dict[str, int | None]:
    snap = snapshot.take(host.target, kernel_state=True)
    if snap.counters is None:
        return dict.fromkeys(COUNTERS)
    return {name: snap.counters.value(name) for name in COUNTERS}


def _grew(before: dict[str, int | None], after: dict[str, int | None], name: str) -> int | None:
    first, last = before.get(name), after.get(name)
    return None if first is None or last is None else last - first


def _notes(exp: Expectation, knobs: ClientKnobs, ctx: RunContext) -> tuple[str, ...]:
    notes = [exp.hold_basis]
    size = knobs.port_high - knobs.port_low + 1
    if exp.capacity != size:
        notes.append(
            f"the range holds {size} ports but one connect() only tries {exp.capacity} of them "
            "(an even-sized window, one parity pass after the other; kernel notes 4.2), so "
            f"ports run out after {_spread(exp.capacity, exp.reachable)} connections"
        )
    if knobs.tw_reuse_delay_ms is None and exp.tw_reuse_applies:
        notes.append("no tcp_tw_reuse_delay (kernel < 6.14): reuse waits 0-1 s")
    if ctx.hz.hz is None:
        notes.append(f"CONFIG_HZ {ctx.hz.source}")
    return tuple(notes)


def _spread(low: int, high: int) -> str:
    return str(low) if low == high else f"{low} or {high}"


def _teaches() -> str:
    return (
        "A client that opens a connection per request and closes first keeps each port in "
        "TIME_WAIT for 60 s; with K ports it can make K connections per minute to one "
        "destination. tcp_tw_reuse=1 (with timestamps) shortens the hold to "
        "tcp_tw_reuse_delay, a pool removes it, and a server that closes first takes it."
    )


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="K ephemeral ports, one connection per request: EADDRNOTAVAIL, then recovery "
    "as TIME_WAITs expire",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=_teaches(),
)

__all__ = ["EADDRNOTAVAIL", "NAME", "SCENARIO", "client_settings"]
