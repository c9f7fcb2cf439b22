"""The closing-state scenarios' expectations (from kernel/ formulas) and their verdicts over
synthetic samples, segments and counters: agreement when the numbers fit the kernel's
rules, disagreement when they do not."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence

import pytest

from tcpdoctor.kernel.timing import timer_slack
from tcpdoctor.lab.pcap import Segment, TcpFlags
from tcpdoctor.lab.scenarios import close_wait_leak as cwl
from tcpdoctor.lab.scenarios import linger_reset as lr
from tcpdoctor.lab.scenarios import time_wait_duration as twd
from tcpdoctor.lab.scenarios import time_wait_restart as twr
from tcpdoctor.lab.scenarios import tw_bucket_overflow as two
from tcpdoctor.lab.scenarios._lifecycle import Closed
from tcpdoctor.lab.scenarios._lifecycle_model import (
    Mark,
    SocketSample,
    SockRow,
    build_timeline,
    follow,
    spread,
    verdict,
)

SLACK = 2.048  # timer_slack(60, 250)
CLIENT, SERVER = "198.18.0.1", "198.18.0.2"


def row(state: str, port: int, expires_ms: int = 0) -> SockRow:
    return SockRow(state, port, 8080, "timewait" if expires_ms else "off", expires_ms)


def sample(at: float, host: str, *rows: SockRow) -> SocketSample:
    return SocketSample(at, 0.001, host, tuple(rows))


def closed(port: int, at: float, how: str = "close", conn: int = 0) -> Closed:
    return Closed(conn, how, port, at - 0.0005, at, None)


def names(checks: Sequence[object]) -> dict[str, bool]:
    return {c.name: c.agree for c in checks}  # type: ignore[attr-defined]


# --- shared model -------------------------------------------------------------------------


def test_follow_finds_first_last_and_gone() -> None:
    samples = [
        sample(1.0, "client"),
        sample(2.0, "client", row("TIME_WAIT", 5, 60_000)),
        sample(3.0, "client", row("TIME_WAIT", 5, 59_000)),
        sample(4.0, "client"),
        sample(5.0, "server", row("TIME_WAIT", 5, 1)),  # another host: ignored
    ]
    track = follow(samples, "client", 5, "TIME_WAIT")
    assert (track.first_seen, track.last_seen, track.gone_at) == (2.0, 3.0, 4.0)
    assert track.nominal_expiry == pytest.approx(62.0)
    assert not follow(samples, "client", 6, "TIME_WAIT").seen


def test_a_socket_still_there_at_the_end_has_no_gone_time() -> None:
    samples = [sample(1.0, "client", row("FIN_WAIT2", 5, 3000))]
    assert follow(samples, "client", 5, "FIN_WAIT2").gone_at is None


def test_spread_is_unknown_when_any_value_is() -> None:
    assert spread([1.0, 3.0, 2.0]) == (1.0, 3.0)
    assert spread([1.0, None]) == (None, None)
    assert spread([]) == (None, None)


def test_timeline_keeps_the_last_sample_of_each_second() -> None:
    samples = [
        sample(10.2, "client", row("TIME_WAIT", 5, 1), row("TIME_WAIT", 6, 1)),
        sample(10.9, "client", row("TIME_WAIT", 5, 1)),
        sample(12.5, "client"),
    ]
    timeline = build_timeline(samples, 10.0, 12.5, [Mark(10.1, "close", "port 5")])
    assert timeline.buckets[0].states == {"client": {"TIME_WAIT": 1}}
    assert timeline.buckets[2].states == {"client": {}}
    assert timeline.events[0].kind == "close" and timeline.events[0].t == pytest.approx(0.1)


# --- time-wait-duration -------------------------------------------------------------------


def tw_samples(
    close_at: float, port: int, gone_after: float, step: float = 0.1
) -> list[SocketSample]:
    """TIME_WAIT armed at close_at for 60 s, gone `gone_after` s after the close."""
    found = []
    at = close_at + 0.05
    while at < close_at + gone_after + 0.3:
        left = max(0, round((close_at + 60.0 - at) * 1000))
        rows = (row("TIME_WAIT", port, left),) if at < close_at + gone_after else ()
        found += [sample(at, "client", *rows), sample(at, "server")]
        at += step
    return found


def test_duration_agrees_when_time_wait_ends_within_the_wheel_slack() -> None:
    exp = twd.expect({"connections": 1}, SLACK, 250)
    samples = tw_samples(100.0, 40000, 61.9)
    got = twd.measure(samples, [closed(40000, 100.0)])
    checks = twd.compare(exp, got)
    assert all(c.agree for c in checks), verdict(checks)
    assert got.armed_for[0] == pytest.approx(60.0, abs=0.001)
    assert 61.9 <= got.lifetimes[0] <= 62.0  # type: ignore[operator]


def test_duration_disagrees_when_the_timer_fires_too_late_or_the_server_holds_one() -> None:
    exp = twd.expect({"connections": 1}, SLACK, 250)
    samples = tw_samples(100.0, 40000, 75.0)
    samples.append(sample(130.0, "server", row("TIME_WAIT", 8080, 30_000)))
    checks = names(twd.compare(exp, twd.measure(samples, [closed(40000, 100.0)])))
    assert not checks["lifetime_max"] and not checks["lateness_max"]
    assert not checks["server_time_wait_peak"]
    assert checks["timer_armed_max"]  # the timer itself still said 60 s


def test_duration_disagrees_when_a_socket_never_enters_time_wait() -> None:
    exp = twd.expect({"connections": 2}, SLACK, 250)
    samples = tw_samples(100.0, 40000, 61.0)
    got = twd.measure(samples, [closed(40000, 100.0), closed(40002, 101.0)])
    checks = names(twd.compare(exp, got))
    assert not checks["time_wait_sockets"] and not checks["lifetime_min"]


# --- time-wait-restart --------------------------------------------------------------------


def fin(at: float, port: int) -> Segment:
    flags = TcpFlags.FIN | TcpFlags.ACK
    return Segment(at, 2, False, socket.AF_INET, SERVER, 8080, CLIENT, port, flags, 7, 9, 0, 500)


def pure_ack(at: float, port: int) -> Segment:
    return Segment(
        at, 2, True, socket.AF_INET, CLIENT, port, SERVER, 8080, TcpFlags.ACK, 9, 8, 0, 500
    )


def restart_samples(
    fins: Sequence[float], port: int, gone_after_last: float, *, rearm: bool = True
) -> list[SocketSample]:
    found = []
    at = fins[0] - 0.05
    while at < fins[-1] + gone_after_last + 0.3:
        heard = [f for f in fins if f < at] if rearm else [f for f in fins[:1] if f < at]
        if heard and at < fins[-1] + gone_after_last:
            left = max(0, round((heard[-1] + 60.0 - at) * 1000))
            found.append(sample(at, "client", row("TIME_WAIT", port, left)))
        else:
            found.append(sample(at, "client"))
        at += 0.01 if at < fins[-1] + 1 else 0.1
    return found


def test_restart_agrees_when_every_fin_rearms_the_timer() -> None:
    fins = [10.0, 10.2, 10.6]
    samples = restart_samples(fins, 40000, 61.5)
    got = twr.measure(samples, [fin(t, 40000) for t in fins], closed(40000, 9.999), SERVER)
    checks = twr.compare(twr.expect(2, SLACK, 250), got)
    assert all(c.agree for c in checks), verdict(checks)
    assert len(got.fins) == 3
    assert all(x is not None and abs(x) < 0.005 for x in got.offsets())
    assert got.after_last_fin == pytest.approx(61.5, abs=0.11)


def test_restart_disagrees_when_the_timer_keeps_running_from_the_first_fin() -> None:
    fins = [10.0, 10.2, 10.6]
    samples = restart_samples(fins, 40000, 61.5, rearm=False)
    got = twr.measure(samples, [fin(t, 40000) for t in fins], closed(40000, 9.999), SERVER)
    checks = names(twr.compare(twr.expect(2, SLACK, 250), got))
    assert checks["rearm_0_offset_s"]
    assert not checks["rearm_1_offset_s"] and not checks["rearm_2_offset_s"]
    assert got.offsets()[2] == pytest.approx(-0.6, abs=0.005)


def test_restart_needs_the_acks_dropped_and_a_retransmission() -> None:
    samples = restart_samples([10.0], 40000, 61.0)
    segments = [fin(10.0, 40000), pure_ack(10.0001, 40000)]
    got = twr.measure(samples, segments, closed(40000, 9.999), SERVER)
    checks = names(twr.compare(twr.expect(2, SLACK, 250), got))
    assert not checks["acks_on_wire"] and not checks["fin_retransmissions"]


# --- tw-bucket-overflow -------------------------------------------------------------------


def overflow_measured(seen: tuple[bool, ...], overflowed: int, rsts: int = 0) -> two.Measured:
    kept = sum(seen)
    deltas: dict[str, int | None] = {
        two.OVERFLOW: overflowed,
        "TcpExt.TW": kept,
        two.OUT_RSTS: rsts,
    }
    return two.Measured(tuple(range(len(seen))), seen, kept, kept, deltas, kept, 0)


def test_overflow_expectation_is_the_limit_then_the_rest() -> None:
    exp = two.expect(6, 3, 0)
    assert (exp.overflow.kept, exp.overflow.overflowed, exp.counter) == (3, 3, "TcpExt.TW")
    assert two.expect(6, 3, 2).overflow.kept == 1  # two TIME_WAITs already there


def test_overflow_agrees_for_the_first_limit_closes() -> None:
    checks = two.compare(two.expect(6, 3, 0), overflow_measured((True,) * 3 + (False,) * 3, 3))
    assert all(c.agree for c in checks), verdict(checks)


def test_overflow_disagrees_on_order_count_or_an_rst() -> None:
    got = overflow_measured((False, True, True, True, False, False), 3, rsts=1)
    checks = names(two.compare(two.expect(6, 3, 0), got))
    assert not checks["kept_are_the_first_closes"] and not checks["out_rsts"]
    assert checks["time_wait_kept"]
    checks = names(
        two.compare(two.expect(6, 3, 0), overflow_measured((True,) * 4 + (False,) * 2, 2))
    )
    assert not checks["time_wait_kept"] and not checks["overflowed"]


# --- linger-reset -------------------------------------------------------------------------


def test_linger_expectations_from_the_close_paths() -> None:
    exp = lr.expect(2)
    assert {m: o.sends for m, o in exp.outcomes.items()} == {
        "plain": "FIN",
        "linger0": "RST",
        "unread": "RST",
    }
    assert exp.counters() == {
        "TcpExt.TCPAbortOnData": 2,
        "TcpExt.TCPAbortOnClose": 2,
        "Tcp.OutRsts": 4,
        "server Tcp.EstabResets": 4,
    }
    assert lr._key("TcpExt.TCPAbortOnData") == "client_tcp_abort_on_data"
    assert lr._key("server Tcp.EstabResets") == "server_estab_resets"


def linger_close(mode: str, port: int, wire: str, read: str, time_wait: bool) -> lr.Close:
    return lr.Close(
        mode, closed(port, 1.0, lr._HOW[mode]), (wire,), 1.0, read, 1.001, time_wait, time_wait
    )


def linger_measured(
    plain_wire: str = "FIN", counters: Mapping[str, int | None] | None = None
) -> lr.Measured:
    closes = (
        linger_close("plain", 1, plain_wire, "EOF", True),
        linger_close("linger0", 2, "RST", "ECONNRESET", False),
        linger_close("unread", 3, "RST", "ECONNRESET", False),
    )
    rises = counters or {
        "TcpExt.TCPAbortOnData": 1,
        "TcpExt.TCPAbortOnClose": 1,
        "Tcp.OutRsts": 2,
        "server Tcp.EstabResets": 2,
    }
    return lr.Measured(closes, dict(rises), 0)


def test_linger_agrees_with_fin_for_plain_and_rst_for_the_others() -> None:
    checks = lr.compare(lr.expect(1), linger_measured())
    assert all(c.agree for c in checks), verdict(checks)


def test_linger_disagrees_when_a_plain_close_resets_or_the_wrong_counter_rises() -> None:
    checks = names(lr.compare(lr.expect(1), linger_measured(plain_wire="RST")))
    assert not checks["plain_sends"] and checks["linger0_sends"]
    swapped = {
        "TcpExt.TCPAbortOnData": 2,
        "TcpExt.TCPAbortOnClose": 0,
        "Tcp.OutRsts": 2,
        "server Tcp.EstabResets": 2,
    }
    checks = names(lr.compare(lr.expect(1), linger_measured(counters=swapped)))
    assert not checks["client_tcp_abort_on_data"] and not checks["client_tcp_abort_on_close"]


# --- close-wait-leak ----------------------------------------------------------------------


def lateness(seconds: float) -> float:
    return float(timer_slack(seconds, 250).max_lateness)


def test_close_wait_expectation_short_and_long_fin_timeouts() -> None:
    short = cwl.expect(12, 3, lateness, 250)
    assert (short.lifetime, short.counter, short.slack) == (3.0, "TcpExt.TWKilled", 0.256)
    assert short.doctor_finds
    # tcp_fin_timeout 90: 30 s on the full socket, then a 30 s minisock (notes 1.5).
    long = cwl.expect(12, 90, lateness, 250)
    assert long.lifetime == 60.0 and long.counter == "TcpExt.TW"
    assert long.slack == pytest.approx(2 * lateness(30.0))
    assert not cwl.expect(5, 3, lateness, 250).doctor_finds  # below the rule's threshold


def doctor_json(pid: int, close_wait: int) -> str:
    evidence = [
        {"key": "pid", "value": pid},
        {"key": "comm", "value": "python3"},
        {"key": "close_wait", "value": close_wait},
    ]
    return json.dumps({"findings": [{"rule": "close-wait-leak", "evidence": evidence}]})


def test_read_doctor() -> None:
    assert cwl.read_doctor(0, doctor_json(42, 12), "") == cwl.Doctor(0, True, 42, "python3", 12)
    assert not cwl.read_doctor(0, json.dumps({"findings": []}), "").found
    broken = cwl.read_doctor(4, "", "tcpdoctor: no such namespace\n")
    assert not broken.found and broken.error == "tcpdoctor: no such namespace"


def fw2_samples(ports: Sequence[int], close_at: float, gone_after: float) -> list[SocketSample]:
    found = []
    at = close_at + 0.05
    while at < close_at + gone_after + 1.0:
        leaks = tuple(SockRow("CLOSE_WAIT", 8080, p, "off", 0) for p in ports)
        found.append(sample(at, "server", *leaks))
        if at < close_at + gone_after:
            left = max(0, round((close_at + 0.04 + 3.0 - at) * 1000))
            found.append(sample(at, "client", *(row("FIN_WAIT2", p, left) for p in ports)))
        else:
            found.append(sample(at, "client"))
        at += 0.1
    return found


def close_wait_measured(doctor_pid: int, gone_after: float = 3.2) -> cwl.Measured:
    ports = list(range(40000, 40012))
    samples = fw2_samples(ports, 100.0, gone_after)
    closes = [closed(p, 100.0) for p in ports]
    return cwl.Measured(
        closes=tuple(c.t for c in closes),
        tracks=tuple(follow(samples, "client", p, "FIN_WAIT2") for p in ports),
        server_close_wait_peak=12,
        server_close_wait_end=12,
        close_wait_timers="off",
        peer_eofs=12,
        counter_rise=12,
        doctor=cwl.Doctor(0, True, doctor_pid, "python3", 12),
        server_pid=4242,
        resolution=0.1,
    )


def test_close_wait_agrees_when_the_doctor_names_the_server() -> None:
    checks = cwl.compare(cwl.expect(12, 3, lateness, 250), close_wait_measured(4242))
    assert all(c.agree for c in checks), verdict(checks)


def test_close_wait_disagrees_on_another_pid_or_a_fin_wait2_that_outlives_its_timeout() -> None:
    checks = names(cwl.compare(cwl.expect(12, 3, lateness, 250), close_wait_measured(1, 9.0)))
    assert not checks["doctor_pid"]
    assert not checks["fin_wait2_lifetime_max"]
    assert checks["doctor_close_wait"]
