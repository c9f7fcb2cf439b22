"""Pure timing formulas: how long the kernel waits before it gives up, expires or reuses.

Every public function mirrors a named kernel function or symbol (see its docstring) and
returns a frozen record. Time is counted in integer microseconds inside this module, so
that comparisons such as "elapsed >= budget" are exact the way the kernel's integer jiffies
and milliseconds are; records expose float seconds.

Bad arguments (negative counts, values the kernel would reject with EINVAL) raise
InputError with one readable line.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from tcpdoctor.errors import InputError
from tcpdoctor.kernel.constants import (
    DEFAULT_PORT_RANGE,
    MAX_PORT,
    MAX_TCP_KEEPCNT,
    MAX_TCP_KEEPIDLE,
    MAX_TCP_KEEPINTVL,
    MAX_TCP_SYNCNT,
    MIN_PORT,
    REFERENCE_HZ,
    SYSCTL_U8_MAX,
    TCP_FIN_TIMEOUT,
    TCP_FIN_TIMEOUT_MAX,
    TCP_KEEPALIVE_INTVL,
    TCP_KEEPALIVE_PROBES,
    TCP_KEEPALIVE_TIME,
    TCP_LINGER2_RESET,
    TCP_ORPHAN_RETRIES_ZERO_MEANS,
    TCP_RETR2,
    TCP_RTO_MAX,
    TCP_RTO_MIN,
    TCP_SYN_LINEAR_TIMEOUTS,
    TCP_SYN_RETRIES,
    TCP_SYN_RETRIES_MIN,
    TCP_SYNACK_RETRIES,
    TCP_TIMEOUT_INIT,
    TCP_TIMEOUT_MIN_US,
    TCP_TIMEWAIT_LEN,
    TCP_TW_REUSE_DEFAULT,
    TCP_TW_REUSE_DELAY_MS,
    TCP_TW_REUSE_DELAY_MS_MAX,
    TCP_TW_REUSE_DELAY_MS_MIN,
    TCP_TW_REUSE_MAX,
    TCP_USER_TIMEOUT_MAX_MS,
    TIMER_WHEEL_LVL_CLK_SHIFT,
    TIMER_WHEEL_LVL_DEPTH,
    TIMER_WHEEL_LVL_DEPTH_LOW_HZ,
    TIMER_WHEEL_LVL_SIZE,
    TW_KILLED_THRESHOLD,
    TW_SOCK_BYTES,
)

_US_PER_S = 1_000_000
_US_PER_MS = 1_000
_BYTES_PER_MIB = 1024 * 1024


def _us(seconds: float) -> int:
    return round(seconds * _US_PER_S)


def _s(micros: int) -> float:
    return micros / _US_PER_S


# --- validation ---------------------------------------------------------------------------


def _check_int(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _check_positive(name: str, seconds: float) -> int:
    """Positive, finite duration in seconds; returned in microseconds (at least 1)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"{name} must be a positive number of seconds, got {seconds}")
    return max(1, _us(seconds))


def _check_non_negative(name: str, seconds: float) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"{name} must be zero or more seconds, got {seconds}")
    return _us(seconds)


def _user_timeout_us(user_timeout: float | None) -> int | None:
    """TCP_USER_TIMEOUT in seconds; None or 0 means "not set", as in the kernel."""
    if user_timeout is None:
        return None
    micros = _check_non_negative("TCP_USER_TIMEOUT", user_timeout)
    if micros > TCP_USER_TIMEOUT_MAX_MS * _US_PER_MS:
        raise InputError(
            f"TCP_USER_TIMEOUT must be at most {TCP_USER_TIMEOUT_MAX_MS} ms, got {user_timeout} s"
        )
    return micros or None


def _rto_max_us(rto_max: float) -> int:
    # tcp_rto_max_ms (6.15+) accepts 1000..120000 ms; older kernels always use TCP_RTO_MAX.
    micros = _check_positive("rto_max", rto_max)
    if not _us(1.0) <= micros <= _us(TCP_RTO_MAX):
        raise InputError(f"rto_max must be between 1 and {TCP_RTO_MAX:g} s, got {rto_max}")
    return micros


# --- tcp_model_timeout() ------------------------------------------------------------------


def _ilog2(value: int) -> int:
    return value.bit_length() - 1


def _linear_backoff_thresh(rto_base_us: int, rto_max_us: int) -> int:
    ratio = rto_max_us // rto_base_us
    if ratio < 1:
        raise InputError("rto_max must not be smaller than the RTO base")
    return _ilog2(ratio)


def _model_timeout_us(boundary: int, rto_base_us: int, rto_max_us: int) -> int:
    thresh = _linear_backoff_thresh(rto_base_us, rto_max_us)
    if boundary <= thresh:
        return ((2 << boundary) - 1) * rto_base_us
    return ((2 << thresh) - 1) * rto_base_us + (boundary - thresh) * rto_max_us


def model_timeout(boundary: int, rto_base: float, rto_max: float) -> float:
    """Seconds an idealised connection needs for `boundary` retransmissions.

    Mirrors tcp_model_timeout() in net/ipv4/tcp_timer.c: the RTO starts at rto_base and
    doubles until the ilog2(rto_max / rto_base)-th step, then stays at rto_max. Since 6.15
    the kernel passes tcp_rto_max(sk) (tcp_rto_max_ms) as rto_max; before, TCP_RTO_MAX.
    """
    _check_int("boundary", boundary, 0, SYSCTL_U8_MAX)
    base_us = _check_positive("rto_base", rto_base)
    max_us = _check_positive("rto_max", rto_max)
    return _s(_model_timeout_us(boundary, base_us, max_us))


# --- the retransmission timer -------------------------------------------------------------


class GiveUpReason(Enum):
    """Why a timer-driven state ended."""

    TIME_BUDGET = "time_budget"  # retransmits_timed_out(): elapsed >= tcp_model_timeout()
    USER_TIMEOUT = "user_timeout"  # TCP_USER_TIMEOUT replaced the time budget
    RETRY_COUNT = "retry_count"  # a retransmission counter reached its limit
    PROBES_EXHAUSTED = "probes_exhausted"  # keepalive: probes_out >= keepalive_probes

    @property
    def label(self) -> str:
        return self.value


class RetransmitSchedule(NamedTuple):
    """One idealised run of a retransmission timer against a silent peer.

    Times count from the original transmission. `waits[i]` is the timer armed after
    transmission i (0 = the original), so sum(waits) == gives_up_at; when a tail loss probe
    comes first (loss_probe=... of established_give_up or orphan_give_up), waits[0] runs
    from the original past the probe to the first RTO retransmission. Where the time budget
    starts (the kernel's retrans_stamp) depends on the state: see the function that made
    the schedule.
    """

    initial_rto: float
    rto_max: float
    retransmit_times: tuple[float, ...]
    waits: tuple[float, ...]
    retransmissions: int
    gives_up_at: float
    reason: GiveUpReason


# expired(retransmits, elapsed_us since retrans_stamp, current_rto_us) -> reason or None
_ExpiryRule = Callable[[int, int, int], GiveUpReason | None]
# next_rto(backoff, current_rto_us) -> next RTO in microseconds
_BackoffRule = Callable[[int, int], int]


def _clamp_to_user_timeout(rto_us: int, elapsed_us: int, user_timeout_us: int | None) -> int:
    """tcp_clamp_rto_to_user_timeout(): never sleep past the user timeout.

    `elapsed_us` counts from retrans_stamp, as the kernel's does. Once the deadline has
    passed the kernel arms one jiffy ("fire ASAP"); we use zero.
    """
    if user_timeout_us is None:
        return rto_us
    remaining = user_timeout_us - elapsed_us
    return min(rto_us, remaining) if remaining > 0 else 0


def _run_retransmit_timer(
    initial_rto_us: int,
    rto_max_us: int,
    expired: _ExpiryRule,
    next_rto: _BackoffRule,
    user_timeout_us: int | None = None,
    *,
    first_expiry_us: int | None = None,
    stamp_at_first_retransmission: bool = False,
    lateness: Callable[[int], int] | None = None,
) -> RetransmitSchedule:
    """tcp_retransmit_timer() + tcp_write_timeout(): each expiry either gives up or
    retransmits, backs the RTO off and re-arms the timer.

    The one walk of the RTO timer in this module. `expired` and the user-timeout clamp see
    the time since retrans_stamp: the original transmission by default (tcp_connect()
    stamps the first SYN), or with `stamp_at_first_retransmission` the first expiry's
    retransmission (tcp_retransmit_skb() stamps data and FINs there [measured on 6.18];
    notes 6.4 still say the original send). The first timer fires after the plain RTO
    (tcp_connect/tcp_rearm_rto) unless `first_expiry_us` says otherwise (a tail loss probe
    went out first and re-armed a full RTO).

    `lateness(wait_us)`, when given, is how late a timer of that length may fire: it is
    added up over the timers since retrans_stamp and shown to `expired` on top of the
    nominal elapsed time, as the kernel's clock would see it; the times in the schedule
    stay nominal. The walk then stops at the first expiry that late timers may end.
    """
    rto = initial_rto_us
    now = initial_rto_us if first_expiry_us is None else first_expiry_us
    stamp = 0
    # With the stamp at the original send, the first timer's lateness already counts.
    late = lateness(now) if lateness and not stamp_at_first_retransmission else 0
    waits = [now]
    times: list[int] = []
    while (reason := expired(len(times), now - stamp + late, rto)) is None:
        times.append(now)
        if stamp_at_first_retransmission and len(times) == 1:
            stamp = now
        rto = next_rto(len(times), rto)
        wait = _clamp_to_user_timeout(rto, now - stamp, user_timeout_us)
        waits.append(wait)
        now += wait
        late += lateness(wait) if lateness else 0
    return RetransmitSchedule(
        initial_rto=_s(initial_rto_us),
        rto_max=_s(rto_max_us),
        retransmit_times=tuple(_s(t) for t in times),
        waits=tuple(_s(w) for w in waits),
        retransmissions=len(times),
        gives_up_at=_s(now),
        reason=reason,
    )


