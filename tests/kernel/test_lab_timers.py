"""The timer scenarios on the real kernel, through the CLI as a user runs them.

Each run compares what it measured with what kernel/ predicts and says so in `agree`; the
tests also check the numbers themselves against the kernel's schedule with the lab's
tolerance (max(4 ms, 12.5 %) plus the timer wheel's lateness at this kernel's HZ), so a run
that "agrees" by checking nothing would still fail here. Runs are sequential: on a 2-core
machine parallel runs would add their own lateness to the timers being measured.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from support.netns import tcpdoctor
from tcpdoctor.kernel import timing
from tcpdoctor.lab._hz import kernel_hz
from tcpdoctor.lab.pcap import TcpFlags, read_pcap

pytestmark = pytest.mark.kernel

RUN_TIMEOUT_S = 90


def run_lab(name: str, *flags: str) -> dict[str, Any]:
    done = tcpdoctor("lab", "run", name, "--quick", "--json", *flags, timeout=RUN_TIMEOUT_S)
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert (done.returncode == 0) is result["agree"]
    return result


def explain(result: dict[str, Any]) -> str:
    return f"{result['verdict']}\nmeasured={result['measured']}"


def numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(", ")] if text and text != "none" else []


def near(measured: float, expected: float, *, chain: tuple[float, ...] = ()) -> bool:
    """The lab's rule: max(4 ms, 12.5 %) either side, plus the lateness of every timer in
    the chain that led there on the late side (a timer never fires early)."""
    hz = kernel_hz()
    margin = max(0.004, 0.125 * expected)
    slack = sum(hz.max_lateness(w) for w in (chain or (expected,)))
    return expected - margin <= measured <= expected + margin + slack


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in pairwise(times)]


def test_syn_retries_follow_the_linear_then_doubling_schedule(tmp_path: Path) -> None:
    pcap = tmp_path / "syn.pcap"
    result = run_lab("syn-retries", "--pcap", str(pcap))
    assert result["agree"], explain(result)
    measured, sysctls = result["measured"], result["sysctls"]["client"]
    linear = int(sysctls.get("net.ipv4.tcp_syn_linear_timeouts", "0"))
    model = timing.syn_give_up(2, linear_timeouts=linear)
    wanted = [0.0, *model.schedule.retransmit_times]
    syns = numbers(measured["syn_times"])
    assert len(syns) == len(wanted) == measured["syns"]
    for got, want in zip(gaps(syns), gaps(wanted), strict=True):
        assert near(got, want), (syns, wanted)
    assert measured["error"] == "ETIMEDOUT"
    assert near(measured["gives_up_at"], model.schedule.gives_up_at, chain=model.schedule.waits)
    # The saved capture holds exactly those SYNs and nothing from the server.
    segments = read_pcap(pcap).segments
    assert sum(1 for s in segments if s.flags & TcpFlags.SYN) == len(syns)
    assert all(s.outgoing for s in segments)


def test_retransmissions_back_off_and_give_up_after_the_retries2_budget() -> None:
    result = run_lab("retransmission-timeout")
    assert result["agree"], explain(result)
    measured, expected = result["measured"], result["expected"]
    first_rto = expected["first_rto_s"]
    assert measured["first_rto_s"] == pytest.approx(first_rto, abs=0.005)
    assert 0.2 <= first_rto < 0.25  # veth: the 200 ms minimum, rounded up to a tick
    plan = timing.blackhole_retransmissions(3, initial_rto=first_rto, srtt=expected["srtt_s"])
    times = numbers(measured["transmit_times"])
    assert len(times) == len(plan.transmit_times) == 6  # original, probe, four RTOs
    for got, want in zip(gaps(times), gaps(list(plan.transmit_times)), strict=True):
        assert near(got, want), (times, plan.transmit_times)
    assert measured["error"] == "ETIMEDOUT"
    assert near(measured["gives_up_at"], plan.gives_up_at, chain=plan.waits)
    # Not what a budget counted from the original send would give (3.26 s, three RTOs).
    assert measured["gives_up_at"] > 2 * plan.budget


def test_keepalive_declares_the_peer_dead_and_the_plain_connection_stays() -> None:
    result = run_lab("keepalive-dead-peer")
    assert result["agree"], explain(result)
    measured = result["measured"]
    model = timing.keepalive_detection(2, 1, 3)
    probes = numbers(measured["probe_times"])
    assert len(probes) == 3
    assert near(probes[0], 2.0)
    for got in gaps(probes):
        assert near(got, 1.0)
    assert measured["error"] == "ETIMEDOUT" and measured["rst_sent"] == 1
    assert near(measured["detected_at"], model.detected_at, chain=(2.0, 1.0, 1.0, 1.0))
    # Without keepalive: still ESTABLISHED after the other one was declared dead.
    assert measured["control_state"] == "ESTABLISHED"
    assert measured["control_checked_at"] >= measured["detected_at"]
    assert measured["control_packets_after_dark"] == 0


def test_keepalive_with_user_timeout_aborts_after_the_first_probe() -> None:
    result = run_lab("keepalive-dead-peer", "--user-timeout", "1500")
    assert result["agree"], explain(result)
    measured = result["measured"]
    model = timing.keepalive_detection(2, 1, 3, user_timeout=1.5)
    assert model.detected_at == 3.0 and model.probes_sent == 1
    assert len(numbers(measured["probe_times"])) == 1
    assert near(measured["detected_at"], 3.0, chain=(2.0, 1.0))
    assert measured["control_state"] == "ESTABLISHED"


@pytest.mark.parametrize(
    ("fin_timeout", "full", "minisock"),
    [("3", None, 3.0), ("62", 2.0, 2.0)],  # 62 > 60: 2 x (62 - 60), not 62 s
)
def test_fin_wait2_lifetime(fin_timeout: str, full: float | None, minisock: float) -> None:
    result = run_lab("fin-wait2-timeout", "--fin-timeout", fin_timeout)
    assert result["agree"], explain(result)
    measured = result["measured"]
    step = measured["sample_step_s"]
    assert step < 0.1
    lifetime = (full or 0.0) + minisock
    assert near(measured["lifetime_s"] - step, lifetime, chain=(full or minisock, minisock))
    assert measured["minisock_timer_armed_s"] == pytest.approx(minisock, abs=step + 0.01)
    if full is None:
        assert measured["outcome"] == "minisock"
        return
    assert measured["outcome"] == "full_socket_then_minisock"
    assert near(measured["full_socket_s"] - step, full)
    assert measured["full_timer_armed_s"] == pytest.approx(full, abs=step + 0.01)
    assert measured["lifetime_s"] < 10  # nowhere near the nominal 62 s
