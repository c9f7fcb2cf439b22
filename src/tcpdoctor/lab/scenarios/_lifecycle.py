"""Run-time pieces shared by the closing-state scenarios: the two-host topology, the
lab's client and server children, a per-socket sampler, counters read inside a namespace,
and a packet capture that runs whether or not --pcap asked to keep it.

Every wait here is bounded in time; every child, capture and temporary file is registered
with the run's cleanup registry, so an exception or a signal leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from tcpdoctor.errors import ScenarioError, TcpDoctorError
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.kernel.sysctls import lookup_sysctl
from tcpdoctor.lab._lines import JsonLines
from tcpdoctor.lab.capture import Capture
from tcpdoctor.lab.model import RunContext
from tcpdoctor.lab.pcap import Segment
from tcpdoctor.lab.scenarios._lifecycle_model import SocketSample, SockRow
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.lab.topology import Child, Host, Link, Topology
from tcpdoctor.observe import netns, snapshot
from tcpdoctor.observe.counters import CounterSnapshot, read_counters

SERVER_PORT = 8080
READY_TIMEOUT_S = 15.0  # python start-up inside a namespace on a busy 2-core machine
REPLY_TIMEOUT_S = 15.0  # one close command (shutdown waits for the peer's FIN)
MAX_SAMPLES = 200_000  # bound on memory whatever the run length
CAPTURE_MAX_S = 900.0
SERVER_MODULE = "tcpdoctor.lab.scenarios._lifecycle_server"
CLIENT_MODULE = "tcpdoctor.lab.scenarios._lifecycle_client"
_LISTEN = TcpState.LISTEN


# --- topology -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    client: Host
    server: Host
    link: Link
    sysctls: dict[str, dict[str, str]]  # role -> knob -> value read back

    @property
    def server_address(self) -> str:
        return str(self.link.b.address)


def build_pair(
    ctx: RunContext,
    *,
    client: Sequence[SysctlSetting],
    server: Sequence[SysctlSetting],
    show: Iterable[str] = (),
) -> Pair:
    """client --veth-- server, each with its settings; `show` names knobs to read back."""
    topo = ctx.topology
    ctx.progress(0.0, "building the namespaces")
    hosts = topo.add_host("client"), topo.add_host("server")
    link = topo.link(*hosts)
    topo.apply(hosts[0], client)
    topo.apply(hosts[1], server)
    names = {*show, *(s.name for s in client), *(s.name for s in server)}
    read_back = {
        host.role: {n: v for n in sorted(names) if (v := topo.read_sysctl(host, n)) is not None}
        for host in hosts
    }
    return Pair(hosts[0], hosts[1], link, read_back)


def setting(name: str, text: str) -> SysctlSetting:
    """A knob a scenario flag sets, validated against the catalogue like --sysctl."""
    spec = lookup_sysctl(name)
    value = spec.parse(text)
    return SysctlSetting(spec, value, spec.format(value))


def with_setting(user: Sequence[SysctlSetting], name: str, text: str) -> tuple[SysctlSetting, ...]:
    """The user's --sysctl settings plus one from a scenario flag; the user's value wins."""
    if any(s.name == name for s in user):
        return tuple(user)
    return (*user, setting(name, text))


def chosen(user: Sequence[SysctlSetting], name: str, flag_value: str) -> str:
    """The value a knob will have: the user's --sysctl text, else the flag's."""
    return next((s.text for s in user if s.name == name), flag_value)


# --- children -----------------------------------------------------------------------------


class LabServer:
    """The lifecycle server child: reports accepted connections and how each one ended."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self._lines = JsonLines(child.stdout)
        self.records: list[dict[str, Any]] = []

    @classmethod
    def start(cls, topo: Topology, host: Host, address: str, *, on_eof: str) -> LabServer:
        args = ["--host", address, "--port", str(SERVER_PORT), "--on-eof", on_eof]
        server = cls(topo.spawn(host, SERVER_MODULE, args))
        ready, _ = server._lines.wait_for("ready", time.monotonic() + READY_TIMEOUT_S)
        if ready is None:
            detail = server.child.stderr_tail() or "no output"
            raise ScenarioError(f"the lab server did not start: {detail}")
        return server

    @property
    def pid(self) -> int:
        """`ip netns exec` execs the program in place: Popen's pid is the server's."""
        return self.child.popen.pid

    def collect(self, wait_s: float = 0.0) -> list[dict[str, Any]]:
        """Records that arrived so far (waiting up to wait_s for the first new one)."""
        deadline = time.monotonic() + wait_s
        while (record := self._lines.get(deadline)) is not None:
            self.records.append(record)
            deadline = time.monotonic()  # the rest only if already there
        return self.records

    def peer_ends(self) -> dict[int, dict[str, Any]]:
        """Client port -> the first 'peer_end' record for it."""
        found: dict[int, dict[str, Any]] = {}
        for record in self.collect():
            if record.get("kind") == "peer_end":
                found.setdefault(int(record["peer_port"]), record)
        return found

    def wait_peer_ends(self, count: int, deadline: float) -> dict[int, dict[str, Any]]:
        while len(ends := self.peer_ends()) < count and time.monotonic() < deadline:
            self.collect(min(0.2, max(0.0, deadline - time.monotonic())))
        return ends