def _doubling(rto_max_us: int) -> _BackoffRule:
    return lambda _backoff, rto: min(rto * 2, rto_max_us)


def _time_rule(budget_us: int, reason: GiveUpReason) -> _ExpiryRule:
    # retransmits_timed_out() is false until something has been retransmitted.
    def expired(retransmits: int, elapsed: int, _rto: int) -> GiveUpReason | None:
        return reason if retransmits > 0 and elapsed >= budget_us else None

    return expired


# --- established give-up: tcp_retries2 ----------------------------------------------------


class EstablishedGiveUp(NamedTuple):
    """When an ESTABLISHED connection with unacknowledged data reports ETIMEDOUT.

    Times count from the original transmission; the budget counts from `budget_from`.
    """

    retries2: int
    rto_base: float  # always the constant TCP_RTO_MIN, never tcp_rto_min_us
    rto_max: float
    linear_backoff_thresh: int
    model_budget: float
    user_timeout: float | None
    budget: float  # user_timeout when set, else model_budget
    schedule: RetransmitSchedule
    # retrans_stamp: the first RTO retransmission, where the budget's clock starts
    budget_from: float
    loss_probe_at: float | None  # None: no tail loss probe in this schedule
    # budget - (expiry - budget_from) at the last expiry that still retransmitted; None when
    # that was the first RTO expiry (which never gives up). Timers fire late, never early:
    # when their lateness since budget_from adds up to more than this, the kernel gives up
    # at that expiry instead.
    headroom: float | None
    # With `hz`: the first expiry that retransmits in `schedule` but may give up instead,
    # because the worst-case lateness of the timers since budget_from reaches its headroom
    # (nominal time, before that lateness); None when it cannot happen or without `hz`.
    sooner_give_up_at: float | None


def _budget_us(retries2: int, rto_max_us: int, user_timeout_us: int | None) -> tuple[int, int]:
    """(tcp_model_timeout(retries2, TCP_RTO_MIN, rto_max), the budget actually used)."""
    model_us = _model_timeout_us(retries2, _us(TCP_RTO_MIN), rto_max_us)
    return model_us, (user_timeout_us if user_timeout_us is not None else model_us)


def established_give_up(
    retries2: int = TCP_RETR2,
    *,
    rto_max: float = TCP_RTO_MAX,
    user_timeout: float | None = None,
    initial_rto: float = TCP_RTO_MIN,
    loss_probe: float | None = None,
    hz: int | None = None,
) -> EstablishedGiveUp:
    """Give-up time of an established connection sending into a black hole.

    Mirrors tcp_write_timeout() -> retransmits_timed_out(sk, tcp_retries2, user_timeout)
    in net/ipv4/tcp_timer.c, which compares now - retrans_stamp with the budget. The budget
    is tcp_model_timeout(retries2, TCP_RTO_MIN, tcp_rto_max(sk)); the rto base is the
    constant TCP_RTO_MIN even when tcp_rto_min_us is lowered. TCP_USER_TIMEOUT replaces the
    budget. retrans_stamp is set by tcp_retransmit_skb() at the first RTO retransmission,
    not at the original send [measured on 6.18], and the first RTO expiry never gives up
    (icsk_retransmits is still 0). So the budget runs from the first RTO retransmission
    (`budget_from`) and the connection dies at the first later expiry at or past it:
    tcp_retries2=3 (3.0 s) with a 200 ms RTO retransmits at 0.2, 0.6, 1.4 and 3.0 s (2.8 s
    in) and fails at 6.2 s, not 3.0 s.

    `initial_rto` is the RTO the connection had when the loss began. `loss_probe`, when
    given, is when the tail loss probe went out, in seconds after the original send and no
    later than the RTO (loss_probe_timeout() computes it): tcp_send_loss_probe() does not
    set retrans_stamp and re-arms a full RTO, so it only delays the whole schedule. Left
    out (None), no probe is modelled, as without SACK or with tcp_early_retrans below 3;
    with one, give-up times are later by the probe's delay. blackhole_retransmissions()
    gives the same walk with the probe computed and every transmission listed.

    The schedule assumes punctual timers. Real ones fire late (timer_slack()), and the
    lateness since budget_from adds to the elapsed time the kernel compares: given `hz`
    (CONFIG_HZ), `sooner_give_up_at` says where the worst case of it could end the
    connection one expiry early. With an RTO of exactly TCP_RTO_MIN and no user timeout,
    every schedule misses its budget by that one RTO (headroom 0.2 s), which a few late
    timers can use up (for the defaults: the expiry at 924.6 s instead of ETIMEDOUT at
    1044.6 s).
    """
    _check_int("tcp_retries2", retries2, 0, SYSCTL_U8_MAX)
    max_us = _rto_max_us(rto_max)
    first_us = min(_check_positive("initial_rto", initial_rto), max_us)
    ut_us = _user_timeout_us(user_timeout)
    probe_us = _loss_probe_us(loss_probe, first_us)
    return _established_walk(retries2, max_us, first_us, ut_us, probe_us, _check_hz(hz))


def _loss_probe_us(loss_probe: float | None, first_us: int) -> int | None:
    """A tail loss probe's send time, checked: tcp_schedule_loss_probe() never arms the
    probe timer past the RTO timer that is already running."""
    probe_us = None if loss_probe is None else _check_positive("loss_probe", loss_probe)
    if probe_us is not None and probe_us > first_us:
        raise InputError(
            f"loss_probe must come no later than the RTO ({_s(first_us)} s), got {loss_probe}"
        )
    return probe_us


class _StampedWalk(NamedTuple):
    """The RTO timer with its budget clock started at the first RTO retransmission."""

    schedule: RetransmitSchedule
    stamp_us: int  # retrans_stamp: the first RTO retransmission
    sooner_give_up_at: float | None  # see EstablishedGiveUp.sooner_give_up_at


def _walk_from_first_retransmission(
    first_us: int,
    max_us: int,
    expired: _ExpiryRule,
    ut_us: int | None,
    probe_us: int | None,
    hz: int | None,
) -> _StampedWalk:
    """tcp_write_timeout()'s retransmits_timed_out() against retrans_stamp, which
    tcp_retransmit_skb() sets at the first RTO retransmission: the clock of established
    data (tcp_retries2) and of orphans (tcp_orphan_retries) alike. A tail loss probe at
    `probe_us` does not set it and re-arms a full RTO. With `hz`, the same walk once more
    with the worst-case timer lateness since the stamp (timer_slack()) on the clock: where
    it stops before the nominal give-up, late timers may end the schedule there.
    """

    def walk(lateness: Callable[[int], int] | None) -> RetransmitSchedule:
        return _run_retransmit_timer(
            first_us,
            max_us,
            expired,
            _doubling(max_us),
            ut_us,
            first_expiry_us=(probe_us or 0) + first_us,
            stamp_at_first_retransmission=True,
            lateness=lateness,
        )

    schedule = walk(None)
    # The first expiry always retransmits (retransmits_timed_out() needs one), so
    # retransmit_times[0] exists and is the stamp.
    stamp_us = _us(schedule.retransmit_times[0])
    if hz is None:
        return _StampedWalk(schedule, stamp_us, None)
    late = walk(lambda wait_us: _us(timer_slack(_s(wait_us), hz).max_lateness))
    sooner = late.gives_up_at if late.retransmissions < schedule.retransmissions else None
    return _StampedWalk(schedule, stamp_us, sooner)


def _headroom_us(walk: _StampedWalk, budget_us: int) -> int | None:
    """budget - (last retransmission - retrans_stamp), `budget_us` being the budget in force
    at that last retransmission; None when it was the first RTO expiry (never gives up)."""
    times = walk.schedule.retransmit_times
    return budget_us - (_us(times[-1]) - walk.stamp_us) if len(times) > 1 else None


