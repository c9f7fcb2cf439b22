"""The timer scenarios' expectations (from kernel/ formulas) and verdicts over synthetic
measurements: they agree when the numbers fit the kernel's schedule and disagree when a
schedule is wrong (a pre-6.5 SYN backoff, a give-up counted from the original send, a
FIN_WAIT2 that lived the nominal tcp_fin_timeout ...)."""

from __future__ import annotations

import socket
from itertools import accumulate

import pytest

from tcpdoctor.kernel.timing import timer_slack
from tcpdoctor.lab.model import Check
from tcpdoctor.lab.pcap import Flow, Segment, TcpFlags
from tcpdoctor.lab.scenarios import (
    _fin_wait2_timeout_model as fin,
)
from tcpdoctor.lab.scenarios import (
    _keepalive_dead_peer_model as ka,
)
from tcpdoctor.lab.scenarios import (
    _retransmission_timeout_model as rto,
)
from tcpdoctor.lab.scenarios import (
    _syn_retries_model as syn,
)
from tcpdoctor.lab.scenarios._timer_model import (
    Schedule,
    early_give_up,
    no_lateness,
    rtt_samples,
    wait_checks,
)
from tcpdoctor.lab.scenarios._timer_plot import schedule_points


def late(seconds: float) -> float:
    """The timer-wheel lateness at HZ=250, as the lab allows it on the CI machine."""
    return timer_slack(seconds, 250).max_lateness


def failed(checks: tuple[Check, ...]) -> set[str]:
    return {c.name for c in checks if not c.agree}


# --- shared pieces ------------------------------------------------------------------------


def test_wait_checks_flag_missing_and_extra_waits() -> None:
    checks = wait_checks("gap", "gap", [1.0, 1.0], [1.02, 1.03, 2.0], late, basis="x")
    assert [c.agree for c in checks] == [True, True, False]
    assert checks[2].expected is None and checks[2].measured == 2.0
    short = wait_checks("gap", "gap", [1.0, 1.0], [1.02], late, basis="x")
    assert [c.measured for c in short] == [1.02, None] and not short[1].agree


def test_a_timer_never_fires_early() -> None:
    (check,) = wait_checks("gap", "gap", [1.0], [0.8], late, basis="x")
    assert not check.agree  # 0.8 < 1 - 12.5 %


def test_early_give_up_needs_lateness_beyond_the_headroom() -> None:
    # Expiries after retrans_stamp 0.408: 0.816, 1.632, 3.264, 6.528 with a 6.2 s budget
    # (tcp_retries2=4): at 6.528 only 6.12 s have passed nominally, 0.08 s short. Timers of
    # 0.408 / 0.816 / 1.632 (32 ms each) and 3.264 s (256 ms) may add 352 ms: enough.
    expiries = (0.408, 0.816, 1.632, 3.264, 6.528)
    found = early_give_up(expiries, 0.408, 6.2, late, first_can_give_up=False)
    assert found is not None and found.at == 6.528
    assert found.headroom == pytest.approx(0.08)
    assert found.lateness == pytest.approx(0.032 * 3 + 0.256)
    assert early_give_up(expiries, 0.408, 6.2, no_lateness, first_can_give_up=False) is None
    # tcp_retries2=3 (3.0 s): at 3.264, 0.144 s short; 96 ms of lateness is not enough.
    assert early_give_up(expiries[:4], 0.408, 3.0, late, first_can_give_up=False) is None


def test_schedule_cut_at_an_expiry() -> None:
    plan = Schedule((0.0, 1.0, 2.0, 3.0), 5.0)
    assert plan.gaps == (1.0, 1.0, 1.0) and plan.waits == (1.0, 1.0, 1.0, 2.0)
    assert plan.cut_at(3.0) == Schedule((0.0, 1.0, 2.0), 3.0)


# --- syn-retries --------------------------------------------------------------------------


def syn_observed(
    times: tuple[float, ...], error_at: float, error: str = "ETIMEDOUT"
) -> syn.SynObserved:
    return syn.SynObserved(times, error, error_at, False)


def test_syn_expectation_with_two_retries_and_linear_timeouts() -> None:
    exp = syn.expect(syn.SynKnobs(2, 4, 120.0), late)
    # Five 1 s waits (L + 1 = 5), then the 2 s wait meets the 7 s budget
    # (tcp_model_timeout(2, 1 s) = 7 s) before the count limit of 6.
    assert exp.nominal.transmits == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)
    assert exp.nominal.gives_up_at == 7.0
    assert exp.sooner is None
    assert exp.as_dict()["reason"] == "time_budget"


