"""loss_probe_timeout() and blackhole_retransmissions() against schedules worked out by
hand from the kernel's rules (tcp_schedule_loss_probe(), tcp_retransmit_timer(),
retransmits_timed_out()); the measured figures quoted come from the lab on 6.18, HZ=250."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tcpdoctor.errors import InputError
from tcpdoctor.kernel import timing
from tcpdoctor.kernel.timing import GiveUpReason

VETH_SRTT = 50e-6  # an RTT of microseconds, as over veth


def test_loss_probe_on_veth_is_the_rto_in_ticks() -> None:
    # 2 x 50 us + rto_min 200 ms = 200.1 ms -> usecs_to_jiffies = ceil(50.025) = 51 ticks
    # = 204 ms at HZ=250; min with the armed RTO (204 ms) keeps 204 ms.
    assert timing.loss_probe_timeout(VETH_SRTT, 0.204, hz=250) == pytest.approx(0.204)


def test_loss_probe_never_later_than_the_rto() -> None:
    # 2 x 100 ms + 200 ms = 400 ms, but the RTO (300 ms) fires first: probe at 300 ms.
    assert timing.loss_probe_timeout(0.1, 0.3) == pytest.approx(0.3)


def test_loss_probe_with_more_than_one_packet_skips_the_delayed_ack_room() -> None:
    # 2 x 10 ms + TCP_TIMEOUT_MIN_US (2 ms) = 22 ms.
    assert timing.loss_probe_timeout(0.01, 0.5, packets_out=2) == pytest.approx(0.022)


def test_retries2_3_budget_starts_at_the_first_rto_retransmission() -> None:
    # Loss probe at 0.204; first RTO expiry at 0.408 retransmits and sets retrans_stamp.
    # Budget (2^4 - 1) x 0.2 = 3.0 s from 0.408: expiries at 0.816 (0.408 in), 1.632
    # (1.224), 3.264 (2.856 < 3.0) retransmit; 6.528 (6.12) gives up.
    # [measured: 0, 0.206, 0.414, 0.830, 1.662, 3.326; ETIMEDOUT at 6.75]
    plan = timing.blackhole_retransmissions(3, initial_rto=0.204, srtt=VETH_SRTT, hz=250)
    assert plan.loss_probe_at == pytest.approx(0.204)
    assert plan.transmit_times == pytest.approx((0.0, 0.204, 0.408, 0.816, 1.632, 3.264))
    assert plan.budget == pytest.approx(3.0)
    assert plan.budget_from == pytest.approx(0.408)
    assert plan.gives_up_at == pytest.approx(6.528)
    assert plan.headroom == pytest.approx(0.144)  # 3.0 - (3.264 - 0.408)
    assert plan.retransmissions == 5
    assert plan.waits == pytest.approx((0.204, 0.204, 0.408, 0.816, 1.632, 3.264))
    assert plan.reason is GiveUpReason.TIME_BUDGET


def test_without_a_loss_probe_the_clock_still_starts_late() -> None:
    # First RTO 0.2 (retrans_stamp); budget 7 x 0.2 = 1.4: expiries 0.6 (0.4 in) and
    # 1.4 (1.2 in) retransmit, 3.0 (2.8) gives up. established_give_up() walks the same
    # timer (it used to count from the original send and stop at 1.4 s).
    plan = timing.blackhole_retransmissions(2, initial_rto=0.2, srtt=0.0, loss_probe=False)
    assert plan.loss_probe_at is None
    assert plan.transmit_times == pytest.approx((0.0, 0.2, 0.6, 1.4))
    assert plan.gives_up_at == pytest.approx(3.0)
    assert timing.established_give_up(2, initial_rto=0.2).schedule.gives_up_at == 3.0


def test_rto_max_caps_the_backoff_and_shrinks_the_budget() -> None:
    # rto_max 1 s: thresh = ilog2(1 / 0.2) = 2, budget 7 x 0.2 + 1 x 1 = 2.4 s from 0.408.
    # RTOs 0.408, 0.816, then 1.0: expiries 0.816, 1.632, 2.632 (2.224 in) retransmit,
    # 3.632 (3.224) gives up. [measured: ... 1.674, 2.698; ETIMEDOUT at 3.72]
    plan = timing.blackhole_retransmissions(
        3, initial_rto=0.204, srtt=VETH_SRTT, rto_max=1.0, hz=250
    )
    assert plan.budget == pytest.approx(2.4)
    assert plan.transmit_times == pytest.approx((0.0, 0.204, 0.408, 0.816, 1.632, 2.632))
    assert plan.gives_up_at == pytest.approx(3.632)


def test_user_timeout_replaces_the_budget_and_clamps_the_last_wait() -> None:
    # retrans_stamp 0.2; RTO 0.4 fits (expiry 0.6, 0.4 in); RTO 0.8 is clamped to the
    # 0.6 s left: expiry 1.2, 1.0 s in >= 1.0: give up.
    plan = timing.blackhole_retransmissions(
        15, initial_rto=0.2, srtt=0.0, loss_probe=False, user_timeout=1.0
    )
    assert plan.transmit_times == pytest.approx((0.0, 0.2, 0.6))
    assert plan.gives_up_at == pytest.approx(1.2)
    assert plan.reason is GiveUpReason.USER_TIMEOUT


def test_retries2_0_still_retransmits_once_by_rto() -> None:
    # The first RTO expiry never gives up (no retransmission yet); the next one is past
    # the 0.2 s budget. No expiry came close: no headroom to speak of.
    plan = timing.blackhole_retransmissions(0, initial_rto=0.204, srtt=VETH_SRTT, hz=250)
    assert plan.transmit_times == pytest.approx((0.0, 0.204, 0.408))
    assert plan.gives_up_at == pytest.approx(0.816)
    assert plan.headroom is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: timing.blackhole_retransmissions(-1, initial_rto=0.2, srtt=0.0),
        lambda: timing.blackhole_retransmissions(3, initial_rto=0.0, srtt=0.0),
        lambda: timing.blackhole_retransmissions(3, initial_rto=0.2, srtt=-1.0),
        lambda: timing.blackhole_retransmissions(3, initial_rto=0.2, srtt=0.0, rto_max=0.5),
        lambda: timing.loss_probe_timeout(0.0, 0.2, packets_out=0),
    ],
)
def test_bad_arguments_are_input_errors(call: Callable[[], object]) -> None:
    with pytest.raises(InputError):
        call()


def test_rto_min_is_kept_in_ticks() -> None:
    # tcp_rto_min_us=50000 is stored as usecs_to_jiffies() = ceil(12.5) = 13 ticks = 52 ms
    # at HZ=250; an RTT of 41 us then gives 52.041 ms -> 14 ticks = 56 ms, and the loss
    # probe (2 x 41 us + 52 ms -> 14 ticks) also fires at 56 ms. [measured on 6.18: 56 ms]
    assert timing.rto_for_rtt(41e-6, rto_min=0.05, hz=250).rto == pytest.approx(0.056)
    estimator = timing.RttEstimator(rto_min=0.05, hz=250)
    assert estimator.sample(41e-6).rto == pytest.approx(0.056)
    assert timing.loss_probe_timeout(41e-6, 0.056, rto_min=0.05, hz=250) == pytest.approx(0.056)
    # Without HZ nothing is rounded.
    assert timing.rto_for_rtt(41e-6, rto_min=0.05).rto == pytest.approx(0.050041)


def test_the_fin_wait2_floor_is_taken_in_ticks() -> None:
    # (rto << 2) - (rto >> 1) in jiffies: 51 ticks -> 204 - 25 = 179 ticks = 716 ms at
    # HZ=250; in microseconds the half tick is not lost: 714 ms.
    assert timing.fin_wait2_lifetime(0, rto=0.204, hz=250).lifetime == pytest.approx(0.716)
    assert timing.fin_wait2_lifetime(0, rto=0.204).lifetime == pytest.approx(0.714)
    assert timing.fin_wait2_lifetime(0, rto=0.208, hz=250).lifetime == pytest.approx(0.728)
