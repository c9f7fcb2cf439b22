"""Kernel formulas behind the closing-state lab scenarios, each case worked by hand from the
kernel source named in the function's docstring (kernel notes 1.3, 1.4, 8, 9)."""

from __future__ import annotations

import pytest

from tcpdoctor.errors import InputError
from tcpdoctor.kernel.counters import COUNTERS
from tcpdoctor.kernel.timing import (
    CloseOutcome,
    TimeWaitAction,
    close_outcome,
    minisock_counter,
    time_wait_action,
    time_wait_overflow,
    timer_slack,
)

# --- tcp_timewait_state_process() --------------------------------------------------------


def test_retransmitted_fin_rearms() -> None:
    # An old duplicate FIN: seq = rcv_nxt - 1 (out of window), flags FIN|ACK.
    # Not in window -> `if (!th->rst) { if (paws_reject || th->ack) reschedule }`.
    assert time_wait_action(rst=False, ack=True) is TimeWaitAction.REARM


def test_in_window_bare_ack_rearms() -> None:
    # seq == rcv_nxt, no payload: the in-window branch reschedules every non-RST.
    assert time_wait_action(rst=False, ack=True, in_window=True) is TimeWaitAction.REARM


@pytest.mark.parametrize(
    ("rfc1337", "action"), [(0, TimeWaitAction.KILL), (1, TimeWaitAction.KEEP)]
)
def test_in_window_rst_kills_unless_rfc1337(rfc1337: int, action: TimeWaitAction) -> None:
    # rfc1337 = 0: inet_twsk_deschedule_put() (assassination); 1: ignored, and since the
    # 4.19-era fix it no longer re-arms either.
    assert time_wait_action(rst=True, ack=True, in_window=True, rfc1337=rfc1337) is action


def test_out_of_window_rst_is_dropped_and_bare_non_ack_keeps() -> None:
    assert time_wait_action(rst=True, ack=True) is TimeWaitAction.KEEP
    # Out of window, no ACK, not PAWS-rejected (e.g. a FIN without ACK): timer untouched.
    assert time_wait_action(rst=False, ack=False) is TimeWaitAction.KEEP


def test_paws_rejected_segment_rearms_even_without_ack_or_in_window() -> None:
    assert time_wait_action(rst=False, ack=False, paws_rejected=True) is TimeWaitAction.REARM
    # PAWS rejection makes an in-window RST fall to the out-of-window path: dropped.
    assert time_wait_action(rst=True, ack=True, in_window=True, paws_rejected=True) is (
        TimeWaitAction.KEEP
    )


# --- __inet_twsk_schedule(): TW or TWKilled ------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "counter"),
    [(60.0, "TcpExt.TW"), (5.0, "TcpExt.TW"), (4.0, "TcpExt.TWKilled"), (3.0, "TcpExt.TWKilled")],
)
def test_minisock_counter(timeout: float, counter: str) -> None:
    # kill = timeo <= 4*HZ: exactly 4 s still counts as killed.
    assert minisock_counter(timeout) == counter
    assert counter in COUNTERS


# --- inet_twsk_alloc(): tcp_max_tw_buckets ------------------------------------------------


def test_overflow_beyond_the_limit() -> None:
    # tw_refcount starts at 1; the 4th close sees refcount - 1 = 3 >= 3 -> NULL.
    got = time_wait_overflow(6, 3)
    assert (got.kept, got.overflowed) == (3, 3)


def test_overflow_counts_minisocks_already_alive() -> None:
    got = time_wait_overflow(4, 5, in_use=3)  # 2 slots left
    assert (got.kept, got.overflowed) == (2, 2)
    assert time_wait_overflow(4, 5, in_use=9).kept == 0  # over the limit already: none fit


def test_overflow_below_the_limit_and_zero_limit() -> None:
    assert time_wait_overflow(2, 4).overflowed == 0
    assert time_wait_overflow(3, 0) == (3, 0, 0, 0, 3)


def test_overflow_rejects_negative_counts() -> None:
    with pytest.raises(InputError):
        time_wait_overflow(-1, 4)


# --- __tcp_close() -------------------------------------------------------------------------


def test_plain_close_sends_fin() -> None:
    assert close_outcome() == CloseOutcome("FIN", True, None, "EOF", 0.0)


def test_zero_linger_resets_and_counts_abort_on_data() -> None:
    got = close_outcome(linger=0)
    assert (got.sends, got.time_wait, got.peer_reads) == ("RST", False, "ECONNRESET")
    assert got.counter == "TcpExt.TCPAbortOnData"  # not TCPAbortOnLinger (notes 8)
    assert got.counter in COUNTERS


def test_unread_data_resets_before_linger_is_looked_at() -> None:
    # The receive queue is purged first; discarded data -> RST, TCPAbortOnClose, whatever
    # SO_LINGER says (RFC 2525 2.17).
    for linger in (None, 0, 5):
        got = close_outcome(unread_bytes=3, linger=linger)
        assert (got.sends, got.counter) == ("RST", "TcpExt.TCPAbortOnClose")


def test_positive_linger_sends_fin_and_may_block() -> None:
    got = close_outcome(linger=3)
    assert (got.sends, got.time_wait, got.may_block) == ("FIN", True, 3.0)


# --- timer_slack() for the timers these scenarios measure ----------------------------------


def test_slack_of_the_timers_measured_at_hz_250() -> None:
    # 60 s = 15000 jiffies: level 3 (4032 <= 15000 < 32256), 8^3 = 512 jiffies = 2.048 s.
    assert timer_slack(60.0, 250).max_lateness == pytest.approx(2.048)
    # 3 s = 750 jiffies: level 2 (504 <= 750 < 4032), 64 jiffies = 0.256 s.
    assert timer_slack(3.0, 250).max_lateness == pytest.approx(0.256)