def test_syn_measured_on_6_18_agrees() -> None:
    exp = syn.expect(syn.SynKnobs(2, 4, 120.0), late)
    got = syn_observed((0.0, 1.011, 2.035, 3.059, 4.087, 5.111), 7.123)  # a real run
    checks = syn.compare(exp, got, late)
    assert failed(checks) == set()
    line = syn.verdict_line(exp, got, checks)
    assert "-> agree" in line and "gives up on time" in line


def test_syn_pre_6_5_backoff_disagrees() -> None:
    # What a kernel without linear timeouts would do: 1, 3 -> 7 s. Wrong here.
    exp = syn.expect(syn.SynKnobs(2, 4, 120.0), late)
    got = syn_observed((0.0, 1.0, 3.0), 7.0)
    checks = syn.compare(exp, got, late)
    assert {"syns", "gap_2", "gap_3"} <= failed(checks)
    assert "DISAGREE" in syn.verdict_line(exp, got, checks)


def test_syncnt_replaces_the_sysctl() -> None:
    # TCP_SYNCNT=1: budget tcp_model_timeout(1, 1 s) = 3 s, SYNs at 0, 1, 2.
    exp = syn.expect(syn.SynKnobs(6, 4, 120.0, syncnt=1), late)
    assert exp.nominal == Schedule((0.0, 1.0, 2.0), 3.0)
    knobs = syn.SynKnobs.from_text(
        {syn.SYN_RETRIES: "6", syn.LINEAR_TIMEOUTS: None, syn.RTO_MAX_MS: None}, syncnt=2
    )
    assert (knobs.retries, knobs.linear_timeouts, knobs.rto_max) == (2, 0, 120.0)


def test_syn_wrong_error_disagrees() -> None:
    exp = syn.expect(syn.SynKnobs(2, 4, 120.0), late)
    got = syn_observed((0.0, 1.0, 2.0, 3.0, 4.0, 5.0), 0.001, "ECONNREFUSED")
    assert {"error", "gives_up_at"} <= failed(syn.compare(exp, got, late))


# --- retransmission-timeout ---------------------------------------------------------------

VETH = rto.RtoKnobs(retries2=3, rto_min=0.2, rto_max=120.0, loss_probe=True, hz=250)


def rto_observed(
    times: tuple[float, ...], error_at: float, tcpi_rto: float = 0.204
) -> rto.RtoObserved:
    return rto.RtoObserved((39e-6, 10e-6), tcpi_rto, 56e-6, times, "ETIMEDOUT", error_at)


def test_first_rto_comes_from_the_estimator_in_ticks() -> None:
    exp = rto.expect(VETH, [39e-6, 10e-6], late)
    assert exp.estimate.rto == pytest.approx(0.204)  # 200.03 ms -> 51 ticks at HZ=250
    assert exp.nominal.transmits == pytest.approx((0.0, 0.204, 0.408, 0.816, 1.632, 3.264))
    assert "rounded up to 51 ticks" in rto._first_rto(exp)


def test_rto_measured_on_6_18_agrees() -> None:
    exp = rto.expect(VETH, [39e-6, 10e-6], late)
    got = rto_observed((0.0, 0.208, 0.42, 0.84, 1.672, 3.336), 6.728)  # a real run
    checks = rto.compare(exp, got, late)
    assert failed(checks) == set()
    assert "first RTO retransmission at 0.408 s" in rto.verdict_line(exp, got, checks)


def test_a_give_up_counted_from_the_original_send_disagrees() -> None:
    # The old established_give_up() view (budget from the send): ETIMEDOUT at 3.264 s.
    exp = rto.expect(VETH, [39e-6], late)
    got = rto_observed((0.0, 0.204, 0.408, 0.816, 1.632), 3.264)
    assert {"transmissions", "gap_5", "gives_up_at"} <= failed(rto.compare(exp, got, late))


def test_late_timers_may_spend_the_budget_one_expiry_sooner() -> None:
    # tcp_retries2=4 (6.2 s): nominally one more retransmission at 6.528 s and ETIMEDOUT at
    # 13.056 s; measured on 6.18 the kernel gave up at the 6.528 s expiry (6.846 s late).
    knobs = rto.RtoKnobs(4, 0.2, 120.0, True, 250)
    exp = rto.expect(knobs, [39e-6], late)
    assert exp.sooner is not None and len(exp.nominal.transmits) == 7
    got = rto_observed((0.0, 0.206, 0.414, 0.83, 1.662, 3.326), 6.846)
    checks = rto.compare(exp, got, late)
    assert failed(checks) == set()
    assert "one expiry sooner" in rto.verdict_line(exp, got, checks)
    strict = rto.expect(knobs, [39e-6], no_lateness)  # no lateness, no excuse
    assert "transmissions" in failed(rto.compare(strict, got, no_lateness))


