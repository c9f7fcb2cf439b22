"""port-exhaustion's expectations (from kernel/ formulas) and its verdicts over synthetic
attempts: agreement when the numbers fit, disagreement when they do not."""

from __future__ import annotations

import pytest

from tcpdoctor.lab.model import tolerance
from tcpdoctor.lab.scenarios._port_exhaustion_model import (
    Attempt,
    ClientKnobs,
    Mode,
    Observed,
    auto_duration,
    compare,
    count_attempts,
    expect,
    measure,
    verdict,
)
from tcpdoctor.timeline import TimelineRecorder

SLACK_250 = 2.048  # timer_slack(60, 250): level 3, 512 jiffies


def knobs(
    ports: int = 32, *, reuse: int = 2, delay: int | None = 1000, ts: bool = True
) -> ClientKnobs:
    return ClientKnobs(32768, 32768 + ports - 1, reuse, delay, ts, None)


def test_knobs_from_proc_text() -> None:
    read = ClientKnobs.from_text(
        {
            "net.ipv4.ip_local_port_range": "32768 32799",
            "net.ipv4.tcp_tw_reuse": "1",
            "net.ipv4.tcp_tw_reuse_delay": None,  # kernel < 6.14
            "net.ipv4.tcp_timestamps": "0",
        },
        {"net.ipv4.tcp_max_tw_buckets": "4"},
    )
    assert read == ClientKnobs(32768, 32799, 1, None, False, 4)


def test_default_variant_holds_ports_for_time_wait() -> None:
    exp = expect(Mode.CLOSE, 64.0, 66.0, knobs(), SLACK_250)
    assert exp.capacity == 32 and exp.attempts == 66 * 64
    assert not exp.tw_reuse_applies  # tw_reuse=2 over veth
    assert exp.port_hold == 60.0 and exp.hold_slack == SLACK_250
    assert exp.cycle is not None and exp.cycle.first_failure_at == pytest.approx(0.5)
    assert exp.cycle.failure_window == pytest.approx(59.5)


@pytest.mark.parametrize(
    ("reuse", "ts", "applies"), [(0, True, False), (1, True, True), (1, False, False)]
)
def test_reuse_needs_value_one_and_timestamps(reuse: int, ts: bool, applies: bool) -> None:
    exp = expect(Mode.CLOSE, 64.0, 10.0, knobs(reuse=reuse, ts=ts), SLACK_250)
    assert exp.tw_reuse_applies is applies
    assert exp.port_hold == (1.0 if applies else 60.0)
    assert exp.hold_slack == (0.0 if applies else SLACK_250)  # a ms clock, not a timer


def test_reuse_before_6_14_allows_the_whole_second() -> None:
    exp = expect(Mode.CLOSE, 64.0, 10.0, knobs(reuse=1, delay=None), SLACK_250)
    assert exp.port_hold == 1.0 and exp.hold_slack == 1.0


def test_odd_range_loses_its_top_port() -> None:
    exp = expect(Mode.CLOSE, 10.0, 10.0, ClientKnobs(40000, 40002, 2, 1000, True, None), 0.0)
    assert exp.capacity == 2
    assert exp.cycle is not None and exp.cycle.successes_before_failure == 2


def test_auto_duration_covers_the_first_recovery() -> None:
    assert auto_duration(Mode.CLOSE, 64.0, knobs(), SLACK_250) == 66.0  # ceil(60+2.048+3)
    assert auto_duration(Mode.CLOSE, 64.0, knobs(reuse=1), SLACK_250) == 7.0  # 1 + 3x1 + 3
    assert auto_duration(Mode.POOL, 64.0, knobs(), SLACK_250) == 5.0
    assert auto_duration(Mode.CLOSE, 4.0, knobs(reuse=1), SLACK_250) == 5.0  # never exhausts


def test_attempt_count_is_rate_times_duration() -> None:
    assert count_attempts(64.0, 66.0) == 4224
    assert count_attempts(3.0, 1.5) == 5  # 0, 1/3, 2/3, 1, 4/3 (< 1.5)


# --- synthetic runs -----------------------------------------------------------------------


def synthetic_close_run(
    capacity: int, rate: float, duration: float, hold: float, *, lateness: float = 0.0
) -> list[Attempt]:
    """What an ideal kernel would do: a port returns `hold + lateness` after its close."""
    free_at: list[float] = [0.0] * capacity
    attempts = []
    for i in range(count_attempts(rate, duration)):
        t = i / rate
        slot = min(range(capacity), key=lambda k: free_at[k])
        if free_at[slot] <= t:
            closed = t + 0.001
            free_at[slot] = closed + hold + lateness
            attempts.append(Attempt(i, t, True, port=32768 + slot, closed=closed))
        else:
            attempts.append(Attempt(i, t, False, error="EADDRNOTAVAIL"))
    return attempts


