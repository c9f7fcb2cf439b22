"""port-exhaustion without the kernel: what to expect, what was measured, how they compare.

Pure functions over records, so they are unit-tested with synthetic attempts. Every
expected number comes from tcpdoctor.kernel: connect_port_walk() for the usable range (the
parity walk), max_connection_rate() for how long a closed connection keeps its port
(TIME_WAIT, or tcp_tw_reuse_delay when reuse applies), port_exhaustion() for the on/off
cycle, and the timer-wheel slack of the TIME_WAIT timer.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import (
    DEFAULT_PORT_RANGE,
    TCP_TIMEWAIT_LEN,
    TCP_TW_REUSE_DEFAULT,
    TCP_TW_REUSE_DELAY_MS,
)
from tcpdoctor.kernel.sysctls import parse_int, parse_port_range
from tcpdoctor.lab.model import (
    Check,
    Measure,
    at_least,
    at_most,
    between,
    exact,
    tolerance,
    within,
)
from tcpdoctor.timeline import Timeline

EADDRNOTAVAIL = "EADDRNOTAVAIL"
TIME_WAIT = "TIME_WAIT"
MIN_CYCLES_FOR_RATE = 3  # sustained rate is judged over whole cycles only
AUTO_MARGIN_S = 3.0  # auto duration: the first recovery plus this much
AUTO_SHORT_HOLD_S = 5.0  # holds up to this long also get MIN_CYCLES_FOR_RATE cycles
AUTO_QUIET_S = 5.0  # auto duration when the ports never run out


class Mode(enum.Enum):
    CLOSE = "close"  # the client closes first: TIME_WAIT on the client
    SERVER_CLOSES_FIRST = "server-closes-first"
    POOL = "pool"

    @property
    def label(self) -> str:
        return self.value


@dataclass(frozen=True)
class ClientKnobs:
    """The client namespace's settings that decide the outcome."""

    port_low: int
    port_high: int
    tw_reuse: int
    tw_reuse_delay_ms: int | None  # None: kernel before 6.14 (1 Hz check, 0-1 s)
    timestamps: bool
    server_max_tw_buckets: int | None
    max_tw_buckets: int | None = None  # the client's own tcp_max_tw_buckets

    @classmethod
    def from_text(
        cls, client: Mapping[str, str | None], server: Mapping[str, str | None] | None = None
    ) -> ClientKnobs:
        """From values as /proc/sys shows them (None: no such file), by full sysctl name."""
        low, high = DEFAULT_PORT_RANGE
        range_text = client.get("net.ipv4.ip_local_port_range")
        if range_text is not None:
            low, high = parse_port_range(range_text)
        return cls(
            port_low=low,
            port_high=high,
            tw_reuse=_int(client, "net.ipv4.tcp_tw_reuse", TCP_TW_REUSE_DEFAULT) or 0,
            tw_reuse_delay_ms=_int(client, "net.ipv4.tcp_tw_reuse_delay", None),
            timestamps=bool(_int(client, "net.ipv4.tcp_timestamps", 1)),
            server_max_tw_buckets=_int(server or {}, "net.ipv4.tcp_max_tw_buckets", None),
            max_tw_buckets=_int(client, "net.ipv4.tcp_max_tw_buckets", None),
        )


def _int(values: Mapping[str, str | None], name: str, default: int | None) -> int | None:
    text = values.get(name)
    return default if text is None else parse_int(text, what=name)


@dataclass(frozen=True)
class Expectation:
    mode: Mode
    rate: float
    duration: float
    attempts: int
    capacity: int  # connects to this one destination that always succeed
    reachable: int  # ports connect() can hand out at all (capacity + 1 for odd ranges)
    tw_reuse_applies: bool
    port_hold: float  # how long a closed connection keeps its port (client side)
    hold_slack: float  # timer-wheel lateness allowed on top (0 when no timer decides)
    hold_basis: str
    cycle: timing.PortExhaustion | None  # None when the client cannot run out of ports
    server_max_tw_buckets: int | None = None
    time_wait_limit: int | None = None  # set when the client's tcp_max_tw_buckets < capacity

    @property
    def overflows(self) -> bool:
        """More closes than TIME_WAIT slots: the rest skip TIME_WAIT (notes 1.4)."""
        return self.time_wait_limit is not None

    @property
    def exhausts(self) -> bool:
        return self.cycle is not None and self.cycle.exhausts

    def as_dict(self) -> dict[str, Measure]:
        cycle = self.cycle
        return {
            "mode": self.mode.label,
            "attempts": self.attempts,
            "port_capacity": self.capacity,
            "port_capacity_max": self.reachable,
            "tw_reuse_applies": self.tw_reuse_applies,
            "port_hold_s": self.port_hold if cycle else None,
            "timer_slack_s": self.hold_slack if cycle else None,
            "exhausts": self.exhausts,
            "successes_before_failure": cycle.successes_before_failure if cycle else None,
            "first_failure_at": cycle.first_failure_at if cycle else None,
            "ports_back_after_close": cycle.ports_back_at if cycle else None,
            "failure_window_s": cycle.failure_window if cycle else None,
            "sustained_rate": cycle.sustained_rate if cycle else self.rate,
            "failures": None if self.exhausts else 0,
            "time_wait_limit": self.time_wait_limit,
        }


