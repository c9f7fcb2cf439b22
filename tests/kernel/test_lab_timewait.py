"""The closing-state lab scenarios on the real kernel, through the CLI as a user runs them:
time-wait-duration, time-wait-restart, tw-bucket-overflow, linger-reset, close-wait-leak.

Each run says in `agree` whether it matched its kernel/ prediction; these tests also check
the numbers that make each scenario's point, so a run that "agrees" by checking nothing
still fails. The two scenarios that must wait out a 60 s TIME_WAIT run side by side in
separate processes, which keeps this file near 80 s.
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
SLACK_S = 2.048  # timer_slack(60 s) at HZ=250, the CI kernel
SAMPLE_S = 0.25  # generous bound on the sampling resolution of "gone at"


def run_lab(name: str, *flags: str, timeout: float = 90) -> dict[str, Any]:
    done = tcpdoctor("lab", "run", name, "--quick", "--json", *flags, timeout=timeout)
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) is result["agree"], result["verdict"]
    return result


def explain(result: dict[str, Any]) -> str:
    return f"{result['verdict']}\nmeasured={result['measured']}\nnotes={result['notes']}"


def start(name: str, *flags: str) -> subprocess.Popen[str]:
    argv = [TCPDOCTOR, "lab", "run", name, "--quick", "--json", *flags]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=LONG_RUN_TIMEOUT_S)
    assert proc.returncode in (0, 1), err
    result: dict[str, Any] = json.loads(out)
    return result


def test_time_wait_lasts_60_s_and_a_retransmitted_fin_restarts_it(tmp_path: Path) -> None:
    """Both 60 s scenarios at once, each in its own lab process."""
    pcap = tmp_path / "restart.pcap"
    procs = {
        "duration": start("time-wait-duration"),
        "restart": start("time-wait-restart", "--pcap", str(pcap)),
    }
    try:
        results = {name: finish(proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()  # SIGTERM: the lab removes its namespaces
                proc.wait(timeout=30)
    check_duration(results["duration"])
    check_restart(results["restart"], pcap)


def check_duration(result: dict[str, Any]) -> None:
    assert result["agree"], explain(result)
    got = result["measured"]
    assert got["time_wait_sockets"] == 2 and got["server_time_wait_peak"] == 0
    # The timer is armed for exactly 60 s (to a tick and the ACK's round trip)...
    assert 59.99 <= got["timer_armed_min_s"] <= got["timer_armed_max_s"] <= 60.02
    # ...and fires late by at most one level-3 granule, never early.
    assert got["lateness_min_s"] >= -0.01
    assert got["lateness_max_s"] <= SLACK_S + got["resolution_s"] + 0.01
    assert 60.0 <= got["lifetime_min_s"] <= got["lifetime_max_s"] <= 60.0 + SLACK_S + SAMPLE_S
    buckets = result["timeline"]["buckets"]
    assert buckets[30]["states"]["client"]["TIME_WAIT"] == 2
    assert "TIME_WAIT" not in buckets[30]["states"].get("server", {})


def check_restart(result: dict[str, Any], pcap: Path) -> None:
    assert result["agree"], explain(result)
    got = result["measured"]
    assert got["acks_on_wire"] == 0
    fins = got["fins"]
    assert fins >= 2 and got["fin_retransmissions"] == fins - 1
    for k in range(fins):
        # Armed moment = the FIN's arrival, to within a tick (4 ms) and a read.
        assert abs(got[f"rearm_{k}_offset_s"]) <= 0.015, k
        # Just after each FIN the timer shows (almost) a full 60 s again.
        assert got[f"remaining_after_fin_{k}_s"] >= 59.5, k
    assert 60.0 <= got["ends_after_last_fin_s"] <= 60.0 + SLACK_S + SAMPLE_S
    # The whole TIME_WAIT = time until the last FIN + 60 s, longer than one plain 60 s.
    total = got["last_fin_after_first_s"] + got["ends_after_last_fin_s"]
    assert got["time_wait_total_s"] == pytest.approx(total, abs=1e-3)
    assert got["time_wait_total_s"] > 60.0 + got["last_fin_after_first_s"] - 0.01
    # The pcap shows the server's FIN train arriving at the client.
    segments = read_pcap(pcap).segments
    server_fins = [s for s in segments if s.sport == 8080 and s.flags & TcpFlags.FIN]
    assert len(server_fins) == fins


def test_tw_bucket_overflow_skips_time_wait_past_the_limit() -> None:
    result = run_lab("tw-bucket-overflow")
    assert result["agree"], explain(result)
    got = result["measured"]
    assert result["sysctls"]["client"]["net.ipv4.tcp_max_tw_buckets"] == "3"
    assert got["connections"] == 6
    assert got["time_wait_kept"] == got["time_wait_peak"] == got["sockstat_tw_at_end"] == 3
    assert got["kept_are_the_first_closes"] is True
    assert got["overflowed"] == 3  # TcpExt.TCPTimeWaitOverflow, read inside the namespace
    assert got["tw_counter_rise"] == 3 and got["out_rsts"] == 0
    steps = [e["detail"] for e in result["timeline"]["events"] if e["kind"] == "counters"]
    assert steps == [f"tw={min(i, 3)} overflow={max(0, i - 3)}" for i in range(1, 7)]


def test_zero_linger_close_resets_and_plain_close_sends_fin(tmp_path: Path) -> None:
    pcap = tmp_path / "linger.pcap"
    result = run_lab("linger-reset", "--pcap", str(pcap))
    assert result["agree"], explain(result)
    got = result["measured"]
    assert (got["plain_sends"], got["plain_peer_reads"], got["plain_time_wait"]) == (
        "FIN",
        "EOF",
        2,
    )
    for mode in ("linger0", "unread"):
        assert got[f"{mode}_sends"] == "RST" and got[f"{mode}_peer_reads"] == "ECONNRESET"
        assert got[f"{mode}_time_wait"] == 0 and got[f"{mode}_left_behind"] == 0
    assert got["client_tcp_abort_on_data"] == 2 and got["client_tcp_abort_on_close"] == 2
    assert got["client_out_rsts"] == 4 and got["server_estab_resets"] == 4
    segments = read_pcap(pcap).segments
    rsts = {s.sport for s in segments if s.outgoing and s.flags & TcpFlags.RST}
    fins = {s.sport for s in segments if s.outgoing and s.flags & TcpFlags.FIN}
    assert len(rsts) == 4 and len(fins) == 2 and not rsts & fins


def test_close_wait_piles_up_and_the_doctor_names_the_server() -> None:
    result = run_lab("close-wait-leak")
    assert result["agree"], explain(result)
    got = result["measured"]
    assert got["server_close_wait"] == got["server_close_wait_peak"] == 12
    assert got["close_wait_timer"] == "off"
    assert got["client_fin_wait2"] == 12
    # tcp_fin_timeout=3 in the client: 3 s from the FIN's ACK, + up to 0.256 s of slack.
    assert 3.0 <= got["fin_wait2_lifetime_min_s"] <= got["fin_wait2_lifetime_max_s"] <= 3.6
    assert got["minisock_counter_rise"] == 12  # TWKilled: a minisock timeout <= 4 s
    assert got["doctor_finding"] is True
    assert got["doctor_pid"] == got["server_pid"] and got["doctor_close_wait"] == 12
    last = result["timeline"]["buckets"][-1]["states"]
    assert last["server"]["CLOSE_WAIT"] == 12 and "FIN_WAIT2" not in last.get("client", {})
