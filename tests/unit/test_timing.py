"""Timing formulas against values worked out by hand from the kernel rules (kernel-notes)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcpdoctor.errors import InputError
from tcpdoctor.kernel import timing
from tcpdoctor.kernel.timing import FinWait2Outcome, GiveUpReason

# --- tcp_model_timeout --------------------------------------------------------------------


def test_model_timeout_default_retries2_is_924_6_s() -> None:
    # thresh = ilog2(120 / 0.2) = ilog2(600) = 9; 1023 x 0.2 + (15 - 9) x 120
    assert timing.model_timeout(15, 0.2, 120.0) == pytest.approx(924.6)


def test_model_timeout_below_threshold_is_pure_doubling() -> None:
    # retries2 = 5: (2^6 - 1) x 0.2 = 12.6 s (notes 6.4, measured case)
    assert timing.model_timeout(5, 0.2, 120.0) == pytest.approx(12.6)


def test_model_timeout_with_rto_max_10_s() -> None:
    # thresh = ilog2(50) = 5; 63 x 0.2 + 10 x 10
    assert timing.model_timeout(15, 0.2, 10.0) == pytest.approx(112.6)


def test_model_timeout_syn_base_one_second() -> None:
    # thresh = ilog2(120) = 6; boundary 6 <= 6: 127 x 1 s
    assert timing.model_timeout(6, 1.0, 120.0) == pytest.approx(127.0)


# --- established give-up ------------------------------------------------------------------


def test_established_defaults_budget_runs_from_the_first_retransmission() -> None:
    # The 924.6 s budget counts from retrans_stamp, the first RTO retransmission at 0.2 s
    # (notes 6.4 say "the original send"; measured on 6.18 it is the first retransmission).
    # RTO 0.2 doubling to 102.4, then capped at 120: expiries 0.2, 0.6, 1.4, 3.0, 6.2, 12.6,
    # 25.4, 51.0, 102.2, 204.6, then every 120 s: 324.6, 444.6, 564.6, 684.6, 804.6 and
    # 924.6 s, which is 924.4 s in, 0.2 s short of the budget: it retransmits (the 16th).
    # 1044.6 (1044.4 s in) gives up. [The old rule, from the send: 15, ETIMEDOUT at 924.6.]
    result = timing.established_give_up()
    assert result.budget == pytest.approx(924.6)
    assert result.model_budget == pytest.approx(924.6)
    assert result.linear_backoff_thresh == 9
    assert result.budget_from == pytest.approx(0.2)
    assert result.loss_probe_at is None
    assert result.schedule.retransmissions == 16
    assert result.schedule.gives_up_at == pytest.approx(1044.6)
    doubling = (0.2, 0.6, 1.4, 3.0, 6.2, 12.6, 25.4, 51.0, 102.2, 204.6)
    capped = (324.6, 444.6, 564.6, 684.6, 804.6, 924.6)
    assert result.schedule.retransmit_times == pytest.approx((*doubling, *capped))
    assert result.headroom == pytest.approx(0.2)  # 924.6 - (924.6 - 0.2)
    assert result.schedule.reason is GiveUpReason.TIME_BUDGET


def test_late_timers_can_end_the_default_schedule_at_924_6_s() -> None:
    # Worst-case lateness at HZ=250 (timer_slack) of the waits after the first
    # retransmission: 0.4, 0.8, 1.6 s (100-400 jiffies, level 1) 32 ms each; 3.2, 6.4,
    # 12.8 s (level 2) 256 ms each; 25.6, 51.2, 102.4 and six 120 s (level 3) 2.048 s each.
    # By the 924.6 s expiry: 0.096 + 0.768 + 18.432 = 19.296 s >= 0.2 s of headroom; at the
    # 804.6 s expiry 17.248 s < 120.2 s. So the kernel may give up at 924.6 s (+ lateness).
    result = timing.established_give_up(hz=250)
    assert result.sooner_give_up_at == pytest.approx(924.6)
    assert timing.established_give_up().sooner_give_up_at is None  # no HZ, no guess


def test_established_rto_max_10_s_budget_112_6() -> None:
    # thresh = ilog2(10 / 0.2) = 5, budget 63 x 0.2 + 10 x 10 = 112.6 s from 0.2 s.
    # Expiries 0.2, 0.6, 1.4, 3.0, 6.2, 12.6, then every 10 s: 22.6 ... 112.6 (112.4 s in,
    # retransmits: the 16th); 122.6 (122.4 s in) gives up. [From the send: 15, 112.6.]
    result = timing.established_give_up(15, rto_max=10.0)
    assert result.budget == pytest.approx(112.6)
    assert result.schedule.retransmissions == 16
    assert result.schedule.retransmit_times[-2:] == pytest.approx((102.6, 112.6))
    assert result.schedule.gives_up_at == pytest.approx(122.6)
    assert result.headroom == pytest.approx(0.2)
    assert max(result.schedule.waits) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("retries2", "retransmits", "gives_up"),
    [
        # budget 63 x 0.2 = 12.6: 12.6 is 12.4 s in and retransmits; 25.4 (25.2 in) gives
        # up. [From the send: 5 retransmissions, 12.6 s.]
        (5, (0.2, 0.6, 1.4, 3.0, 6.2, 12.6), 25.4),
        # budget 15 x 0.2 = 3.0: 3.0 is 2.8 s in; 6.2 (6.0 in) gives up. [Old: 3, 3.0 s.]
        (3, (0.2, 0.6, 1.4, 3.0), 6.2),
        # budget 7 x 0.2 = 1.4: 1.4 is 1.2 s in; 3.0 (2.8 in) gives up. [Old: 2, 1.4 s.]
        (2, (0.2, 0.6, 1.4), 3.0),
    ],
)
def test_established_small_retries2_one_more_retransmission(
    retries2: int, retransmits: tuple[float, ...], gives_up: float
) -> None:
    result = timing.established_give_up(retries2)
    assert result.schedule.retransmit_times == pytest.approx(retransmits)
    assert result.schedule.gives_up_at == pytest.approx(gives_up)
    assert result.headroom == pytest.approx(0.2)


def test_established_rto_base_is_constant_not_initial_rto() -> None:
    # A larger real RTO shifts the schedule but the budget still uses TCP_RTO_MIN.
    result = timing.established_give_up(5, initial_rto=0.3)
    assert result.rto_base == pytest.approx(0.2)
    assert result.budget == pytest.approx(12.6)
    # Clock from 0.3: expiries 0.9 (0.6 s in), 2.1 (1.8), 4.5 (4.2), 9.3 (9.0) retransmit;
    # 18.9 (18.6 s in >= 12.6) gives up. The old rule (from the send) also gave 18.9.
    assert result.budget_from == pytest.approx(0.3)
    assert result.schedule.gives_up_at == pytest.approx(18.9)
    assert result.schedule.retransmissions == 5
    assert result.headroom == pytest.approx(3.6)  # 12.6 - 9.0


def test_established_user_timeout_replaces_budget_and_clamps_last_rto() -> None:
    result = timing.established_give_up(15, user_timeout=5.0)
    assert result.budget == pytest.approx(5.0)
    assert result.model_budget == pytest.approx(924.6)
    # Clock from 0.2: 0.6 (0.4 s in), 1.4 (1.2), 3.0 (2.8) retransmit; the next RTO
    # (3.2 s) is clamped to the 5.0 - 2.8 = 2.2 s left: 5.2 (5.0 s in) gives up.
    # [From the send: clamped to 2.0 s, ETIMEDOUT at 5.0.]
    assert result.schedule.retransmit_times == pytest.approx((0.2, 0.6, 1.4, 3.0))
    assert result.schedule.waits[-1] == pytest.approx(2.2)
    assert result.schedule.gives_up_at == pytest.approx(5.2)
    assert result.schedule.reason is GiveUpReason.USER_TIMEOUT


def test_established_with_a_loss_probe_matches_the_lab_measurement() -> None:
    # retries2=3 on veth (RTO 204 ms, TLP at 204 ms): first RTO expiry at 0.408 starts the
    # clock; 0.816 (0.408 s in), 1.632 (1.224), 3.264 (2.856 < 3.0) retransmit; 6.528
    # (6.12 s in) gives up. [measured on 6.18: 0.206 TLP, 0.414, 0.830, 1.662, 3.326;
    # ETIMEDOUT at 6.75 s]
    result = timing.established_give_up(3, initial_rto=0.204, loss_probe=0.204, hz=250)
    assert result.loss_probe_at == pytest.approx(0.204)
    assert result.budget_from == pytest.approx(0.408)
    assert result.schedule.retransmit_times == pytest.approx((0.408, 0.816, 1.632, 3.264))
    assert result.schedule.waits[0] == pytest.approx(0.408)  # send -> TLP -> first RTO
    assert result.schedule.gives_up_at == pytest.approx(6.528)
    assert result.headroom == pytest.approx(0.144)  # 3.0 - 2.856
    # Worst-case lateness at HZ=250 of the 0.408, 0.816, 1.632 s waits (level 1): 3 x 32 ms
    # = 0.096 s < 0.144 s: no sooner give-up, as measured.
    assert result.sooner_give_up_at is None


def test_late_timers_explain_the_measured_retries2_4_give_up() -> None:
    # retries2=4, budget 31 x 0.2 = 6.2 s from 0.408: 6.528 is 6.12 s in (headroom 0.08)
    # and retransmits nominally; 13.056 (12.648 in) gives up. Lateness at HZ=250 up to
    # 6.528: 3 x 32 ms + 256 ms (the 3.264 s wait, 816 jiffies, level 2) = 0.352 >= 0.08,
    # so 6.528 may give up. [measured on 6.18: ETIMEDOUT at 6.846 s]
    result = timing.established_give_up(4, initial_rto=0.204, loss_probe=0.204, hz=250)
    assert result.schedule.gives_up_at == pytest.approx(13.056)
    assert result.headroom == pytest.approx(0.08)
    assert result.sooner_give_up_at == pytest.approx(6.528)


# --- SYN give-up --------------------------------------------------------------------------


def test_syn_defaults_131_s_with_linear_timeouts() -> None:
    result = timing.syn_give_up()
    assert result.schedule.retransmit_times == pytest.approx((1, 2, 3, 4, 5, 7, 11, 19, 35, 67))
    assert result.schedule.gives_up_at == pytest.approx(131.0)
    assert result.max_retransmits == 10
    assert result.model_budget == pytest.approx(127.0)


def test_syn_pre_6_5_schedule_is_127_s() -> None:
    result = timing.syn_give_up(6, linear_timeouts=0)
    assert result.schedule.retransmit_times == pytest.approx((1, 3, 7, 15, 31, 63))
    assert result.schedule.gives_up_at == pytest.approx(127.0)


@pytest.mark.parametrize(
    ("syn_retries", "retransmits", "gives_up", "reason"),
    [
        (5, (1, 2, 3, 4, 5, 7, 11, 19, 35), 67.0, GiveUpReason.RETRY_COUNT),
        (4, (1, 2, 3, 4, 5, 7, 11, 19), 35.0, GiveUpReason.RETRY_COUNT),
        (3, (1, 2, 3, 4, 5, 7, 11), 19.0, GiveUpReason.RETRY_COUNT),
        (2, (1, 2, 3, 4, 5), 7.0, GiveUpReason.TIME_BUDGET),
        (1, (1, 2), 3.0, GiveUpReason.TIME_BUDGET),
    ],
)
def test_syn_measured_table_notes_6_5(
    syn_retries: int,
    retransmits: tuple[int, ...],
    gives_up: float,
    reason: GiveUpReason,
) -> None:
    result = timing.syn_give_up(syn_retries)
    assert result.schedule.retransmit_times == pytest.approx(retransmits)
    assert result.schedule.gives_up_at == pytest.approx(gives_up)
    assert result.schedule.reason is reason


def test_syn_user_timeout_3_s() -> None:
    # notes 5.4: connect() with TCP_USER_TIMEOUT 3000 ms failed after 3.02 s
    result = timing.syn_give_up(user_timeout=3.0)
    assert result.schedule.retransmit_times == pytest.approx((1.0, 2.0))
    assert result.schedule.gives_up_at == pytest.approx(3.0)
    assert result.schedule.reason is GiveUpReason.USER_TIMEOUT


def test_syn_user_timeout_below_first_rto_waits_for_first_retransmission() -> None:
    # retransmits_timed_out() is false before the first retransmission.
    result = timing.syn_give_up(user_timeout=0.5)
    assert result.schedule.retransmissions == 1
    assert result.schedule.gives_up_at == pytest.approx(1.0)


# --- SYN-ACK and orphans ------------------------------------------------------------------


def test_synack_defaults_dropped_at_63_s() -> None:
    result = timing.synack_give_up()
    assert result.schedule.retransmit_times == pytest.approx((1, 3, 7, 15, 31))
    assert result.schedule.gives_up_at == pytest.approx(63.0)


def test_synack_zero_retries_drops_at_first_timeout() -> None:
    result = timing.synack_give_up(0)
    assert result.schedule.retransmissions == 0
    assert result.schedule.gives_up_at == pytest.approx(1.0)


def test_orphan_zero_means_8_budget_102_2_s_from_the_first_retransmission() -> None:
    # 0 means 8 while alive: budget (2^9 - 1) x 0.2 = 102.2 s, from retrans_stamp, the first
    # RTO retransmission at 0.2 s. RTO 0.2 doubling (never reaching 120 s, so always alive):
    # expiries 0.2, 0.6, 1.4, 3.0, 6.2, 12.6, 25.4, 51.0, 102.2 (102.0 s in, 0.2 s short:
    # retransmits, the 9th), 204.6 (204.4 s in, RTO 102.4 < 120 still alive) gives up.
    # [The old rule, from the FIN's first send: 8 retransmissions, gone at 102.2 s.]
    assert timing.effective_orphan_retries(0) == 8
    assert timing.effective_orphan_retries(0, alive=False) == 0
    result = timing.orphan_give_up(0)
    assert result.effective_retries == 8
    assert result.budget == pytest.approx(102.2)  # 511 x 0.2
    assert result.budget_from == pytest.approx(0.2)
    assert result.loss_probe_at is None
    assert result.schedule.retransmit_times == pytest.approx(
        (0.2, 0.6, 1.4, 3.0, 6.2, 12.6, 25.4, 51.0, 102.2)
    )
    assert result.schedule.gives_up_at == pytest.approx(204.6)
    assert result.schedule.reason is GiveUpReason.TIME_BUDGET
    assert result.headroom == pytest.approx(0.2)  # 102.2 - (102.2 - 0.2)
    assert result.sooner_give_up_at is None  # no HZ, no guess


def test_late_timers_can_end_the_default_orphan_at_102_2_s() -> None:
    # Worst-case lateness at HZ=250 of the timers after the stamp: 0.4, 0.8, 1.6 s (level 1)
    # 32 ms each, 3.2, 6.4, 12.8 s (level 2) 256 ms each, 25.6 and 51.2 s (level 3) 2.048 s
    # each: 0.096 + 0.768 + 4.096 = 4.96 s by the 102.2 s expiry, >= its 0.2 s headroom. At
    # 51.0 s: 0.096 + 0.768 + 2.048 = 2.912 s < 102.2 - 50.8 = 51.4 s. So 102.2 s.
    assert timing.orphan_give_up(0, hz=250).sooner_give_up_at == pytest.approx(102.2)


@pytest.mark.parametrize(
    ("retries", "retransmits", "gives_up", "sooner"),
    [
        # budget 63 x 0.2 = 12.6: 12.6 is 12.4 s in, retransmits; 25.4 (25.2 in) gives up.
        # Lateness by 12.6: 3 x 32 ms + 256 ms (3.2 s) + 256 ms (6.4 s) = 0.608 >= 0.2.
        # [Old: 5 retransmissions, 12.6 s.]
        (5, (0.2, 0.6, 1.4, 3.0, 6.2, 12.6), 25.4, 12.6),
        # budget 15 x 0.2 = 3.0: 3.0 is 2.8 s in; 6.2 (6.0 in) gives up. Lateness by 3.0:
        # 3 x 32 ms = 0.096 < 0.2: no sooner give-up. [Old: 3 retransmissions, 3.0 s.]
        (3, (0.2, 0.6, 1.4, 3.0), 6.2, None),
        # budget 7 x 0.2 = 1.4: 1.4 is 1.2 s in; 3.0 (2.8 in) gives up. Lateness by 1.4:
        # 2 x 32 ms < 0.2. [Old: 2 retransmissions, 1.4 s.]
        (2, (0.2, 0.6, 1.4), 3.0, None),
    ],
)
def test_orphan_small_retries_one_more_retransmission(
    retries: int, retransmits: tuple[float, ...], gives_up: float, sooner: float | None
) -> None:
    result = timing.orphan_give_up(retries, hz=250)
    assert result.effective_retries == retries
    assert result.schedule.retransmit_times == pytest.approx(retransmits)
    assert result.schedule.gives_up_at == pytest.approx(gives_up)
    assert result.headroom == pytest.approx(0.2)
    assert result.sooner_give_up_at == pytest.approx(sooner)


@pytest.mark.parametrize(
    ("retries", "retransmits", "gives_up", "headroom", "measured"),
    [
        # tcp_orphan_retries=3, budget 3.0 s: the probe at 0.204 re-arms a full RTO, the
        # first RTO expiry at 0.408 is the stamp; 0.816 (0.408 s in), 1.632 (1.224),
        # 3.264 (2.856 < 3.0) retransmit; 6.528 (6.12 s in) ends it. [measured: TLP + 4
        # retransmissions, gone after 6.77 s]
        (3, (0.408, 0.816, 1.632, 3.264), 6.528, 0.144, 6.77),
        # =2, budget 1.4 s: 0.816, 1.632 (1.224 < 1.4) retransmit; 3.264 (2.856 s in) ends
        # it. [measured: TLP + 3 retransmissions, gone after 3.36 s]
        (2, (0.408, 0.816, 1.632), 3.264, 0.176, 3.36),
    ],
)
def test_orphan_with_a_loss_probe_matches_the_lab_measurement(
    retries: int,
    retransmits: tuple[float, ...],
    gives_up: float,
    headroom: float,
    measured: float,
) -> None:
    # Lab, 6.18, HZ=250: an orphan in LAST_ACK sends its FIN into a black hole, RTO 204 ms
    # (51 ticks). The probe was seen at 0.208 s: a 51-tick timer fires one tick late (the
    # timer wheel rounds level-0 expiries up by a tick), so its nominal time is 0.204 s,
    # which is also as late as tcp_schedule_loss_probe() may arm it (no later than the RTO).
    result = timing.orphan_give_up(retries, initial_rto=0.204, loss_probe=0.204, hz=250)
    assert result.loss_probe_at == pytest.approx(0.204)
    assert result.budget_from == pytest.approx(0.408)
    assert result.schedule.retransmit_times == pytest.approx(retransmits)
    assert result.schedule.gives_up_at == pytest.approx(gives_up)
    assert result.headroom == pytest.approx(headroom)
    # Lateness since the stamp (0.408, 0.816, 1.632 s: level 1, 32 ms each) stays below
    # the headroom (<= 0.096 < 0.144): no expiry is ended early, as measured.
    assert result.sooner_give_up_at is None
    # The measurement lies between the nominal end and the nominal end plus every timer's
    # worst-case lateness: probe and first RTO 4 ms each (level 0), then 32 ms per level-1
    # wait and 256 ms for the 3.264 s one (816 ticks, level 2). retries=3: 6.528 <= 6.77 <=
    # 6.528 + 0.008 + 0.096 + 0.256 = 6.888; retries=2: 3.264 <= 3.36 <= 3.264 + 0.008 +
    # 0.096 = 3.368.
    timers = (0.204, 0.204, *result.schedule.waits[1:])
    worst = sum(timing.timer_slack(t, 250).max_lateness for t in timers)
    assert gives_up <= measured <= gives_up + worst


def test_orphan_with_low_rto_max_dies_once_rto_hits_the_cap() -> None:
    # With rto_max 10 s the RTO reaches the cap after 0.2 x 2^6 > 10: "not alive",
    # so tcp_orphan_retries() returns 0 and the next expiry gives up. Budget while alive:
    # thresh ilog2(10 / 0.2) = 5, 63 x 0.2 + 3 x 10 = 42.6 s from 0.2; expiries 0.6 ...
    # 12.6 (12.4 s in) retransmit; at 22.6 the RTO is 10 s = the cap: budget
    # tcp_model_timeout(0) = 0.2 s, 22.4 s in, gone. (The same with the old clock.)
    result = timing.orphan_give_up(0, rto_max=10.0)
    assert result.effective_retries == 0
    assert result.budget == pytest.approx(0.2)
    assert result.schedule.retransmissions == 6
    assert result.schedule.gives_up_at == pytest.approx(22.6)
    assert result.headroom == pytest.approx(30.2)  # the 42.6 s budget in force at 12.6 s


# --- keepalive ----------------------------------------------------------------------------


def test_keepalive_defaults_7875_s() -> None:
    result = timing.keepalive_detection()
    assert result.detected_at == pytest.approx(7875.0)
    assert result.probes_sent == 9
    assert result.probe_times[0] == pytest.approx(7200.0)
    assert result.probe_times[-1] == pytest.approx(7800.0)
    assert result.reason is GiveUpReason.PROBES_EXHAUSTED


def test_keepalive_measured_small_values() -> None:
    # notes 5.3: idle=2, intvl=1, cnt=3 -> ETIMEDOUT after ~5 s
    assert timing.keepalive_detection(2, 1, 3).detected_at == pytest.approx(5.0)


def test_keepalive_user_timeout_aborts_at_3_s() -> None:
    result = timing.keepalive_detection(2, 1, 9, user_timeout=1.5)
    assert result.probe_times == pytest.approx((2.0,))
    assert result.detected_at == pytest.approx(3.0)
    assert result.reason is GiveUpReason.USER_TIMEOUT


def test_keepalive_user_timeout_ignores_probe_count() -> None:
    result = timing.keepalive_detection(10, 5, 1, user_timeout=40.0)
    # probes at 10, 15, ..., 35; first firing with idle >= 40 is 40
    assert result.probes_sent == 6
    assert result.detected_at == pytest.approx(40.0)


@pytest.mark.parametrize("probes", [0, 128])
def test_keepalive_rejects_keepcnt_outside_kernel_range(probes: int) -> None:
    with pytest.raises(InputError, match="probes"):
        timing.keepalive_detection(probes=probes)


# --- FIN_WAIT2 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fin_timeout", "lifetime"),
    [(10, 10.0), (60, 60.0), (90, 60.0), (100, 80.0), (120, 120.0)],
)
def test_fin_wait2_lifetime(fin_timeout: int, lifetime: float) -> None:
    assert timing.fin_wait2_lifetime(fin_timeout).lifetime == pytest.approx(lifetime)


def test_fin_wait2_above_60_has_two_phases() -> None:
    result = timing.fin_wait2_lifetime(100)
    assert result.outcome is FinWait2Outcome.FULL_SOCKET_THEN_MINISOCK
    assert result.full_socket_phase == pytest.approx(40.0)
    assert result.minisock_phase == pytest.approx(40.0)


def test_fin_wait2_zero_uses_rto_floor() -> None:
    # (rto << 2) - (rto >> 1) = 3.5 x 0.2 s
    result = timing.fin_wait2_lifetime(0, rto=0.2)
    assert result.lifetime == pytest.approx(0.7)
    assert result.outcome is FinWait2Outcome.MINISOCK


def test_fin_wait2_linger2_clamped_to_120() -> None:
    result = timing.fin_wait2_lifetime(60, linger2=200)
    assert result.linger2_effective == pytest.approx(120.0)
    assert result.lifetime == pytest.approx(120.0)


def test_fin_wait2_linger2_zero_uses_sysctl() -> None:
    assert timing.fin_wait2_lifetime(30, linger2=0).lifetime == pytest.approx(30.0)


def test_fin_wait2_negative_linger2_resets() -> None:
    result = timing.fin_wait2_lifetime(60, linger2=-1)
    assert result.outcome is FinWait2Outcome.RESET
    assert result.lifetime == 0.0


def test_fin_wait2_not_orphaned_is_unbounded() -> None:
    result = timing.fin_wait2_lifetime(2, orphaned=False)
    assert result.outcome is FinWait2Outcome.UNBOUNDED
    assert result.lifetime is None


# --- RTO ----------------------------------------------------------------------------------


def test_rto_first_sample_100_ms_is_300_ms() -> None:
    assert timing.rto_for_rtt(0.1).rto == pytest.approx(0.3)


def test_rto_tiny_rtt_floors_variance_term() -> None:
    result = timing.rto_for_rtt(50e-6)
    assert result.variance_term == pytest.approx(0.2)
    assert result.rto == pytest.approx(0.20005)


def test_rto_hz_250_rounds_up_to_204_ms() -> None:
    # 200.05 ms = 50.0125 jiffies of 4 ms -> 51 jiffies
    assert timing.rto_for_rtt(50e-6, hz=250).rto == pytest.approx(0.204)


def test_rto_given_rttvar_uses_four_times_deviation() -> None:
    # srtt 100 ms + max(4 x 80 ms, 200 ms) = 420 ms
    assert timing.rto_for_rtt(0.1, 0.08).rto == pytest.approx(0.42)


def test_rto_is_capped_at_rto_max() -> None:
    result = timing.rto_for_rtt(100.0)
    assert result.rto == pytest.approx(120.0)
    assert result.capped


def test_estimator_first_sample_matches_one_shot() -> None:
    est = timing.RttEstimator()
    state = est.sample(0.1)
    assert state.srtt_us == 8 * 100_000
    assert state.mdev_us == 2 * 100_000
    assert state.rto == pytest.approx(0.3)


def test_estimator_steady_rtt_keeps_rto_min_floor() -> None:
    est = timing.RttEstimator()
    for _ in range(50):
        state = est.sample(0.1)
    # mdev decays towards 0 but rttvar never drops below rto_min: RTO = 100 + 200 ms
    assert state.mdev_us < 20_000
    assert state.rttvar_us == 200_000
    assert state.rto == pytest.approx(0.3)


def test_estimator_rtt_jump_raises_rto() -> None:
    est = timing.RttEstimator()
    est.sample(0.01)
    state = est.sample(0.5)
    # err = 500000 - 10000 = 490000: srtt8 = 80000 + 490000; mdev = 20000 + 490000 - 5000
    assert state.srtt_us == 570_000
    assert state.mdev_us == 505_000
    assert state.rto == pytest.approx((570_000 // 8 + 505_000) / 1e6)


def test_estimator_needs_a_sample() -> None:
    with pytest.raises(InputError):
        timing.RttEstimator().state()


# --- ports --------------------------------------------------------------------------------


def test_default_port_capacity_and_rate() -> None:
    ports = timing.port_capacity()
    assert ports.capacity == 28232
    rate = timing.max_connection_rate(ports)
    assert rate.max_rate == pytest.approx(470.53, abs=0.01)
    assert not rate.tw_reuse_applies  # default tw_reuse=2, not loopback
    assert rate.worst_case_port_hold == pytest.approx(62.048)


def test_reserved_and_bound_ports_reduce_capacity_once() -> None:
    reserved = timing.parse_port_set("40000-40100,50000, 70")
    ports = timing.port_capacity(reserved=reserved, bound={50000, 45000, 80})
    assert ports.reserved_in_range == 102  # 70 is outside the range
    assert ports.bound_in_range == 1  # 50000 already reserved, 80 outside
    assert ports.capacity == 28232 - 103


@pytest.mark.parametrize(
    ("tw_reuse", "timestamps", "loopback", "applies"),
    [
        (0, True, False, False),
        (1, True, False, True),
        (1, False, False, False),
        (2, True, False, False),
        (2, True, True, True),
        (2, False, True, False),
    ],
)
def test_tw_reuse_rules(tw_reuse: int, timestamps: bool, loopback: bool, applies: bool) -> None:
    rate = timing.max_connection_rate(
        timing.port_capacity(), tw_reuse=tw_reuse, timestamps=timestamps, loopback=loopback
    )
    assert rate.tw_reuse_applies is applies
    assert rate.port_hold == pytest.approx(1.0 if applies else 60.0)


def test_tw_reuse_delay_sets_the_hold() -> None:
    rate = timing.max_connection_rate(timing.port_capacity(), tw_reuse=1, tw_reuse_delay_ms=100)
    assert rate.max_rate == pytest.approx(282320.0)


@pytest.mark.parametrize(("low", "high"), [(60999, 32768), (0, 100), (1000, 65536), (-5, 100)])
def test_bad_port_range(low: int, high: int) -> None:
    with pytest.raises(InputError):
        timing.port_capacity(low, high)


@pytest.mark.parametrize("text", ["5-x", "10-5", "70000", "a"])
def test_bad_port_list(text: str) -> None:
    with pytest.raises(InputError):
        timing.parse_port_set(text)


# --- memory and timer slack ---------------------------------------------------------------


def test_time_wait_memory_131072_is_32_mib() -> None:
    result = timing.time_wait_memory(131072)
    assert result.total_bytes == 33_554_432
    assert result.total_mib == pytest.approx(32.0)


def test_time_wait_memory_rejects_negative() -> None:
    with pytest.raises(InputError):
        timing.time_wait_memory(-1)


@pytest.mark.parametrize(
    ("seconds", "hz", "lateness", "level"),
    [
        (60, 250, 2.048, 3),
        (60, 1000, 4.096, 4),
        (10, 250, 0.256, 2),  # FIN_WAIT2 minisock: measured 10.09 s
        (129.02, 250, 2.048, 3),  # just below LVL_START(4) = 32256 jiffies
        (129.04, 250, 16.384, 4),  # just above it
        (0.1, 250, 0.004, 0),
    ],
)
def test_timer_slack(seconds: float, hz: int, lateness: float, level: int) -> None:
    result = timing.timer_slack(seconds, hz)
    assert result.max_lateness == pytest.approx(lateness)
    assert result.level == level


def test_timer_slack_beyond_wheel_is_clamped() -> None:
    result = timing.timer_slack(60 * 86400, 250)  # 60 days > ~48 days of capacity
    assert result.clamped
    assert result.level == 8


# --- input validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: timing.established_give_up(-1),
        lambda: timing.established_give_up(256),
        lambda: timing.established_give_up(rto_max=0.5),
        lambda: timing.established_give_up(user_timeout=-1.0),
        lambda: timing.established_give_up(loss_probe=0.0),
        lambda: timing.established_give_up(initial_rto=0.2, loss_probe=0.3),
        lambda: timing.established_give_up(hz=0),
        lambda: timing.syn_give_up(0),
        lambda: timing.syn_give_up(128),
        lambda: timing.syn_give_up(linear_timeouts=-1),
        lambda: timing.synack_give_up(-1),
        lambda: timing.orphan_give_up(256),
        lambda: timing.orphan_give_up(initial_rto=0.204, loss_probe=0.208),
        lambda: timing.orphan_give_up(hz=0),
        lambda: timing.keepalive_detection(time=0),
        lambda: timing.keepalive_detection(intvl=40000),
        lambda: timing.fin_wait2_lifetime(-1),
        lambda: timing.rto_for_rtt(0),
        lambda: timing.rto_for_rtt(float("nan")),
        lambda: timing.max_connection_rate(timing.port_capacity(), tw_reuse=3),
        lambda: timing.max_connection_rate(timing.port_capacity(), tw_reuse_delay_ms=0),
        lambda: timing.timer_slack(-1),
        lambda: timing.model_timeout(3, 1.0, 0.5),
    ],
)
def test_invalid_input_raises_input_error(call: Callable[[], object]) -> None:
    with pytest.raises(InputError):
        call()


# --- properties ---------------------------------------------------------------------------


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _strictly_increasing(values: tuple[float, ...]) -> bool:
    return all(a < b for a, b in pairwise(values))


@given(
    retries=st.integers(0, 40),
    rto_max_ms=st.integers(1000, 120_000),
    initial_ms=st.integers(1, 5000),
)
def test_established_schedule_properties(retries: int, rto_max_ms: int, initial_ms: int) -> None:
    result = timing.established_give_up(
        retries, rto_max=rto_max_ms / 1000, initial_rto=initial_ms / 1000
    )
    times = result.schedule.retransmit_times
    assert _strictly_increasing(times)
    # The first expiry always retransmits and starts the clock; the give-up is at least
    # the budget after it, and every earlier expiry was short of it.
    stamp, budget = _micros(result.budget_from), _micros(result.budget)
    assert times[0] == result.budget_from
    assert _micros(result.schedule.gives_up_at) - stamp >= budget
    assert _micros(times[-1]) - stamp < budget
    assert result.schedule.gives_up_at > times[-1]
    assert sum(result.schedule.waits) == pytest.approx(result.schedule.gives_up_at)


@given(
    retries=st.integers(0, 20),
    rto_max_ms=st.integers(1000, 120_000),
    initial_ms=st.integers(1, 5000),
    hz=st.sampled_from([100, 250, 1000]),
)
def test_orphan_schedule_properties(
    retries: int, rto_max_ms: int, initial_ms: int, hz: int
) -> None:
    result = timing.orphan_give_up(
        retries, rto_max=rto_max_ms / 1000, initial_rto=initial_ms / 1000, hz=hz
    )
    times = result.schedule.retransmit_times
    assert _strictly_increasing(times)
    # As for tcp_retries2: the clock starts at the first retransmission and the final
    # expiry is at least the budget in force there after it.
    stamp = _micros(result.budget_from)
    assert times[0] == result.budget_from
    assert _micros(result.schedule.gives_up_at) - stamp >= _micros(result.budget)
    assert result.headroom is None or result.headroom > 0
    sooner = result.sooner_give_up_at
    assert sooner is None or sooner in times[1:]
    assert sum(result.schedule.waits) == pytest.approx(result.schedule.gives_up_at)


@given(
    syn_retries=st.integers(1, 12),
    linear=st.integers(0, 10),
    user_timeout_ms=st.one_of(st.none(), st.integers(1, 300_000)),
)
def test_syn_schedule_properties(
    syn_retries: int, linear: int, user_timeout_ms: int | None
) -> None:
    user_timeout = None if user_timeout_ms is None else user_timeout_ms / 1000
    result = timing.syn_give_up(syn_retries, linear_timeouts=linear, user_timeout=user_timeout)
    times = result.schedule.retransmit_times
    assert _strictly_increasing(times)
    assert result.schedule.retransmissions <= result.max_retransmits
    assert not times or result.schedule.gives_up_at >= times[-1]


@given(syn_retries=st.integers(1, 12), linear=st.integers(0, 10))
def test_linear_timeouts_never_make_connect_fail_sooner(syn_retries: int, linear: int) -> None:
    # The time budget is the same with or without L; the extra 1 s waits only push the
    # count limit later, so connect() can never fail sooner than before 6.5.
    with_l = timing.syn_give_up(syn_retries, linear_timeouts=linear).schedule.gives_up_at
    without = timing.syn_give_up(syn_retries, linear_timeouts=0).schedule.gives_up_at
    assert with_l >= without >= timing.model_timeout(syn_retries, 1.0, 120.0)


@given(
    low=st.integers(1024, 60000),
    width=st.integers(0, 4000),
    extra=st.integers(1, 1000),
)
def test_rate_is_monotone_in_range_width(low: int, width: int, extra: int) -> None:
    high = min(low + width, 65535)
    wider = min(high + extra, 65535)
    narrow = timing.max_connection_rate(timing.port_capacity(low, high))
    wide = timing.max_connection_rate(timing.port_capacity(low, wider))
    assert wide.max_rate >= narrow.max_rate
    assert narrow.ports.capacity == high - low + 1


@given(time=st.integers(1, 32767), intvl=st.integers(1, 32767), probes=st.integers(1, 127))
def test_keepalive_without_user_timeout_is_closed_form(time: int, intvl: int, probes: int) -> None:
    result = timing.keepalive_detection(time, intvl, probes)
    assert result.detected_at == pytest.approx(time + probes * intvl)
    assert _strictly_increasing(result.probe_times)


@given(fin_timeout=st.integers(0, 100_000), rto_ms=st.integers(1, 120_000))
def test_fin_wait2_never_shorter_than_rto_floor(fin_timeout: int, rto_ms: int) -> None:
    result = timing.fin_wait2_lifetime(fin_timeout, rto=rto_ms / 1000)
    assert result.lifetime is not None
    assert result.lifetime >= 3.5 * rto_ms / 1000 - 1e-6
    if result.fin_time is not None and result.fin_time > 60:
        assert result.lifetime == pytest.approx(result.full_socket_phase + result.minisock_phase)


@given(seconds=st.floats(0.001, 86400 * 30), hz=st.sampled_from([100, 250, 300, 1000]))
def test_timer_slack_is_at_most_an_eighth_plus_a_level_step(seconds: float, hz: int) -> None:
    result = timing.timer_slack(seconds, hz)
    assert result.max_lateness > 0
    # LVL_START(n) = 63 x 8^(n-1) jiffies, granularity 8^n: lateness <= delta x 8/63 (+1 tick)
    assert result.max_lateness <= seconds * 8 / 63 + 1 / hz + 1e-9
