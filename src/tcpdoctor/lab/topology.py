"""Topology: hosts are network namespaces, links are veth pairs, middleboxes forward.

Everything is created through `ip` / `nft` child processes and registered with the run's
CleanupRegistry *before* it is created, so an interrupt between "created" and
"registered" cannot leak it (each undo tolerates an object that never came to be).
Nothing here switches the calling thread's namespace: commands run inside a namespace as
`ip netns exec NAME ...`, and veth ends are created directly inside their namespaces, so
no lab interface ever appears in the host's own namespace. Per-host sysctls are written
inside the host's namespace only.

Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking space): link n gets the n-th
/24, side a takes .1 and side b .2.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO

from tcpdoctor.errors import InputError, ScenarioError
from tcpdoctor.lab import _names, _proc
from tcpdoctor.lab.cleanup import CleanupRegistry
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.observe.netns import NETNS_RUN_DIR, NetnsTarget

LAB_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
LINK_PREFIX = 24
STOP_GRACE_S = 2.0
_SUBNETS_PER_RUN = 2 ** (LINK_PREFIX - LAB_NETWORK.prefixlen)


@dataclass(frozen=True)
class Host:
    role: str
    netns: str

    @property
    def target(self) -> NetnsTarget:
        """For the Snapshot reader (observe/snapshot.take)."""
        return NetnsTarget(path=os.path.join(NETNS_RUN_DIR, self.netns), name=self.netns)


@dataclass(frozen=True)
class Endpoint:
    host: Host
    device: str
    address: ipaddress.IPv4Address


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint
    network: ipaddress.IPv4Network


class Child:
    """A process running inside a host's namespace; stopped by the cleanup registry."""

    def __init__(self, host: Host, popen: subprocess.Popen[str], stderr: IO[str]) -> None:
        self.host = host
        self.popen = popen
        self._stderr = stderr

    @property
    def stdout(self) -> IO[str]:
        assert self.popen.stdout is not None
        return self.popen.stdout

    def stderr_tail(self, limit: int = 400) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            text = self._stderr.read()
            return text.strip()[-limit:]
        return ""

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.popen.stdin is not None:
                self.popen.stdin.close()

    def stop(self) -> None:
        """Close stdin, wait briefly, then SIGKILL. Bounded by STOP_GRACE_S."""
        self.close_stdin()
        try:
            self.popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=STOP_GRACE_S)
        for stream in (self.popen.stdout, self._stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()


class Topology:
    """Builds a run's hosts and links; the registry tears them down."""

    def __init__(self, scenario: str, registry: CleanupRegistry, run_id: str) -> None:
        self.scenario = scenario
        self.run_id = run_id
        self._registry = registry
        self._links = 0
        self.hosts: dict[str, Host] = {}

    def register(self, label: str, undo: Callable[[], object]) -> None:
        """Something a scenario started itself, to be undone with the rest."""

        def call() -> None:
            undo()

        self._registry.register(label, call)

    # --- hosts ------------------------------------------------------------------------

    def add_host(self, role: str) -> Host:
        if role in self.hosts:
            raise ScenarioError(f"host {role!r} exists already")
        host = Host(role, _names.netns_name(self.scenario, self.run_id, role))
        self._registry.register(f"netns {host.netns}", lambda: _delete_netns(host.netns))
        _proc.run(["ip", "netns", "add", host.netns])
        self.hosts[role] = host
        self.ip(host, "link", "set", "lo", "up")
        return host

    def add_middlebox(self, role: str) -> Host:
        """A host that forwards IPv4 between its links (ip_forward=1 inside it only)."""
        host = self.add_host(role)
        self.write_sysctl(host, "net.ipv4.ip_forward", "1")
        return host

    def ip(self, host: Host, *argv: str) -> None:
        _proc.run(["ip", "-n", host.netns, *argv])

    def exec(self, host: Host, argv: Sequence[str], *, stdin: str | None = None) -> str:
        """Run a short command inside the host's namespace and return its stdout."""
        return _proc.run(_proc.in_netns(host.netns, argv), stdin=stdin).stdout

    # --- links and routes -------------------------------------------------------------

    def link(self, a: Host, b: Host) -> Link:
        """A veth pair between two hosts, addressed and up."""
        index = self._links
        if index >= _SUBNETS_PER_RUN:
            raise ScenarioError("the lab ran out of link subnets in 198.18.0.0/15")
        self._links += 1
        network = list(LAB_NETWORK.subnets(new_prefix=LINK_PREFIX))[index]
        end_a = Endpoint(a, _names.link_name(self.run_id, index, "a"), network[1])
        end_b = Endpoint(b, _names.link_name(self.run_id, index, "b"), network[2])
        self._registry.register(f"link {end_a.device}", lambda: _delete_link(a.netns, end_a.device))
        _proc.run(
            [
                "ip", "link", "add", "name", end_a.device, "netns", a.netns,
                "type", "veth", "peer", "name", end_b.device, "netns", b.netns,
            ]
        )  # fmt: skip
        for end in (end_a, end_b):
            self.ip(end.host, "addr", "add", f"{end.address}/{LINK_PREFIX}", "dev", end.device)
            self.ip(end.host, "link", "set", end.device, "up")
        return Link(end_a, end_b, network)

    def route(self, host: Host, destination: str, via: ipaddress.IPv4Address) -> None:
        """`destination` is a network ("198.18.3.0/24") or "default"."""
        self.ip(host, "route", "replace", destination, "via", str(via))

    # --- sysctls ----------------------------------------------------------------------

    def write_sysctl(self, host: Host, name: str, value: str, *, user: bool = False) -> None:
        """Set one sysctl inside the host's namespace. `user` marks a value the user gave:
        a kernel refusal is then their input error (exit 2), not ours."""
        argv = _proc.in_netns(host.netns, ["sysctl", "-q", "-w", f"{name}={value}"])
        done = _proc.run(argv, check=False)
        if done.returncode == 0:
            return
        if user:
            reason = done.stderr.strip().rsplit(":", 1)[-1].strip() or "refused"
            raise InputError(f"the kernel refused {name}={value}: {reason}")
        raise _proc.command_error(argv, done.stderr)

    def apply(self, host: Host, settings: Iterable[SysctlSetting]) -> None:
        for setting in settings:
            self.write_sysctl(host, setting.name, setting.text, user=True)

    def read_sysctl(self, host: Host, name: str) -> str | None:
        """The value as the file shows it, or None if this kernel has no such knob."""
        path = "/proc/sys/" + name.replace(".", "/")
        done = _proc.run(_proc.in_netns(host.netns, ["cat", path]), check=False)
        return " ".join(done.stdout.split()) if done.returncode == 0 else None

    # --- nftables middleboxes ---------------------------------------------------------

    def nft_table(self, host: Host, purpose: str, body: str, family: str = "inet") -> str:
        """Create a table owned by this run inside `host`; returns its name."""
        _proc.require_tool("nft")
        name = _names.table_name(self.run_id, purpose)
        self._registry.register(
            f"nft table {family} {name} in {host.netns}",
            lambda: _delete_table(host.netns, family, name),
        )
        self.exec(host, ["nft", "-f", "-"], stdin=f"table {family} {name} {{\n{body}\n}}\n")
        return name

    def masquerade(self, box: Host, out_device: str) -> str:
        """SNAT everything leaving `out_device` to that interface's address."""
        body = (
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "{out_device}" masquerade\n'
            "  }"
        )
        return self.nft_table(box, "snat", body, family="ip")

    def load_balancer(
        self,
        box: Host,
        vip: ipaddress.IPv4Address,
        port: int,
        backends: Sequence[ipaddress.IPv4Address],
        *,
        established_timeout_s: int | None = None,
    ) -> str:
        """DNAT vip:port round-robin to backends; conntrack forgets idle flows after
        `established_timeout_s` (the middlebox's own nf_conntrack sysctl)."""
        if not backends:
            raise ScenarioError("a load balancer needs at least one backend")
        if established_timeout_s is not None:
            self.write_sysctl(
                box,
                "net.netfilter.nf_conntrack_tcp_timeout_established",
                str(established_timeout_s),
            )
        targets = ", ".join(f"{i} : {addr}" for i, addr in enumerate(backends))
        body = (
            "  chain prerouting {\n"
            "    type nat hook prerouting priority dstnat; policy accept;\n"
            f"    ip daddr {vip} tcp dport {port} "
            f"dnat to numgen inc mod {len(backends)} map {{ {targets} }}\n"
            "  }"
        )
        return self.nft_table(box, "lb", body, family="ip")

    def blackhole(self, box: Host, match: str) -> Blackhole:
        """A drop rule for forwarded packets matching `match` (nft syntax), off at first."""
        name = self.nft_table(
            box,
            "blackhole",
            "  chain forward {\n    type filter hook forward priority filter; policy accept;\n  }",
        )
        return Blackhole(self, box, name, match)

    # --- processes --------------------------------------------------------------------

    def spawn(self, host: Host, module: str, args: Sequence[str]) -> Child:
        """Start `python -m module args... --parent <our pid>` inside the host."""
        argv = _proc.in_netns(
            host.netns, [sys.executable, "-m", module, *args, "--parent", str(os.getpid())]
        )
        stderr = tempfile.TemporaryFile(mode="w+", prefix="tdlab-")  # noqa: SIM115 - Child.stop closes it
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,  # a terminal's Ctrl-C reaches the lab, not them
            )
        except OSError as err:
            stderr.close()
            raise ScenarioError(f"cannot start {module} in {host.netns}: {err.strerror}") from None
        child = Child(host, popen, stderr)
        self._registry.register(f"process {popen.pid} ({module})", child.stop)
        return child


