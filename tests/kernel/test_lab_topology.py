"""The lab's topology on the real kernel: hosts, veth links, a forwarding middlebox with
SNAT, a DNAT load balancer and a switchable blackhole; and that tearing it down (normally or
after an exception) leaves no tdlab- object and no changed host setting behind."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tcpdoctor.errors import InputError
from tcpdoctor.lab import _names
from tcpdoctor.lab._proc import in_netns
from tcpdoctor.lab.cleanup import CleanupRegistry
from tcpdoctor.lab.sysctl_args import parse_setting
from tcpdoctor.lab.topology import Host, Topology

pytestmark = pytest.mark.kernel

PORT = 8080
HOST_KNOBS = (
    "net/ipv4/ip_forward",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/ipv4/tcp_tw_reuse",
)

# Accepts `count` connections and prints the address each came from.
PEER_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16); s.settimeout(20)
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    c, peer = s.accept(); print(peer[0], flush=True); c.close()
"""

# Connects once; prints "ok" or the error name.
CONNECT = """
import errno, socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, "TIMEOUT") if e.errno else "TIMEOUT")
"""


def lab_objects(run_id: str) -> set[str]:
    """Every object carrying this run id: namespaces, host links, host nft tables."""
    names = {e["name"] for e in json.loads(_out(["ip", "-j", "netns", "list"]) or "[]")}
    names |= {e["ifname"] for e in json.loads(_out(["ip", "-j", "link", "show"]) or "[]")}
    tables = json.loads(_out(["nft", "-j", "list", "tables"]) or "{}").get("nftables", [])
    names |= {t["table"]["name"] for t in tables if "table" in t}
    return {n for n in names if _names.run_id_of(n) == run_id}


def _out(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=15, check=True).stdout


def host_knobs() -> dict[str, str]:
    return {k: (Path("/proc/sys") / k).read_text().strip() for k in HOST_KNOBS}


@contextmanager
def peer_server(host: Host, address: str, count: int) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [
            *in_netns(host.netns, [sys.executable, "-c", PEER_SERVER]),
            address,
            str(PORT),
            str(count),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def connect(topo: Topology, host: Host, address: str, timeout: float = 3.0) -> str:
    argv = [sys.executable, "-c", CONNECT, address, str(PORT), str(timeout)]
    return topo.exec(host, argv).strip()


def test_middlebox_snat_blackhole_and_load_balancer_then_nothing_left() -> None:
    knobs_before = host_knobs()
    run_id = _names.new_run_id()
    with CleanupRegistry() as registry:
        topo = Topology("topo", registry, run_id)
        client, box, server = (
            topo.add_host("client"),
            topo.add_middlebox("box"),
            topo.add_host("server"),
        )
        left, right = topo.link(client, box), topo.link(box, server)
        topo.route(client, "default", left.b.address)
        topo.route(server, "default", right.a.address)
        assert lab_objects(run_id) == {client.netns, box.netns, server.netns}  # no host links
        assert topo.read_sysctl(box, "net.ipv4.ip_forward") == "1"
        assert topo.read_sysctl(client, "net.ipv4.ip_forward") == "0"

        # SNAT: the server sees the middlebox's address, not the client's.
        topo.masquerade(box, right.a.device)
        with peer_server(server, str(right.b.address), 1) as srv:
            assert connect(topo, client, str(right.b.address)) == "ok"
            assert srv.stdout is not None and srv.stdout.readline().strip() == str(right.a.address)

        # Blackhole: switched on, the SYNs vanish (timeout); switched off, it works again.
        hole = topo.blackhole(box, f"ip daddr {right.b.address} tcp dport {PORT}")
        with peer_server(server, str(right.b.address), 1):
            hole.on()
            assert connect(topo, client, str(right.b.address), timeout=1.5) == "TIMEOUT"
            hole.off()
            assert connect(topo, client, str(right.b.address)) == "ok"

        # Load balancer: a virtual address DNATed to the server; conntrack's established
        # timeout is set in the middlebox only.
        vip = ipaddress.IPv4Address("198.19.255.1")
        topo.load_balancer(box, vip, PORT, [right.b.address], established_timeout_s=30)
        with peer_server(server, str(right.b.address), 1):
            assert connect(topo, client, str(vip)) == "ok"
        established = "net.netfilter.nf_conntrack_tcp_timeout_established"
        assert topo.read_sysctl(box, established) == "30"
        tables = topo.exec(box, ["nft", "list", "tables"])
        assert f"tdlab-{run_id}-snat" in tables and f"tdlab-{run_id}-lb" in tables
    assert lab_objects(run_id) == set()
    assert registry.failures == []
    assert host_knobs() == knobs_before  # nothing set outside the lab's namespaces


def test_an_exception_mid_build_still_removes_everything() -> None:
    run_id = _names.new_run_id()
    with pytest.raises(RuntimeError, match="boom"), CleanupRegistry() as registry:
        topo = Topology("topo", registry, run_id)
        a, b = topo.add_host("a"), topo.add_host("b")
        topo.link(a, b)
        topo.nft_table(b, "t", "  chain c { type filter hook input priority 0; }")
        assert len(lab_objects(run_id)) == 2
        raise RuntimeError("boom")
    assert lab_objects(run_id) == set()


def test_user_sysctl_refused_by_the_kernel_is_an_input_error() -> None:
    run_id = _names.new_run_id()
    with (
        pytest.raises(InputError, match=r"refused net\.ipv4\.tcp_tw_reuse=7"),
        CleanupRegistry() as reg,
    ):
        topo = Topology("topo", reg, run_id)
        topo.apply(topo.add_host("h"), [parse_setting("tcp_tw_reuse=7")])
    assert lab_objects(run_id) == set()