def client_hold(knobs: ClientKnobs, hz_lateness: float) -> tuple[float, float, bool, str]:
    """(port hold, allowed lateness, reuse applies, why) for a client that closes first."""
    ports = timing.port_capacity(knobs.port_low, knobs.port_high)
    delay_ms = knobs.tw_reuse_delay_ms or TCP_TW_REUSE_DELAY_MS
    limit = timing.max_connection_rate(
        ports,
        tw_reuse=knobs.tw_reuse,
        tw_reuse_delay_ms=delay_ms,
        timestamps=knobs.timestamps,
        loopback=False,  # the lab's hosts talk over veth with 198.18/15 addresses
    )
    why = limit.assumptions[-2] if not limit.tw_reuse_applies else limit.assumptions[-1]
    if limit.tw_reuse_applies:
        # connect() compares a millisecond clock with the TIME_WAIT's entry stamp: no timer.
        # Before 6.14 the test used a 1 Hz clock: anything from 0 to 1 s.
        slack = 0.0 if knobs.tw_reuse_delay_ms is not None else limit.port_hold
        return limit.port_hold, slack, True, why
    return TCP_TIMEWAIT_LEN, hz_lateness, False, why


def expect(
    mode: Mode, rate: float, duration: float, knobs: ClientKnobs, hz_lateness: float
) -> Expectation:
    """What the kernel should do, from kernel/ formulas only."""
    walk = timing.connect_port_walk(knobs.port_low, knobs.port_high)
    capacity = walk.guaranteed
    attempts = count_attempts(rate, duration)
    hold, slack, applies, why = client_hold(knobs, hz_lateness)
    cycle = timing.port_exhaustion(capacity, rate, hold) if mode is Mode.CLOSE else None
    limit = knobs.max_tw_buckets
    overflow = mode is Mode.CLOSE and limit is not None and limit < capacity
    if overflow:
        # At most `limit` ports are ever held: the ports cannot run out.
        cycle = None
        why = (
            f"tcp_max_tw_buckets={limit} is below the {capacity} ports: closes beyond it "
            "skip TIME_WAIT and free their port at once"
        )
    elif mode is not Mode.CLOSE:
        why = (
            "one connection for every request: nothing closes until the end"
            if mode is Mode.POOL
            else "the server closes first, so the TIME_WAIT is the server's"
        )
    return Expectation(
        mode,
        rate,
        duration,
        attempts,
        capacity,
        walk.reachable,
        applies,
        hold,
        slack,
        why,
        cycle,
        knobs.server_max_tw_buckets,
        limit if overflow else None,
    )


def count_attempts(rate: float, duration: float) -> int:
    """Attempts i = 0, 1, ... start at i / rate while i / rate < duration."""
    return max(1, math.ceil(rate * duration - 1e-9))


def auto_duration(mode: Mode, rate: float, knobs: ClientKnobs, hz_lateness: float) -> float:
    """Long enough to see the first recovery (and a few cycles of a short hold)."""
    probe = expect(mode, rate, 1.0, knobs, hz_lateness)
    if not probe.exhausts:
        return AUTO_QUIET_S
    cycles = MIN_CYCLES_FOR_RATE * probe.port_hold if probe.port_hold <= AUTO_SHORT_HOLD_S else 0
    return float(math.ceil(probe.port_hold + probe.hold_slack + cycles + AUTO_MARGIN_S))


# --- measurement --------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One request, times in seconds since the load started."""

    index: int
    t: float
    ok: bool
    error: str | None = None
    port: int | None = None
    closed: float | None = None