class Blackhole:
    """Drop matching forwarded packets while on; switchable mid-run."""

    def __init__(self, topology: Topology, box: Host, table: str, match: str) -> None:
        self._topology = topology
        self._box = box
        self.table = table
        self.match = match
        self.active = False

    def on(self) -> None:
        rule = f"add rule inet {self.table} forward {self.match} drop"
        self._topology.exec(self._box, ["nft", rule])
        self.active = True

    def off(self) -> None:
        self._topology.exec(self._box, ["nft", f"flush chain inet {self.table} forward"])
        self.active = False


# --- undo actions (each tolerates an object that is already gone) --------------------------


def _delete_netns(name: str) -> None:
    _stop_processes_in(name)
    done = _proc.run(["ip", "netns", "delete", name], check=False)
    if done.returncode != 0 and netns_exists(name):
        raise _proc.command_error(["ip", "netns", "delete", name], done.stderr)


def _delete_link(netns: str, device: str) -> None:
    if not netns_exists(netns):
        return  # the namespace (and so the link) is gone already
    _proc.run(["ip", "-n", netns, "link", "delete", device], check=False)


def _delete_table(netns: str, family: str, name: str) -> None:
    if netns_exists(netns):
        argv = _proc.in_netns(netns, ["nft", "delete", "table", family, name])
        _proc.run(argv, check=False)


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def netns_pids(name: str) -> tuple[int, ...]:
    done = _proc.run(["ip", "netns", "pids", name], check=False)
    return tuple(int(p) for p in done.stdout.split() if p.isdigit())


def _stop_processes_in(name: str) -> None:
    """SIGKILL what still runs in one of OUR namespaces (children already stopped)."""
    if not netns_exists(name):
        return
    for pid in netns_pids(name):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 9)
