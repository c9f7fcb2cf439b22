"""Packet capture against the real kernel.

Two `tdlab-` namespaces joined by a veth pair (client veth0 198.18.7.1 / fc00:7::1,
server veth1 198.18.7.2 / fc00:7::2). Traffic comes from short Python children started
inside the namespaces; a capture runs in the client namespace. Drops use an nftables table
`tdlab-cap-drop` in the server namespace; sysctls are set only in the client namespace.
Both namespaces (and with them the veth pair and the table) are deleted in a finally.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import support.netns as tns
from conftest import in_ci
from tcpdoctor.errors import ScenarioError
from tcpdoctor.kernel.timing import syn_give_up, timer_slack
from tcpdoctor.lab.capture import Capture, StopReason
from tcpdoctor.lab.pcap import (
    Flow,
    Keep,
    Segment,
    TcpFlags,
    in_flow,
    intervals,
    keepalive_probes,
    read_pcap,
    retransmission_times,
)

pytestmark = pytest.mark.kernel

F = TcpFlags
ADDRESSES = {"v4": ("198.18.7.1", "198.18.7.2", 24), "v6": ("fc00:7::1", "fc00:7::2", 64)}
PORT = 7777
NFT_TABLE = "tdlab-cap-drop"
WAIT = 10.0

SERVER = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
listener = socket.socket(family)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((sys.argv[1], int(sys.argv[2])))
listener.listen()
print("listening", flush=True)
conn, _ = listener.accept()
while conn.recv(100):
    pass
conn.close()
"""

CLIENT = """
import socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family)
s.connect((sys.argv[1], int(sys.argv[2])))
print(s.getsockname()[1], flush=True)
if len(sys.argv) > 3:  # keepalive: idle seconds, then stay quiet that long twice over
    idle = int(sys.argv[3])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, idle)
s.sendall(b"hello")
if len(sys.argv) > 3:
    time.sleep(2.6 * idle)
s.shutdown(socket.SHUT_WR)
while s.recv(100):
    pass
s.close()
"""

CONNECT_BLACKHOLED = """
import errno, socket, sys, time
s = socket.socket()
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
start = time.monotonic()
try:
    s.connect((sys.argv[2], int(sys.argv[3])))
    print("connected")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc.errno), time.monotonic() - start)
"""

KEEP_CAPTURING = """
import sys, time
from pathlib import Path
from tcpdoctor.lab.capture import Capture
capture = Capture(sys.argv[1], Path(sys.argv[2]))
capture.start()
print(capture.pid, flush=True)
time.sleep(120)
"""


@dataclass
class Pair:
    client: tns.TestNetns
    server: tns.TestNetns

    def addresses(self, family: str) -> tuple[str, str]:
        client, server, _ = ADDRESSES[family]
        return client, server


@pytest.fixture
def pair() -> Iterator[Pair]:
    with tns.netns("tdlab-capc") as client, tns.netns("tdlab-caps") as server:
        client.run(
            "ip", "link", "add", "veth0", "type", "veth", "peer", "veth1", "netns", server.name
        )
        for ns, dev, index in ((client, "veth0", 0), (server, "veth1", 1)):
            for family, nodad in (("v4", ()), ("v6", ("nodad",))):
                address, prefix = ADDRESSES[family][index], ADDRESSES[family][2]
                ns.run("ip", "addr", "add", f"{address}/{prefix}", "dev", dev, *nodad)
            ns.run("ip", "link", "set", dev, "up")
        yield Pair(client, server)


def _line(proc: subprocess.Popen[str]) -> str:
    """The child's next stdout line, within WAIT seconds."""
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], WAIT)[0]:
        raise AssertionError(f"no output from {proc.args!r} within {WAIT} s")
    return proc.stdout.readline().strip()