class Closed(NamedTuple):
    conn: int  # the connection's number in the client
    how: str
    port: int
    t_call: float  # unix time just before the close path started
    t: float  # unix time it returned
    error: str | None


class LabClient:
    """The lifecycle client child: N idle connections, closed one by one on command."""

    def __init__(self, child: Child, ports: list[int]) -> None:
        self.child = child
        self.ports = ports
        self._lines: JsonLines | None = None

    @classmethod
    def start(cls, topo: Topology, host: Host, address: str, count: int) -> LabClient:
        args = ["--host", address, "--port", str(SERVER_PORT), "--count", str(count)]
        child = topo.spawn(host, CLIENT_MODULE, args)
        lines = JsonLines(child.stdout)
        ready, others = lines.wait_for("ready", time.monotonic() + READY_TIMEOUT_S + count)
        if ready is None:
            errors = [r for r in others if r.get("kind") == "error"]
            detail = errors[0].get("error") if errors else child.stderr_tail() or "no output"
            raise ScenarioError(f"the lab client could not open its connections: {detail}")
        client = cls(child, [int(r["port"]) for r in others if r.get("kind") == "open"])
        client._lines = lines
        return client

    def close(self, index: int, how: str) -> Closed:
        stdin = self.child.popen.stdin
        if stdin is None or self._lines is None:
            raise ScenarioError("the lab client is not running")
        try:
            stdin.write(f"{how} {index}\n")
            stdin.flush()
        except OSError as err:
            raise ScenarioError(f"the lab client went away: {err.strerror}") from None
        record, _ = self._lines.wait_for("closed", time.monotonic() + REPLY_TIMEOUT_S)
        if record is None:
            raise ScenarioError(f"the lab client did not close connection {index}")
        return Closed(
            int(record["i"]),
            str(record["how"]),
            int(record["port"]),
            float(record["t_call"]),
            float(record["t"]),
            record.get("error"),
        )


def sleep_until(at: float) -> None:
    """Sleep until unix time `at` (bounded by the distance to it)."""
    time.sleep(max(0.0, at - time.time()))


# --- sampling -----------------------------------------------------------------------------


def sample(host: Host, ports: Sequence[int] = (SERVER_PORT,)) -> SocketSample:
    """Every TCP socket of the host that talks to or listens on one of `ports`."""
    snap = snapshot.take(host.target)
    wanted = set(ports)
    rows = tuple(
        SockRow(r.state.label, r.local_port, r.remote_port, r.timer, r.expires_ms)
        for r in snap.rows()
        if r.state is not _LISTEN and (r.local_port in wanted or r.remote_port in wanted)
    )
    return SocketSample(snap.meta.taken_at, snap.meta.elapsed_s, host.role, rows)