def _established_walk(
    retries2: int,
    max_us: int,
    first_us: int,
    ut_us: int | None,
    probe_us: int | None,
    hz: int | None = None,
) -> EstablishedGiveUp:
    """established_give_up() on checked values, in microseconds."""
    model_us, budget_us = _budget_us(retries2, max_us, ut_us)
    reason = GiveUpReason.USER_TIMEOUT if ut_us is not None else GiveUpReason.TIME_BUDGET
    walk = _walk_from_first_retransmission(
        first_us, max_us, _time_rule(budget_us, reason), ut_us, probe_us, hz
    )
    headroom = _headroom_us(walk, budget_us)
    base_us = _us(TCP_RTO_MIN)
    return EstablishedGiveUp(
        retries2=retries2,
        rto_base=_s(base_us),
        rto_max=_s(max_us),
        linear_backoff_thresh=_linear_backoff_thresh(base_us, max_us),
        model_budget=_s(model_us),
        user_timeout=None if ut_us is None else _s(ut_us),
        budget=_s(budget_us),
        schedule=walk.schedule,
        budget_from=_s(walk.stamp_us),
        loss_probe_at=None if probe_us is None else _s(probe_us),
        headroom=None if headroom is None else _s(headroom),
        sooner_give_up_at=walk.sooner_give_up_at,
    )


# --- data sent into a black hole: tail loss probe, then the RTO timer ---------------------


def loss_probe_timeout(
    srtt: float,
    rto: float,
    *,
    packets_out: int = 1,
    rto_min: float = TCP_RTO_MIN,
    hz: int | None = None,
) -> float:
    """When the tail loss probe fires after the last transmission, in seconds.

    Mirrors tcp_schedule_loss_probe() in net/ipv4/tcp_output.c (6.x): 2 x SRTT plus, with
    one packet in flight, the RTO minimum (room for the peer's delayed ACK), else
    TCP_TIMEOUT_MIN_US; converted with usecs_to_jiffies() (rounded up to a tick when `hz`
    is given) and never later than the RTO that is already armed.
    """
    srtt_us = _check_non_negative("srtt", srtt)
    rto_us = _check_positive("rto", rto)
    _check_int("packets in flight", packets_out, 1, 2**31 - 1)
    tick_hz = _check_hz(hz)
    min_us = _rto_min_us(rto_min, tick_hz)
    probe_us = 2 * srtt_us + (min_us if packets_out == 1 else TCP_TIMEOUT_MIN_US)
    if tick_hz is not None:
        probe_us = _usecs_to_jiffies(probe_us, tick_hz) * _US_PER_S // tick_hz
    return _s(min(probe_us, rto_us))


class BlackholeRetransmissions(NamedTuple):
    """Data written on an ESTABLISHED connection whose path silently drops everything.

    Times count from the original transmission. `budget` (tcp_model_timeout() of
    tcp_retries2, or TCP_USER_TIMEOUT) is measured from `budget_from`, the first
    retransmission made by the RTO timer, not from the original transmission.
    """

    retries2: int
    initial_rto: float
    rto_max: float
    loss_probe_at: float | None  # None: no tail loss probe (tcp_early_retrans, no SACK)
    rto_retransmit_times: tuple[float, ...]
    transmit_times: tuple[float, ...]  # 0.0, the loss probe, then every RTO retransmission
    waits: tuple[float, ...]  # gaps between consecutive transmit_times, then to the give-up
    budget: float
    budget_from: float
    gives_up_at: float
    reason: GiveUpReason
    # budget - (now - retrans_stamp) at the last expiry that still retransmitted; None when
    # that was the first RTO expiry (which never gives up). Timers fire late, never early:
    # when their lateness adds up to more than this, the kernel gives up one expiry sooner.
    headroom: float | None

    @property
    def retransmissions(self) -> int:
        return len(self.transmit_times) - 1


def blackhole_retransmissions(
    retries2: int = TCP_RETR2,
    *,
    initial_rto: float,
    srtt: float,
    loss_probe: bool = True,
    packets_out: int = 1,
    rto_min: float = TCP_RTO_MIN,
    rto_max: float = TCP_RTO_MAX,
    user_timeout: float | None = None,
    hz: int | None = None,
) -> BlackholeRetransmissions:
    """Every transmission of data sent into a black hole, and when write/read fails.

    Order of events in net/ipv4 (6.x) [measured on 6.18, notes 6.4]:
    1. tcp_schedule_loss_probe() arms the probe timer (loss_probe_timeout()) when TLP is
       on (tcp_early_retrans 3 or 4, SACK negotiated); tcp_send_loss_probe() resends the
       last segment through __tcp_retransmit_skb(), which does not set retrans_stamp, and
       tcp_rearm_rto() arms the RTO timer for a full RTO from that resend.
    2. The first RTO expiry cannot give up: retransmits_timed_out() is false while
       icsk_retransmits is 0. tcp_retransmit_skb() resends and, being the first
       retransmission of the head, sets retrans_stamp to now; the RTO doubles.
    3. Every later expiry gives up when now - retrans_stamp >= tcp_model_timeout(retries2,
       TCP_RTO_MIN, rto_max) (or TCP_USER_TIMEOUT), else resends and doubles the RTO up to
       rto_max; tcp_clamp_rto_to_user_timeout() shortens the wait to the user timeout.
    So the clock of the budget starts at the first RTO retransmission: with retries2 = 3
    (budget 3.0 s) and RTO 204 ms the error comes after four RTO retransmissions, at
    0.204 + 0.204 + 0.408 + 0.816 + 1.632 + 3.264 = 6.528 s, not at 3.264 s (measured
    6.75 s). Steps 2 and 3 are established_give_up() with the probe of step 1 as its
    `loss_probe`; this adds the probe and lists every transmission.
    """
    _check_int("tcp_retries2", retries2, 0, SYSCTL_U8_MAX)
    max_us = _rto_max_us(rto_max)
    rto_us = min(_check_positive("initial_rto", initial_rto), max_us)
    ut_us = _user_timeout_us(user_timeout)
    probe_us: int | None = None
    if loss_probe:
        probe = loss_probe_timeout(
            srtt, _s(rto_us), packets_out=packets_out, rto_min=rto_min, hz=hz
        )
        probe_us = _us(probe)
    give_up = _established_walk(retries2, max_us, rto_us, ut_us, probe_us)
    retransmits = give_up.schedule.retransmit_times
    transmits = (0.0, *(() if give_up.loss_probe_at is None else (give_up.loss_probe_at,)))
    transmits += retransmits
    ends = [_us(t) for t in (*transmits, give_up.schedule.gives_up_at)]
    return BlackholeRetransmissions(
        retries2=retries2,
        initial_rto=_s(min(_us(initial_rto), max_us)),
        rto_max=give_up.rto_max,
        loss_probe_at=give_up.loss_probe_at,
        rto_retransmit_times=retransmits,
        transmit_times=transmits,
        waits=tuple(_s(b - a) for a, b in itertools.pairwise(ends)),
        budget=give_up.budget,
        budget_from=give_up.budget_from,
        gives_up_at=give_up.schedule.gives_up_at,
        reason=give_up.schedule.reason,
        headroom=give_up.headroom,
    )


# --- SYN_SENT give-up: tcp_syn_retries + tcp_syn_linear_timeouts -------------------------


class SynGiveUp(NamedTuple):
    """When connect() fails with ETIMEDOUT because no SYN-ACK ever came back."""

    syn_retries: int
    linear_timeouts: int  # 0 reproduces kernels before 6.5
    rto_max: float
    max_retransmits: int  # syn_retries + linear_timeouts
    model_budget: float  # tcp_model_timeout(syn_retries, TCP_TIMEOUT_INIT)
    user_timeout: float | None
    budget: float
    schedule: RetransmitSchedule


def syn_give_up(
    syn_retries: int = TCP_SYN_RETRIES,
    *,
    linear_timeouts: int = TCP_SYN_LINEAR_TIMEOUTS,
    rto_max: float = TCP_RTO_MAX,
    user_timeout: float | None = None,
) -> SynGiveUp:
    """SYN retransmission schedule and ETIMEDOUT time of connect().

    Mirrors tcp_write_timeout() for TCP_SYN_SENT plus the backoff in
    tcp_retransmit_timer() (net/ipv4/tcp_timer.c, 6.5+): the RTO starts at
    tcp_timeout_init() = TCP_TIMEOUT_INIT and only doubles once icsk_backoff exceeds
    tcp_syn_linear_timeouts, so the first L+1 waits are 1 s. The kernel gives up at the
    first expiry where retransmits >= syn_retries + L, or where the time since the first
    SYN reaches tcp_model_timeout(syn_retries, TCP_TIMEOUT_INIT) (or TCP_USER_TIMEOUT).
    linear_timeouts=0 gives the pre-6.5 schedule (1, 3, 7, 15, 31, 63 -> 127 s).
    """
    _check_int("tcp_syn_retries", syn_retries, TCP_SYN_RETRIES_MIN, MAX_TCP_SYNCNT)
    _check_int("tcp_syn_linear_timeouts", linear_timeouts, 0, MAX_TCP_SYNCNT)
    max_us = _rto_max_us(rto_max)
    init_us = _us(TCP_TIMEOUT_INIT)
    ut_us = _user_timeout_us(user_timeout)
    model_us = _model_timeout_us(syn_retries, init_us, max_us)
    budget_us = ut_us if ut_us is not None else model_us
    max_retransmits = syn_retries + linear_timeouts
    time_reason = GiveUpReason.USER_TIMEOUT if ut_us is not None else GiveUpReason.TIME_BUDGET
    time_rule = _time_rule(budget_us, time_reason)

    def expired(retransmits: int, elapsed: int, rto: int) -> GiveUpReason | None:
        # The count is tested first; the time rule only runs when it did not fire.
        if retransmits >= max_retransmits:
            return GiveUpReason.RETRY_COUNT
        return time_rule(retransmits, elapsed, rto)

    def next_rto(backoff: int, rto: int) -> int:
        return min(rto * 2, max_us) if backoff > linear_timeouts else rto

    schedule = _run_retransmit_timer(init_us, max_us, expired, next_rto, ut_us)
    return SynGiveUp(
        syn_retries=syn_retries,
        linear_timeouts=linear_timeouts,
        rto_max=_s(max_us),
        max_retransmits=max_retransmits,
        model_budget=_s(model_us),
        user_timeout=None if ut_us is None else _s(ut_us),
        budget=_s(budget_us),
        schedule=schedule,
    )