@dataclass(frozen=True)
class Observed:
    attempts: tuple[Attempt, ...]
    timeline: Timeline
    client_time_wait_during: int  # peak over samples taken while the load ran
    server_time_wait_after: int | None  # sampled once the load was over
    tw_recycled: int | None  # TcpExt.TWRecycled growth in the client namespace
    tw_overflow: int | None = None  # TcpExt.TCPTimeWaitOverflow growth in the client


@dataclass(frozen=True)
class Measured:
    attempts: int
    successes: int
    failures: dict[str, int]
    successes_before_failure: int | None
    first_failure_at: float | None
    first_close_at: float | None
    recovery_at: float | None
    ports_back_after_close: float | None
    failure_window: float | None
    distinct_ports: int
    sustained_rate: float | None
    client_time_wait_peak: int
    server_time_wait_after: int | None
    tw_recycled: int | None
    tw_overflow: int | None = None

    def as_dict(self) -> dict[str, Measure]:
        return {
            "attempts": self.attempts,
            "successes": self.successes,
            "failures": sum(self.failures.values()),
            "errors": ",".join(sorted(self.failures)) or None,
            "successes_before_failure": self.successes_before_failure,
            "first_failure_at": _r(self.first_failure_at),
            "first_close_at": _r(self.first_close_at),
            "recovery_at": _r(self.recovery_at),
            "ports_back_after_close": _r(self.ports_back_after_close),
            "failure_window_s": _r(self.failure_window),
            "distinct_client_ports": self.distinct_ports,
            "sustained_rate": _r(self.sustained_rate),
            "client_time_wait_peak": self.client_time_wait_peak,
            "server_time_wait_after": self.server_time_wait_after,
            "tw_recycled": self.tw_recycled,
            "tw_overflow": self.tw_overflow,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def measure(observed: Observed, hold: float) -> Measured:
    attempts = observed.attempts
    failures: dict[str, int] = {}
    for a in attempts:
        if not a.ok:
            name = a.error or "unknown"
            failures[name] = failures.get(name, 0) + 1
    first_fail = next((i for i, a in enumerate(attempts) if not a.ok), None)
    first_close = next((a.closed for a in attempts if a.ok and a.closed is not None), None)
    recovery = None
    if first_fail is not None:
        recovery = next((a for a in attempts[first_fail:] if a.ok), None)
    fail_at = attempts[first_fail].t if first_fail is not None else None
    back = recovery.t - first_close if recovery and first_close is not None else None
    return Measured(
        attempts=len(attempts),
        successes=sum(1 for a in attempts if a.ok),
        failures=dict(sorted(failures.items())),
        successes_before_failure=first_fail,
        first_failure_at=fail_at,
        first_close_at=first_close,
        recovery_at=recovery.t if recovery else None,
        ports_back_after_close=back,
        failure_window=(recovery.t - fail_at) if recovery and fail_at is not None else None,
        distinct_ports=len({a.port for a in attempts if a.ok and a.port is not None}),
        sustained_rate=_sustained_rate(attempts, recovery.t if recovery else None, hold),
        client_time_wait_peak=observed.client_time_wait_during,
        server_time_wait_after=observed.server_time_wait_after,
        tw_recycled=observed.tw_recycled,
        tw_overflow=observed.tw_overflow,
    )


def _sustained_rate(attempts: Sequence[Attempt], start: float | None, hold: float) -> float | None:
    """Successes per second over whole hold-long cycles after the first recovery."""
    if start is None or not attempts:
        return None
    cycles = math.floor((attempts[-1].t - start) / hold)
    if cycles < MIN_CYCLES_FOR_RATE:
        return None
    end = start + cycles * hold
    done = sum(1 for a in attempts if a.ok and start <= a.t < end)
    return done / (cycles * hold)


# --- comparison ---------------------------------------------------------------------------


def compare(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    if exp.mode is Mode.POOL:
        checks = _pool_checks(exp, got)
    elif exp.mode is Mode.SERVER_CLOSES_FIRST:
        checks = _server_first_checks(exp, got)
    elif exp.overflows:
        checks = _overflow_checks(exp, got)
    elif exp.exhausts and exp.attempts > exp.reachable:
        checks = _exhaustion_checks(exp, got)
    else:
        checks = _no_exhaustion_checks(exp, got)
    recycled = _recycled_check(exp, got)
    return checks if recycled is None else (*checks, recycled)


def _recycled_check(exp: Expectation, got: Measured) -> Check | None:
    """TcpExt.TWRecycled: with reuse, every success on a port used before took over that
    port's TIME_WAIT (none expire within 60 s); without reuse, nothing is ever taken over."""
    if got.tw_recycled is None or exp.overflows:
        return None
    if exp.mode is Mode.CLOSE and exp.tw_reuse_applies:
        if exp.duration >= TCP_TIMEWAIT_LEN:
            return None  # old TIME_WAITs may also have expired on their own
        return exact(
            "tw_recycled",
            "TIME_WAITs taken over (TWRecycled)",
            got.successes - got.distinct_ports,
            got.tw_recycled,
            basis="successes on an already used port, each a TIME_WAIT reuse",
        )
    return exact(
        "tw_recycled",
        "TIME_WAITs taken over (TWRecycled)",
        0,
        got.tw_recycled,
        basis="tcp_tw_reuse does not apply (or no TIME_WAIT is left on the client)",
    )


def _attempts_check(exp: Expectation, got: Measured) -> Check:
    return exact("attempts", "requests made", exp.attempts, got.attempts, basis="rate x duration")


def _exhaustion_checks(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    cycle = exp.cycle
    assert cycle is not None and cycle.first_failure_at is not None
    assert cycle.ports_back_at is not None and cycle.failure_window is not None
    step = 1.0 / exp.rate  # recovery is seen at the next attempt after a port frees
    spare = (exp.reachable - exp.capacity) * step  # an odd range may give one more port
    checks = [
        _attempts_check(exp, got),
        between(
            "successes_before_failure",
            "connections before the first failure",
            exp.capacity,
            exp.reachable,
            got.successes_before_failure,
            basis="connect_port_walk(): the ports of ip_local_port_range one connect() tries",
        ),
        exact(
            "errors",
            "error seen",
            EADDRNOTAVAIL,
            ",".join(sorted(got.failures)) or None,
            basis="__inet_hash_connect() finds no port (notes 4.4)",
        ),
        within(
            "first_failure_at",
            "first failure at",
            tolerance(cycle.first_failure_at, resolution=spare),
            got.first_failure_at,
            basis="port_exhaustion(): capacity / rate",
        ),
    ]
    checks += _recovery_checks(exp, got, step, spare)
    if exp.tw_reuse_applies:
        checks.append(
            at_most(
                "client_time_wait_peak",
                "client TIME_WAIT peak",
                exp.reachable,
                got.client_time_wait_peak,
                basis="reused TIME_WAITs are taken over, never added",
            )
        )
    else:
        checks.append(
            between(
                "client_time_wait_peak",
                "client TIME_WAIT peak",
                exp.capacity,
                exp.reachable,
                got.client_time_wait_peak,
                basis="every port connect() handed out sits in TIME_WAIT",
            )
        )
    if got.sustained_rate is not None:
        checks.append(
            within(
                "sustained_rate",
                "successes per second once cycling",
                tolerance(cycle.sustained_rate),
                got.sustained_rate,
                unit="1/s",
                basis="port_exhaustion(): capacity / hold",
            )
        )
    return tuple(checks)


def _recovery_checks(exp: Expectation, got: Measured, step: float, spare: float) -> list[Check]:
    """When the ports came back, if the run lasted long enough to see it."""
    cycle = exp.cycle
    assert cycle is not None and cycle.ports_back_at is not None
    assert cycle.failure_window is not None
    back = tolerance(cycle.ports_back_at, slack=exp.hold_slack, resolution=step)
    # Run time counts from the first attempt, the port hold from the first close (~0).
    if exp.duration <= back.low:
        return [
            exact(
                "recovery_at",
                "ports back within the run",
                None,
                got.recovery_at,
                basis="the run ends before the first port can come back",
            )
        ]
    if exp.duration < back.high:
        return []  # the run may or may not last long enough to see it: nothing to judge
    return [
        within(
            "ports_back_after_close",
            "ports back after the first close",
            back,
            got.ports_back_after_close,
            basis=exp.hold_basis,
        ),
        within(
            "failure_window_s",
            "failures lasted",
            tolerance(cycle.failure_window, slack=exp.hold_slack, resolution=step, early=spare),
            got.failure_window,
            basis="port_exhaustion(): hold - capacity / rate",
        ),
    ]


def _no_exhaustion_checks(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    # Too few requests to use up the ports; with an odd range the last one may still fail.
    few = exp.exhausts and exp.attempts <= exp.reachable
    checks = [
        _attempts_check(exp, got),
        between(
            "failures",
            "failures",
            0,
            max(0, exp.attempts - exp.capacity) if few else 0,
            sum(got.failures.values()),
            basis="fewer requests than ports" if few else "rate x hold stays below the capacity",
        ),
    ]
    beyond = exp.attempts - exp.reachable
    if exp.tw_reuse_applies and beyond > 0 and exp.duration < TCP_TIMEWAIT_LEN:
        checks.append(
            at_least(
                "reused_at_least",
                "connections on a reused port",
                beyond,
                got.successes - got.distinct_ports,
                basis="more connections than ports within 60 s: the rest must reuse",
            )
        )
    return tuple(checks)


def _overflow_checks(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    limit = exp.time_wait_limit
    assert limit is not None
    checks = [
        *_no_exhaustion_checks(exp, got),
        at_most(
            "client_time_wait_peak",
            "client TIME_WAIT peak",
            limit,
            got.client_time_wait_peak,
            basis="tcp_max_tw_buckets, per namespace (notes 1.4)",
        ),
    ]
    # Within 60 s no TIME_WAIT expires to free a slot; reuse would free some too.
    if got.tw_overflow is not None and not exp.tw_reuse_applies and exp.duration < TCP_TIMEWAIT_LEN:
        checks.append(
            exact(
                "tw_overflow",
                "closes that skipped TIME_WAIT (TCPTimeWaitOverflow)",
                max(0, got.successes - limit),
                got.tw_overflow,
                basis="every close after the first tcp_max_tw_buckets ones",
            )
        )
    return tuple(checks)


def _pool_checks(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    return (
        _attempts_check(exp, got),
        exact("failures", "failures", 0, sum(got.failures.values()), basis=exp.hold_basis),
        exact(
            "distinct_client_ports",
            "connections opened",
            1,
            got.distinct_ports,
            basis="a pool keeps one connection",
        ),
        exact(
            "client_time_wait_peak",
            "client TIME_WAIT during the run",
            0,
            got.client_time_wait_peak,
            basis="nothing was closed",
        ),
    )


def _server_first_checks(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    checks = [
        _attempts_check(exp, got),
        exact("failures", "failures", 0, sum(got.failures.values()), basis=exp.hold_basis),
        exact(
            "client_time_wait_peak",
            "client TIME_WAIT peak",
            0,
            got.client_time_wait_peak,
            basis="the passive closer never enters TIME_WAIT",
        ),
        at_most(
            "distinct_client_ports",
            "client ports used",
            (exp.reachable + 1) // 2,
            got.distinct_ports,
            basis="a port is free again at once, and connect() tries the ports of "
            "ip_local_port_range's start parity first (notes 4.2)",
        ),
    ]
    if got.server_time_wait_after is not None and exp.duration <= TCP_TIMEWAIT_LEN:
        buckets = exp.server_max_tw_buckets
        checks.append(
            exact(
                "server_time_wait_after",
                "server TIME_WAITs (one per 4-tuple)",
                min(got.distinct_ports, buckets) if buckets is not None else got.distinct_ports,
                got.server_time_wait_after,
                basis="a SYN for a 4-tuple in TIME_WAIT takes it over (notes 1.3)",
            )
        )
    return tuple(checks)


# --- the verdict ----------------------------------------------------------------------------


def verdict(checks: Iterable[Check]) -> str:
    items = list(checks)
    parts = [f"{c.what} {_show(c.measured, c.unit)} (expected {_expected(c)})" for c in items]
    ok = bool(items) and all(c.agree for c in items)
    return "measured vs expected: " + "; ".join(parts) + (" -> agree" if ok else " -> DISAGREE")


def _show(value: Measure, unit: str) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") + (f" {unit}" if unit else "")
    return f"{value}{' ' + unit if unit else ''}"


def _expected(check: Check) -> str:
    if check.low is not None and check.high is not None:
        return (
            f"{_show(check.expected, check.unit)}, {_show(check.low, '')}-{_show(check.high, '')}"
        )
    if check.low is not None:
        return f">= {_show(check.expected, check.unit)}"
    if check.high is not None:
        return f"<= {_show(check.expected, check.unit)}"
    return _show(check.expected, check.unit)