class SocketSampler:
    """Samples every host each `period` seconds (changeable while it runs) until stop().
    `every` = {role: n} samples that host only every n-th round: a fast sampler then spends
    its time on the host that matters."""

    def __init__(
        self, hosts: Sequence[Host], period: float, every: Mapping[str, int] | None = None
    ) -> None:
        self._hosts = tuple(hosts)
        self.period = period
        self.every = dict(every or {})
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="lab-sockets", daemon=True)
        self._samples: list[SocketSample] = []
        self._latest: dict[str, SocketSample] = {}
        self.error: TcpDoctorError | None = None

    def start(self) -> SocketSampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        rounds = 0
        while not self._stop.is_set() and len(self._samples) < MAX_SAMPLES:
            began = time.monotonic()
            due = [h for h in self._hosts if rounds % max(1, self.every.get(h.role, 1)) == 0]
            rounds += 1
            try:
                taken = [sample(host) for host in due]
            except TcpDoctorError as err:  # reported by stop(), never lost
                self.error = err
                return
            with self._lock:
                self._samples.extend(taken)
                self._latest.update((s.host, s) for s in taken)
            self._stop.wait(max(0.0, began + self.period - time.monotonic()))

    def latest(self, role: str) -> SocketSample | None:
        with self._lock:
            return self._latest.get(role)

    def wait(
        self, done: Callable[[SocketSampler], bool], deadline: float, step: float = 0.05
    ) -> bool:
        """Poll `done` until it holds or the unix-time deadline passes."""
        while time.time() < deadline:
            if self.error is not None or not self._thread.is_alive():
                return done(self)
            if done(self):
                return True
            time.sleep(step)
        return done(self)

    def stop(self) -> list[SocketSample]:
        self._stop.set()
        self._thread.join(timeout=30.0)
        if self.error is not None:
            raise self.error
        with self._lock:
            return list(self._samples)


def wait_reporting(
    sampler: SocketSampler,
    done: Callable[[SocketSampler], bool],
    deadline: float,
    progress: Callable[[float, str], None],
    started: float,
    what: str,
) -> bool:
    """sampler.wait() with a progress report about once a second."""
    while not sampler.wait(done, min(deadline, time.time() + 1.0)):
        if time.time() >= deadline:
            return False
        progress(time.monotonic() - started, what)
    return True


def gone_from(role: str, ports: Iterable[int], state: str) -> Callable[[SocketSampler], bool]:
    """A wait condition: every one of `ports` has been seen in `state` on `role` and none
    is in it any more (a port that never gets there keeps the wait going to its deadline)."""
    wanted = set(ports)
    seen: set[int] = set()

    def done(sampler: SocketSampler) -> bool:
        latest = sampler.latest(role)
        if latest is None:
            return False
        now = {r.local_port for r in latest.rows if r.state == state and r.local_port in wanted}
        seen.update(now)
        return seen == wanted and not now

    return done


# --- counters -----------------------------------------------------------------------------


def counters(host: Host) -> CounterSnapshot:
    """/proc/net/{netstat,snmp,sockstat} read from a thread inside the host's namespace,
    the way the doctor reads another namespace."""
    return netns.run_in(host.target, lambda: read_counters(netns.PROC_NET))


def deltas(
    before: CounterSnapshot, after: CounterSnapshot, keys: Iterable[str]
) -> dict[str, int | None]:
    return {key: after.delta(before, key) for key in keys}


# --- packets ------------------------------------------------------------------------------


class Packets:
    """A capture on one host's interfaces, into --pcap's file or a temporary one."""

    def __init__(self, ctx: RunContext, host: Host, devices: Sequence[str]) -> None:
        self.kept = ctx.pcap
        if ctx.pcap is not None:
            path = ctx.pcap
        else:
            folder = tempfile.mkdtemp(prefix="tdlab-pcap-")
            ctx.topology.register(f"temporary {folder}", lambda: shutil.rmtree(folder, True))
            path = Path(folder) / "run.pcap"
        self._capture = Capture(
            host.netns, path, interfaces=list(devices), max_seconds=CAPTURE_MAX_S
        )
        ctx.topology.register(f"capture in {host.netns}", self._capture.stop)
        self._capture.start()
        self.segments: tuple[Segment, ...] = ()

    def stop(self) -> tuple[Segment, ...]:
        self._capture.stop()
        self.segments = self._capture.segments()
        return self.segments

    @property
    def pcap(self) -> str | None:
        return None if self.kept is None else str(self.kept)


# --- the result's odds and ends -----------------------------------------------------------


def present(read_back: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    return {host: dict(values) for host, values in read_back.items()}