# --- SYN-ACK give-up: tcp_synack_retries --------------------------------------------------


class SynAckGiveUp(NamedTuple):
    """When a listener drops a request socket whose SYN-ACK is never acknowledged."""

    synack_retries: int
    schedule: RetransmitSchedule  # gives_up_at = when the request is dropped


def synack_give_up(
    synack_retries: int = TCP_SYNACK_RETRIES,
    *,
    rto_max: float = TCP_RTO_MAX,
) -> SynAckGiveUp:
    """SYN-ACK retransmissions of one request socket and the time it is dropped.

    Mirrors reqsk_timer_handler() / syn_ack_recalc() in net/ipv4/inet_connection_sock.c:
    the timer is reqsk_timeout() = req->timeout << num_timeout (capped), the request
    expires once num_timeout >= max_syn_ack_retries. Linear timeouts do not apply here.
    The young/old pruning when the SYN queue is over half full and TCP_DEFER_ACCEPT are
    not modelled.
    """
    _check_int("tcp_synack_retries", synack_retries, 0, SYSCTL_U8_MAX)
    max_us = _rto_max_us(rto_max)

    def expired(retransmits: int, _elapsed: int, _rto: int) -> GiveUpReason | None:
        return GiveUpReason.RETRY_COUNT if retransmits >= synack_retries else None

    schedule = _run_retransmit_timer(_us(TCP_TIMEOUT_INIT), max_us, expired, _doubling(max_us))
    return SynAckGiveUp(synack_retries=synack_retries, schedule=schedule)


# --- orphan give-up: tcp_orphan_retries ---------------------------------------------------


def effective_orphan_retries(sysctl_value: int, *, alive: bool = True) -> int:
    """tcp_orphan_retries() in net/ipv4/tcp_timer.c: 0 means 8 while the socket is alive
    (icsk_rto < rto max). The ICMP soft-error branch is not modelled."""
    _check_int("tcp_orphan_retries", sysctl_value, 0, SYSCTL_U8_MAX)
    if sysctl_value == 0 and alive:
        return TCP_ORPHAN_RETRIES_ZERO_MEANS
    return sysctl_value


class OrphanGiveUp(NamedTuple):
    """When an orphaned socket (FIN_WAIT1, LAST_ACK, CLOSING) stops retransmitting.

    Times count from the FIN's original transmission; the budget counts from
    `budget_from`. The last four fields mean what they mean in EstablishedGiveUp.
    """

    orphan_retries: int  # the sysctl value
    effective_retries: int  # what tcp_orphan_retries() returned at the final check
    budget: float  # the budget at the final check
    schedule: RetransmitSchedule
    budget_from: float  # retrans_stamp: the first RTO retransmission
    loss_probe_at: float | None  # None: no tail loss probe in this schedule
    headroom: float | None  # budget - time since budget_from, at the last retransmission
    sooner_give_up_at: float | None  # with `hz`: where late timers may end it instead


def orphan_give_up(
    orphan_retries: int = 0,
    *,
    rto_max: float = TCP_RTO_MAX,
    initial_rto: float = TCP_RTO_MIN,
    loss_probe: float | None = None,
    hz: int | None = None,
) -> OrphanGiveUp:
    """Give-up time of an orphan whose FIN (or data) is never acknowledged.

    Mirrors the SOCK_DEAD branch of tcp_write_timeout(): retry_until =
    tcp_orphan_retries(sk, alive) with alive = icsk_rto < rto max, then
    retransmits_timed_out() against tcp_model_timeout(retry_until, TCP_RTO_MIN). With the
    default 0 -> 8 the budget is 511 x 0.2 s = 102.2 s. Like tcp_retries2's, the budget
    runs from retrans_stamp, set at the first RTO retransmission, and the first RTO expiry
    never gives up; the orphan is destroyed at the first later expiry at or past it
    [measured on 6.18, LAST_ACK, RTO 204 ms: tcp_orphan_retries=3 (3.0 s) gone after
    6.77 s, =2 (1.4 s) after 3.36 s, not at 3.0 and 1.4 s]. So the default retransmits at
    0.2 ... 102.2 s (102.0 s in, 9 retransmissions) and ends at 204.6 s nominally, or at
    102.2 s once late timers have used up the 0.2 s left (`sooner_give_up_at`, with `hz`).

    `initial_rto`, `loss_probe` and `hz` are those of established_give_up(): a tail loss
    probe (None: not modelled) delays the whole schedule. TCP_USER_TIMEOUT, which the
    kernel also applies to orphans, and orphan killing for memory (tcp_out_of_resources)
    are not modelled.
    """
    effective_orphan_retries(orphan_retries)  # validates
    max_us = _rto_max_us(rto_max)
    first_us = min(_check_positive("initial_rto", initial_rto), max_us)
    probe_us = _loss_probe_us(loss_probe, first_us)
    base_us = _us(TCP_RTO_MIN)

    def budget_for(rto: int) -> int:
        retries = effective_orphan_retries(orphan_retries, alive=rto < max_us)
        return _model_timeout_us(retries, base_us, max_us)

    def expired(retransmits: int, elapsed: int, rto: int) -> GiveUpReason | None:
        if retransmits > 0 and elapsed >= budget_for(rto):
            return GiveUpReason.TIME_BUDGET
        return None

    walk = _walk_from_first_retransmission(first_us, max_us, expired, None, probe_us, _check_hz(hz))
    # No user timeout clamps an orphan's timers, so each wait is the RTO its expiry sees
    # (waits[0] alone may include a loss probe; it ends at the first expiry, never the last).
    waits = walk.schedule.waits
    headroom = _headroom_us(walk, budget_for(_us(waits[-2]))) if len(waits) > 2 else None
    final_rto = _us(waits[-1])
    return OrphanGiveUp(
        orphan_retries=orphan_retries,
        effective_retries=effective_orphan_retries(orphan_retries, alive=final_rto < max_us),
        budget=_s(budget_for(final_rto)),
        schedule=walk.schedule,
        budget_from=_s(walk.stamp_us),
        loss_probe_at=None if probe_us is None else _s(probe_us),
        headroom=None if headroom is None else _s(headroom),
        sooner_give_up_at=walk.sooner_give_up_at,
    )


# --- keepalive ----------------------------------------------------------------------------


class KeepaliveDetection(NamedTuple):
    """When keepalive declares a silent peer dead, counted from the last segment received."""

    time: float
    intvl: float
    probes: int
    user_timeout: float | None
    probe_times: tuple[float, ...]
    probes_sent: int
    detected_at: float
    reason: GiveUpReason


def _keepalive_us(time: float, intvl: float) -> tuple[int, int]:
    """TCP_KEEPIDLE and TCP_KEEPINTVL in microseconds, within the ranges setsockopt takes."""
    time_us = _check_positive("keepalive time", time)
    intvl_us = _check_positive("keepalive interval", intvl)
    if time_us > MAX_TCP_KEEPIDLE * _US_PER_S:
        raise InputError(f"keepalive time must be at most {MAX_TCP_KEEPIDLE} s, got {time}")
    if intvl_us > MAX_TCP_KEEPINTVL * _US_PER_S:
        raise InputError(f"keepalive interval must be at most {MAX_TCP_KEEPINTVL} s, got {intvl}")
    return time_us, intvl_us


def keepalive_detection(
    time: float = TCP_KEEPALIVE_TIME,
    intvl: float = TCP_KEEPALIVE_INTVL,
    probes: int = TCP_KEEPALIVE_PROBES,
    *,
    user_timeout: float | None = None,
) -> KeepaliveDetection:
    """Keepalive probe times and the abort time for a peer that never answers.

    Mirrors tcp_keepalive_timer() in net/ipv4/tcp_timer.c. The first firing is at `time`
    of idleness; each firing either aborts or sends one probe and re-arms after `intvl`.
    Without TCP_USER_TIMEOUT it aborts once probes_out >= probes: time + probes x intvl
    (7875 s by default). With TCP_USER_TIMEOUT the probe count is ignored and it aborts at
    the first firing where idle >= user_timeout and at least one probe went out (notes
    5.4). Ranges are those of TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT.
    """
    time_us, intvl_us = _keepalive_us(time, intvl)
    _check_int("keepalive probes", probes, 1, MAX_TCP_KEEPCNT)
    ut_us = _user_timeout_us(user_timeout)

    idle = time_us
    sent: list[int] = []
    while (reason := _keepalive_abort(idle, len(sent), probes, ut_us)) is None:
        sent.append(idle)
        idle += intvl_us
    return KeepaliveDetection(
        time=_s(time_us),
        intvl=_s(intvl_us),
        probes=probes,
        user_timeout=None if ut_us is None else _s(ut_us),
        probe_times=tuple(_s(t) for t in sent),
        probes_sent=len(sent),
        detected_at=_s(idle),
        reason=reason,
    )


