"""port-exhaustion on the real kernel, every variant, through the CLI as a user runs it.

Each run compares what it measured with what kernel/ predicts and says so in `agree`; the
tests also check the numbers that make each variant's point, so a run that "agrees" by
checking nothing would still fail here. The two variants that must wait out a 60 s
TIME_WAIT run side by side in separate processes to keep the suite short.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support.netns import TCPDOCTOR, tcpdoctor
from tcpdoctor.lab.pcap import TcpFlags, read_pcap

pytestmark = pytest.mark.kernel

LONG_RUN_TIMEOUT_S = 150
QUICK_PORTS = 32
QUICK_RATE = 64.0


def run_lab(*flags: str, timeout: float = 90) -> dict[str, Any]:
    done = tcpdoctor("lab", "run", "port-exhaustion", "--quick", "--json", *flags, timeout=timeout)
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) is result["agree"]
    return result


def explain(result: dict[str, Any]) -> str:
    return f"{result['verdict']}\nmeasured={result['measured']}"


def checks(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in result["checks"]}


def test_time_wait_exhausts_the_ports_then_they_come_back_and_tw_reuse_2_changes_nothing() -> None:
    """Default (tcp_tw_reuse=2, loopback only) and an explicit --tw-reuse 2, concurrently."""
    argv = [TCPDOCTOR, "lab", "run", "port-exhaustion", "--quick", "--json"]
    procs = {
        "default": subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ),
        "tw-reuse-2": subprocess.Popen(
            [*argv, "--tw-reuse", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ),
    }
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=LONG_RUN_TIMEOUT_S)
            assert proc.returncode in (0, 1), err
            results[name] = json.loads(out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name, result in results.items():
        assert result["agree"], f"{name}: {explain(result)}"
        measured, expected = result["measured"], result["expected"]
        assert expected["tw_reuse_applies"] is False
        assert measured["successes_before_failure"] == QUICK_PORTS
        assert measured["errors"] == "EADDRNOTAVAIL"
        # The on/off pattern: failures for most of a minute, then successes again.
        assert 55.0 < measured["failure_window_s"] < 70.0
        assert measured["successes"] > QUICK_PORTS
        assert measured["client_time_wait_peak"] == QUICK_PORTS
        assert measured["tw_recycled"] == 0
        buckets = result["timeline"]["buckets"]
        assert buckets[30]["successes"] == 0 and buckets[30]["failures"]["EADDRNOTAVAIL"] > 0
        assert buckets[30]["states"]["client"]["TIME_WAIT"] == QUICK_PORTS
        kinds = [e["kind"] for e in result["timeline"]["events"]]
        assert kinds.index("first_failure") < kinds.index("recovery")
    assert results["tw-reuse-2"]["sysctls"]["client"]["net.ipv4.tcp_tw_reuse"] == "2"


def test_tw_reuse_1_gives_ports_back_after_the_reuse_delay() -> None:
    result = run_lab("--tw-reuse", "1")
    assert result["agree"], explain(result)
    measured = result["measured"]
    assert result["expected"]["tw_reuse_applies"] is True
    assert measured["successes_before_failure"] == QUICK_PORTS
    assert 0.9 < measured["ports_back_after_close"] < 1.2  # tcp_tw_reuse_delay, not 60 s
    assert measured["tw_recycled"] > 0
    assert measured["sustained_rate"] == pytest.approx(QUICK_PORTS / 1.0, rel=0.125)


def test_tw_reuse_1_below_the_limit_never_fails() -> None:
    result = run_lab("--tw-reuse", "1", "--rate", "16")
    assert result["agree"], explain(result)
    measured = result["measured"]
    assert measured["failures"] == 0
    assert measured["successes"] > QUICK_PORTS  # more connections than ports...
    assert measured["tw_recycled"] == measured["successes"] - measured["distinct_client_ports"]


def test_pool_has_no_time_wait_and_no_failures() -> None:
    result = run_lab("--pool")
    assert result["agree"], explain(result)
    measured = result["measured"]
    assert measured["failures"] == 0 and measured["successes"] == result["expected"]["attempts"]
    assert measured["distinct_client_ports"] == 1
    assert measured["client_time_wait_peak"] == 0


def test_server_closing_first_moves_time_wait_to_the_server(tmp_path: Path) -> None:
    pcap = tmp_path / "client.pcap"
    result = run_lab("--server-closes-first", "--pcap", str(pcap))
    assert result["agree"], explain(result)
    measured = result["measured"]
    assert measured["failures"] == 0
    assert measured["successes"] > QUICK_PORTS  # the client is not limited by its ports
    assert measured["client_time_wait_peak"] == 0
    assert measured["server_time_wait_after"] == measured["distinct_client_ports"] > 0
    # The capture on the client's link saw one SYN per connection, and the server's FIN
    # came before the client's on every one of them.
    assert result["pcap"] == str(pcap)
    segments = read_pcap(pcap).segments
    syns = [s for s in segments if s.flags & TcpFlags.SYN and not s.flags & TcpFlags.ACK]
    assert len(syns) == measured["successes"]
    first_fin: dict[tuple[int, int], str] = {}
    for s in segments:
        if s.flags & TcpFlags.FIN:
            key = (s.sport, s.dport) if s.dport == 8080 else (s.dport, s.sport)
            first_fin.setdefault(key, "client" if s.dport == 8080 else "server")
    assert first_fin and set(first_fin.values()) == {"server"}


@pytest.mark.parametrize(
    ("port_range", "rate", "first_failure_after"),
    [
        # 3 ports: the walk's window never moves, the top port is never used.
        ("40000 40002", "8", {2}),
        # 33 ports: one connect() tries 32; the 33rd succeeds only if the moving window
        # happens to cover the last free port.
        ("40000 40032", "64", {32, 33}),
    ],
)
def test_an_odd_port_range(port_range: str, rate: str, first_failure_after: set[int]) -> None:
    # tcp_tw_reuse=1 keeps these runs short (ports come back after 1 s, not 60 s).
    flags = ["--tw-reuse", "1", "--rate", rate, "--sysctl", f"ip_local_port_range={port_range}"]
    result = run_lab(*flags)
    assert result["agree"], explain(result)
    expected, measured = result["expected"], result["measured"]
    assert {expected["port_capacity"], expected["port_capacity_max"]} == first_failure_after
    assert measured["successes_before_failure"] in first_failure_after
    assert any("one connect() only tries" in note for note in result["notes"])


def test_a_small_tcp_max_tw_buckets_skips_time_wait_instead() -> None:
    result = run_lab("--sysctl", "net.ipv4.tcp_max_tw_buckets=10")
    assert result["agree"], explain(result)
    measured = result["measured"]
    assert measured["failures"] == 0
    assert measured["client_time_wait_peak"] == 10
    assert measured["tw_overflow"] == measured["successes"] - 10


def test_plot_draws_the_run(tmp_path: Path) -> None:
    picture = tmp_path / "run.png"
    result = run_lab("--pool", "--plot", str(picture))
    assert result["agree"], explain(result)
    data = picture.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
