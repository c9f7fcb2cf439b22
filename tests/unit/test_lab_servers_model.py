"""The pure parts of redis-pool, nginx-keepalive and idle-timeout-middlebox: who closed
first from synthetic segments, the TIME_WAITs that follow, each scenario's expectations
and verdicts (agree when the numbers fit, disagree when they do not), and the small
parsers (conntrack table, HTTP responses, the exec wrapper's arguments)."""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from tcpdoctor.errors import InputError
from tcpdoctor.kernel.conntrack import Midstream
from tcpdoctor.kernel.timing import keepalive_answered
from tcpdoctor.lab import _exec
from tcpdoctor.lab.model import resolve_params
from tcpdoctor.lab.pcap import Segment, TcpFlags
from tcpdoctor.lab.scenarios import _http_load, _idle_timeout_model, _loadgen
from tcpdoctor.lab.scenarios import _nginx_keepalive_model as ngx
from tcpdoctor.lab.scenarios import _redis_pool_model as rp
from tcpdoctor.lab.scenarios._closes import (
    Closer,
    Connection,
    closer_summary,
    connections,
    time_wait_expected,
)
from tcpdoctor.lab.scenarios._variant_model import Knobs, StateCount, VariantFacts, verdict
from tcpdoctor.lab.scenarios.idle_timeout_middlebox import SCENARIO as IDLE
from tcpdoctor.lab.scenarios.idle_timeout_middlebox import parse_conntrack
from tcpdoctor.lab.scenarios.nginx_keepalive import nginx_config
from tcpdoctor.lab.scenarios.redis_pool import SCENARIO as REDIS
from tcpdoctor.lab.sysctl_args import parse_settings

C, S = ("198.18.0.1", 40000), ("198.18.0.2", 6379)
F, SYN, ACK, RST = TcpFlags.FIN, TcpFlags.SYN, TcpFlags.ACK, TcpFlags.RST


def seg(t: float, src: tuple[str, int], dst: tuple[str, int], flags: TcpFlags) -> Segment:
    return Segment(t, 2, False, socket.AF_INET, src[0], src[1], dst[0], dst[1], flags, 0, 0, 0, 0)


def closed(t: float, first: tuple[str, int], second: tuple[str, int]) -> list[Segment]:
    """A connection from C to S opened at t and closed with `first`'s FIN 1 ms later."""
    return [
        seg(t, C, S, SYN),
        seg(t + 0.0001, S, C, SYN | ACK),
        seg(t + 0.0002, C, S, ACK),
        seg(t + 0.001, first, second, F | ACK),
        seg(t + 0.0011, second, first, F | ACK),
        seg(t + 0.0012, first, second, ACK),
    ]


# --- who closed first -----------------------------------------------------------------


def test_the_first_fin_names_the_active_closer() -> None:
    conns = connections(closed(1.0, C, S))
    assert [c.closer for c in conns] == [Closer.CLIENT]
    assert conns[0].time_wait_since == pytest.approx(1.0011)
    assert connections(closed(1.0, S, C))[0].closer is Closer.SERVER


def test_resets_retransmitted_syns_and_port_reuse() -> None:
    reset = [seg(1.0, C, S, SYN), seg(1.0001, S, C, SYN | ACK), seg(1.5, C, S, RST)]
    assert connections(reset)[0].closer is Closer.RESET
    assert connections(reset)[0].time_wait_since is None
    retried = [seg(1.0, C, S, SYN), seg(2.0, C, S, SYN), seg(2.0001, S, C, SYN | ACK)]
    assert len(connections(retried)) == 1 and connections(retried)[0].closer is Closer.OPEN
    reused = closed(1.0, S, C) + closed(5.0, C, S)  # the same 4-tuple twice
    assert [c.closer for c in connections(reused)] == [Closer.SERVER, Closer.CLIENT]
    no_syn = [seg(1.0, C, S, ACK), seg(1.1, C, S, F | ACK)]
    assert connections(no_syn) == []


def test_closer_summary() -> None:
    assert closer_summary([]) is None
    conns = connections(closed(1.0, C, S))
    assert closer_summary(conns) == "client"
    mixed = [*conns, *connections(closed(9.0, S, C))]
    assert closer_summary(mixed) == "mixed: 1 client, 1 server"


_PORTS = itertools.count(41000)


def _conn(since: float, closer: Closer = Closer.CLIENT) -> Connection:
    """A connection from a port of its own whose TIME_WAIT (if any) began at `since`."""
    return Connection((C[0], next(_PORTS)), S, since - 0.01, closer, since - 0.001, since)