def _keepalive_abort(
    idle_us: int, probes_out: int, probes: int, user_timeout_us: int | None
) -> GiveUpReason | None:
    """The abort test at the top of each tcp_keepalive_timer() firing past the idle time."""
    if user_timeout_us is not None:
        if idle_us >= user_timeout_us and probes_out > 0:
            return GiveUpReason.USER_TIMEOUT
        return None
    return GiveUpReason.PROBES_EXHAUSTED if probes_out >= probes else None


class KeepaliveAnswered(NamedTuple):
    """Keepalive on a connection whose peer answers every probe: when probes go out."""

    time: float
    intvl: float
    first_probe: float  # idle time (since the last segment received) of the first probe
    period: float  # between later probes, while the peer keeps answering


def keepalive_answered(
    time: float = TCP_KEEPALIVE_TIME, intvl: float = TCP_KEEPALIVE_INTVL
) -> KeepaliveAnswered:
    """Probe times of an idle connection whose peer is alive, from tcp_keepalive_timer().

    The first probe goes out at `time` of idleness. It is sent and the timer re-armed
    after `intvl`; the peer's ACK resets probes_out and the idle clock (rcv_tstamp). At the
    next firing the connection has been idle for about `intvl`: if that is at least `time`
    a probe goes out at once, otherwise the timer is re-armed for `time - idle`. So probes
    follow each other every max(time, intvl), the round trip aside. Timer-wheel lateness
    (timer_slack()) comes on top of each firing.
    """
    time_us, intvl_us = _keepalive_us(time, intvl)
    return KeepaliveAnswered(_s(time_us), _s(intvl_us), _s(time_us), _s(max(time_us, intvl_us)))


# --- FIN_WAIT2 ----------------------------------------------------------------------------


class FinWait2Outcome(Enum):
    MINISOCK = "minisock"  # tcp_time_wait(sk, TCP_FIN_WAIT2, tmo) straight away
    FULL_SOCKET_THEN_MINISOCK = "full_socket_then_minisock"  # fin time > TCP_TIMEWAIT_LEN
    RESET = "reset"  # TCP_LINGER2 < 0: RST instead of FIN_WAIT2 (tcp_rcv_state_process/close)
    UNBOUNDED = "unbounded"  # not orphaned: no FIN_WAIT2 timer exists

    @property
    def label(self) -> str:
        return self.value


class FinWait2Lifetime(NamedTuple):
    """How long a FIN_WAIT2 socket lives when the peer never sends its FIN.

    `lifetime` is None when there is no timer at all (the application still holds the fd),
    i.e. the socket lives until the peer's FIN, an RST or the application's close().
    """

    fin_timeout: float
    linger2: int | None  # TCP_LINGER2 as the application passed it, None if never set
    linger2_effective: float | None  # stored value: seconds (max 120), -1 = reset, None = unset
    rto: float
    orphaned: bool
    fin_time: float | None  # tcp_fin_time(); None when no timer applies
    outcome: FinWait2Outcome
    full_socket_phase: float  # keepalive-timer phase on the full socket (timer code 2)
    minisock_phase: float  # FIN_WAIT2 minisock phase (timer code 3)
    lifetime: float | None


def _linger2_stored_us(linger2: int | None) -> int | None:
    """do_tcp_setsockopt(TCP_LINGER2): negative -> -1, above TCP_FIN_TIMEOUT_MAX -> clamp,
    0 -> unset (use the sysctl). Returns None for "unset", -1 for "reset"."""
    if linger2 is None or linger2 == 0:
        return None
    if isinstance(linger2, bool) or not isinstance(linger2, int):
        raise InputError(f"TCP_LINGER2 must be a whole number of seconds, got {linger2!r}")
    if linger2 < 0:
        return TCP_LINGER2_RESET
    return min(linger2 * _US_PER_S, _us(TCP_FIN_TIMEOUT_MAX))


def _rto_floor_us(rto_us: int, hz: int | None = None) -> int:
    """(rto << 2) - (rto >> 1): the kernel's integer 3.5 x RTO. The kernel computes it in
    jiffies, so with `hz` an odd number of ticks loses half a tick: 51 ticks (204 ms at
    HZ=250) give 179 ticks = 716 ms, not 714 ms."""
    if hz is None:
        return (rto_us << 2) - (rto_us >> 1)
    ticks = _usecs_to_jiffies(rto_us, hz)
    return ((ticks << 2) - (ticks >> 1)) * _US_PER_S // hz


def fin_wait2_lifetime(
    fin_timeout: float = TCP_FIN_TIMEOUT,
    *,
    linger2: int | None = None,
    orphaned: bool = True,
    rto: float = TCP_RTO_MIN,
    hz: int | None = None,
) -> FinWait2Lifetime:
    """Lifetime of FIN_WAIT2 (notes 1.5).

    Mirrors tcp_fin_time() in include/net/tcp.h (linger2 or tcp_fin_timeout, at least
    3.5 x RTO) and its users __tcp_close() / tcp_rcv_state_process() / tcp_keepalive_timer()
    and tcp_time_wait(). Orphaned with fin time F <= 60 s: a FIN_WAIT2 minisock for F.
    F > 60 s: the full socket waits F - 60 on its keepalive timer, then tcp_keepalive_timer()
    recomputes F - 60 and hands that to tcp_time_wait(), so the total is 2 x (F - 60), not F
    (F = 90 gives 60 s, F = 100 gives 80 s). Not orphaned (shutdown(SHUT_WR) with the fd
    still open): no timer, lifetime None. `rto` is the RTO when FIN_WAIT2 begins (the ACK
    of our FIN is itself an RTT sample); with `hz` the 3.5 x RTO floor is taken in ticks.
    """
    f_us = _check_non_negative("tcp_fin_timeout", fin_timeout)
    rto_us = _check_positive("rto", rto)
    stored = _linger2_stored_us(linger2)
    floor_us = _rto_floor_us(rto_us, _check_hz(hz))
    linger_eff = None if stored is None else (-1.0 if stored < 0 else _s(stored))

    def record(
        outcome: FinWait2Outcome, fin: int | None, full: int, mini: int, total: int | None
    ) -> FinWait2Lifetime:
        return FinWait2Lifetime(
            fin_timeout=_s(f_us),
            linger2=linger2,
            linger2_effective=linger_eff,
            rto=_s(rto_us),
            orphaned=orphaned,
            fin_time=None if fin is None else _s(fin),
            outcome=outcome,
            full_socket_phase=_s(full),
            minisock_phase=_s(mini),
            lifetime=None if total is None else _s(total),
        )

    if not orphaned:
        return record(FinWait2Outcome.UNBOUNDED, None, 0, 0, None)
    if stored is not None and stored < 0:
        return record(FinWait2Outcome.RESET, None, 0, 0, 0)
    fin_us = max(stored if stored is not None else f_us, floor_us)
    timewait_us = _us(TCP_TIMEWAIT_LEN)
    if fin_us <= timewait_us:
        return record(FinWait2Outcome.MINISOCK, fin_us, 0, fin_us, fin_us)
    full_us = fin_us - timewait_us
    mini_us = max(full_us, floor_us)  # tcp_time_wait() applies the 3.5 x RTO floor again
    return record(
        FinWait2Outcome.FULL_SOCKET_THEN_MINISOCK, fin_us, full_us, mini_us, full_us + mini_us
    )


# --- RTO estimator ------------------------------------------------------------------------