def _serve(pair: Pair, address: str) -> subprocess.Popen[str]:
    server = pair.server.popen([tns.PYTHON, "-c", SERVER, address, str(PORT)])
    assert _line(server) == "listening"
    return server


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _first(segments: list[Segment], start: int, sender: Flow, want: F, data: bool = False) -> int:
    """Index of the first segment at or after `start` sent by `sender` with flags `want`."""
    for index in range(start, len(segments)):
        segment = segments[index]
        matches = Flow.of(segment) == sender and segment.flags & want == want
        if matches and (not data or segment.payload_len > 0):
            return index
    raise AssertionError(f"no {want.text} from {sender} after #{start}: {segments}")


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_connect_send_close_is_captured_in_order(pair: Pair, tmp_path: Path, family: str) -> None:
    client_addr, server_addr = pair.addresses(family)
    server = _serve(pair, server_addr)
    pcap = tmp_path / "client.pcap"
    wall_start = time.time()
    with Capture(pair.client.name, pcap, interfaces=["veth0"]) as cap:
        worker = cap.pid
        done = pair.client.run(tns.PYTHON, "-c", CLIENT, server_addr, str(PORT))
        server.wait(WAIT)
    wall_end = time.time()
    assert not _alive(worker)
    assert cap.stats is not None and cap.stats.complete, cap.stats

    flow = Flow.between((client_addr, int(done.stdout)), (server_addr, PORT))
    segments = in_flow(cap.segments(), flow)
    syn = _first(segments, 0, flow, F.SYN)
    synack = _first(segments, syn, flow.reverse(), F.SYN | F.ACK)
    ack = _first(segments, synack, flow, F.ACK)
    data = _first(segments, ack, flow, F.ACK, data=True)
    fin = _first(segments, data, flow, F.FIN)
    assert syn < synack < ack < data < fin
    assert segments[data].payload_len == 5
    assert [s.outgoing for s in (segments[syn], segments[synack])] == [True, False]
    times = [s.t for s in segments]
    assert times == sorted(times)
    assert wall_start - 1 <= times[0] and times[-1] <= wall_end + 1  # CLOCK_REALTIME

    if shutil.which("tcpdump") is None:
        message = "tcpdump is missing (`make deps` installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    shown = subprocess.run(
        ["tcpdump", "-nn", "-r", str(pcap)], capture_output=True, text=True, timeout=30, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "LINUX_SLL2" in shown.stderr
    assert len(shown.stdout.splitlines()) == read_pcap(pcap, keep=Keep.ALL).records


def _linear_timeouts(ns: tns.TestNetns) -> int:
    # Kernels before 6.5 have no such sysctl: their schedule is the linear_timeouts=0 one.
    done = ns.run("sysctl", "-n", "net.ipv4.tcp_syn_linear_timeouts", check=False)
    return int(done.stdout) if done.returncode == 0 else 0


def _drop_in_server(ns: tns.TestNetns, port: int) -> None:
    ns.run("nft", "add", "table", "inet", NFT_TABLE)
    ns.run(
        "nft",
        f"add chain inet {NFT_TABLE} in {{ type filter hook prerouting priority -300; }}",
    )
    ns.run("nft", f"add rule inet {NFT_TABLE} in tcp dport {port} drop")


def _tolerance(interval: float) -> float:
    """The issue's acceptance bound plus the timer wheel's lateness for that length."""
    return max(0.004, 0.125 * interval) + timer_slack(interval).max_lateness


def test_syn_retransmissions_follow_the_kernel_schedule(pair: Pair, tmp_path: Path) -> None:
    client_addr, server_addr = pair.addresses("v4")
    pair.client.sysctl(**{"net.ipv4.tcp_syn_retries": 2})
    _drop_in_server(pair.server, PORT)
    expected = syn_give_up(2, linear_timeouts=_linear_timeouts(pair.client))
    with Capture(pair.client.name, tmp_path / "syn.pcap", interfaces=["veth0"]) as cap:
        done = pair.client.run(
            tns.PYTHON, "-c", CONNECT_BLACKHOLED, client_addr, server_addr, str(PORT), timeout=60
        )
    port_line, outcome = done.stdout.splitlines()
    error, elapsed = outcome.split()

    flow = Flow(client_addr, int(port_line), server_addr, PORT)
    times = retransmission_times(cap.segments(), flow)
    measured = intervals(times)
    wanted = intervals((0.0, *expected.schedule.retransmit_times))
    report = ", ".join(f"{m:.3f}/{w:g}" for m, w in zip(measured, wanted, strict=False))
    print(f"\nSYN intervals measured/expected (s): {report}; ETIMEDOUT after {elapsed} s")
    assert len(times) == 1 + expected.schedule.retransmissions, report
    for got, want in zip(measured, wanted, strict=True):
        assert abs(got - want) <= _tolerance(want), report
    assert error == "ETIMEDOUT"
    last_wait = expected.schedule.waits[-1]
    assert abs(float(elapsed) - expected.schedule.gives_up_at) <= _tolerance(last_wait) + 0.1


