"""redis-pool: a real redis-server, redis-py with a new connection per command vs a pool.

Topology: two client hosts ("new", "pool"), each with its own veth link to one server host
that runs redis-server bound to both link addresses (port 6379, no persistence, no
daemon, protected mode off: it only listens on lab addresses). Each client runs the same
INCR commands with W threads: first a redis.Redis client built and closed per command,
then a shared ConnectionPool. The server host captures every packet (handshakes, who sent
the first FIN), and socket states are sampled on both sides. Needs the redis-server
Debian package and the redis Python package (the `lab` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tcpdoctor.errors import InputError
from tcpdoctor.kernel.constants import TCP_TIMEWAIT_LEN
from tcpdoctor.kernel.sysctls import parse_int, parse_port_range
from tcpdoctor.kernel.timing import connect_port_walk
from tcpdoctor.lab.model import Param, ParamValues, RunContext, ScenarioResult, ScenarioSpec
from tcpdoctor.lab.scenarios import _daemons, _side_by_side
from tcpdoctor.lab.scenarios._redis_pool_model import (
    NEW,
    POOL,
    VARIANTS,
    Knobs,
    Plan,
    compare,
    measured,
)
from tcpdoctor.lab.scenarios._variant_model import verdict
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.lab.topology import Host, Topology

NAME = "redis-pool"
REDIS_PORT = 6379
CLIENT_MODULE = "tcpdoctor.lab.scenarios._redis_load"
COMMAND_TIMEOUT_S = 2.0
MAX_COMMANDS = 20_000  # far below the 28232 ports of the default range; runs stay short
SLOWEST_RATE = 50.0  # commands per second assumed for the time budget (a loaded machine)
TYPICAL_RATE = 500.0  # for the progress bar: the per-command variant on a small machine
SETUP_S = 5.0  # namespaces, redis-server, two python children
RELEVANT = ("net.ipv4.ip_local_port_range", "net.ipv4.tcp_max_tw_buckets")
_RANGE, _BUCKETS = RELEVANT

PARAMS = (
    Param("commands", int, 5000, 200, "INCR commands per variant.", 1, MAX_COMMANDS),
    Param(
        "workers",
        int,
        4,
        4,
        "Client threads per variant; also the pool's max_connections.",
        1,
        32,
    ),
)


def _plan(values: ParamValues) -> Plan:
    return Plan(int(values["commands"] or 1), int(values["workers"] or 1))


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    """A port range too small for one connection per command is port-exhaustion's subject,
    not this scenario's."""
    plan = _plan(values)
    for setting in user:
        if setting.name == _RANGE:
            low, high = parse_port_range(setting.text)
            ports = connect_port_walk(low, high).guaranteed
            if ports < plan.commands:
                raise InputError(
                    f"{_RANGE}={setting.text} gives {ports} ports, fewer than --commands "
                    f"{plan.commands}: the per-command variant would run out (see the "
                    "port-exhaustion scenario)"
                )