def _usecs_to_jiffies(micros: int, hz: int) -> int:
    """usecs_to_jiffies(): rounds up to whole ticks."""
    return -(-micros * hz // _US_PER_S)


def _check_hz(hz: int | None) -> int | None:
    if hz is None:
        return None
    return _check_int("HZ", hz, 1, 10_000)


def _rto_min_us(rto_min: float, hz: int | None) -> int:
    """The RTO minimum as the socket keeps it: tcp_init_sock() stores tcp_rto_min_us as
    icsk_rto_min = usecs_to_jiffies() (rounded up to a tick) and tcp_rto_min_us(sk) turns
    that back into microseconds, so 50000 us is 52 ms at HZ=250 [measured on 6.18: RTO
    56 ms = 14 ticks for an RTT of microseconds]. The default 200 ms is a whole number of
    ticks at every CONFIG_HZ choice."""
    min_us = _check_positive("rto_min", rto_min)
    if hz is None:
        return min_us
    return -(-_usecs_to_jiffies(min_us, hz) * _US_PER_S // hz)


def _set_rto_us(srtt8_us: int, rttvar_us: int, rto_max_us: int, hz: int | None) -> tuple[int, bool]:
    """__tcp_set_rto() + tcp_bound_rto(): srtt + rttvar, in whole jiffies if HZ is given,
    capped at the RTO maximum. Returns (rto in µs, whether the cap applied)."""
    raw = (srtt8_us >> 3) + rttvar_us
    if hz is None:
        return min(raw, rto_max_us), raw > rto_max_us
    jiffies = _usecs_to_jiffies(raw, hz)
    max_jiffies = _usecs_to_jiffies(rto_max_us, hz)
    return -(-min(jiffies, max_jiffies) * _US_PER_S // hz), jiffies > max_jiffies


class RtoEstimate(NamedTuple):
    """RTO for a given smoothed RTT and deviation, the way tcp_set_rto() computes it.

    `rttvar` is the mean deviation as ss(8) prints it (tcpi_rttvar, RFC 6298 RTTVAR). The
    kernel adds `variance_term` = max(4 x rttvar, rto_min) to srtt: the minimum applies to
    the variance term, not to the RTO (notes 6.2).
    """

    srtt: float
    rttvar: float
    rto_min: float
    variance_term: float
    rto: float
    hz: int | None
    capped: bool  # tcp_bound_rto() cut it to rto_max


def rto_for_rtt(
    rtt: float,
    rttvar: float | None = None,
    rto_min: float = TCP_RTO_MIN,
    *,
    rto_max: float = TCP_RTO_MAX,
    hz: int | None = None,
) -> RtoEstimate:
    """RTO for a smoothed RTT, mirroring tcp_rtt_estimator() + tcp_set_rto().

    Without `rttvar` this is the first-sample case of tcp_rtt_estimator() (net/ipv4/
    tcp_input.c): srtt = m, mdev = 2m (kernel scale, i.e. rttvar = m/2), so RTO = 3m, but
    rttvar_us is floored at rto_min, so RTO = m + max(2m, rto_min): 100 ms -> 300 ms,
    50 us -> 200.05 ms. With `hz`, usecs_to_jiffies() rounds up (204 ms at HZ=250).
    """
    m_us = _check_positive("rtt", rtt)
    max_us = _rto_max_us(rto_max)
    tick_hz = _check_hz(hz)
    min_us = _rto_min_us(rto_min, tick_hz)
    mdev4_us = 2 * m_us if rttvar is None else 4 * _check_non_negative("rttvar", rttvar)
    rttvar_us = max(mdev4_us, min_us)
    rto_us, capped = _set_rto_us(m_us << 3, rttvar_us, max_us, tick_hz)
    return RtoEstimate(
        srtt=_s(m_us),
        rttvar=_s(mdev4_us) / 4,
        rto_min=_s(min_us),
        variance_term=_s(rttvar_us),
        rto=_s(rto_us),
        hz=tick_hz,
        capped=capped,
    )


class EstimatorState(NamedTuple):
    """The kernel's scaled estimator fields after a sample, plus the resulting RTO."""

    samples: int
    srtt_us: int  # 8 x SRTT, as tp->srtt_us
    mdev_us: int  # 4 x mean deviation, as tp->mdev_us
    mdev_max_us: int  # largest mdev_us in the current round, floored at rto_min
    rttvar_us: int  # what __tcp_set_rto() adds to srtt
    srtt: float
    rttvar: float  # mdev_us / 4, what ss(8) shows
    rto: float


class RttEstimator:
    """Stateful tcp_rtt_estimator() (net/ipv4/tcp_input.c) in the kernel's integer µs.

    Feed one RTT sample at a time. `new_round=True` tells the estimator that this ACK
    covers data sent after the previous round began (the kernel's
    after(snd_una, rtt_seq)), which is when rttvar decays towards mdev_max and mdev_max
    is reset to rto_min. With one sample per round trip, leave it True.
    """

    def __init__(
        self,
        *,
        rto_min: float = TCP_RTO_MIN,
        rto_max: float = TCP_RTO_MAX,
        hz: int | None = None,
    ) -> None:
        self._max_us = _rto_max_us(rto_max)
        self._hz = _check_hz(hz)
        self._min_us = _rto_min_us(rto_min, self._hz)
        self._srtt_us = 0  # 8 x SRTT (tp->srtt_us)
        self._mdev_us = 0  # 4 x mean deviation (tp->mdev_us)
        self._mdev_max_us = 0
        self._rttvar_us = 0
        self._samples = 0

    def sample(self, rtt: float, *, new_round: bool = True) -> EstimatorState:
        m = _check_positive("rtt", rtt)
        if self._srtt_us:
            self._update(m, new_round=new_round)
        else:
            self._first(m)
        self._samples += 1
        return self.state()

    def _first(self, m: int) -> None:
        self._srtt_us = m << 3
        self._mdev_us = m << 1  # so that the first RTO is 3 x m
        self._rttvar_us = max(self._mdev_us, self._min_us)
        self._mdev_max_us = self._rttvar_us

    def _update(self, m: int, *, new_round: bool) -> None:
        err = m - (self._srtt_us >> 3)
        self._srtt_us = max(1, self._srtt_us + err)
        if err < 0:
            # A falling RTT moves mdev with a finer gain (1/32), so RTO does not jump up.
            err = -err - (self._mdev_us >> 2)
            if err > 0:
                err >>= 3
        else:
            err -= self._mdev_us >> 2
        self._mdev_us += err
        if self._mdev_us > self._mdev_max_us:
            self._mdev_max_us = self._mdev_us
            self._rttvar_us = max(self._rttvar_us, self._mdev_max_us)
        if new_round:
            if self._mdev_max_us < self._rttvar_us:
                self._rttvar_us -= (self._rttvar_us - self._mdev_max_us) >> 2
            self._mdev_max_us = self._min_us

    def state(self) -> EstimatorState:
        if not self._samples:
            raise InputError("the RTT estimator has no samples yet")
        rto_us, _capped = _set_rto_us(self._srtt_us, self._rttvar_us, self._max_us, self._hz)
        return EstimatorState(
            samples=self._samples,
            srtt_us=self._srtt_us,
            mdev_us=self._mdev_us,
            mdev_max_us=self._mdev_max_us,
            rttvar_us=self._rttvar_us,
            srtt=_s(self._srtt_us >> 3),
            rttvar=_s(self._mdev_us) / 4,
            rto=_s(rto_us),
        )


# --- ephemeral ports ----------------------------------------------------------------------


def parse_port_set(text: str) -> frozenset[int]:
    """Parse the ip_local_reserved_ports syntax: "40000-40100,50000" (empty = none)."""
    ports: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        first, sep, last = item.partition("-")
        try:
            low = int(first)
            high = int(last) if sep else low
        except ValueError:
            raise InputError(f"bad port or port range {item!r}") from None
        _check_int("port", low, 0, MAX_PORT)
        _check_int("port", high, 0, MAX_PORT)
        if low > high:
            raise InputError(f"port range {item!r} ends before it starts")
        ports.update(range(low, high + 1))
    return frozenset(ports)


class PortCapacity(NamedTuple):
    """How many connect() calls can be open at once to ONE (saddr, daddr, dport).

    Capacity is per destination: sockets to other destinations do not use it up (notes 4.4).
    """

    low: int
    high: int
    range_size: int
    reserved_in_range: int
    bound_in_range: int  # ports held by bind()/listeners, not counting reserved ones
    capacity: int


def port_capacity(
    low: int = DEFAULT_PORT_RANGE[0],
    high: int = DEFAULT_PORT_RANGE[1],
    *,
    reserved: Iterable[int] = (),
    bound: Iterable[int] = (),
) -> PortCapacity:
    """Ephemeral ports __inet_hash_connect() (net/ipv4/inet_hashtables.c) can hand out.

    The candidate range is ip_local_port_range; inet_is_local_reserved_port() skips
    ip_local_reserved_ports and bind buckets created by bind() (fastreuse >= 0) are never
    shared with connect(). Both parities are eventually tried, so all remaining ports count,
    with one exception this upper bound ignores: in an odd-sized range one connect() call
    examines only K - 1 ports, so the last free port is found only when that call's window
    holds it, and a 3-port range never uses its top port (connect_port_walk(), measured by
    the lab: 40000-40032 gave 33 connections, 40000-40002 gave 2).
    """
    _check_int("port range start", low, MIN_PORT, MAX_PORT)
    _check_int("port range end", high, MIN_PORT, MAX_PORT)
    if low > high:
        raise InputError(f"port range start {low} is above its end {high}")
    in_range = range(low, high + 1)
    reserved_set = {p for p in reserved if low <= p <= high}
    bound_set = {p for p in bound if low <= p <= high} - reserved_set
    return PortCapacity(
        low=low,
        high=high,
        range_size=len(in_range),
        reserved_in_range=len(reserved_set),
        bound_in_range=len(bound_set),
        capacity=len(in_range) - len(reserved_set) - len(bound_set),
    )


class ConnectionRateLimit(NamedTuple):
    """Highest sustainable rate of new connections to one (saddr, daddr, dport)."""

    ports: PortCapacity
    tw_reuse: int
    tw_reuse_delay_ms: int
    timestamps: bool
    loopback: bool
    tw_reuse_applies: bool
    port_hold: float  # how long each closed connection keeps its port from connect()
    max_rate: float  # connections per second
    worst_case_port_hold: float  # including timer-wheel lateness of the TIME_WAIT timer
    worst_case_max_rate: float
    assumptions: tuple[str, ...]


def _tw_reuse_applies(tw_reuse: int, *, timestamps: bool, loopback: bool) -> bool:
    """tcp_twsk_unique() (net/ipv4/tcp_ipv4.c): reuse needs timestamps seen on the old
    connection; tw_reuse=2 only counts for loopback 4-tuples."""
    if not timestamps or tw_reuse == 0:
        return False
    return tw_reuse == 1 or loopback


def max_connection_rate(
    ports: PortCapacity,
    *,
    tw_reuse: int = TCP_TW_REUSE_DEFAULT,
    tw_reuse_delay_ms: int = TCP_TW_REUSE_DELAY_MS,
    timestamps: bool = True,
    loopback: bool = False,
    hz: int = REFERENCE_HZ,
) -> ConnectionRateLimit:
    """capacity / port hold time, with the hold decided by tcp_twsk_unique().

    Without reuse a port is held for the whole TIME_WAIT (TCP_TIMEWAIT_LEN, 60 s):
    28232 / 60 = 470.5 conn/s for the default range. When tw_reuse applies, connect() may
    take the TIME_WAIT over once tcp_tw_reuse_delay has passed since it was entered; we
    model the hold as exactly that delay.
    """
    _check_int("tcp_tw_reuse", tw_reuse, 0, TCP_TW_REUSE_MAX)
    _check_int(
        "tcp_tw_reuse_delay (ms)",
        tw_reuse_delay_ms,
        TCP_TW_REUSE_DELAY_MS_MIN,
        TCP_TW_REUSE_DELAY_MS_MAX,
    )
    applies = _tw_reuse_applies(tw_reuse, timestamps=timestamps, loopback=loopback)
    assumptions = [
        "the client closes first, so every connection leaves a TIME_WAIT on its own port",
        "connections are short compared with the time a port is held after close",
        "no explicit bind() before connect() (a bound port bypasses tcp_tw_reuse entirely)",
    ]
    if applies:
        hold_us = tw_reuse_delay_ms * _US_PER_MS
        worst_us = hold_us  # checked against a ms clock at connect() time, no timer involved
        assumptions.append(
            f"a TIME_WAIT is reused {tw_reuse_delay_ms} ms after it was entered "
            "(tcp_tw_reuse_delay, 6.14+); before 6.14 the test used a 1 Hz clock, "
            "so the delay was 0-1 s and 1 s is the worst case"
        )
    else:
        hold_us = _us(TCP_TIMEWAIT_LEN)
        worst_us = hold_us + _us(timer_slack(TCP_TIMEWAIT_LEN, hz).max_lateness)
        assumptions.append(_no_reuse_reason(tw_reuse, timestamps=timestamps))
        assumptions.append(f"worst case adds the timer-wheel lateness at HZ={hz}")
    capacity = ports.capacity
    return ConnectionRateLimit(
        ports=ports,
        tw_reuse=tw_reuse,
        tw_reuse_delay_ms=tw_reuse_delay_ms,
        timestamps=timestamps,
        loopback=loopback,
        tw_reuse_applies=applies,
        port_hold=_s(hold_us),
        max_rate=capacity / _s(hold_us),
        worst_case_port_hold=_s(worst_us),
        worst_case_max_rate=capacity / _s(worst_us),
        assumptions=tuple(assumptions),
    )


def _no_reuse_reason(tw_reuse: int, *, timestamps: bool) -> str:
    if not timestamps:
        return "timestamps are off, so tcp_tw_reuse can never take a TIME_WAIT over"
    if tw_reuse == 0:
        return "tcp_tw_reuse=0: ports stay held for the full TIME_WAIT"
    return "tcp_tw_reuse=2 only helps loopback destinations; this one is not loopback"


class ConnectPortWalk(NamedTuple):
    """Which ports of ip_local_port_range connect() autobinding can hand out.

    `guaranteed` connects to one destination always succeed before the first
    EADDRNOTAVAIL; `reachable` ports can be handed out at all. They differ only for an
    odd-sized range, where the walk covers an even-sized window that moves between calls.
    """

    low: int
    high: int
    range_size: int
    per_scan: int  # ports one connect() examines (both parity passes together)
    guaranteed: int
    reachable: int


def connect_port_walk(low: int, high: int, *, per_socket_range: bool = False) -> ConnectPortWalk:
    """__inet_hash_connect() (net/ipv4/inet_hashtables.c) over ip_local_port_range [low, high].

    Without a per-socket IP_LOCAL_PORT_RANGE the walk steps by 2: `remaining = high + 1 -
    low` is rounded down to even, the start `offset` (a hash plus a per-destination
    perturbation that grows after every connect, modulo remaining) is made even, and the
    ports low + offset, +2, ... are tried for remaining / 2 steps, wrapping back by
    `remaining` past `high`; then the same from offset + 1 (the other parity). An even-sized
    range is covered completely by every call. An odd-sized range K = 2m + 1 has m + 1 ports
    of low's parity, but each call sees a window of only m of them: one call examines K - 1
    ports, so K - 1 connects always succeed and the K-th only if that call's window holds
    the one port still free. For K = 3 the offset is always 0, the window never moves and
    `high` is never used. [measured on 6.18: 40000-40002 gave 2 connections, 40000-40032
    gave 33.] With IP_LOCAL_PORT_RANGE set (6.8+) the step is 1 and every port is examined.
    Reserved and bind()-held ports are not subtracted here (see port_capacity()).
    """
    _check_int("port range start", low, MIN_PORT, MAX_PORT)
    _check_int("port range end", high, MIN_PORT, MAX_PORT)
    if low > high:
        raise InputError(f"port range start {low} is above its end {high}")
    size = high + 1 - low
    if per_socket_range or size <= 1 or size % 2 == 0:
        return ConnectPortWalk(low, high, size, size, size, size)
    per_scan = size - 1
    reachable = per_scan if per_scan == 2 else size
    return ConnectPortWalk(low, high, size, per_scan, per_scan, reachable)


class PortExhaustion(NamedTuple):
    """Connection-per-request at a steady rate to ONE (saddr, daddr, dport).

    Attempt i starts at i / rate (open loop: a failed attempt does not slow the next one).
    Each connection is assumed to close at once and to keep its port from connect() for
    `port_hold` after the close (the TIME_WAIT, or tcp_tw_reuse_delay when reuse applies).
    Times count from the first attempt; `ports_back_at` counts from the first close.
    """

    capacity: int
    rate: float  # attempts per second
    port_hold: float
    exhausts: bool
    successes_before_failure: int | None  # None when the ports never run out
    first_failure_at: float | None
    ports_back_at: float | None  # first port usable again, after the first close
    failure_window: float | None  # from the first failure to the first port back
    sustained_rate: float  # successes per second once the on/off cycle has settled


def port_exhaustion(capacity: int, rate: float, port_hold: float) -> PortExhaustion:
    """When connect() starts failing with EADDRNOTAVAIL, and for how long.

    Ports run out when attempt number `capacity` (counting from 0) comes before the first
    port is released: capacity / rate < port_hold. Failures then last until port_hold after
    the first close; the ports come back in the order they were taken, so the pattern
    repeats every port_hold: `capacity` successes, then failures (notes 4.4, 1.1, 2.3).
    """
    _check_int("port capacity", capacity, 0, MAX_PORT)
    if not math.isfinite(rate) or rate <= 0:
        raise InputError(f"rate must be a positive number of attempts per second, got {rate}")
    hold_us = _check_positive("port hold", port_hold)
    first_failure_us = round(capacity * _US_PER_S / rate)
    sustained = min(rate, capacity / _s(hold_us))
    if first_failure_us >= hold_us:
        return PortExhaustion(capacity, rate, _s(hold_us), False, None, None, None, None, sustained)
    return PortExhaustion(
        capacity=capacity,
        rate=rate,
        port_hold=_s(hold_us),
        exhausts=True,
        successes_before_failure=capacity,
        first_failure_at=_s(first_failure_us),
        ports_back_at=_s(hold_us),
        failure_window=_s(hold_us - first_failure_us),
        sustained_rate=sustained,
    )


# --- TIME_WAIT memory ---------------------------------------------------------------------


@dataclass(frozen=True)
class TimeWaitMemory:
    count: int
    bytes_per_socket: int
    total_bytes: int
    total_mib: float


def time_wait_memory(count: int, *, bytes_per_socket: int = TW_SOCK_BYTES) -> TimeWaitMemory:
    """Kernel memory held by `count` TIME_WAIT minisocks (tw_sock_TCP slab objects)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InputError(f"TIME_WAIT count must be zero or more, got {count}")
    if isinstance(bytes_per_socket, bool) or bytes_per_socket <= 0:
        raise InputError(f"bytes per socket must be positive, got {bytes_per_socket}")
    total = count * bytes_per_socket
    return TimeWaitMemory(
        count=count,
        bytes_per_socket=bytes_per_socket,
        total_bytes=total,
        total_mib=total / _BYTES_PER_MIB,
    )


# --- TIME_WAIT: what re-arms it, overflow, and the close() paths that lead to it ----------


class TimeWaitAction(Enum):
    """What a segment does to a true TIME_WAIT minisock's timer."""

    REARM = "rearm"  # inet_twsk_reschedule(tw, TCP_TIMEWAIT_LEN): a full 60 s again
    KILL = "kill"  # inet_twsk_deschedule_put(): "TIME_WAIT assassination" by an RST
    KEEP = "keep"  # the timer runs on untouched

    @property
    def label(self) -> str:
        return self.value


def time_wait_action(
    *,
    rst: bool,
    ack: bool,
    in_window: bool = False,
    paws_rejected: bool = False,
    rfc1337: int = 0,
) -> TimeWaitAction:
    """tcp_timewait_state_process() (net/ipv4/tcp_minisocks.c) for tw_substate TIME_WAIT.

    `in_window` means seq == tw_rcv_nxt and the segment is a bare ACK or an RST. Not
    PAWS-rejected and in window: an RST kills the minisock when tcp_rfc1337 is 0 and is
    ignored otherwise; anything else re-arms. Every other segment that is not an RST
    re-arms when it carries ACK or was PAWS-rejected (`if (paws_reject || th->ack)
    inet_twsk_reschedule()`), so a FIN the peer retransmits from LAST_ACK (an old
    duplicate: seq below rcv_nxt, ACK set) starts a new 60 s; an out-of-window RST is
    dropped. A new SYN that may open a connection (TCP_TW_SYN) is not modelled.
    """
    if in_window and not paws_rejected:
        if not rst:
            return TimeWaitAction.REARM
        return TimeWaitAction.KILL if rfc1337 == 0 else TimeWaitAction.KEEP
    if not rst and (paws_rejected or ack):
        return TimeWaitAction.REARM
    return TimeWaitAction.KEEP


def minisock_counter(timeout: float) -> str:
    """The TcpExt counter a new timewait minisock bumps (__inet_twsk_schedule() in
    net/ipv4/inet_timewait_sock.c): `kill = timeo <= 4*HZ` picks TWKilled (a short-lived
    FIN_WAIT2 minisock) over TW. Re-arming an existing minisock counts nothing."""
    _check_non_negative("minisock timeout", timeout)
    return "TcpExt.TWKilled" if timeout <= TW_KILLED_THRESHOLD else "TcpExt.TW"


class TimeWaitOverflow(NamedTuple):
    """Active closes against net.ipv4.tcp_max_tw_buckets in one namespace."""

    closes: int
    max_tw_buckets: int
    in_use: int  # TIME_WAIT / FIN_WAIT2 minisocks alive before the closes
    kept: int  # closes that got their minisock (TIME_WAIT as usual)
    overflowed: int  # destroyed at once, no TIME_WAIT, no RST: TCPTimeWaitOverflow += this


def time_wait_overflow(closes: int, max_tw_buckets: int, *, in_use: int = 0) -> TimeWaitOverflow:
    """inet_twsk_alloc() (net/ipv4/inet_timewait_sock.c) returns NULL once
    `refcount_read(&dr->tw_refcount) - 1 >= dr->sysctl_max_tw_buckets` (tw_refcount starts
    at 1, plus one per live minisock); tcp_time_wait() then counts TCPTimeWaitOverflow and
    tcp_done()s the socket. So with `in_use` minisocks alive, max_tw_buckets - in_use more
    closes keep their TIME_WAIT and the rest skip it. Assumes none expires meanwhile."""
    _check_int("closes", closes, 0, 2**31 - 1)
    _check_int("tcp_max_tw_buckets", max_tw_buckets, 0, 2**31 - 1)
    _check_int("minisocks in use", in_use, 0, 2**31 - 1)
    kept = min(closes, max(0, max_tw_buckets - in_use))
    return TimeWaitOverflow(closes, max_tw_buckets, in_use, kept, closes - kept)


class CloseOutcome(NamedTuple):
    """What close() on an ESTABLISHED socket puts on the wire and leaves behind."""

    sends: str  # "FIN" (orderly release) or "RST" (abortive)
    time_wait: bool  # this side can end in TIME_WAIT (only after a FIN)
    counter: str | None  # the TcpExt counter that rises, e.g. "TcpExt.TCPAbortOnData"
    peer_reads: str  # what the peer's next recv() returns: "EOF" or "ECONNRESET"
    may_block: float  # seconds close() may wait for the FIN's ACK (SO_LINGER > 0)


def close_outcome(*, unread_bytes: int = 0, linger: int | None = None) -> CloseOutcome:
    """__tcp_close() (net/ipv4/tcp.c) in its order: unread data in the receive queue ->
    RST, TCPAbortOnClose (RFC 2525 2.17; wins over SO_LINGER); else SO_LINGER {1, 0}
    (`linger=0`) -> tcp_disconnect() sends an RST, TCPAbortOnData; else a FIN, and with
    SO_LINGER {1, N} close() blocks up to N s for its ACK (sk_stream_wait_close()). The
    peer's tcp_reset() sets ECONNRESET on an ESTABLISHED socket; a FIN reads as EOF.
    `linger=None` means SO_LINGER off."""
    _check_int("unread bytes", unread_bytes, 0, 2**31 - 1)
    if linger is not None:
        _check_int("SO_LINGER seconds", linger, 0, 2**31 - 1)
    if unread_bytes > 0:
        return CloseOutcome("RST", False, "TcpExt.TCPAbortOnClose", "ECONNRESET", 0.0)
    if linger == 0:
        return CloseOutcome("RST", False, "TcpExt.TCPAbortOnData", "ECONNRESET", 0.0)
    return CloseOutcome("FIN", True, None, "EOF", float(linger or 0))


# --- timer wheel slack --------------------------------------------------------------------


class TimerSlack(NamedTuple):
    """How late a timer of a given length can fire (kernel/time/timer.c, since 4.8)."""

    nominal: float
    hz: int
    jiffies: int
    level: int
    granularity_jiffies: int
    max_lateness: float  # seconds
    latest_expiry: float  # nominal + max_lateness
    clamped: bool  # beyond the wheel's capacity: the kernel shortens it to WHEEL_TIMEOUT_MAX


def _lvl_start(level: int) -> int:
    """LVL_START(n) = (LVL_SIZE - 1) << ((n - 1) * LVL_CLK_SHIFT)."""
    return (TIMER_WHEEL_LVL_SIZE - 1) << ((level - 1) * TIMER_WHEEL_LVL_CLK_SHIFT)


def timer_slack(nominal_seconds: float, hz: int = REFERENCE_HZ) -> TimerSlack:
    """Worst-case lateness of a timer-wheel timer armed `nominal_seconds` ahead.

    Mirrors calc_wheel_index() / calc_index() in kernel/time/timer.c: a delta in
    [LVL_START(n), LVL_START(n+1)) goes to level n, whose buckets are LVL_GRAN(n) = 8^n
    jiffies wide, and the expiry is rounded up to the next bucket boundary, so the timer
    fires up to one granularity late (never early). LVL_START(n) is 63 x 8^(n-1), not
    64 x 8^(n-1): at HZ=250 level 3 (2.048 s) holds 16.128 s to 129.024 s; at HZ=1000
    level 4 (4.096 s) holds 32.256 s to 258.048 s. Lateness from base->clk lagging jiffies
    on an idle CPU is not included.
    """
    tick_hz = _check_int("HZ", hz, 1, 10_000)
    delta_us = _check_non_negative("timer length", nominal_seconds)
    jiffies = -(-delta_us * tick_hz // _US_PER_S)  # msecs_to_jiffies() rounds up
    depth = TIMER_WHEEL_LVL_DEPTH if tick_hz > 100 else TIMER_WHEEL_LVL_DEPTH_LOW_HZ
    level = next(
        (n - 1 for n in range(1, depth) if jiffies < _lvl_start(n)),
        depth - 1,
    )
    clamped = jiffies >= _lvl_start(depth)  # WHEEL_TIMEOUT_CUTOFF
    gran = 1 << (level * TIMER_WHEEL_LVL_CLK_SHIFT)
    lateness = gran / tick_hz
    return TimerSlack(
        nominal=_s(delta_us),
        hz=tick_hz,
        jiffies=jiffies,
        level=level,
        granularity_jiffies=gran,
        max_lateness=lateness,
        latest_expiry=_s(delta_us) + lateness,
        clamped=clamped,
    )


__all__ = [
    "BlackholeRetransmissions",
    "CloseOutcome",
    "ConnectPortWalk",
    "ConnectionRateLimit",
    "EstablishedGiveUp",
    "EstimatorState",
    "FinWait2Lifetime",
    "FinWait2Outcome",
    "GiveUpReason",
    "KeepaliveAnswered",
    "KeepaliveDetection",
    "OrphanGiveUp",
    "PortCapacity",
    "PortExhaustion",
    "RetransmitSchedule",
    "RtoEstimate",
    "RttEstimator",
    "SynAckGiveUp",
    "SynGiveUp",
    "TimeWaitAction",
    "TimeWaitMemory",
    "TimeWaitOverflow",
    "TimerSlack",
    "blackhole_retransmissions",
    "close_outcome",
    "connect_port_walk",
    "effective_orphan_retries",
    "established_give_up",
    "fin_wait2_lifetime",
    "keepalive_answered",
    "keepalive_detection",
    "loss_probe_timeout",
    "max_connection_rate",
    "minisock_counter",
    "model_timeout",
    "orphan_give_up",
    "parse_port_set",
    "port_capacity",
    "port_exhaustion",
    "rto_for_rtt",
    "syn_give_up",
    "synack_give_up",
    "time_wait_action",
    "time_wait_memory",
    "time_wait_overflow",
    "timer_slack",
]