def test_time_wait_lasts_sixty_seconds_plus_possible_slack() -> None:
    conns = [_conn(0.0), _conn(10.0), _conn(20.0), _conn(30.0, Closer.SERVER)]
    at_30 = time_wait_expected(conns, Closer.CLIENT, 30.0)
    assert (at_30.low, at_30.high, at_30.exact) == (3, 3, 3)
    at_61 = time_wait_expected(conns, Closer.CLIENT, 61.0, slack=2.048)
    assert (at_61.low, at_61.high) == (2, 3)  # the first one's timer may still be pending
    assert time_wait_expected(conns, Closer.CLIENT, 30.0, max_buckets=2).high == 2
    assert time_wait_expected(conns, Closer.SERVER, 30.0).exact == 1
    assert time_wait_expected(conns, Closer.CLIENT, 5.0).exact == 1  # later ones not yet


# --- redis-pool --------------------------------------------------------------------------


def facts(
    key: str,
    conns: Sequence[Connection],
    *,
    held: tuple[dict[str, int], dict[str, int]] = ({}, {}),
    after: tuple[dict[str, int], dict[str, int]] = ({}, {}),
    taken_at: float = 100.0,
    rate: float = 1000.0,
    successes: int = 200,
    during: int = 0,
) -> VariantFacts:
    return VariantFacts(
        key=key,
        label=key,
        requests=successes,
        successes=successes,
        failures={},
        rate=rate,
        conns=tuple(conns),
        held=(StateCount(taken_at, held[0]), StateCount(taken_at, held[1])),
        after=(StateCount(taken_at + 1, after[0]), StateCount(taken_at + 1, after[1])),
        client_tw_before_close=during,
    )


KNOBS = Knobs(2.048, {"new": None, "pool": None, "close": None, "keepalive": None}, None)


def redis_facts(closer: Closer = Closer.CLIENT) -> tuple[VariantFacts, VariantFacts]:
    new = facts(
        "new",
        [_conn(50.0 + i / 100, closer) for i in range(200)],
        after=({"TIME_WAIT": 200}, {}),
        rate=600.0,
    )
    pool_conns = [_conn(100.5) for _ in range(4)]
    pool = facts(
        "pool",
        pool_conns,
        held=({"ESTABLISHED": 4}, {"ESTABLISHED": 4}),
        after=({"TIME_WAIT": 4}, {}),
        taken_at=100.0,
        rate=6000.0,
    )
    return new, pool


def test_redis_pool_agrees_when_the_numbers_fit() -> None:
    new, pool = redis_facts()
    checks = rp.compare(rp.Plan(200, 4), new, pool, 400, KNOBS)
    assert all(c.agree for c in checks), verdict(checks)
    assert verdict(checks).endswith("-> agree")
    assert rp.measured(new, pool, 400)["pool_speedup"] == 10.0


def test_redis_pool_disagrees_on_a_server_that_closes_or_a_slow_pool() -> None:
    new, pool = redis_facts(Closer.SERVER)
    checks = {c.name: c for c in rp.compare(rp.Plan(200, 4), new, pool, 400, KNOBS)}
    assert not checks["new_first_fin_by"].agree
    # The expectation follows the capture: server closes -> 0 client TIME_WAITs expected.
    assert checks["new_client_time_wait_after"].expected == 0
    assert not checks["new_client_time_wait_after"].agree
    new, pool = redis_facts()
    slow = facts("pool", pool.conns, held=({"ESTABLISHED": 4}, {}), rate=100.0)
    checks = {c.name: c for c in rp.compare(rp.Plan(200, 4), new, slow, 399, KNOBS)}
    assert not checks["pool_speedup"].agree
    assert not checks["redis_counter"].agree
    assert verdict(checks.values()).endswith("-> DISAGREE")


def test_redis_pool_refuses_a_port_range_smaller_than_the_commands() -> None:
    values = resolve_params(REDIS.params, {}, quick=True)
    REDIS.validate(values, parse_settings(["ip_local_port_range=40000 40299"]))
    with pytest.raises(InputError, match="port-exhaustion"):
        REDIS.validate(values, parse_settings(["ip_local_port_range=40000 40149"]))


# --- nginx-keepalive ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "limit", "handshakes", "by_server", "by_client"),
    [(200, 1000, 1, 0, 1), (200, 60, 4, 3, 1), (200, 50, 4, 4, 0), (1, 1, 1, 1, 0)],
)
def test_keepalive_requests_decides_handshakes_and_closers(
    requests: int, limit: int, handshakes: int, by_server: int, by_client: int
) -> None:
    plan = ngx.Plan(requests, 30, limit)
    assert plan.keepalive_connections == handshakes
    assert (plan.closed_by_server, plan.closed_by_client) == (by_server, by_client)