def estimate(values: ParamValues, _user: tuple[SysctlSetting, ...]) -> float:
    return 2 * _plan(values).commands / TYPICAL_RATE + SETUP_S


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    _daemons.require_program("redis-server", "redis-server", NAME)
    _daemons.require_module("redis", "lab", NAME)
    plan = _plan(values)
    topo = ctx.topology
    ctx.progress(0.0, "building the namespaces")
    server, variants = _side_by_side.build(topo, VARIANTS)
    for host in (server, *(v.client for v in variants)):
        topo.apply(host, ctx.sysctls)
    read_back = {
        host.role: {name: topo.read_sysctl(host, name) for name in RELEVANT}
        for host in (server, *(v.client for v in variants))
    }
    work = _daemons.work_dir(topo)
    _start_redis(topo, server, [v.server_address for v in variants], work)
    ctx.progress(0.5, "redis-server is up")

    def launch(variant: _side_by_side.Variant) -> tuple[str, list[str]]:
        args = ["--host", variant.server_address, "--port", str(REDIS_PORT)]
        args += ["--count", str(plan.commands), "--workers", str(plan.workers)]
        args += ["--mode", variant.key, "--timeout", str(COMMAND_TIMEOUT_S)]
        args += ["--max-seconds", f"{_budget(plan):.0f}"]
        return CLIENT_MODULE, args + (["--report-counter"] if variant.key == POOL else [])

    pcap = _side_by_side.capture_path(ctx, work)
    got = _side_by_side.measure(ctx, server, variants, launch, pcap, _budget(plan))
    new, pool = got.facts(variants)
    counter = _counter(got.phases[-1].extra)
    knobs = Knobs(
        time_wait_slack=ctx.hz.max_lateness(TCP_TIMEWAIT_LEN),
        client_max_tw_buckets={v.key: _buckets(read_back[v.key]) for v in variants},
        server_max_tw_buckets=_buckets(read_back[server.role]),
    )
    checks = compare(plan, new, pool, counter, knobs)
    notes = _notes(got)
    return ScenarioResult(
        scenario=NAME,
        run_id=topo.run_id,
        params=dict(values),
        sysctls={
            h: {k: v for k, v in vals.items() if v is not None} for h, vals in read_back.items()
        },
        expected={c.name: c.expected for c in checks} | plan.as_dict(),
        measured=measured(new, pool, counter),
        checks=checks,
        verdict=verdict(checks),
        timeline=_side_by_side.timeline(variants, got.phases, got.samples, got.conns, got.offset),
        duration_s=got.phases[-1].closed_at - got.phases[0].started,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=tuple(notes),
        pcap=str(ctx.pcap) if ctx.pcap is not None else None,
    )


def _budget(plan: Plan) -> float:
    return plan.commands / SLOWEST_RATE + 30.0


def _start_redis(topo: Topology, server: Host, addresses: list[str], work: Path) -> None:
    argv = [
        "redis-server",
        "--bind", *addresses,
        "--port", str(REDIS_PORT),
        "--save", "",  # no snapshots
        "--appendonly", "no",
        "--daemonize", "no",
        "--protected-mode", "no",  # bound to lab addresses only, reachable from the lab only
        "--timeout", "0",  # never close an idle client: the client decides when to close
        "--dir", str(work),
        "--pidfile", str(work / "redis.pid"),
        "--logfile", "",  # stdout, into redis.log
    ]  # fmt: skip
    listening = [(a, REDIS_PORT) for a in addresses]
    _daemons.start(topo, server, "redis-server", argv, work / "redis.log", listening)


def _buckets(values: dict[str, str | None]) -> int | None:
    text = values.get(_BUCKETS)
    return None if text is None else parse_int(text, what=_BUCKETS)


def _counter(extra: Any) -> int | None:
    value = extra.get("counter") if hasattr(extra, "get") else None
    return int(value) if isinstance(value, int | float) else None


def _notes(got: _side_by_side.Measurement) -> list[str]:
    notes = [
        "TIME_WAIT expectations follow the first FIN seen in the capture (server host) and "
        "the kernel rule: the active closer holds TIME_WAIT for 60 s",
    ]
    _side_by_side.check_capture(got.capture_drops, notes)
    return notes


def draw(result: ScenarioResult, plt: Any) -> Any:
    return _side_by_side.draw(result, plt, VARIANTS, "commands")


def _teaches() -> str:
    return (
        "A client per command costs a TCP handshake per command and leaves one TIME_WAIT "
        "per command on the client for 60 s, because redis-py closes first; a connection "
        "pool makes a handful of connections, leaves no TIME_WAIT while it lives, and is "
        "several times faster."
    )


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="real redis-server: new connection per command vs a ConnectionPool "
    "(TIME_WAIT and throughput side by side)",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=_teaches(),
)

__all__ = ["NAME", "NEW", "POOL", "SCENARIO", "draw"]