def test_knobs_from_proc_text() -> None:
    client = {
        rto.RETRIES2: "3",
        rto.RTO_MIN_US: "200000",
        rto.RTO_MAX_MS: None,  # kernel < 6.15
        rto.EARLY_RETRANS: "3",
        rto.SACK: "1",
    }
    assert rto.RtoKnobs.from_text(client, {rto.SACK: "1"}, 250) == VETH
    no_sack = rto.RtoKnobs.from_text(client, {rto.SACK: "0"}, 250)
    assert not no_sack.loss_probe


def segment(t: float, flow: Flow, flags: TcpFlags, seq: int, ack: int, size: int = 0) -> Segment:
    return Segment(
        t, 2, True, socket.AF_INET, flow.src, flow.sport, flow.dst, flow.dport, flags, seq, ack,
        size, 502,
    )  # fmt: skip


def test_rtt_samples_from_a_capture() -> None:
    out = Flow("198.18.0.1", 40000, "198.18.1.2", 8080)
    back = out.reverse()
    a = TcpFlags.ACK
    segments = [
        segment(10.0, out, TcpFlags.SYN, 100, 0),
        segment(10.000040, back, TcpFlags.SYN | a, 500, 101),
        segment(10.000050, out, a, 101, 501),
        segment(10.000100, out, a | TcpFlags.PSH, 101, 501, 4),
        segment(10.000110, back, a, 501, 105),  # acks the request: 10 us
        segment(10.000200, back, a | TcpFlags.PSH, 501, 105, 3),
        segment(11.0, out, a | TcpFlags.PSH, 105, 504, 100),  # after the path went dark
    ]
    samples = rtt_samples(segments, out, before=10.5)
    assert samples == pytest.approx((40e-6, 10e-6))


# --- keepalive-dead-peer ------------------------------------------------------------------


def ka_observed(
    probes: tuple[float, ...], error_at: float, *, state: str | None = "ESTABLISHED", rst: int = 1
) -> ka.KeepaliveObserved:
    return ka.KeepaliveObserved(probes, "ETIMEDOUT", error_at, rst, state, error_at + 0.002, 0)


def test_keepalive_detection_at_idle_plus_cnt_times_intvl() -> None:
    exp = ka.expect(ka.KeepaliveKnobs(2, 1, 3), late)
    assert exp.nominal == Schedule((0.0, 2.0, 3.0, 4.0), 5.0)
    got = ka_observed((2.015, 3.039, 4.063), 5.091)  # a real run
    checks = ka.compare(exp, got, late)
    assert failed(checks) == set()
    assert "2 + 3 x 1 = 5 s" in ka.verdict_line(exp, got, checks)


def test_keepalive_control_that_died_or_no_rst_disagrees() -> None:
    exp = ka.expect(ka.KeepaliveKnobs(2, 1, 3), late)
    got = ka_observed((2.015, 3.039, 4.063), 5.091, state=None, rst=0)
    assert failed(ka.compare(exp, got, late)) == {"control_state", "rst_sent"}


def test_keepalive_probes_counted_as_nine_defaults_disagree() -> None:
    exp = ka.expect(ka.KeepaliveKnobs(2, 1, 3), late)
    nine = tuple(2.0 + i for i in range(9))
    assert {"probes", "gives_up_at"} <= failed(ka.compare(exp, ka_observed(nine, 11.0), late))


def test_user_timeout_cuts_keepalive_after_the_first_probe() -> None:
    # TCP_USER_TIMEOUT 1500 ms: the first firing (2 s) has no probe out yet and sends one;
    # the next (3 s) is past 1.5 s with a probe out: abort. [measured 3.04 s, notes 5.4]
    exp = ka.expect(ka.KeepaliveKnobs(2, 1, 9, user_timeout_ms=1500), late)
    assert exp.nominal == Schedule((0.0, 2.0), 3.0)
    got = ka_observed((2.036,), 3.056)
    assert failed(ka.compare(exp, got, late)) == set()


# --- fin-wait2-timeout --------------------------------------------------------------------


def fin_samples(
    phases: list[tuple[float, str | None, int]], step: float = 0.02
) -> list[fin.SocketSample]:
    """Samples every `step` s: (until, state, timer) phases, expiries counting down."""
    samples: list[fin.SocketSample] = []
    t, start = step, 0.0
    for until, state, timer in phases:
        while t < until:
            samples.append(fin.SocketSample(t, state, timer, max(0.0, until - t)))
            t = round(t + step, 6)
        start = until
    samples.append(fin.SocketSample(t, None))
    del start
    return samples