def observe(
    attempts: list[Attempt], tw_peak: int, server_tw: int | None = None, recycled: int = 0
) -> Observed:
    rec = TimelineRecorder()
    for a in attempts:
        rec.attempt(a.t, a.error)
    return Observed(tuple(attempts), rec.freeze(), tw_peak, server_tw, recycled)


def reuses(attempts: list[Attempt]) -> int:
    """Successes on a port used before: what TWRecycled counts when reuse applies."""
    ok = [a for a in attempts if a.ok]
    return len(ok) - len({a.port for a in ok})


def test_an_ideal_default_run_agrees() -> None:
    exp = expect(Mode.CLOSE, 64.0, 66.0, knobs(), SLACK_250)
    attempts = synthetic_close_run(32, 64.0, 66.0, 60.0, lateness=1.5)
    got = measure(observe(attempts, 32), exp.port_hold)
    assert got.successes_before_failure == 32
    assert got.ports_back_after_close == pytest.approx(61.5, abs=1 / 64)
    checks = compare(exp, got)
    assert all(c.agree for c in checks), verdict(checks)
    assert verdict(checks).endswith("-> agree")


def test_ports_held_too_long_disagree() -> None:
    exp = expect(Mode.CLOSE, 64.0, 80.0, knobs(), SLACK_250)
    attempts = synthetic_close_run(32, 64.0, 80.0, 75.0)  # 75 s: beyond 60 + 7.5 + 2.048
    checks = {c.name: c for c in compare(exp, measure(observe(attempts, 32), exp.port_hold))}
    assert not checks["ports_back_after_close"].agree
    assert checks["successes_before_failure"].agree


def test_more_ports_than_expected_disagree() -> None:
    exp = expect(Mode.CLOSE, 64.0, 66.0, knobs(), SLACK_250)
    attempts = synthetic_close_run(40, 64.0, 66.0, 60.0)
    checks = {c.name: c for c in compare(exp, measure(observe(attempts, 40), exp.port_hold))}
    assert not checks["successes_before_failure"].agree
    assert not checks["client_time_wait_peak"].agree
    assert "DISAGREE" in verdict(checks.values())


def test_reuse_run_measures_the_sustained_rate() -> None:
    exp = expect(Mode.CLOSE, 64.0, 7.0, knobs(reuse=1), SLACK_250)
    attempts = synthetic_close_run(32, 64.0, 7.0, 1.0)
    got = measure(observe(attempts, 32, recycled=reuses(attempts)), exp.port_hold)
    assert got.sustained_rate == pytest.approx(32.0, rel=0.05)
    checks = compare(exp, got)
    assert {"sustained_rate", "tw_recycled"} <= {c.name for c in checks}
    assert all(c.agree for c in checks), verdict(checks)
    miscounted = measure(observe(attempts, 32, recycled=0), exp.port_hold)
    assert not {c.name: c for c in compare(exp, miscounted)}["tw_recycled"].agree


def test_reuse_without_exhaustion_counts_recycled_time_waits() -> None:
    exp = expect(Mode.CLOSE, 16.0, 5.0, knobs(reuse=1), SLACK_250)
    assert not exp.exhausts
    ok = [Attempt(i, i / 16, True, port=32768 + i % 20, closed=i / 16 + 0.001) for i in range(80)]
    good = compare(exp, measure(observe(ok, 20, recycled=60), exp.port_hold))
    assert all(c.agree for c in good), verdict(good)
    # 40 ports for 80 connections: more ports than the range has.
    wide = [Attempt(i, i / 16, True, port=32768 + i % 40, closed=i / 16) for i in range(80)]
    checks = {c.name: c for c in compare(exp, measure(observe(wide, 32, recycled=40), 1.0))}
    assert not checks["reused_at_least"].agree
    wrong = {c.name: c for c in compare(exp, measure(observe(ok, 20, recycled=3), 1.0))}
    assert not wrong["tw_recycled"].agree


def test_pool_expects_one_connection_and_no_time_wait() -> None:
    exp = expect(Mode.POOL, 64.0, 5.0, knobs(), SLACK_250)
    attempts = [Attempt(i, i / 64, True, port=32800) for i in range(320)]
    checks = compare(exp, measure(observe(attempts, 0), exp.port_hold))
    assert all(c.agree for c in checks)
    reopened = [*attempts[:-1], Attempt(319, 319 / 64, True, port=32802)]
    checks = {c.name: c for c in compare(exp, measure(observe(reopened, 1), exp.port_hold))}
    assert not checks["distinct_client_ports"].agree
    assert not checks["client_time_wait_peak"].agree


