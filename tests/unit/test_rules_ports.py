"""The port and TIME_WAIT rules over synthetic snapshots: when they fire, with which
numbers, how severe, which fixes in which order, and that they never recommend the
dangerous shortcuts (SO_LINGER 0, lowering tcp_max_tw_buckets, tcp_tw_recycle)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType

import pytest

from support.synthetic import Sock, context, snapshot
from tcpdoctor.diagnose.context import Context, DoctorOptions
from tcpdoctor.diagnose.engine import diagnose
from tcpdoctor.diagnose.model import Finding, FixKind, RuleSkipped, Severity
from tcpdoctor.diagnose.rules import (
    all_rules,
    client_churn,
    ephemeral_port_exhaustion,
    server_time_wait,
    time_wait_bucket_overflow,
    timestamps_disabled,
    tw_recycle_enabled,
)
from tcpdoctor.kernel.constants import (
    DEFAULT_PORT_RANGE,
    TCP_EHASH_ENTRIES_TYPICAL,
    TCP_MAX_TW_BUCKETS_EHASH_DIVISOR,
    TCP_TIMEWAIT_LEN,
    TW_SOCK_BYTES,
)
from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.kernel.sysctls import SysctlValue
from tcpdoctor.kernel.timing import max_connection_rate, port_capacity

TW, EST, LISTEN = TcpState.TIME_WAIT, TcpState.ESTABLISHED, TcpState.LISTEN
CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
NARROW = (40000, 40199)  # 200 ports; ends of different parity, as the kernel prefers
DEFAULT_TW_BUCKETS = TCP_EHASH_ENTRIES_TYPICAL // TCP_MAX_TW_BUCKETS_EHASH_DIVISOR
# synthetic.sysctl_values() puts 0 for machine-dependent defaults; a real host has ehash/2.
HEALTHY: dict[str, SysctlValue | None] = {"tcp_max_tw_buckets": DEFAULT_TW_BUCKETS}
OURS = {
    "ephemeral-port-exhaustion",
    "server-time-wait",
    "client-churn",
    "time-wait-bucket-overflow",
    "tw-recycle-enabled",
    "timestamps-disabled",
}
MS = 1000


# --- builders -----------------------------------------------------------------------------


def tw(lport: int, remote: str = SERVER, rport: int = 80, *, local: str = CLIENT,
       age_ms: int = 30 * MS) -> Sock:  # fmt: skip
    """A TIME_WAIT entered `age_ms` ago (expires_ms counts down from 60 s)."""
    return Sock(TW, local, lport, remote, rport, timer=TimerCode.TIMEWAIT,
                expires_ms=int(TCP_TIMEWAIT_LEN * MS) - age_ms)  # fmt: skip


def est(lport: int, remote: str = SERVER, rport: int = 80, *, local: str = CLIENT,
        info: Mapping[str, int] | None = None, inode: int = 0) -> Sock:  # fmt: skip
    return Sock(EST, local, lport, remote, rport, info=dict(info or {}), inode=inode)


def listener(port: int, address: str = "0.0.0.0") -> Sock:
    return Sock(LISTEN, address, port, "0.0.0.0", 0)


def client_tws(count: int, *, first: int = NARROW[0], **kw: object) -> list[Sock]:
    return [tw(first + i, **kw) for i in range(count)]  # type: ignore[arg-type]


def ctx_of(
    socks: Sequence[Sock] = (),
    *,
    sysctls: Mapping[str, SysctlValue | None] | None = None,
    counters: Mapping[str, int] | None = None,
    kernel: str = "6.18.0",
) -> Context:
    return context(
        snapshot(socks, sysctls={**HEALTHY, **(sysctls or {})}, counter_values=counters,
                 kernel=kernel)
    )  # fmt: skip


def watch_of(
    first: Sequence[Sock],
    last: Sequence[Sock],
    *,
    elapsed: float = 10.0,
    sysctls: Mapping[str, SysctlValue | None] | None = None,
    counters: tuple[Mapping[str, int], Mapping[str, int]] = ({}, {}),
) -> Context:
    values = {**HEALTHY, **(sysctls or {})}
    t0 = 1_000_000.0
    return context(
        snapshot(first, sysctls=values, counter_values=counters[0], taken_at=t0),
        snapshot(last, sysctls=values, counter_values=counters[1], taken_at=t0 + elapsed),
    )


def run(rule: ModuleType, ctx: Context) -> list[Finding]:
    return list(rule.RULE.check(ctx))


def one(rule: ModuleType, ctx: Context) -> Finding:
    found = run(rule, ctx)
    assert len(found) == 1, [f.title for f in found]
    return found[0]


def ev(finding: Finding) -> dict[str, object]:
    return {e.key: e.value for e in finding.evidence}


def narrow(**more: SysctlValue | None) -> dict[str, SysctlValue | None]:
    return {"ip_local_port_range": NARROW, **more}


# --- discovery and a healthy host ---------------------------------------------------------


def test_all_six_rules_are_discovered() -> None:
    assert {rule.id for rule in all_rules()} >= OURS


def healthy_sockets() -> list[Sock]:
    socks = [listener(22), listener(8080)]
    socks += [est(41000 + i, rport=5432) for i in range(20)]  # a pool to a database
    socks += [est(8080, remote=f"10.0.1.{i}", rport=50000 + i, local=CLIENT) for i in range(30)]
    socks += [tw(42000 + i, rport=443) for i in range(40)]  # some client churn, small
    socks += [tw(8080, remote=f"10.0.2.{i}", rport=51000 + i) for i in range(20)]  # server closes
    return socks


def test_healthy_host_none_of_these_rules_fire() -> None:
    diagnosis = diagnose(ctx_of(healthy_sockets(), counters={"TcpExt.TCPTimeWaitOverflow": 0}))
    assert not [f for f in diagnosis.findings if f.rule in OURS]
    assert not [s for s in diagnosis.skipped if s.rule in OURS]


def test_healthy_watch_none_of_these_rules_fire() -> None:
    counters = ({"Tcp.ActiveOpens": 1000, "TcpExt.TCPTimeWaitOverflow": 0},
                {"Tcp.ActiveOpens": 1050, "TcpExt.TCPTimeWaitOverflow": 0})  # fmt: skip
    ctx = watch_of(healthy_sockets(), healthy_sockets(), counters=counters)
    found = [f for f in diagnose(ctx).findings if f.rule in OURS]
    assert not found


# --- ephemeral-port-exhaustion ------------------------------------------------------------


def test_exhaustion_critical_with_the_numbers() -> None:
    socks = client_tws(180) + [est(40180 + i) for i in range(10)]
    finding = one(ephemeral_port_exhaustion, ctx_of(socks, sysctls=narrow()))
    e = ev(finding)
    assert finding.severity is Severity.CRITICAL
    assert finding.subject == "10.0.0.1 -> 10.0.0.2:80"
    assert (e["remote_address"], e["remote_port"], e["local_address"]) == (SERVER, 80, CLIENT)
    assert (e["in_use"], e["blocked"], e["capacity"]) == (190, 190, 200)
    assert e["share_pct"] == 95.0
    assert (e["time_wait"], e["established"]) == (180, 10)
    assert e["time_wait_pct"] == pytest.approx(94.7)
    assert e["port_range"] == "40000-40199"
    assert e["tw_reuse_applies"] is False
    assert e["port_hold_s"] == TCP_TIMEWAIT_LEN
    expected = max_connection_rate(port_capacity(*NARROW), tw_reuse=2, loopback=False)
    assert e["max_connection_rate"] == pytest.approx(expected.max_rate)
    assert e["max_connection_rate"] == pytest.approx(200 / 60)
    assert "EADDRNOTAVAIL" in finding.explanation
    assert "not loopback" in finding.explanation
    assert {"ports", "time-wait", "tw-reuse"} <= set(finding.topics)


def test_exhaustion_full_range_says_connect_fails() -> None:
    finding = one(ephemeral_port_exhaustion, ctx_of(client_tws(200), sysctls=narrow()))
    assert ev(finding)["share_pct"] == 100.0
    assert "EADDRNOTAVAIL" in finding.title


@pytest.mark.parametrize(
    ("in_use", "severity"),
    [
        (99, None),  # 49.5%
        (100, Severity.WARNING),  # 50%
        (169, Severity.WARNING),  # 84.5%
        (170, Severity.CRITICAL),  # 85%
    ],
)
def test_exhaustion_thresholds(in_use: int, severity: Severity | None) -> None:
    found = run(ephemeral_port_exhaustion, ctx_of(client_tws(in_use), sysctls=narrow()))
    assert [f.severity for f in found] == ([severity] if severity is not None else [])


def test_exhaustion_capacity_excludes_reserved_and_listening_ports() -> None:
    # 50 reserved, one listener inside the range: 200 - 50 - 1 = 149 usable
    sysctls = narrow(ip_local_reserved_ports=((40150, 40199),))
    socks = [listener(40149), *client_tws(130)]
    e = ev(one(ephemeral_port_exhaustion, ctx_of(socks, sysctls=sysctls)))
    assert e["capacity"] == 149
    assert (e["reserved_in_range"], e["listener_ports_in_range"]) == (50, 1)
    assert e["share_pct"] == pytest.approx(round(100 * 130 / 149, 1))


def test_exhaustion_is_per_destination() -> None:
    # 190 ports in use in all, but split between two destination ports: 95 each (47.5%)
    socks = client_tws(95) + client_tws(95, first=40095, rport=443)
    assert not run(ephemeral_port_exhaustion, ctx_of(socks, sysctls=narrow()))
    # the same local ports towards one destination port each: still per destination
    socks = client_tws(120) + client_tws(120, rport=443)
    found = run(ephemeral_port_exhaustion, ctx_of(socks, sysctls=narrow()))
    assert sorted(ev(f)["remote_port"] for f in found) == [80, 443]  # type: ignore[type-var]


def test_exhaustion_loopback_with_default_reuse_discounts_old_time_waits() -> None:
    # tw_reuse=2 (default) applies to loopback: TIME_WAITs older than 1 s can be reused.
    old = [tw(40000 + i, remote="127.0.0.1", local="127.0.0.1", age_ms=30 * MS) for i in range(190)]
    assert not run(ephemeral_port_exhaustion, ctx_of(old, sysctls=narrow()))
    young = [tw(40000 + i, remote="127.0.0.1", local="127.0.0.1", age_ms=200) for i in range(190)]
    finding = one(ephemeral_port_exhaustion, ctx_of(young, sysctls=narrow()))
    e = ev(finding)
    assert e["loopback"] is True and e["tw_reuse_applies"] is True
    assert (e["blocked"], e["reusable_time_wait"]) == (190, 0)
    assert e["port_hold_s"] == pytest.approx(1.0)  # tcp_tw_reuse_delay
    assert not [f for f in finding.fixes if f.sysctl == "net.ipv4.tcp_tw_reuse"]


def test_exhaustion_reuse_delay_sysctl_decides_which_time_waits_are_reusable() -> None:
    socks = [tw(40000 + i, age_ms=500) for i in range(190)]
    assert run(ephemeral_port_exhaustion, ctx_of(socks, sysctls=narrow(tcp_tw_reuse=1)))
    e_fast = run(ephemeral_port_exhaustion,
                 ctx_of(socks, sysctls=narrow(tcp_tw_reuse=1, tcp_tw_reuse_delay=100)))  # fmt: skip
    assert not e_fast  # all 190 are older than 100 ms


def test_exhaustion_fixes_in_order() -> None:
    finding = one(ephemeral_port_exhaustion, ctx_of(client_tws(190), sysctls=narrow()))
    kinds = [f.kind for f in finding.fixes]
    assert kinds == [
        FixKind.APPLICATION,
        FixKind.SYSCTL,
        FixKind.SYSCTL,
        FixKind.INFRASTRUCTURE,
        FixKind.SOCKET_OPTION,
    ]
    pool, reuse, wide, spread, no_port = finding.fixes
    assert "pool" in pool.summary.lower() or "reuse connections" in pool.summary.lower()
    assert reuse.sysctl == "net.ipv4.tcp_tw_reuse"
    assert reuse.example == "sysctl -w net.ipv4.tcp_tw_reuse=1"
    assert "default" in reuse.detail and "loopback" in reuse.detail
    assert wide.sysctl == "net.ipv4.ip_local_port_range"
    assert wide.example == 'sysctl -w net.ipv4.ip_local_port_range="10000 65535"'
    assert "ip_local_reserved_ports" in wide.detail
    assert "source address" in spread.summary
    assert "IP_BIND_ADDRESS_NO_PORT" in no_port.summary + no_port.example
    # the explicit warnings ride on the first fix
    for shortcut in ("SO_LINGER", "tcp_max_tw_buckets", "tcp_tw_recycle"):
        assert shortcut in pool.detail


def test_exhaustion_no_tw_reuse_fix_without_timestamps() -> None:
    finding = one(ephemeral_port_exhaustion,
                  ctx_of(client_tws(190), sysctls=narrow(tcp_timestamps=0)))  # fmt: skip
    assert not [f for f in finding.fixes if f.sysctl == "net.ipv4.tcp_tw_reuse"]
    assert "timestamps-disabled" in finding.explanation
    assert ev(finding)["timestamps"] is False


def test_exhaustion_no_tw_reuse_fix_when_the_peer_uses_no_timestamps() -> None:
    no_ts = {"options": 0}  # tcpi_options without TCPI_OPT_TIMESTAMPS
    socks = client_tws(180) + [est(40180 + i, info=no_ts) for i in range(10)]
    finding = one(ephemeral_port_exhaustion, ctx_of(socks, sysctls=narrow(tcp_tw_reuse=1)))
    e = ev(finding)
    assert e["peer_timestamps"] is False and e["tw_reuse_applies"] is False
    assert not [f for f in finding.fixes if f.sysctl == "net.ipv4.tcp_tw_reuse"]
    assert "no TCP timestamps" in finding.explanation


def test_exhaustion_no_tw_reuse_fix_when_already_on_and_no_range_fix_when_wide() -> None:
    wide = (10000, 65535)
    socks = [tw(10000 + i, age_ms=100) for i in range(30000)]  # all younger than the delay
    ctx = ctx_of(socks, sysctls={"ip_local_port_range": wide, "tcp_tw_reuse": 1})
    finding = one(ephemeral_port_exhaustion, ctx)
    sysctls = [f.sysctl for f in finding.fixes]
    assert "net.ipv4.tcp_tw_reuse" not in sysctls
    assert "net.ipv4.ip_local_port_range" not in sysctls
    assert ev(finding)["tw_reuse_applies"] is True


def test_exhaustion_on_5x_without_tw_reuse_delay() -> None:
    # tcp_tw_reuse_delay appeared in 6.14; before it the delay was an implicit 0-1 s.
    ctx = ctx_of(client_tws(190), sysctls=narrow(tcp_tw_reuse_delay=None), kernel="5.15.0")
    finding = one(ephemeral_port_exhaustion, ctx)
    assert ev(finding)["tw_reuse_delay_ms"] is None
    reuse = next(f for f in finding.fixes if f.sysctl == "net.ipv4.tcp_tw_reuse")
    assert "before 6.14" in reuse.detail
    assert "200.0 new connections/s" in reuse.detail  # 200 ports / 1 s worst case


def test_exhaustion_ipv6_destination() -> None:
    socks = [Sock(TW, "fd00::1", 40000 + i, "fd00::2", 443, timer=TimerCode.TIMEWAIT,
                  expires_ms=30 * MS) for i in range(180)]  # fmt: skip
    finding = one(ephemeral_port_exhaustion, ctx_of(socks, sysctls=narrow()))
    assert finding.subject == "fd00::1 -> [fd00::2]:443"
    assert ev(finding)["remote_address"] == "fd00::2"


def test_exhaustion_skips_without_sysctls() -> None:
    snap = snapshot(client_tws(10))
    bare = context(type(snap)(snap.sockets, snap.meta, snap.info, None, snap.counters))
    with pytest.raises(RuleSkipped):
        run(ephemeral_port_exhaustion, bare)


def _ports(first: int, count: int, **kw: object) -> list[Sock]:
    return [tw(first + i, **kw) for i in range(count)]  # type: ignore[arg-type]


def test_exhaustion_watch_forecast_makes_it_critical() -> None:
    # 60 ports held, 10 s later 120: 6 new ports/s; 6/s x 60 s = 360 > 200 ports
    first, last = _ports(40000, 60), _ports(40000, 120)
    counters = ({"Tcp.ActiveOpens": 5000}, {"Tcp.ActiveOpens": 5070})
    finding = one(ephemeral_port_exhaustion,
                  watch_of(first, last, sysctls=narrow(), counters=counters))  # fmt: skip
    e = ev(finding)
    assert finding.severity is Severity.CRITICAL  # 60% alone would be a warning
    assert e["destination_connection_rate"] == pytest.approx(6.0)
    assert e["port_use_growth"] == pytest.approx(6.0)
    assert e["new_connection_rate"] == pytest.approx(7.0)
    assert e["projected_in_use"] == 360
    assert e["time_to_exhaustion_s"] == pytest.approx(80 / 6)
    assert e["watch_s"] == pytest.approx(10.0)
    assert "out of ports in about 13 s" in finding.title


def test_exhaustion_watch_forecast_warns_below_half() -> None:
    # default range (28,232 ports): 9,000 held, 10 s later 10,000 with 5,000 new ports:
    # 500 new/s x 60 s = 30,000 > 28,232, net growth 100/s: out of ports in ~182 s.
    first, last = _ports(40000, 9000), _ports(44000, 10000)
    finding = one(ephemeral_port_exhaustion, watch_of(first, last))
    e = ev(finding)
    assert finding.severity is Severity.WARNING
    assert e["share_pct"] == pytest.approx(35.4)
    assert e["destination_connection_rate"] == pytest.approx(500.0)
    assert e["time_to_exhaustion_s"] == pytest.approx((28232 - 10000) / 100)
    assert e["new_connection_rate"] is None  # no ActiveOpens counter in this context


def test_exhaustion_watch_steady_state_below_capacity_is_silent() -> None:
    # growing, but 20 new/s x 60 s = 1,200 ports: it levels off far below the capacity
    first, last = _ports(40000, 800), _ports(40000, 1000)
    assert not run(ephemeral_port_exhaustion, watch_of(first, last))


# --- client-churn -------------------------------------------------------------------------


def test_churn_fires_with_rate_and_lifetime() -> None:
    socks = [*_ports(40000, 600, rport=443), *[est(41000 + i, rport=443) for i in range(10)]]
    finding = one(client_churn, ctx_of(socks))
    e = ev(finding)
    assert finding.severity is Severity.INFO  # 10/s against 470.5/s sustainable
    assert (e["time_wait"], e["established"]) == (600, 10)
    assert e["churn_rate"] == pytest.approx(600 / TCP_TIMEWAIT_LEN)
    assert e["mean_lifetime_s"] == pytest.approx(1.0)
    default = port_capacity(*DEFAULT_PORT_RANGE).capacity
    assert e["max_connection_rate"] == pytest.approx(default / TCP_TIMEWAIT_LEN)
    assert finding.fixes[0].kind is FixKind.APPLICATION
    assert finding.fixes[1].kind is FixKind.INVESTIGATE
    assert finding.fixes[1].example == "ss -tnp state established dst 10.0.0.2 dport = :443"


@pytest.mark.parametrize(
    ("time_wait", "established"),
    [(499, 0), (600, 151)],  # too few TIME_WAITs; connections too long-lived (ratio < 4)
)
def test_churn_silent(time_wait: int, established: int) -> None:
    socks = [*_ports(40000, time_wait), *[est(45000 + i) for i in range(established)]]
    assert not run(client_churn, ctx_of(socks))


def test_churn_warning_when_near_the_sustainable_rate() -> None:
    # narrow range: threshold is min(500, 25% of 200) = 50; 60 TW = 1/s vs 3.33/s (30%)
    finding = one(client_churn, ctx_of(_ports(40000, 60), sysctls=narrow()))
    assert finding.severity is Severity.WARNING
    assert ev(finding)["rate_of_max_pct"] == pytest.approx(30.0)


def test_churn_leaves_exhaustion_to_its_rule() -> None:
    ctx = ctx_of(_ports(40000, 150), sysctls=narrow())  # 75%: exhaustion reports it
    assert run(ephemeral_port_exhaustion, ctx)
    assert not run(client_churn, ctx)


def test_churn_watch_uses_the_measured_rate() -> None:
    first, last = _ports(40000, 550), _ports(40000, 600)  # 5 new/s measured, 10/s by TW
    counters = ({"Tcp.ActiveOpens": 0}, {"Tcp.ActiveOpens": 80})
    e = ev(one(client_churn, watch_of(first, last, counters=counters)))
    assert e["destination_connection_rate"] == pytest.approx(5.0)
    assert e["new_connection_rate"] == pytest.approx(8.0)


def test_churn_reports_the_top_destinations_and_says_how_many_more() -> None:
    socks = [tw(40000 + i, remote=f"10.0.3.{d}") for d in range(5) for i in range(600 + d)]
    ctx = context(snapshot(socks, sysctls=HEALTHY), options=DoctorOptions(top=2))
    found = run(client_churn, ctx)
    assert [ev(f)["remote_address"] for f in found] == ["10.0.3.4", "10.0.3.3"]
    assert "client-churn: 3 more destinations not reported (raise --top)" in ctx.limitations


def test_exhaustion_reports_the_most_severe_first() -> None:
    socks = client_tws(120, remote="10.0.4.1") + client_tws(190, remote="10.0.4.2")
    ctx = context(snapshot(socks, sysctls={**HEALTHY, **narrow()}), options=DoctorOptions(top=1))
    found = run(ephemeral_port_exhaustion, ctx)
    assert [(f.severity, ev(f)["remote_address"]) for f in found] == [
        (Severity.CRITICAL, "10.0.4.2")
    ]
    assert ctx.limitations == [
        "ephemeral-port-exhaustion: 1 more destinations not reported (raise --top)"
    ]


# --- server-time-wait ---------------------------------------------------------------------


def _server(tw_count: int, established: int, port: int = 8080) -> list[Sock]:
    socks = [listener(port)]
    socks += [tw(port, remote=f"10.1.{i // 250}.{i % 250}", rport=50000 + i % 10000,
                 local=SERVER) for i in range(tw_count)]  # fmt: skip
    socks += [
        est(port, remote="10.2.0.1", rport=30000 + i, local=SERVER) for i in range(established)
    ]
    return socks


def test_server_time_wait_warning_with_numbers() -> None:
    finding = one(server_time_wait, ctx_of(_server(1200, 50)))
    e = ev(finding)
    assert finding.severity is Severity.WARNING
    assert e["listening_port"] == 8080
    assert (e["time_wait"], e["established"]) == (1200, 50)
    assert e["time_wait_pct"] == pytest.approx(96.0)
    assert e["server_close_rate"] == pytest.approx(1200 / TCP_TIMEWAIT_LEN)
    assert e["time_wait_memory_kib"] == pytest.approx(1200 * TW_SOCK_BYTES / 1024)
    assert e["distinct_clients"] == 1200
    assert "8080" in finding.title and "8080" in finding.subject
    assert [f.kind for f in finding.fixes] == [FixKind.APPLICATION, FixKind.APPLICATION]
    assert "keep-alive" in finding.fixes[0].summary
    assert not [f for f in finding.fixes if f.sysctl]  # no kernel knob fixes this
    assert "tcp_tw_reuse does not apply" in finding.explanation


@pytest.mark.parametrize(
    ("tw_count", "established", "severity"),
    [
        (1000, 5000, Severity.WARNING),  # many, even if a small share
        (150, 10, Severity.INFO),  # the pattern, in small numbers
        (150, 200, None),  # a minority of the port's connections
        (99, 0, None),  # too few to matter
    ],
)
def test_server_time_wait_thresholds(
    tw_count: int, established: int, severity: Severity | None
) -> None:
    found = run(server_time_wait, ctx_of(_server(tw_count, established)))
    assert [f.severity for f in found] == ([severity] if severity is not None else [])


def test_server_time_wait_ignores_client_side_time_waits() -> None:
    socks = [listener(22), *_ports(40000, 2000)]  # our own connect()s, not a listening port
    assert not run(server_time_wait, ctx_of(socks))


def test_server_time_wait_one_finding_per_listening_port() -> None:
    socks = _server(1100, 0, port=80) + _server(1100, 0, port=443)[1:] + [listener(443)]
    found = run(server_time_wait, ctx_of(socks))
    assert sorted(ev(f)["listening_port"] for f in found) == [80, 443]  # type: ignore[type-var]


# --- time-wait-bucket-overflow ------------------------------------------------------------


def test_bucket_overflow_counter_alone_is_a_warning() -> None:
    ctx = ctx_of(_ports(40000, 100), counters={"TcpExt.TCPTimeWaitOverflow": 5})
    finding = one(time_wait_bucket_overflow, ctx)
    e = ev(finding)
    assert finding.severity is Severity.WARNING
    assert (e["overflow_total"], e["time_wait"], e["max_tw_buckets"]) == (
        5,
        100,
        DEFAULT_TW_BUCKETS,
    )
    assert e["default_max_tw_buckets"] == DEFAULT_TW_BUCKETS
    assert finding.fixes[0].kind is FixKind.APPLICATION  # at the default: cut the churn first


def test_bucket_overflow_at_a_lowered_cap_is_critical_and_raises_it_back() -> None:
    socks = _ports(40000, 95) + [
        Sock(TcpState.FIN_WAIT2, CLIENT, 41000 + i, SERVER, 80, timer=TimerCode.TIMEWAIT)
        for i in range(5)
    ]  # FIN_WAIT2 minisocks count against the cap too
    ctx = ctx_of(socks, sysctls={"tcp_max_tw_buckets": 100},
                 counters={"TcpExt.TCPTimeWaitOverflow": 12})  # fmt: skip
    finding = one(time_wait_bucket_overflow, ctx)
    e = ev(finding)
    assert finding.severity is Severity.CRITICAL
    assert (e["time_wait"], e["used_pct"]) == (100, 100.0)
    first = finding.fixes[0]
    assert first.sysctl == "net.ipv4.tcp_max_tw_buckets"
    assert first.example == f"sysctl -w net.ipv4.tcp_max_tw_buckets={DEFAULT_TW_BUCKETS}"
    assert "lowered" in finding.explanation


def test_bucket_near_the_cap_without_overflow_is_a_warning() -> None:
    ctx = ctx_of(_ports(40000, 90), sysctls={"tcp_max_tw_buckets": 100},
                 counters={"TcpExt.TCPTimeWaitOverflow": 0})  # fmt: skip
    assert one(time_wait_bucket_overflow, ctx).severity is Severity.WARNING
    ctx = ctx_of(_ports(40000, 89), sysctls={"tcp_max_tw_buckets": 100},
                 counters={"TcpExt.TCPTimeWaitOverflow": 0})  # fmt: skip
    assert not run(time_wait_bucket_overflow, ctx)


def test_bucket_overflow_rising_during_a_watch_is_critical() -> None:
    counters = ({"TcpExt.TCPTimeWaitOverflow": 10}, {"TcpExt.TCPTimeWaitOverflow": 30})
    ctx = watch_of(_ports(40000, 10), _ports(40000, 10), counters=counters)
    finding = one(time_wait_bucket_overflow, ctx)
    e = ev(finding)
    assert finding.severity is Severity.CRITICAL
    assert (e["overflow_during_watch"], e["overflow_rate"]) == (20, pytest.approx(2.0))
    assert "during the watch" in finding.title


def test_bucket_overflow_in_the_past_only_is_info() -> None:
    counters = ({"TcpExt.TCPTimeWaitOverflow": 10}, {"TcpExt.TCPTimeWaitOverflow": 10})
    ctx = watch_of(_ports(40000, 10), _ports(40000, 10), counters=counters)
    assert one(time_wait_bucket_overflow, ctx).severity is Severity.INFO


def test_bucket_cap_of_zero() -> None:
    ctx = ctx_of(sysctls={"tcp_max_tw_buckets": 0}, counters={"TcpExt.TCPTimeWaitOverflow": 0})
    finding = one(time_wait_bucket_overflow, ctx)
    assert finding.severity is Severity.WARNING
    assert "=0" in finding.title


def test_bucket_skips_when_it_cannot_see_anything() -> None:
    with pytest.raises(RuleSkipped):
        run(time_wait_bucket_overflow, ctx_of(sysctls={"tcp_max_tw_buckets": None}))


# --- tw-recycle-enabled -------------------------------------------------------------------


@pytest.mark.parametrize(("kernel", "everyone"), [("4.9.0", False), ("4.11.3", True)])
def test_tw_recycle_on_is_critical(kernel: str, everyone: bool) -> None:
    ctx = ctx_of([listener(80)], sysctls={"tcp_tw_recycle": 1}, kernel=kernel,
                 counters={"TcpExt.PAWSPassive": 42})  # fmt: skip
    finding = one(tw_recycle_enabled, ctx)
    e = ev(finding)
    assert finding.severity is Severity.CRITICAL
    assert (e["tw_recycle"], e["paws_passive_total"]) == (1, 42)
    assert e["per_connection_ts_offsets"] is everyone
    assert ("every client" in finding.title) is everyone
    assert "NAT" in finding.explanation
    first = finding.fixes[0]
    assert (first.sysctl, first.example) == (
        "net.ipv4.tcp_tw_recycle",
        "sysctl -w net.ipv4.tcp_tw_recycle=0",
    )
    assert finding.fixes[1].example == "sysctl -w net.ipv4.tcp_tw_reuse=1"


def test_tw_recycle_off_or_gone_is_silent() -> None:
    assert not run(tw_recycle_enabled, ctx_of(sysctls={"tcp_tw_recycle": 0}, kernel="4.9.0"))
    assert not run(tw_recycle_enabled, ctx_of(sysctls={"tcp_tw_recycle": None}, kernel="6.18.0"))


def test_tw_recycle_unreadable_on_an_old_kernel_is_skipped() -> None:
    with pytest.raises(RuleSkipped):
        run(tw_recycle_enabled, ctx_of(sysctls={"tcp_tw_recycle": None}, kernel="4.9.0"))


def test_tw_recycle_without_timestamps_gives_no_tw_reuse_fix() -> None:
    ctx = ctx_of(sysctls={"tcp_tw_recycle": 1, "tcp_timestamps": 0}, kernel="4.4.0")
    finding = one(tw_recycle_enabled, ctx)
    assert "net.ipv4.tcp_tw_reuse" not in [f.sysctl for f in finding.fixes]


# --- timestamps-disabled ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tw_reuse", "severity"), [(2, Severity.WARNING), (0, Severity.WARNING), (1, Severity.CRITICAL)]
)
def test_timestamps_off(tw_reuse: int, severity: Severity) -> None:
    ctx = ctx_of(_ports(40000, 30), sysctls={"tcp_timestamps": 0, "tcp_tw_reuse": tw_reuse},
                 counters={"TcpExt.TWRecycled": 0})  # fmt: skip
    finding = one(timestamps_disabled, ctx)
    e = ev(finding)
    assert finding.severity is severity
    assert (e["timestamps"], e["tw_reuse"], e["client_time_wait"]) == (0, tw_reuse, 30)
    default = port_capacity(*DEFAULT_PORT_RANGE).capacity
    assert e["max_connection_rate"] == pytest.approx(default / TCP_TIMEWAIT_LEN)
    assert e["max_connection_rate_with_reuse"] == pytest.approx(default / 1.0)
    assert finding.fixes[0].example == "sysctl -w net.ipv4.tcp_timestamps=1"
    assert "PAWS" in finding.explanation


@pytest.mark.parametrize("value", [1, 2])
def test_timestamps_on_is_silent(value: int) -> None:
    assert not run(timestamps_disabled, ctx_of(sysctls={"tcp_timestamps": value}))


def test_timestamps_unreadable_is_skipped() -> None:
    with pytest.raises(RuleSkipped):
        run(timestamps_disabled, ctx_of(sysctls={"tcp_timestamps": None}))


# --- never recommend the shortcuts --------------------------------------------------------

_NEGATION = re.compile(r"\b(do not|don't|never|not)\b", re.IGNORECASE)
_CLAUSES = re.compile(r"(?<=[.;:!?])\s+")
_SET_VALUE = re.compile(r"(?P<name>net\.ipv4\.\w+)=\"?(?P<value>-?\d+)")


def _every_finding() -> Iterable[Finding]:
    """Findings of all six rules across the scenarios above (every fix path)."""
    contexts = [
        ctx_of(client_tws(190), sysctls=narrow()),
        ctx_of(client_tws(190), sysctls=narrow(tcp_timestamps=0, tcp_tw_reuse=1)),
        ctx_of(client_tws(190), sysctls=narrow(tcp_tw_reuse=0, tcp_tw_reuse_delay=None),
               kernel="5.10.0"),
        ctx_of(_ports(40000, 60), sysctls=narrow()),
        ctx_of(_server(1200, 10)),
        ctx_of(_ports(40000, 95), sysctls={"tcp_max_tw_buckets": 100},
               counters={"TcpExt.TCPTimeWaitOverflow": 3}),
        ctx_of(_ports(40000, 100), counters={"TcpExt.TCPTimeWaitOverflow": 3}),
        ctx_of([listener(80)], sysctls={"tcp_tw_recycle": 1}, kernel="4.9.0"),
        watch_of(_ports(40000, 60), _ports(40000, 120), sysctls=narrow()),
    ]  # fmt: skip
    for ctx in contexts:
        yield from (f for f in diagnose(ctx).findings if f.rule in OURS)


def test_scenarios_cover_every_rule() -> None:
    assert {f.rule for f in _every_finding()} == OURS


def test_no_fix_recommends_a_dangerous_shortcut() -> None:
    for finding in _every_finding():
        limit = ev(finding).get("max_tw_buckets")
        for fix in finding.fixes:
            recommended = f"{fix.summary}\n{fix.example}"
            assert "linger" not in recommended.lower(), (finding.rule, fix)
            for match in _SET_VALUE.finditer(recommended):
                name, value = match["name"], int(match["value"])
                if name == "net.ipv4.tcp_tw_recycle":
                    assert value == 0, (finding.rule, fix)
                if name == "net.ipv4.tcp_max_tw_buckets":
                    assert isinstance(limit, int) and value >= limit, (finding.rule, fix)
            if "tw_recycle" in fix.summary:
                assert "off" in fix.summary, (finding.rule, fix)
            if fix.sysctl == "net.ipv4.tcp_tw_recycle":
                assert fix.example.endswith("=0"), (finding.rule, fix)


def test_shortcuts_appear_in_fix_details_only_as_warnings() -> None:
    for finding in _every_finding():
        for fix in finding.fixes:
            for clause in _CLAUSES.split(fix.detail):
                lowered = clause.lower()
                dangerous = (
                    "so_linger" in lowered
                    or "tw_recycle" in lowered
                    or ("max_tw_buckets" in lowered and "lower" in lowered)
                )
                if dangerous:
                    assert _NEGATION.search(clause), (finding.rule, clause)


def test_every_finding_is_complete() -> None:
    topics = {
        "time-wait", "close-wait", "fin-wait2", "tw-reuse", "tw-recycle", "timestamps",
        "keepalive", "linger", "rto", "retries", "syn-retries", "ports", "listen-queue",
        "orphans", "max-tw-buckets", "user-timeout", "idle-timeout", "fd-limits",
    }  # fmt: skip
    for finding in _every_finding():
        assert finding.title and finding.explanation and finding.fixes
        assert set(finding.topics) <= topics and finding.topics
        keys = [e.key for e in finding.evidence]
        assert len(keys) == len(set(keys)), finding.rule
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", k) for k in keys), keys
        for fix in finding.fixes:
            assert fix.summary and fix.detail and fix.example, (finding.rule, fix)
            if fix.kind is FixKind.SYSCTL:
                assert fix.sysctl and fix.sysctl in fix.example, (finding.rule, fix)