def test_nginx_keepalive_agrees_and_disagrees() -> None:
    plan = ngx.Plan(200, 30, 60)
    close = facts(
        "close", [_conn(50.0 + i / 100, Closer.SERVER) for i in range(200)],
        after=({}, {"TIME_WAIT": 200}),
    )  # fmt: skip
    keep_conns = [_conn(60.0, Closer.SERVER), _conn(70.0, Closer.SERVER),
                  _conn(80.0, Closer.SERVER), _conn(100.5)]  # fmt: skip
    keepalive = facts(
        "keepalive", keep_conns, held=({"ESTABLISHED": 1}, {"TIME_WAIT": 3}),
        after=({"TIME_WAIT": 1}, {"TIME_WAIT": 3}),
    )  # fmt: skip
    checks = ngx.compare(plan, close, keepalive, KNOBS)
    assert all(c.agree for c in checks), verdict(checks)
    # A client TIME_WAIT sampled while the requests ran would mean the client closed one.
    leaky = facts(
        "keepalive", keep_conns, held=({"ESTABLISHED": 1}, {"TIME_WAIT": 3}),
        after=({"TIME_WAIT": 1}, {"TIME_WAIT": 3}), during=1,
    )  # fmt: skip
    checks = {c.name: c for c in ngx.compare(plan, close, leaky, KNOBS)}
    assert not checks["keepalive_client_time_wait_during"].agree


def test_nginx_config_keeps_everything_in_the_work_dir() -> None:
    text = nginx_config(Path("/tmp/w"), ngx.Plan(10, 30, 7), "198.18.0.2", "198.18.1.2")
    assert "daemon off;" in text and "master_process off;" in text
    assert "listen 198.18.0.2:8080;" in text and "listen 198.18.1.2:8080;" in text
    assert "keepalive_timeout 0;" in text and "keepalive_timeout 30;" in text
    assert "keepalive_requests 7;" in text
    paths = [w for w in text.split() if w.startswith("/") and w != "/"]  # "location /"
    assert paths and all(p.startswith("/tmp/w/") for p in paths)


# --- idle-timeout-middlebox ----------------------------------------------------------------


def plan(**changes: object) -> _idle_timeout_model.Plan:
    base: dict[str, object] = {
        "ct_timeout": 3,
        "idle": 5.0,
        "keepalive_idle": 1,
        "keepalive_intvl": 1,
        "request_timeout": 2.0,
        "open_forward": False,
    }
    base.update(changes)
    return _idle_timeout_model.Plan(**base)  # type: ignore[arg-type]


def test_idle_expectations() -> None:
    exp = _idle_timeout_model.expect(plan(), 1, 0.032, 0.032)
    assert (exp.plain_outcome, exp.keepalive_outcome) == ("TIMEOUT", "ok")
    assert exp.midstream is Midstream.NEW
    assert (exp.probes_low, exp.probes_high) == (4, 5)
    assert _idle_timeout_model.expect(plan(open_forward=True), 1, 0, 0).plain_outcome == "ok"
    assert _idle_timeout_model.expect(plan(), 0, 0, 0).midstream is Midstream.INVALID
    short = _idle_timeout_model.expect(plan(idle=2.0), 1, 0, 0)
    assert short.plain_outcome == "ok" and short.plain.forgotten is False
    slow = _idle_timeout_model.expect(plan(keepalive_idle=4, keepalive_intvl=4), 1, 0, 0)
    assert slow.keepalive_outcome == "TIMEOUT"  # first probe after the entry is gone


def test_probe_count_range() -> None:
    every_4 = keepalive_answered(4, 4)
    assert _idle_timeout_model.probe_count_range(every_4, 15.0, 0.256) == (3, 3)
    assert _idle_timeout_model.probe_count_range(every_4, 3.0, 0.256) == (0, 0)
    # A probe due right at the end of the pause may land either side of the request.
    assert _idle_timeout_model.probe_count_range(every_4, 12.0, 0.256) == (2, 3)


def observed(**changes: object) -> _idle_timeout_model.Observed:
    base: dict[str, object] = {
        "outcomes": {"plain": "TIMEOUT", "keepalive": "ok"},
        "ct_listing": True,
        "ct_gone_after": 3.1,
        "keepalive_entry_kept": True,
        "first_probe_after": 1.01,
        "probes_before_request": 4,
        "arrived_after_pause": 5,
        "forwarded_after_pause": 0,
        "counters": {"new": 5, "invalid": 0},
        "icmp_unreachable": 0,
    }
    base.update(changes)
    return _idle_timeout_model.Observed(**base)  # type: ignore[arg-type]