# Handshake and request over veth, then the server's delayed ACK of our FIN (44 ms).
FIN_RTTS = (40e-6, 10e-6, 0.044)


def test_fin_timeout_62_lives_two_phases_of_two_seconds() -> None:
    exp = fin.expect(fin.FinKnobs(62, 0.2, 250), FIN_RTTS, late)
    assert exp.two_phases
    assert (exp.life.full_socket_phase, exp.life.minisock_phase, exp.lifetime) == (2.0, 2.0, 4.0)
    samples = fin_samples([(2.01, "FIN_WAIT2", 2), (4.03, "FIN_WAIT2", 3)])
    got = fin.measure(samples, 0.04)
    assert got.outcome == fin.FULL_THEN_MINI
    checks = fin.compare(exp, got, 0.004)
    assert failed(checks) == set()
    assert "2 x (F - 60) = 4 s, not 62 s" in fin.verdict_line(exp, got, checks)


def test_a_fin_wait2_that_lived_the_nominal_62_s_disagrees() -> None:
    exp = fin.expect(fin.FinKnobs(62, 0.2, 250), FIN_RTTS, late)
    got = fin.measure(fin_samples([(62.0, "FIN_WAIT2", 3)], step=0.5))
    assert {"outcome", "lifetime_s"} <= failed(fin.compare(exp, got, 0.004))


def test_fin_timeout_3_is_one_minisock_phase() -> None:
    exp = fin.expect(fin.FinKnobs(3, 0.2, 250), FIN_RTTS, late)
    got = fin.measure(fin_samples([(3.1, "FIN_WAIT2", 3)]))
    assert got.outcome == fin.MINISOCK and got.gone_at == pytest.approx(3.1, abs=0.03)
    assert failed(fin.compare(exp, got, 0.004)) == set()


def test_the_rto_floor_applies_to_a_zero_fin_timeout() -> None:
    # The FIN's ACK, delayed 44 ms, is the estimator's third sample: srtt 36 us -> 5.53 ms,
    # the variance term stays at rto_min, RTO = 205.5 ms -> 52 ticks = 208 ms (204 ms before
    # it). tcp_fin_timeout=0: floor (52 << 2) - (52 >> 1) = 182 ticks = 0.728 s as a
    # minisock. [measured on 6.18: timer armed for 0.732 s, gone after 0.766 s]
    exp = fin.expect(fin.FinKnobs(0, 0.2, 250), FIN_RTTS, late)
    assert exp.life.rto == pytest.approx(0.208)
    assert exp.lifetime == pytest.approx(0.728)
    assert any("floor decides" in line for line in fin.explain(exp))
    before_the_fin = fin.expect(fin.FinKnobs(0, 0.2, 250), FIN_RTTS[:2], late)
    assert before_the_fin.lifetime == pytest.approx(0.716)  # 51 ticks: (204 - 25) ticks


def test_fin_wait1_seen_in_the_middle_is_another_state() -> None:
    samples = [
        fin.SocketSample(-0.01, "FIN_WAIT1", 1, 0.2),  # before the ACK: not counted
        fin.SocketSample(0.02, "FIN_WAIT2", 3, 2.98),
        fin.SocketSample(1.0, "CLOSE_WAIT", 0, 0.0),
        fin.SocketSample(3.1, None),
    ]
    assert fin.measure(samples).other_states == "CLOSE_WAIT"


def test_fin_acked_at_finds_the_ack_of_our_fin() -> None:
    out = Flow("198.18.0.1", 40000, "198.18.0.2", 8080)
    a = TcpFlags.ACK
    segments = [
        segment(5.0, out, a | TcpFlags.FIN, 105, 504),
        segment(5.000020, out.reverse(), a, 504, 105),  # an old ACK: does not cover the FIN
        segment(5.041, out.reverse(), a, 504, 106),  # the delayed ACK of the FIN
    ]
    assert fin.fin_acked_at(segments, out) == 5.041
    assert fin.fin_acked_at(segments[:2], out) is None


# --- the schedule picture -----------------------------------------------------------------


def test_schedule_points_add_up_the_waits() -> None:
    exp = syn.expect(syn.SynKnobs(2, 4, 120.0), late)
    got = syn_observed((0.0, 1.0, 2.0, 3.0, 4.0, 5.0), 7.0)
    points = schedule_points(syn.compare(exp, got, late), "gap", "SYN", ("gives_up_at",))
    assert [p.label for p in points] == [
        *(f"SYN {i}" for i in range(1, 6)),
        "connect() failed after",
    ]
    assert [p.expected for p in points] == pytest.approx([*accumulate([1.0] * 5), 7.0])
    assert points[-1].measured == 7.0
