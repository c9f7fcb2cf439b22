"""Run-time pieces shared by the timer scenarios (syn-retries, retransmission-timeout,
keepalive-dead-peer, fin-wait2-timeout): a client-router-server path with a switchable
black hole, the lab's timer client and holding server as children, a packet capture that
runs whether or not --pcap asked to keep it, and sysctl handling.

Every wait is bounded in time; every child, capture and temporary file is registered with
the run's cleanup registry, so an exception or a signal leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpdoctor.errors import ScenarioError
from tcpdoctor.kernel.sysctls import lookup_sysctl
from tcpdoctor.lab._lines import JsonLines
from tcpdoctor.lab._pcap_option import start_capture
from tcpdoctor.lab.model import RunContext
from tcpdoctor.lab.pcap import Segment, read_pcap
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.lab.topology import Blackhole, Child, Host, Link, Topology

SERVER_PORT = 8080
READY_TIMEOUT_S = 15.0  # python start-up inside a namespace on a busy 2-core machine
CLIENT_MODULE = "tcpdoctor.lab._timer_client"
SERVER_MODULE = "tcpdoctor.lab._holding_server"


# --- sysctls ------------------------------------------------------------------------------


def setting(name: str, text: str) -> SysctlSetting:
    spec = lookup_sysctl(name)
    value = spec.parse(text)
    return SysctlSetting(spec, value, spec.format(value))


def with_flags(
    user: Sequence[SysctlSetting], flags: Mapping[str, object | None]
) -> tuple[SysctlSetting, ...]:
    """The user's --sysctl settings plus the ones scenario flags stand for (knob -> value,
    None = leave the knob alone). A knob given with --sysctl wins over its flag."""
    chosen = {s.name: s for s in user}
    for name, value in flags.items():
        if value is not None and name not in chosen:
            chosen[name] = setting(name, str(value))
    return tuple(chosen.values())


def read_back(topo: Topology, host: Host, names: Iterable[str]) -> dict[str, str | None]:
    """Values as the host's /proc/sys shows them (None: this kernel has no such knob)."""
    return {name: topo.read_sysctl(host, name) for name in names}


def present(values: Mapping[str, Mapping[str, str | None]]) -> dict[str, dict[str, str]]:
    """For ScenarioResult.sysctls: knobs this kernel has, per host."""
    kept = {h: {k: v for k, v in vals.items() if v is not None} for h, vals in values.items()}
    return {h: vals for h, vals in kept.items() if vals}


# --- topology -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Path3:
    """client --link-- router --link-- server; the router can drop everything (the path
    goes dark like a firewall's DROP rule: no RST, no ICMP)."""

    client: Host
    router: Host
    server: Host
    near: Link  # client (a) - router (b): the client's packets are captured on near.a
    far: Link  # router (a) - server (b)
    blackhole: Blackhole

    @property
    def client_address(self) -> str:
        return str(self.near.a.address)

    @property
    def server_address(self) -> str:
        return str(self.far.b.address)


def build_path(ctx: RunContext, client_sysctls: Sequence[SysctlSetting], match: str) -> Path3:
    """Three namespaces, routes both ways, the user's sysctls on client and server (plus
    the flags' on the client), and a black hole for `match` (nft syntax), still off."""
    topo = ctx.topology
    client, router, server = (
        topo.add_host("client"),
        topo.add_middlebox("router"),
        topo.add_host("server"),
    )
    near, far = topo.link(client, router), topo.link(router, server)
    topo.route(client, str(far.network), near.b.address)
    topo.route(server, str(near.network), far.a.address)
    topo.apply(server, ctx.sysctls)
    topo.apply(client, client_sysctls)
    return Path3(client, router, server, near, far, topo.blackhole(router, match))


def build_pair(ctx: RunContext, client_sysctls: Sequence[SysctlSetting]) -> tuple[Host, Host, Link]:
    """client --link-- server, for scenarios that need no black hole."""
    topo = ctx.topology
    client, server = topo.add_host("client"), topo.add_host("server")
    link = topo.link(client, server)
    topo.apply(server, ctx.sysctls)
    topo.apply(client, client_sysctls)
    return client, server, link


# --- children -----------------------------------------------------------------------------


class Lines:
    """JSON lines from a child's stdout, read by a thread so every wait is bounded."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self._lines = JsonLines(child.stdout)

    @property
    def ended(self) -> bool:
        return self._lines.ended

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next record, or None at the timeout or once the stream has ended."""
        return self._lines.get(time.monotonic() + timeout)

    def expect(self, kind: str, timeout: float, what: str) -> dict[str, Any]:
        """The next record, which must be of `kind`; a clear ScenarioError otherwise."""
        record = self.next(timeout)
        if record is None or record.get("kind") != kind:
            detail = record if record is not None else self.child.stderr_tail() or "no output"
            raise ScenarioError(f"{what}: {detail}")
        return record

    def send(self, command: str) -> None:
        stdin = self.child.popen.stdin
        if stdin is None:
            raise ScenarioError("the lab client has no command pipe")
        try:
            stdin.write(command + "\n")
            stdin.flush()
        except (OSError, ValueError) as err:
            detail = self.child.stderr_tail() or str(err)
            raise ScenarioError(f"the lab client stopped early: {detail}") from None


def start_server(topo: Topology, host: Host, address: str, max_seconds: float) -> Child:
    args = ["--host", address, "--port", str(SERVER_PORT), "--max-seconds", repr(max_seconds)]
    child = topo.spawn(host, SERVER_MODULE, args)
    Lines(child).expect("ready", READY_TIMEOUT_S, "the lab server did not start")
    return child


def start_client(
    topo: Topology, host: Host, address: str, mode: str, max_seconds: float, *extra: str
) -> Lines:
    args = ["--host", address, "--port", str(SERVER_PORT), "--mode", mode]
    args += ["--max-seconds", repr(max_seconds), *extra]
    return Lines(topo.spawn(host, CLIENT_MODULE, args))


# --- packet capture -----------------------------------------------------------------------


class Capturing:
    """A capture on one device of `host`, into --pcap's file or else a temporary one that
    is deleted at the end of the run. segments() stops it and reads the packets."""

    def __init__(self, ctx: RunContext, host: Host, device: str) -> None:
        self.kept = ctx.pcap
        if ctx.pcap is None:
            folder = tempfile.mkdtemp(prefix="tdlab-pcap-")
            ctx.topology.register(f"directory {folder}", lambda: _remove(folder))
            path = Path(folder) / "capture.pcap"
        else:
            path = ctx.pcap
        self.path = path
        self._capture = start_capture(ctx.topology, host, [device], path)

    def segments(self) -> tuple[Segment, ...]:
        self._capture.stop()
        return read_pcap(self.path).segments

    @property
    def saved(self) -> str | None:
        return str(self.kept) if self.kept is not None else None


def _remove(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# --- clocks -------------------------------------------------------------------------------


def realtime_offset() -> float:
    """time.time() - time.monotonic(), to put monotonic samples on the capture's clock."""
    return time.time() - time.monotonic()