def test_keepalive_probes_are_recognised(pair: Pair, tmp_path: Path) -> None:
    client_addr, server_addr = pair.addresses("v4")
    server = _serve(pair, server_addr)
    with Capture(pair.client.name, tmp_path / "ka.pcap", interfaces=["veth0"]) as cap:
        done = pair.client.run(tns.PYTHON, "-c", CLIENT, server_addr, str(PORT), "1")
        server.wait(WAIT)
    flow = Flow(client_addr, int(done.stdout), server_addr, PORT)
    probes = keepalive_probes(cap.segments(), flow)
    assert len(probes) == 2, probes
    assert all(p.payload_len == 0 for p in probes)
    assert intervals([p.t for p in probes])[0] == pytest.approx(1.0, abs=_tolerance(1.0))


def test_loopback_copies_follow_the_direction_rule(pair: Pair, tmp_path: Path) -> None:
    server = pair.client.popen([tns.PYTHON, "-c", SERVER, "127.0.0.1", str(PORT)])
    assert _line(server) == "listening"
    with Capture(pair.client.name, tmp_path / "lo.pcap", interfaces=["lo"]) as cap:
        pair.client.run(tns.PYTHON, "-c", CLIENT, "127.0.0.1", str(PORT))
        server.wait(WAIT)
    once, every = cap.segments(), cap.segments(keep=Keep.ALL)
    assert len(once) >= 8 and len(every) == 2 * len(once)
    assert all(s.outgoing for s in once)


def test_limits_stop_the_worker_by_itself(pair: Pair, tmp_path: Path) -> None:
    _, server_addr = pair.addresses("v4")
    server = _serve(pair, server_addr)
    with Capture(pair.client.name, tmp_path / "few.pcap", max_packets=3) as few:
        pair.client.run(tns.PYTHON, "-c", CLIENT, server_addr, str(PORT))
        server.wait(WAIT)
        assert _wait_gone(few.pid, WAIT)
    assert few.stats is not None and few.stats.stop is StopReason.PACKET_LIMIT
    assert few.read(keep=Keep.ALL).records == 3

    with Capture(pair.client.name, tmp_path / "short.pcap", max_seconds=0.5) as short:
        assert _wait_gone(short.pid, WAIT)
    assert short.stats is not None and short.stats.stop is StopReason.TIME_LIMIT


def test_worker_goes_when_its_parent_is_killed(pair: Pair, tmp_path: Path) -> None:
    pcap = tmp_path / "orphan.pcap"
    parent = subprocess.Popen(
        [tns.PYTHON, "-c", KEEP_CAPTURING, pair.client.name, str(pcap)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        worker = int(_line(parent))
        assert _alive(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(WAIT)
        assert _wait_gone(worker, WAIT), "capture worker outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(WAIT)
    assert read_pcap(pcap).records == 0  # flushed and closed: a whole, empty capture


def test_capture_outlives_the_thread_that_started_it(pair: Pair, tmp_path: Path) -> None:
    # The kernel's death signal follows the parent *thread*; only a dead process counts.
    started: list[Capture] = []
    thread = threading.Thread(
        target=lambda: started.append(Capture(pair.client.name, tmp_path / "t.pcap").__enter__())
    )
    thread.start()
    thread.join(WAIT)
    (cap,) = started
    time.sleep(0.7)  # longer than the worker's poll interval
    assert _alive(cap.pid)
    assert cap.stop().stop is StopReason.SIGNAL


def test_setup_failures_are_one_line_scenario_errors(pair: Pair, tmp_path: Path) -> None:
    unknown = Capture(pair.client.name, tmp_path / "x.pcap", interfaces=["nope0"])
    with pytest.raises(ScenarioError, match="no interface 'nope0'"):
        unknown.start()
    assert unknown.stop().stop is StopReason.FAILED
    assert not _alive(unknown.pid)
    with pytest.raises(ScenarioError, match="failed to start") as info:
        Capture("tdlab-capture-missing", tmp_path / "y.pcap").start()
    assert "\n" not in str(info.value)
    with pytest.raises(ScenarioError, match="cannot write"):
        Capture(pair.client.name, tmp_path / "no" / "dir.pcap").start()
    with pytest.raises(ScenarioError, match="snaplen"):
        Capture(pair.client.name, tmp_path / "z.pcap", snaplen=64)