def test_idle_compare_agrees_and_disagrees() -> None:
    exp = _idle_timeout_model.expect(plan(), 1, 0.032, 0.032)
    checks = _idle_timeout_model.compare(exp, observed(), 0.25)
    assert all(c.agree for c in checks), verdict(checks)
    reset = observed(outcomes={"plain": "ECONNRESET", "keepalive": "ok"})
    assert not all(c.agree for c in _idle_timeout_model.compare(exp, reset, 0.25))
    leaked = observed(forwarded_after_pause=1, counters={"new": 4, "invalid": 0})
    names = {c.name for c in _idle_timeout_model.compare(exp, leaked, 0.25) if not c.agree}
    assert names == {"plain_forwarded_after_pause", "midstream_new_packets"}
    no_table = observed(ct_listing=False, ct_gone_after=None, keepalive_entry_kept=None)
    checks = _idle_timeout_model.compare(exp, no_table, 0.25)
    assert all(c.agree for c in checks) and "ct_forgotten_after_s" not in {c.name for c in checks}
    untracked = _idle_timeout_model.expect(plan(), 0, 0.032, 0.032)
    got = observed(counters={"new": 0, "invalid": 0}, icmp_unreachable=2)
    assert all(c.agree for c in _idle_timeout_model.compare(untracked, got, 0.25))


def test_idle_validation() -> None:
    values = resolve_params(IDLE.params, {}, quick=True)
    IDLE.validate(values, ())
    near = resolve_params(IDLE.params, {"idle": 3.2}, quick=True)
    with pytest.raises(InputError, match="too close to call"):
        IDLE.validate(near, ())
    opened = resolve_params(IDLE.params, {"open_forward": True}, quick=True)
    with pytest.raises(InputError, match="not modelled"):
        IDLE.validate(opened, parse_settings(["net.netfilter.nf_conntrack_tcp_loose=0"]))


def test_parse_conntrack_table() -> None:
    text = (
        "ipv4     2 tcp      6 7 ESTABLISHED src=198.18.0.1 dst=198.19.255.1 sport=45524 "
        "dport=8080 src=198.18.1.2 dst=198.18.0.1 sport=8080 dport=45524 [ASSURED] mark=0 "
        "zone=0 use=2\n"
        "ipv4     2 udp      17 29 src=198.18.0.1 dst=198.18.0.2 sport=5353 dport=53 [UNREPLIED]\n"
        "garbage\n"
    )
    assert parse_conntrack(text) == {45524: ("ESTABLISHED", 7)}


# --- children's small parts -----------------------------------------------------------------


def test_exec_wrapper_arguments() -> None:
    assert _exec.parse(["--parent", "12", "--", "nginx", "-c", "x"]) == (12, ["nginx", "-c", "x"])
    for bad in (["--parent", "x", "--", "nginx"], ["--parent", "1", "nginx"], ["--parent", "1"]):
        with pytest.raises(ValueError):
            _exec.parse(bad)


def test_http_response_reading_over_a_socket_pair() -> None:
    ours, theirs = socket.socketpair()
    replies = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
    )
    threading.Thread(target=theirs.sendall, args=(replies,), daemon=True).start()
    buffer = bytearray()
    first = _http_load._read_response(ours, buffer)
    second = _http_load._read_response(ours, buffer)
    assert (first.status, first.close, second.status, second.close) == (200, False, 200, True)
    theirs.close()
    _http_load._drain_to_eof(ours)  # the FIN ends the drain
    ours.close()


def test_error_names() -> None:
    assert _loadgen.error_name(TimeoutError("timed out")) == "TIMEOUT"
    assert _loadgen.error_name(ConnectionResetError(104, "reset")) == "ECONNRESET"
    assert _loadgen.error_name(_loadgen.Failed("HTTP_500")) == "HTTP_500"
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = ConnectionRefusedError(111, "refused")
    assert _loadgen.error_name(wrapped) == "ECONNREFUSED"


def test_a_reused_four_tuple_holds_one_time_wait() -> None:
    reused = connections(closed(1.0, S, C) + closed(5.0, S, C))
    assert len(reused) == 2
    assert time_wait_expected(reused, Closer.SERVER, 10.0).exact == 1
    assert time_wait_expected(reused, Closer.SERVER, 3.0).exact == 1  # before the reuse
