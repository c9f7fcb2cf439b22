"""kernel/timing.py formulas the lab's port-exhaustion expectations rest on, worked by hand."""

from __future__ import annotations

import pytest

from tcpdoctor.errors import InputError
from tcpdoctor.kernel import timing


@pytest.mark.parametrize(
    ("low", "high", "per_scan", "guaranteed", "reachable"),
    [
        # 40000-40002: remaining = 3 rounded down to 2, offset = x % 2 made even = 0: the
        # even pass tries 40000 only, the odd pass 40001; 40002 is never tried.
        (40000, 40002, 2, 2, 2),
        # 40000-40032 (K = 33, m = 16): remaining 32, even offsets 0..30; each call tries a
        # window of 16 of the 17 even ports (e.g. offset 2: 40002..40032) plus the 16 odd
        # ones. 32 always succeed; the 33rd needs a window holding the last free port.
        (40000, 40032, 32, 32, 33),
        (40000, 40003, 4, 4, 4),  # even size: every call covers every port
        (32768, 60999, 28232, 28232, 28232),  # the default range is even-sized
        (40000, 40000, 1, 1, 1),  # one port: remaining 1 is not rounded down
    ],
)
def test_connect_port_walk(
    low: int, high: int, per_scan: int, guaranteed: int, reachable: int
) -> None:
    walk = timing.connect_port_walk(low, high)
    assert (walk.per_scan, walk.guaranteed, walk.reachable) == (per_scan, guaranteed, reachable)
    assert walk.range_size == high - low + 1


def test_a_socket_range_walks_every_port() -> None:
    # IP_LOCAL_PORT_RANGE set on the socket (6.8+): step 1, no parity passes.
    walk = timing.connect_port_walk(40000, 40002, per_socket_range=True)
    assert (walk.per_scan, walk.guaranteed, walk.reachable) == (3, 3, 3)


@pytest.mark.parametrize(("low", "high"), [(5, 4), (0, 10), (10, 70000)])
def test_connect_port_walk_rejects_bad_ranges(low: int, high: int) -> None:
    with pytest.raises(InputError):
        timing.connect_port_walk(low, high)


def test_exhaustion_with_time_wait() -> None:
    # 32 ports, 20 req/s, 60 s hold: attempt 32 comes at 32/20 = 1.6 s, long before the
    # first port returns at 60 s, so failures last 60 - 1.6 = 58.4 s and the cycle then
    # repeats: 32 successes per 60 s = 0.5333/s.
    cycle = timing.port_exhaustion(32, 20.0, 60.0)
    assert cycle.exhausts
    assert cycle.successes_before_failure == 32
    assert cycle.first_failure_at == pytest.approx(1.6)
    assert cycle.ports_back_at == pytest.approx(60.0)
    assert cycle.failure_window == pytest.approx(58.4)
    assert cycle.sustained_rate == pytest.approx(32 / 60)


def test_exhaustion_with_a_one_second_reuse_delay() -> None:
    # 16 ports at 40/s run out at 0.4 s; tw_reuse=1 gives them back 1 s after the first
    # close: a 0.6 s gap, then 16 successes per second.
    cycle = timing.port_exhaustion(16, 40.0, 1.0)
    assert cycle.first_failure_at == pytest.approx(0.4)
    assert cycle.failure_window == pytest.approx(0.6)
    assert cycle.sustained_rate == pytest.approx(16.0)


def test_no_exhaustion_when_ports_come_back_in_time() -> None:
    # 100 ports at 10/s would need 10 s to use up; with a 1 s hold they never run out.
    cycle = timing.port_exhaustion(100, 10.0, 1.0)
    assert not cycle.exhausts
    assert cycle.first_failure_at is None and cycle.failure_window is None
    assert cycle.sustained_rate == pytest.approx(10.0)


def test_exhaustion_boundary_is_strict() -> None:
    # Attempt 20 at exactly 1.0 s meets the first port coming back at 1.0 s: not exhausted.
    assert not timing.port_exhaustion(20, 20.0, 1.0).exhausts
    assert timing.port_exhaustion(20, 20.5, 1.0).exhausts


@pytest.mark.parametrize(("capacity", "rate", "hold"), [(-1, 1.0, 1.0), (1, 0.0, 1.0), (1, 1.0, 0)])
def test_exhaustion_rejects_bad_input(capacity: int, rate: float, hold: float) -> None:
    with pytest.raises(InputError):
        timing.port_exhaustion(capacity, rate, hold)