def test_server_closes_first_expects_one_server_time_wait_per_port() -> None:
    exp = expect(Mode.SERVER_CLOSES_FIRST, 64.0, 5.0, knobs(), SLACK_250)
    # Ports free again at once, so connect() stays on the even ports (notes 4.2).
    even = [Attempt(i, i / 64, True, port=32768 + 2 * (i % 16), closed=i / 64) for i in range(320)]
    good = compare(exp, measure(observe(even, 0, server_tw=16), exp.port_hold))
    assert all(c.agree for c in good), verdict(good)
    bad = {c.name: c for c in compare(exp, measure(observe(even, 3, 320), exp.port_hold))}
    assert not bad["server_time_wait_after"].agree
    assert not bad["client_time_wait_peak"].agree
    both = [Attempt(i, i / 64, True, port=32768 + i % 32, closed=i / 64) for i in range(320)]
    mixed = {c.name: c for c in compare(exp, measure(observe(both, 0, 32), exp.port_hold))}
    assert not mixed["distinct_client_ports"].agree


# --- the tolerance rule -------------------------------------------------------------------


def test_tolerance_is_4_ms_or_an_eighth() -> None:
    short = tolerance(0.01)
    assert (short.low, short.high) == pytest.approx((0.006, 0.014))  # 4 ms wins
    long = tolerance(60.0, slack=2.048, resolution=0.015625)
    assert long.low == pytest.approx(52.5)  # 12.5 % of 60 s
    assert long.high == pytest.approx(60 + 7.5 + 2.048 + 0.015625)  # late side only
    assert long.contains(61.95) and not long.contains(52.0) and not long.contains(70.0)


def test_a_small_time_wait_limit_means_the_ports_never_run_out() -> None:
    small = ClientKnobs(32768, 32799, 2, 1000, True, None, max_tw_buckets=10)
    exp = expect(Mode.CLOSE, 64.0, 5.0, small, SLACK_250)
    assert exp.overflows and not exp.exhausts and exp.time_wait_limit == 10
    ok = [Attempt(i, i / 64, True, port=32768 + i % 16, closed=i / 64) for i in range(320)]
    rec = TimelineRecorder()
    for a in ok:
        rec.attempt(a.t)
    right = Observed(tuple(ok), rec.freeze(), 10, None, 0, tw_overflow=310)
    assert all(c.agree for c in compare(exp, measure(right, exp.port_hold)))
    wrong = Observed(tuple(ok), rec.freeze(), 11, None, 0, tw_overflow=0)
    bad = {c.name: c for c in compare(exp, measure(wrong, exp.port_hold))}
    assert not bad["client_time_wait_peak"].agree and not bad["tw_overflow"].agree
    # A limit at or above the capacity changes nothing.
    roomy = ClientKnobs(32768, 32799, 2, 1000, True, None, max_tw_buckets=32)
    assert expect(Mode.CLOSE, 64.0, 66.0, roomy, SLACK_250).exhausts


def test_a_run_too_short_to_see_the_recovery_expects_none() -> None:
    exp = expect(Mode.CLOSE, 64.0, 10.0, knobs(), SLACK_250)
    attempts = synthetic_close_run(32, 64.0, 10.0, 60.0)
    checks = {c.name: c for c in compare(exp, measure(observe(attempts, 32), exp.port_hold))}
    assert checks["recovery_at"].agree and "ports_back_after_close" not in checks
    assert all(c.agree for c in checks.values())
    # 55 s: the first port may come back (from 52.5 s) or not (until 69.6 s): not judged.
    exp = expect(Mode.CLOSE, 64.0, 55.0, knobs(), SLACK_250)
    attempts = synthetic_close_run(32, 64.0, 55.0, 60.0)
    names = {c.name for c in compare(exp, measure(observe(attempts, 32), exp.port_hold))}
    assert not names & {"recovery_at", "ports_back_after_close", "failure_window_s"}


def test_fewer_requests_than_ports_expect_no_failure() -> None:
    exp = expect(Mode.CLOSE, 64.0, 0.25, knobs(), SLACK_250)
    assert exp.attempts == 16
    ok = synthetic_close_run(32, 64.0, 0.25, 60.0)
    checks = compare(exp, measure(observe(ok, 16), exp.port_hold))
    assert all(c.agree for c in checks), verdict(checks)
    failed = [*ok[:-1], Attempt(15, 15 / 64, False, error="EADDRNOTAVAIL")]
    checks = {c.name: c for c in compare(exp, measure(observe(failed, 15), exp.port_hold))}
    assert not checks["failures"].agree
