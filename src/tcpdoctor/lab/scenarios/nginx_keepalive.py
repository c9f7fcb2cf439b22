"""nginx-keepalive: a real nginx with keepalive_timeout 0 vs keep-alive on.

Topology: two client hosts ("close", "keepalive"), each with its own veth link to one
server host. One nginx (master_process off, its config, pid file and logs in the run's
temporary directory) listens on both link addresses, port 8080, with two server blocks
that answer every GET with 200: keepalive_timeout 0 on the first address, --keepalive-timeout
on the second. An HTTP/1.1 client makes the same requests, on the same schedule, to each in turn.
The server host captures every packet: handshakes are counted as SYNs, and the first FIN
of each connection shows where its TIME_WAIT lands. Needs the nginx Debian package.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from tcpdoctor.kernel.constants import TCP_TIMEWAIT_LEN
from tcpdoctor.kernel.sysctls import parse_int
from tcpdoctor.lab.model import Param, ParamValues, RunContext, ScenarioResult, ScenarioSpec
from tcpdoctor.lab.scenarios import _daemons, _side_by_side
from tcpdoctor.lab.scenarios._nginx_keepalive_model import (
    NGINX_KEEPALIVE_REQUESTS,
    Plan,
    compare,
    measured,
    variants,
)
from tcpdoctor.lab.scenarios._variant_model import Knobs, verdict
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.lab.topology import Host, Topology

NAME = "nginx-keepalive"
HTTP_PORT = 8080
CLIENT_MODULE = "tcpdoctor.lab.scenarios._http_load"
REQUEST_TIMEOUT_S = 2.0
MAX_REQUESTS = 20_000  # far below the 28232 ports of the default range
SLOWEST_RATE = 50.0  # requests per second assumed for the time budget (a loaded machine)
SETUP_S = 5.0
_BUCKETS = "net.ipv4.tcp_max_tw_buckets"
RELEVANT = ("net.ipv4.ip_local_port_range", _BUCKETS)

PARAMS = (
    Param("requests", int, 600, 200, "HTTP requests per variant.", 1, MAX_REQUESTS),
    Param("rate", float, 100.0, 400.0, "Requests per second (a fixed schedule).", 1.0, 20_000.0),
    Param(
        "keepalive_timeout",
        int,
        30,
        30,
        "nginx keepalive_timeout (s) of the keep-alive variant; the other one has 0. At "
        "least 5: the client pauses briefly before it closes.",
        5,
        3600,
    ),
    Param(
        "keepalive_requests",
        int,
        NGINX_KEEPALIVE_REQUESTS,
        NGINX_KEEPALIVE_REQUESTS,
        "nginx keepalive_requests: requests one connection serves before nginx closes it.",
        1,
        1_000_000,
    ),
)


def _rate(values: ParamValues) -> float:
    return float(values["rate"] or 1.0)


def _plan(values: ParamValues) -> Plan:
    return Plan(
        requests=int(values["requests"] or 1),
        keepalive_timeout=int(values["keepalive_timeout"] or 1),
        keepalive_requests=int(values["keepalive_requests"] or 1),
    )


def validate(_values: ParamValues, _user: tuple[SysctlSetting, ...]) -> None:
    return None  # every combination of the flags is meaningful


def estimate(values: ParamValues, _user: tuple[SysctlSetting, ...]) -> float:
    return 2 * _plan(values).requests / _rate(values) + SETUP_S


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    nginx = _daemons.require_program("nginx", "nginx", NAME)
    plan, rate = _plan(values), _rate(values)
    budget = _budget(plan, rate)
    pairs = variants(plan.keepalive_timeout)
    topo = ctx.topology
    ctx.progress(0.0, "building the namespaces")
    server, built = _side_by_side.build(topo, pairs)
    for host in (server, *(v.client for v in built)):
        topo.apply(host, ctx.sysctls)
    read_back = {
        host.role: {name: topo.read_sysctl(host, name) for name in RELEVANT}
        for host in (server, *(v.client for v in built))
    }
    work = _daemons.work_dir(topo)
    close, keepalive = built
    _start_nginx(topo, server, nginx, work, plan, close.server_address, keepalive.server_address)
    ctx.progress(0.5, "nginx is up")

    def launch(variant: _side_by_side.Variant) -> tuple[str, list[str]]:
        args = ["--host", variant.server_address, "--port", str(HTTP_PORT)]
        args += ["--count", str(plan.requests), "--timeout", str(REQUEST_TIMEOUT_S)]
        args += ["--rate", repr(rate)]
        return CLIENT_MODULE, [*args, "--max-seconds", f"{budget:.0f}"]

    pcap = _side_by_side.capture_path(ctx, work)
    got = _side_by_side.measure(ctx, server, built, launch, pcap, budget)
    close_facts, keepalive_facts = got.facts(built)
    knobs = Knobs(
        time_wait_slack=ctx.hz.max_lateness(TCP_TIMEWAIT_LEN),
        client_max_tw_buckets={v.key: _buckets(read_back[v.key]) for v in built},
        server_max_tw_buckets=_buckets(read_back[server.role]),
    )
    checks = compare(plan, close_facts, keepalive_facts, knobs)
    notes = [_nginx_version(nginx), *_notes()]
    _side_by_side.check_capture(got.capture_drops, notes)
    return ScenarioResult(
        scenario=NAME,
        run_id=topo.run_id,
        params=dict(values),
        sysctls={
            h: {k: v for k, v in vals.items() if v is not None} for h, vals in read_back.items()
        },
        expected={c.name: c.expected for c in checks} | plan.as_dict(),
        measured=measured(close_facts, keepalive_facts),
        checks=checks,
        verdict=verdict(checks),
        timeline=_side_by_side.timeline(built, got.phases, got.samples, got.conns, got.offset),
        duration_s=got.phases[-1].closed_at - got.phases[0].started,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=tuple(notes),
        pcap=str(ctx.pcap) if ctx.pcap is not None else None,
    )


def _budget(plan: Plan, rate: float) -> float:
    """Seconds a variant may take: its schedule, plus slack for a loaded machine."""
    return plan.requests / min(rate, SLOWEST_RATE) + 30.0


def nginx_config(work: Path, plan: Plan, close_address: str, keepalive_address: str) -> str:
    """A self-contained nginx.conf: everything it writes stays in `work`."""
    return f"""# written by tcpdoctor lab {NAME}
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log notice;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    keepalive_requests {plan.keepalive_requests};
    server {{
        listen {close_address}:{HTTP_PORT};
        keepalive_timeout 0;
        location / {{ return 200 "ok\\n"; }}
    }}
    server {{
        listen {keepalive_address}:{HTTP_PORT};
        keepalive_timeout {plan.keepalive_timeout};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def _start_nginx(
    topo: Topology,
    server: Host,
    nginx: str,
    work: Path,
    plan: Plan,
    close_address: str,
    keepalive_address: str,
) -> None:
    config = work / "nginx.conf"
    config.write_text(nginx_config(work, plan, close_address, keepalive_address))
    # -e: the error log before the config is read (nginx >= 1.19.5); -p: the prefix for
    # relative paths. Nothing touches /var/log/nginx or the host's own nginx.
    argv = [nginx, "-e", str(work / "error.log"), "-p", str(work), "-c", str(config)]
    listening = [(close_address, HTTP_PORT), (keepalive_address, HTTP_PORT)]
    _daemons.start(topo, server, "nginx", argv, work / "nginx.out", listening)


def _nginx_version(nginx: str) -> str:
    try:
        done = subprocess.run([nginx, "-v"], check=False, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "nginx version: unknown"
    return (done.stderr or done.stdout).strip() or "nginx version: unknown"


def _buckets(values: dict[str, str | None]) -> int | None:
    text = values.get(_BUCKETS)
    return None if text is None else parse_int(text, what=_BUCKETS)


def _notes() -> list[str]:
    return [
        "TIME_WAIT expectations follow the first FIN seen in the capture (server host) and "
        "the kernel rule: the active closer holds TIME_WAIT for 60 s",
    ]


def draw(result: ScenarioResult, plt: Any) -> Any:
    timeout = result.params.get("keepalive_timeout") or 30
    return _side_by_side.draw(result, plt, variants(int(timeout)), "requests")


def _teaches() -> str:
    return (
        "With keepalive_timeout 0 nginx closes every connection after its response: one "
        "handshake per request, and a TIME_WAIT per request on the server. With keep-alive "
        "one connection carries the requests (a new one every keepalive_requests), nothing "
        "sits in TIME_WAIT during the run, and the client's final close leaves its one "
        "TIME_WAIT on the client."
    )


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="real nginx: keepalive_timeout 0 vs keep-alive (where TIME_WAIT lands, "
    "how many handshakes)",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=_teaches(),
)

__all__ = ["NAME", "SCENARIO", "draw", "nginx_config"]
