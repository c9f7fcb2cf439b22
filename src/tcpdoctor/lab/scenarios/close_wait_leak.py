"""close-wait-leak: a server that never closes; CLOSE_WAIT piles up, the doctor names it.

Topology: client --veth-- server (198.18.0.1 -> 198.18.0.2:8080). The server reads each
client's EOF and forgets to close() (the classic bug). The client opens N connections and
closes them all. Each server socket goes to CLOSE_WAIT and stays there; each client socket
goes FIN_WAIT1 -> FIN_WAIT2 and, being orphaned, becomes a FIN_WAIT2 minisock that expires
after tcp_fin_timeout (set short in the client's namespace). Socket samples of both
namespaces show the two populations; then `tcpdoctor doctor --netns <server namespace>
--json` runs as a separate process, as a user would run it, and must name the server's pid.

Expected, from kernel/: fin_wait2_lifetime(tcp_fin_timeout) for the client's FIN_WAIT2
(plus timer_slack of that timer), minisock_counter() for the TW / TWKilled counter each one
bumps, and no timer at all on CLOSE_WAIT (kernel notes 7.1): the server's sockets are still
there at the end, however long the run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tcpdoctor.diagnose.rules.close_wait_leak import COUNT_LEVELS, RULE_ID
from tcpdoctor.kernel.states import TimerCode
from tcpdoctor.kernel.timing import FinWait2Lifetime, fin_wait2_lifetime, minisock_counter
from tcpdoctor.lab import _proc
from tcpdoctor.lab.model import (
    Check,
    Measure,
    Param,
    ParamValues,
    RunContext,
    ScenarioResult,
    ScenarioSpec,
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
    last_count,
    lifetime,
    lifetime_window,
    max_gap,
    max_read,
    of_host,
    peak,
    r6,
    spread,
    verdict,
    within_each,
)
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.observe.counters import CounterSnapshot

NAME = "close-wait-leak"
CLOSE_WAIT = "CLOSE_WAIT"
FIN_WAIT2 = "FIN_WAIT2"
FIN_TIMEOUT = "net.ipv4.tcp_fin_timeout"
PERIOD_S = 0.1
WAIT_MARGIN_S = 5.0
DOCTOR_TIMEOUT_S = 120.0
NO_TIMER = TimerCode.NONE.label  # CLOSE_WAIT has none (tcp_fin() only changes the state)
DOCTOR_MIN = COUNT_LEVELS[0][0]  # the fewest CLOSE_WAITs per process the doctor reports

PARAMS = (
    Param(
        "connections",
        int,
        20,
        12,
        f"Connections the client opens and closes (the doctor reports {DOCTOR_MIN} or more "
        "per process).",
        1,
        1000,
    ),
    Param(
        "fin_timeout",
        int,
        5,
        3,
        "net.ipv4.tcp_fin_timeout in the client (a --sysctl value wins).",
        1,
        120,
    ),
    Param(
        "hold",
        float,
        2.0,
        1.0,
        "Seconds to keep watching after the client's FIN_WAIT2s expired.",
        0.0,
        600.0,
    ),
)


@dataclass(frozen=True)
class Expectation:
    connections: int
    fin_wait2: FinWait2Lifetime
    slack: float  # timer-wheel lateness of the FIN_WAIT2 timer(s)
    counter: str  # TcpExt.TW or TcpExt.TWKilled
    hz: int | None

    @property
    def lifetime(self) -> float:
        return self.fin_wait2.lifetime or 0.0

    @property
    def doctor_finds(self) -> bool:
        return self.connections >= DOCTOR_MIN

    def as_dict(self) -> dict[str, Measure]:
        return {
            "connections": self.connections,
            "server_close_wait": self.connections,
            "close_wait_timer": NO_TIMER,
            "client_fin_wait2": self.connections,
            "fin_wait2_lifetime_s": self.lifetime,
            "fin_wait2_outcome": self.fin_wait2.outcome.label,
            "timer_slack_s": self.slack,
            "minisock_counter": self.counter,
            "doctor_finding": self.doctor_finds,
        }


def expect(
    connections: int, fin_timeout: int, lateness: Callable[[float], float], hz: int | None
) -> Expectation:
    """`lateness(seconds)` is the timer-wheel slack of a timer that long (KernelHz)."""
    life = fin_wait2_lifetime(float(fin_timeout))
    slack = sum(lateness(phase) for phase in (life.full_socket_phase, life.minisock_phase) if phase)
    return Expectation(connections, life, slack, minisock_counter(life.minisock_phase), hz)


# --- measurement --------------------------------------------------------------------------


@dataclass(frozen=True)
class Doctor:
    """What `tcpdoctor doctor --netns NS --json` said about the leak."""

    exit_code: int
    found: bool
    pid: int | None
    comm: str | None
    close_wait: int | None
    error: str | None = None


def read_doctor(exit_code: int, stdout: str, stderr: str) -> Doctor:
    try:
        report = json.loads(stdout)
    except ValueError:
        return Doctor(exit_code, False, None, None, None, stderr.strip()[-300:] or "no JSON")
    findings = [f for f in report.get("findings", []) if f.get("rule") == RULE_ID]
    if not findings:
        return Doctor(exit_code, False, None, None, None)
    evidence = {e.get("key"): e.get("value") for e in findings[0].get("evidence", [])}
    return Doctor(
        exit_code, True, evidence.get("pid"), evidence.get("comm"), evidence.get("close_wait")
    )


@dataclass(frozen=True)
class Measured:
    closes: tuple[float, ...]
    tracks: tuple[Track, ...]  # each client port in FIN_WAIT2
    server_close_wait_peak: int
    server_close_wait_end: int | None
    close_wait_timers: str  # timer labels of the server's CLOSE_WAITs at the end
    peer_eofs: int  # connections whose EOF the server read
    counter_rise: int | None
    doctor: Doctor
    server_pid: int
    resolution: float

    @property
    def lifetimes(self) -> list[float | None]:
        return [lifetime(t, c) for t, c in zip(self.tracks, self.closes, strict=True)]

    @property
    def armed_for(self) -> list[float | None]:
        return [
            None if t.nominal_expiry is None else t.nominal_expiry - c
            for t, c in zip(self.tracks, self.closes, strict=True)
        ]

    def as_dict(self) -> dict[str, Measure]:
        life, armed = spread(self.lifetimes), spread(self.armed_for)
        return {
            "connections": len(self.closes),
            "server_close_wait_peak": self.server_close_wait_peak,
            "server_close_wait": self.server_close_wait_end,
            "close_wait_timer": self.close_wait_timers,
            "server_read_eof": self.peer_eofs,
            "client_fin_wait2": sum(1 for t in self.tracks if t.seen),
            "fin_wait2_timer_min_s": r6(armed[0]),
            "fin_wait2_timer_max_s": r6(armed[1]),
            "fin_wait2_lifetime_min_s": r6(life[0]),
            "fin_wait2_lifetime_max_s": r6(life[1]),
            "minisock_counter_rise": self.counter_rise,
            "doctor_finding": self.doctor.found,
            "doctor_pid": self.doctor.pid,
            "doctor_comm": self.doctor.comm,
            "doctor_close_wait": self.doctor.close_wait,
            "doctor_exit_code": self.doctor.exit_code,
            "server_pid": self.server_pid,
            "resolution_s": r6(self.resolution),
        }


def _end_timers(samples: Sequence[SocketSample]) -> str:
    server = of_host(samples, "server")
    if not server:
        return "none"
    labels = sorted({r.timer for r in server[-1].rows if r.state == CLOSE_WAIT})
    return ",".join(labels) or "none"


def measure(
    samples: Sequence[SocketSample],
    closes: Sequence[lc.Closed],
    eofs: int,
    counters: tuple[CounterSnapshot, CounterSnapshot, str],
    doctor: Doctor,
    server_pid: int,
) -> Measured:
    before, after, counter = counters
    return Measured(
        closes=tuple(c.t for c in closes),
        tracks=tuple(follow(samples, "client", c.port, FIN_WAIT2) for c in closes),
        server_close_wait_peak=peak(samples, "server", CLOSE_WAIT),
        server_close_wait_end=last_count(samples, "server", CLOSE_WAIT),
        close_wait_timers=_end_timers(samples),
        peer_eofs=eofs,
        counter_rise=after.delta(before, counter),
        doctor=doctor,
        server_pid=server_pid,
        resolution=max_gap(samples, "client") + max_read(samples),
    )


# --- comparison ---------------------------------------------------------------------------


def compare(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    n = exp.connections
    life_low, life_high = spread(got.lifetimes)
    basis = f"fin_wait2_lifetime({exp.fin_wait2.fin_timeout:g}): {exp.fin_wait2.outcome.label}"
    checks = [
        exact(
            "server_read_eof", "server reads of EOF", n, got.peer_eofs, basis="each client closed"
        ),
        exact(
            "server_close_wait",
            "server CLOSE_WAIT at the end",
            n,
            got.server_close_wait_end,
            basis="no kernel timer ends CLOSE_WAIT (notes 7.1)",
        ),
        exact(
            "close_wait_timer",
            "CLOSE_WAIT timer",
            NO_TIMER,
            got.close_wait_timers,
            basis="tcp_fin() arms none",
        ),
        exact(
            "client_fin_wait2",
            "client sockets seen in FIN_WAIT2",
            n,
            sum(1 for t in got.tracks if t.seen),
            basis="orphaned after close(), waiting for a FIN that never comes",
        ),
        *within_each(
            "fin_wait2_lifetime",
            "client FIN_WAIT2 lasted",
            lifetime_window(exp.lifetime, exp.slack, got.resolution),
            life_low,
            life_high,
            basis + " + timer_slack()",
        ),
    ]
    if exp.fin_wait2.full_socket_phase == 0:  # one minisock timer: expires_ms shows it whole
        armed_low, armed_high = spread(got.armed_for)
        window = tolerance(exp.fin_wait2.minisock_phase, resolution=1.0 / (exp.hz or 100))
        checks += within_each(
            "fin_wait2_timer", "FIN_WAIT2 timer armed for", window, armed_low, armed_high, basis
        )
    checks.append(
        exact(
            "minisock_counter_rise",
            f"{exp.counter} rise",
            n,
            got.counter_rise,
            basis="minisock_counter(): __inet_twsk_schedule(), timeout <= 4 s is TWKilled",
        )
    )
    checks += _doctor_checks(exp, got)
    return tuple(checks)


def _doctor_checks(exp: Expectation, got: Measured) -> list[Check]:
    basis = f"the close-wait-leak rule reports {DOCTOR_MIN}+ CLOSE_WAITs per process"
    checks = [
        exact(
            "doctor_finding",
            "doctor found the leak",
            exp.doctor_finds,
            got.doctor.found,
            basis=basis,
        )
    ]
    if exp.doctor_finds:
        checks += [
            exact(
                "doctor_pid",
                "doctor names pid",
                got.server_pid,
                got.doctor.pid,
                basis="the lab server's pid",
            ),
            exact(
                "doctor_close_wait",
                "doctor counts CLOSE_WAIT",
                exp.connections,
                got.doctor.close_wait,
                basis="every leaked socket",
            ),
        ]
    return checks


# --- the run ------------------------------------------------------------------------------


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    started = time.monotonic()
    count, hold = int(values["connections"] or 1), float(values["hold"] or 0.0)
    fin_timeout = lc.chosen(ctx.sysctls, FIN_TIMEOUT, str(values["fin_timeout"]))
    client_settings = lc.with_setting(ctx.sysctls, FIN_TIMEOUT, fin_timeout)
    pair = lc.build_pair(ctx, client=client_settings, server=ctx.sysctls, show=(FIN_TIMEOUT,))
    exp = expect(
        count,
        int(pair.sysctls["client"].get(FIN_TIMEOUT, fin_timeout)),
        ctx.hz.max_lateness,
        ctx.hz.hz,
    )
    server = lc.LabServer.start(ctx.topology, pair.server, pair.server_address, on_eof="keep")
    client = lc.LabClient.start(ctx.topology, pair.client, pair.server_address, count)
    before = lc.counters(pair.client)
    sampler = lc.SocketSampler([pair.client, pair.server], PERIOD_S).start()
    try:
        closes = [client.close(i, "close") for i in range(count)]
        ends = server.wait_peer_ends(count, time.monotonic() + lc.REPLY_TIMEOUT_S)
        deadline = closes[-1].t + exp.lifetime + exp.slack + WAIT_MARGIN_S
        done = lc.gone_from("client", client.ports, FIN_WAIT2)
        lc.wait_reporting(sampler, done, deadline, ctx.progress, started, "FIN_WAIT2 running")
        time.sleep(hold)
        ctx.progress(time.monotonic() - started, "running tcpdoctor doctor")
        doctor, doctor_at = run_doctor(pair.server.netns), time.time()
        after = lc.counters(pair.client)
    finally:
        samples = sampler.stop()
    eofs = sum(1 for e in ends.values() if e.get("how") == "EOF")
    got = measure(samples, closes, eofs, (before, after, exp.counter), doctor, server.pid)
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
            samples, closes[0].t_call, last_at(samples), _marks(closes, got, doctor_at)
        ),
        duration_s=time.monotonic() - started,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=_notes(exp, got),
    )


def run_doctor(netns: str) -> Doctor:
    """`tcpdoctor doctor --netns NS --json` as its own process, as a user would run it."""
    argv = [sys.executable, "-m", "tcpdoctor", "doctor", "--netns", netns, "--json"]
    done = _proc.run(argv, timeout=DOCTOR_TIMEOUT_S, check=False)
    return read_doctor(done.returncode, done.stdout, done.stderr)


def _marks(closes: Sequence[lc.Closed], got: Measured, doctor_at: float) -> list[Mark]:
    marks = [Mark(c.t, "close", f"port {c.port}") for c in closes]
    for track in got.tracks:
        if track.gone_at is not None:
            marks.append(Mark(track.gone_at, "fin_wait2_end", f"port {track.port}"))
    found = f"pid {got.doctor.pid}" if got.doctor.found else "no finding"
    marks.append(Mark(doctor_at, "doctor", found))
    return marks


def _notes(exp: Expectation, got: Measured) -> tuple[str, ...]:
    notes = [
        f"after the client's FIN_WAIT2 expired the server's {got.server_close_wait_end} "
        "CLOSE_WAIT sockets talk to nobody: a write now would be answered with an RST",
        f"tcp_fin_timeout {exp.fin_wait2.fin_timeout:g} s governs the client's orphaned "
        "FIN_WAIT2 only; nothing on the server side changes with it",
    ]
    armed = spread(got.armed_for)[0]
    if armed is not None and exp.fin_wait2.full_socket_phase == 0:
        late = armed - exp.fin_wait2.minisock_phase
        notes.append(
            f"the FIN_WAIT2 timer started {late * 1000:.0f} ms after close(): it is armed when "
            "our FIN is acknowledged, and the server, with nothing to send, delayed its ACK"
        )
    if got.doctor.error:
        notes.append(f"tcpdoctor doctor failed: {got.doctor.error}")
    return tuple(notes)


def validate(values: ParamValues, user: Sequence[SysctlSetting]) -> None:
    return None


def estimate(values: ParamValues, user: Sequence[SysctlSetting]) -> float:
    fin_timeout = int(lc.chosen(user, FIN_TIMEOUT, str(values["fin_timeout"])))
    life = fin_wait2_lifetime(float(fin_timeout)).lifetime or 0.0
    return life + float(values["hold"] or 0.0) + 4.0


def draw(result: ScenarioResult, plt: Any) -> Any:
    """`--plot`: CLOSE_WAIT on the server stays, FIN_WAIT2 on the client expires."""
    from tcpdoctor.lab.scenarios._lifecycle_plot import draw_close_wait_leak

    return draw_close_wait_leak(result, plt)


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="A server that never closes: CLOSE_WAIT piles up on it, FIN_WAIT2 on the client "
    "until tcp_fin_timeout; the doctor names the pid",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=(
        "CLOSE_WAIT means the peer has closed and this application has not. No timer ends "
        "it and no sysctl shortens it: it lasts until the process calls close() or exits. "
        "The peer's side of the same connections (FIN_WAIT2) does time out, after "
        "tcp_fin_timeout, which is why the leak shows up on one side only."
    ),
)
