"""The real-server and middlebox scenarios on the real kernel, through the CLI as a user
runs them: redis-pool (redis-server + redis-py), nginx-keepalive (nginx) and
idle-timeout-middlebox (conntrack box). Each run says whether measured agrees with
expected; the tests also check the numbers that make each scenario's point, and recount
handshakes from the pcap themselves, so a run that "agrees" by checking nothing fails.

A missing nginx / redis-server binary or redis-py is one error line and exit 4 (and in CI
these tests fail rather than skip: the binaries are part of `make test`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.netns import TCPDOCTOR, tcpdoctor
from tcpdoctor.lab.pcap import TcpFlags, read_pcap

pytestmark = pytest.mark.kernel

QUICK_COMMANDS = 200
QUICK_WORKERS = 4
QUICK_REQUESTS = 200
IDLE_RUN_TIMEOUT_S = 90


def run_lab(name: str, *flags: str, timeout: float = 120) -> dict[str, Any]:
    done = tcpdoctor("lab", "run", name, "--quick", "--json", *flags, timeout=timeout)
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) is result["agree"]
    return result


def explain(result: dict[str, Any]) -> str:
    return f"{result['verdict']}\nmeasured={result['measured']}"


def syns_to(pcap: Path, address: str) -> int:
    """Connections opened to `address`: SYNs without ACK, retransmissions counted once."""
    segments = read_pcap(pcap).segments
    syn = TcpFlags.SYN | TcpFlags.ACK
    return len(
        {(s.src, s.sport) for s in segments if s.flags & syn == TcpFlags.SYN and s.dst == address}
    )


def server_addresses() -> list[str]:
    """The server's address on each variant's link, in variant order: link n of a run is
    198.18.n.0/24 and the server is its side b (.2)."""
    return [f"198.18.{n}.2" for n in range(2)]


def test_redis_new_connection_per_command_vs_pool(tmp_path: Path) -> None:
    pcap = tmp_path / "redis.pcap"
    result = run_lab("redis-pool", "--pcap", str(pcap))
    assert result["agree"], explain(result)
    m = result["measured"]
    # New client per command: one handshake and one client TIME_WAIT per command, because
    # redis-py sends the first FIN; nothing on the server.
    assert m["new_successes"] == QUICK_COMMANDS and m["new_failures"] == 0
    assert m["new_handshakes"] == QUICK_COMMANDS
    assert m["new_first_fin_by"] == "client"
    assert m["new_client_time_wait_after"] == QUICK_COMMANDS
    assert m["new_server_time_wait_after"] == 0
    # Pool: at most one connection per worker, no TIME_WAIT while it is open, one per
    # pooled connection after pool.disconnect().
    assert 1 <= m["pool_handshakes"] <= QUICK_WORKERS
    assert m["pool_client_time_wait_held"] == 0
    assert m["pool_client_established_held"] == m["pool_handshakes"]
    assert m["pool_client_time_wait_after"] == m["pool_handshakes"]
    assert m["pool_server_time_wait_after"] == 0
    assert m["pool_speedup"] > 1.0
    assert m["redis_counter"] == 2 * QUICK_COMMANDS
    # The pcap, recounted here: one SYN per command on the first link, few on the second.
    new_address, pool_address = server_addresses()
    assert syns_to(pcap, new_address) == QUICK_COMMANDS
    assert syns_to(pcap, pool_address) == m["pool_handshakes"]


def test_nginx_keepalive_timeout_0_vs_keepalive(tmp_path: Path) -> None:
    pcap = tmp_path / "nginx.pcap"
    result = run_lab("nginx-keepalive", "--pcap", str(pcap))
    assert result["agree"], explain(result)
    m = result["measured"]
    # keepalive_timeout 0: nginx closes after every response, TIME_WAIT on the server.
    assert m["close_successes"] == QUICK_REQUESTS
    assert m["close_handshakes"] == QUICK_REQUESTS
    assert m["close_first_fin_by"] == "server"
    assert m["close_server_time_wait_after"] == QUICK_REQUESTS
    assert m["close_client_time_wait_after"] == 0
    # keep-alive: one connection, no TIME_WAIT during the run, the client's own close at
    # the end leaves one TIME_WAIT on the client.
    assert m["keepalive_successes"] == QUICK_REQUESTS
    assert m["keepalive_handshakes"] == 1
    assert m["keepalive_client_time_wait_during"] == 0
    assert m["keepalive_server_time_wait_held"] == 0
    assert m["keepalive_client_time_wait_after"] == 1
    close_address, keepalive_address = server_addresses()
    assert syns_to(pcap, close_address) == QUICK_REQUESTS
    assert syns_to(pcap, keepalive_address) == 1


def test_nginx_keepalive_requests_limit_adds_handshakes_and_server_closes() -> None:
    result = run_lab("nginx-keepalive", "--keepalive-requests", "60")
    assert result["agree"], explain(result)
    m = result["measured"]
    assert m["keepalive_handshakes"] == 4  # ceil(200 / 60)
    assert m["keepalive_closed_by_server"] == 3  # each after its 60th request
    assert m["keepalive_closed_by_client"] == 1  # the 20-request tail, closed at the end
    assert m["keepalive_server_time_wait_held"] == 3


def test_idle_timeout_middlebox_variants_side_by_side() -> None:
    """Stateful box (default), --open-forward and nf_conntrack_tcp_loose=0, concurrently:
    the runs are mostly waiting."""
    argv = [TCPDOCTOR, "lab", "run", "idle-timeout-middlebox", "--quick", "--json"]
    variants = {
        "stateful": [],
        "open": ["--open-forward"],
        "untracked": ["--sysctl", "net.netfilter.nf_conntrack_tcp_loose=0"],
    }
    procs = {
        name: subprocess.Popen(
            [*argv, *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name, flags in variants.items()
    }
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=IDLE_RUN_TIMEOUT_S)
            assert proc.returncode in (0, 1), err
            results[name] = json.loads(out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name, result in results.items():
        assert result["agree"], f"{name}: {explain(result)}"
        m = result["measured"]
        # Keepalive every 1 s against a 3 s timeout: the entry stays, the request works.
        assert m["keepalive_outcome"] == "ok"
        assert m["keepalive_entry_kept"] is True
        assert 0.9 < m["keepalive_first_probe_s"] < 1.2
        # The plain connection's entry is gone 3 s after its last packet.
        assert 2.9 < m["ct_forgotten_after_s"] < 3.6
    stateful = results["stateful"]["measured"]
    assert stateful["plain_outcome"] == "TIMEOUT"  # dropped, not reset
    assert stateful["plain_transmissions_after_pause"] >= 2  # retransmitted
    assert stateful["plain_forwarded_after_pause"] == 0
    assert stateful["midstream_new_packets"] == stateful["plain_transmissions_after_pause"]
    assert stateful["midstream_invalid_packets"] == 0
    opened = results["open"]["measured"]
    assert opened["plain_outcome"] == "ok"  # picked up mid-stream and NATed again
    assert opened["midstream_new_packets"] == 1
    untracked = results["untracked"]["measured"]
    assert untracked["plain_outcome"] == "TIMEOUT"
    assert untracked["midstream_new_packets"] == untracked["midstream_invalid_packets"] == 0
    assert untracked["box_icmp_unreachable"] >= 1


# --- missing software: one line, exit 4 -----------------------------------------------


def _path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH with the tools the lab itself needs (ip, sysctl, nft, cat) but not `missing`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "sysctl", "nft", "cat"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    for tool in missing:
        assert not (bin_dir / tool).exists()
    return str(bin_dir)


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpdoctor: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("scenario", "program", "package"),
    [("nginx-keepalive", "nginx", "nginx"), ("redis-pool", "redis-server", "redis-server")],
)
def test_missing_server_binary_is_one_line_and_exit_4(
    tmp_path: Path, scenario: str, program: str, package: str
) -> None:
    env = {**os.environ, "PATH": _path_without(tmp_path, program)}
    done = subprocess.run(
        [TCPDOCTOR, "lab", "run", scenario, "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 4, done.stderr
    line = _one_line_error(done)
    assert f"`{program}`" in line and f"Debian package {package}" in line


def test_missing_redis_python_package_is_one_line_and_exit_4() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"  # as if redis-py were not installed
        "from tcpdoctor.cli.main import main\n"
        "main(['lab', 'run', 'redis-pool', '--quick'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 4, done.stderr
    line = _one_line_error(done)
    assert "Python package `redis`" in line and "tcpdoctor[lab]" in line
