"""The closing-state rules over synthetic snapshots: when they fire, with which evidence and
severity, when they stay silent, how they group, and what they do without root.

Socket owners and /proc are faked for every test (no test here reads the real host).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from support.synthetic import Sock, context, snapshot
from tcpdoctor.diagnose import context as context_mod
from tcpdoctor.diagnose.context import Context, DoctorOptions
from tcpdoctor.diagnose.engine import diagnose
from tcpdoctor.diagnose.model import Finding, FixKind, RuleSkipped, Severity
from tcpdoctor.diagnose.rules import (
    abortive_close,
    close_wait_leak,
    fd_limits,
    fin_wait1_stuck,
    fin_wait2,
    last_ack_stuck,
    listen_queue_overflow,
    orphans,
)
from tcpdoctor.errors import KernelInterfaceError, PermissionDenied
from tcpdoctor.kernel.constants import NR_OPEN_DEFAULT, SOMAXCONN_DEFAULT, TCP_FIN_TIMEOUT
from tcpdoctor.kernel.counters import Counters, Sockstat
from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.kernel.sysctls import SysctlValue
from tcpdoctor.kernel.timing import fin_wait2_lifetime, orphan_give_up
from tcpdoctor.observe import limits as proc_limits
from tcpdoctor.observe.owners import Owner, OwnerScan
from tcpdoctor.observe.snapshot import Snapshot, Source

CW, FW1, FW2, LA = (
    TcpState.CLOSE_WAIT,
    TcpState.FIN_WAIT1,
    TcpState.FIN_WAIT2,
    TcpState.LAST_ACK,
)
LISTEN, EST = TcpState.LISTEN, TcpState.ESTABLISHED
HERE, PEER = "10.0.0.1", "10.0.0.2"
MS = 1000
RULES = (
    close_wait_leak.RULE,
    fin_wait2.RULE,
    fin_wait1_stuck.RULE,
    last_ack_stuck.RULE,
    orphans.RULE,
    abortive_close.RULE,
    listen_queue_overflow.RULE,
    fd_limits.RULE,
)
HOST_LIMITS: dict[str, SysctlValue | None] = {"tcp_max_orphans": 131072, "file-max": 1_000_000}


# --- fakes --------------------------------------------------------------------------------


class Owners:
    """Stands in for the /proc walk behind Context.owners()."""

    def __init__(self) -> None:
        self.table: dict[int, list[Owner]] = {}
        self.unreadable = 0

    def hold(self, pid: int, comm: str, inodes: Sequence[int]) -> None:
        for fd, inode in enumerate(inodes, start=3):
            self.table.setdefault(inode, []).append(Owner(pid, comm, fd))

    def scan(self, inodes: Sequence[int], proc: str = "/proc") -> OwnerScan:
        found = {int(i): tuple(self.table[int(i)]) for i in inodes if int(i) in self.table}
        return OwnerScan(found, self.unreadable)


@pytest.fixture(autouse=True)
def owners(monkeypatch: pytest.MonkeyPatch) -> Owners:
    fake = Owners()
    monkeypatch.setattr(context_mod, "find_owners", fake.scan)
    return fake


@pytest.fixture(autouse=True)
def proc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty fake /proc with a quiet host file-handle count."""
    (tmp_path / "sys" / "fs").mkdir(parents=True)
    (tmp_path / "sys" / "fs" / "file-nr").write_text("5000\t0\t1000000\n")
    monkeypatch.setattr(proc_limits, "PROC", str(tmp_path))
    return tmp_path


def fake_process(proc: Path, pid: int, open_fds: int, soft: int, hard: int) -> None:
    (proc / str(pid) / "fd").mkdir(parents=True)
    for fd in range(open_fds):
        (proc / str(pid) / "fd" / str(fd)).touch()
    (proc / str(pid) / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max processes             96365                96365                processes \n"
        f"Max open files            {soft:<20} {hard:<20} files     \n"
    )


# --- builders -----------------------------------------------------------------------------


def close_wait(n: int, *, first_inode: int = 1000, rqueue: int = 1, silent_ms: int = 2 * MS,
               lport: int = 8080, remote: str = PEER) -> list[Sock]:  # fmt: skip
    """n server-side CLOSE_WAITs on a listening port, the peer silent for `silent_ms`."""
    info = {"last_data_recv_ms": silent_ms + 5, "last_ack_recv_ms": silent_ms}
    return [
        Sock(CW, HERE, lport, remote, 50000 + i, rqueue=rqueue, inode=first_inode + i, info=info)
        for i in range(n)
    ]


def listener(port: int = 8080, *, rqueue: int = 0, backlog: int = 128, inode: int = 1) -> Sock:
    return Sock(LISTEN, HERE, port, "0.0.0.0", 0, rqueue=rqueue, wqueue=backlog, inode=inode)


def orphan_fw2(n: int, *, left_ms: int = 30 * MS, timer: TimerCode = TimerCode.TIMEWAIT,
               remote: str = PEER, rport: int = 80) -> list[Sock]:  # fmt: skip
    return [
        Sock(FW2, HERE, 40000 + i, remote, rport, timer=timer, expires_ms=left_ms) for i in range(n)
    ]


def stuck(state: TcpState, n: int, *, retrans: int = 4, inode: int = 0,
          timer: TimerCode = TimerCode.RETRANSMIT) -> list[Sock]:  # fmt: skip
    info = {"last_data_recv_ms": 9 * MS, "last_ack_recv_ms": 8 * MS}
    return [
        Sock(state, HERE, 40000 + i, PEER, 443, timer=timer, expires_ms=800, retrans=retrans,
             wqueue=1, inode=inode + i if inode else 0, info=info)
        for i in range(n)
    ]  # fmt: skip


def with_sockstat(snap: Snapshot, *, orphan: int) -> Snapshot:
    assert snap.counters is not None
    sockstat = Sockstat(
        sockets_used=0, tcp_inuse=0, tcp_orphan=orphan, tcp_tw=0, tcp_alloc=0, tcp_mem_pages=0,
        fields=Counters({"TCP.orphan": orphan}),
    )  # fmt: skip
    return dataclasses.replace(snap, counters=dataclasses.replace(snap.counters, sockstat=sockstat))


def watch(first: dict[str, int], last: dict[str, int], *, seconds: float = 2.0,
          socks: Sequence[Sock] = (), sysctls: dict[str, SysctlValue | None] | None = None,
          ) -> Context:  # fmt: skip
    t0 = 1_000_000.0
    a = snapshot(socks, counter_values=first, taken_at=t0, sysctls=sysctls)
    b = snapshot(socks, counter_values=last, taken_at=t0 + seconds, sysctls=sysctls)
    return context(a, b)


def run(rule_module: object, ctx: Context) -> list[Finding]:
    rule = rule_module.RULE  # type: ignore[attr-defined]
    return list(rule.check(ctx))


def ev(finding: Finding) -> dict[str, object]:
    return {e.key: e.value for e in finding.evidence}


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, [f.title for f in findings]
    return findings[0]


def fixes_sane(finding: Finding) -> None:
    assert finding.fixes, finding.rule
    for fix in finding.fixes:
        assert fix.summary and "\n" not in fix.summary
        if fix.kind is FixKind.SYSCTL:
            assert fix.sysctl and fix.sysctl in fix.example
    assert finding.topics
    keys = [e.key for e in finding.evidence]
    assert len(keys) == len(set(keys)), keys
    assert all(k.replace("_", "").isalnum() and k == k.lower() for k in keys), keys


# --- healthy ------------------------------------------------------------------------------


def healthy_socks() -> list[Sock]:
    socks = [listener(8080, rqueue=0, backlog=4096, inode=1)]
    socks += [Sock(EST, HERE, 8080, PEER, 51000 + i, inode=10 + i) for i in range(50)]
    socks += close_wait(3, first_inode=500)  # a few young CLOSE_WAITs are normal
    socks += orphan_fw2(5)  # closes in flight
    socks += stuck(FW1, 2, retrans=1)  # one lost FIN, retried once
    return socks


def test_every_rule_is_silent_on_a_healthy_namespace(owners: Owners) -> None:
    owners.hold(77, "server", [1, *range(10, 60), 500, 501, 502])
    counts = {"TcpExt.TCPAbortOnData": 3, "Tcp.ActiveOpens": 10_000, "Tcp.PassiveOpens": 90_000}
    first = with_sockstat(snapshot(healthy_socks(), sysctls=HOST_LIMITS, counter_values=counts,
                                   taken_at=1_000_000.0), orphan=12)  # fmt: skip
    last = with_sockstat(snapshot(healthy_socks(), sysctls=HOST_LIMITS, counter_values=counts,
                                  taken_at=1_000_002.0), orphan=12)  # fmt: skip
    for ctx in (context(last), context(first, last)):
        result = diagnose(ctx, RULES)
        assert result.findings == ()
        assert result.skipped == ()


# --- close-wait-leak ----------------------------------------------------------------------


def test_close_wait_leak_names_the_process_and_counts(owners: Owners) -> None:
    socks = [listener(), *close_wait(120)]
    owners.hold(4242, "leaky", [1, *range(1000, 1120)])
    finding = only(run(close_wait_leak, context(snapshot(socks))))
    e = ev(finding)
    assert finding.severity is Severity.WARNING
    assert (e["pid"], e["comm"], e["close_wait"]) == (4242, "leaky", 120)
    assert (e["fin_unread"], e["data_unread"], e["eof_read"]) == (120, 0, 0)
    assert e["oldest_age_s"] == 2.0 and e["stale"] == 0
    assert e["stale_after_s"] == fin_wait2_lifetime(TCP_FIN_TIMEOUT).lifetime
    assert e["outbound"] == 0 and "client of local port 8080" in str(e["top_peers"])
    assert "leaky (pid 4242)" in finding.title and finding.subject == "leaky (pid 4242)"
    assert "has no kernel timer" in finding.explanation
    assert finding.fixes[0].kind is FixKind.APPLICATION
    assert not any(f.kind is FixKind.SYSCTL for f in finding.fixes)  # no knob times it out
    assert "close-wait" in finding.topics
    fixes_sane(finding)


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (9, None),
        (10, Severity.INFO),
        (99, Severity.INFO),
        (100, Severity.WARNING),
        (999, Severity.WARNING),
        (1000, Severity.CRITICAL),
    ],
)
def test_close_wait_leak_count_thresholds(
    owners: Owners, count: int, expected: Severity | None
) -> None:
    owners.hold(5, "app", list(range(1000, 1000 + count)))
    found = run(close_wait_leak, context(snapshot(close_wait(count))))
    assert [f.severity for f in found] == ([expected] if expected is not None else [])


@pytest.mark.parametrize(("stale", "expected"), [(1, Severity.INFO), (10, Severity.WARNING)])
def test_close_wait_leak_fires_on_few_but_old_sockets(
    owners: Owners, stale: int, expected: Severity
) -> None:
    old = close_wait(stale, silent_ms=600 * MS)
    owners.hold(5, "app", [s.inode for s in old])
    finding = only(run(close_wait_leak, context(snapshot(old))))
    assert finding.severity is expected
    assert ev(finding)["stale"] == stale and ev(finding)["oldest_age_s"] == 600.0


def test_close_wait_leak_watch_persistence_gives_a_lower_bound_of_age(owners: Owners) -> None:
    socks = close_wait(5, silent_ms=-1)  # tcp_info says nothing
    socks = [dataclasses.replace(s, info={}) for s in socks]
    owners.hold(5, "app", [s.inode for s in socks])
    first = snapshot(socks, taken_at=1_000_000.0)
    last = snapshot(socks[:3], taken_at=1_000_090.0)  # two were closed meanwhile
    finding = only(run(close_wait_leak, context(first, last)))
    e = ev(finding)
    assert e["persisted_over_watch"] == 3 and e["watch_s"] == 90.0
    assert e["oldest_age_s"] == 90.0 and e["stale"] == 3
    assert finding.severity is Severity.INFO


def test_close_wait_leak_groups_by_process_and_honours_top(owners: Owners) -> None:
    a, b, c = (
        close_wait(150, first_inode=1000),
        close_wait(20, first_inode=5000),
        close_wait(30, first_inode=9000),
    )
    owners.hold(1, "alpha", [s.inode for s in a])
    owners.hold(2, "beta", [s.inode for s in b])
    owners.hold(3, "gamma", [s.inode for s in c])
    found = run(close_wait_leak, context(snapshot(a + b + c)))
    assert [(ev(f)["comm"], ev(f)["close_wait"]) for f in found] == [
        ("alpha", 150),
        ("gamma", 30),
        ("beta", 20),
    ]
    assert all(ev(f)["processes_with_close_wait"] == 3 for f in found)
    top1 = run(close_wait_leak, context(snapshot(a + b + c), options=DoctorOptions(top=1)))
    assert [ev(f)["comm"] for f in top1] == ["alpha"]


def test_close_wait_leak_without_root_still_counts_and_says_why(owners: Owners) -> None:
    owners.unreadable = 12
    ctx = context(snapshot(close_wait(40), privileged=False))
    finding = only(run(close_wait_leak, ctx))
    e = ev(finding)
    assert e["pid"] is None and e["comm"] is None and e["close_wait"] == 40
    assert finding.subject == "an unidentified process"
    assert any(
        "close-wait-leak" in line and "not running as root" in line for line in ctx.limitations
    )
    assert any("12 processes could not be inspected" in line for line in ctx.limitations)


def test_close_wait_leak_recv_q_classes_and_pool_fix_for_clients(owners: Owners) -> None:
    outbound = [Sock(CW, HERE, 41000 + i, PEER, 5432, rqueue=1, inode=2000 + i) for i in range(15)]
    read_eof = [Sock(CW, HERE, 42000 + i, PEER, 5432, rqueue=0, inode=3000 + i) for i in range(3)]
    owners.hold(9, "client", [s.inode for s in outbound + read_eof])
    finding = only(run(close_wait_leak, context(snapshot(outbound + read_eof))))
    e = ev(finding)
    assert (e["fin_unread"], e["eof_read"], e["outbound"]) == (15, 3, 18)
    assert "pool" in finding.fixes[0].summary.lower()
    assert e["top_peers"] == "10.0.0.2:5432 (18)"


def test_close_wait_leak_server_side_gets_no_pool_fix(owners: Owners) -> None:
    owners.hold(9, "srv", list(range(1000, 1020)))
    finding = only(run(close_wait_leak, context(snapshot([listener(), *close_wait(20)]))))
    assert not any("pool" in f.summary.lower() for f in finding.fixes)


# --- fin-wait2 ----------------------------------------------------------------------------


def test_fin_wait2_orphans_grouped_by_peer_with_lifetime(owners: Owners) -> None:
    socks = orphan_fw2(25, left_ms=20 * MS) + orphan_fw2(5, remote="10.0.0.9")
    finding = only(run(fin_wait2, context(snapshot(socks))))
    e = ev(finding)
    assert finding.severity is Severity.INFO
    assert (e["peer"], e["fin_wait2_orphaned"], e["minisocks"]) == ("10.0.0.2:80", 25, 25)
    assert e["orphan_lifetime_s"] == 60.0 and e["tcp_fin_timeout_s"] == 60.0
    assert e["oldest_age_s"] == 40.0  # 60 s lifetime, 20 s left
    assert e["lifetime_outcome"] == "minisock"
    assert e["peer_close_wait_here"] == 0 and e["peer_pid"] is None
    assert finding.fixes[0].kind is FixKind.APPLICATION
    assert finding.fixes[1].sysctl == "net.ipv4.tcp_fin_timeout"
    fixes_sane(finding)


def test_fin_wait2_orphans_above_60s_fin_timeout_are_full_sockets_first() -> None:
    full = orphan_fw2(20, left_ms=10 * MS, timer=TimerCode.KEEPALIVE)
    mini = orphan_fw2(5, left_ms=10 * MS, rport=80)
    ctx = context(snapshot(full + mini, sysctls={"tcp_fin_timeout": 90}))
    e = ev(only(run(fin_wait2, ctx)))
    assert (e["full_sockets"], e["minisocks"]) == (20, 5)
    life = fin_wait2_lifetime(90)
    assert e["orphan_lifetime_s"] == life.lifetime == 60.0
    assert e["oldest_age_s"] == life.full_socket_phase + life.minisock_phase - 10.0
    assert e["lifetime_outcome"] == "full_socket_then_minisock"


@pytest.mark.parametrize(
    ("count", "expected"), [(19, None), (20, Severity.INFO), (500, Severity.WARNING)]
)
def test_fin_wait2_orphan_thresholds(count: int, expected: Severity | None) -> None:
    found = run(fin_wait2, context(snapshot(orphan_fw2(count))))
    assert [f.severity for f in found] == ([expected] if expected is not None else [])


def test_fin_wait2_names_the_local_close_wait_holder(owners: Owners) -> None:
    """Both ends in this namespace: our orphan's peer is a CLOSE_WAIT some process leaks."""
    ours = [Sock(FW2, "127.0.0.1", 45000 + i, "127.0.0.1", 7000, timer=TimerCode.TIMEWAIT,
                 expires_ms=50 * MS) for i in range(30)]  # fmt: skip
    theirs = [Sock(CW, "127.0.0.1", 7000, "127.0.0.1", 45000 + i, rqueue=1, inode=800 + i)
              for i in range(30)]  # fmt: skip
    owners.hold(31, "leaky", [s.inode for s in theirs])
    snap = snapshot([listener(7000, inode=1), *ours, *theirs])
    finding = only(run(fin_wait2, context(snap)))
    e = ev(finding)
    assert (e["peer_close_wait_here"], e["peer_pid"], e["peer_comm"]) == (30, 31, "leaky")
    assert "leaky (pid 31)" in finding.fixes[0].detail


def test_fin_wait2_owned_sockets_have_no_timer_and_are_told_apart(owners: Owners) -> None:
    info = {"last_data_recv_ms": 5 * MS, "last_ack_recv_ms": 4 * MS}
    owned = [Sock(FW2, HERE, 46000 + i, PEER, 9000, inode=600 + i, info=info) for i in range(12)]
    owners.hold(55, "halfclose", [s.inode for s in owned])
    found = run(fin_wait2, context(snapshot(owned + orphan_fw2(30))))
    assert len(found) == 2
    kinds = {("fin_wait2_owned" in ev(f)): f for f in found}
    mine, orphaned = kinds[True], kinds[False]
    e = ev(mine)
    assert (e["pid"], e["comm"], e["fin_wait2_owned"], e["timer"]) == (55, "halfclose", 12, "none")
    assert e["peer_silent_s"] == 4.0 and e["older_than_orphan_lifetime"] == 0
    assert mine.severity is Severity.INFO and "no timer" in mine.title
    assert ev(orphaned)["fin_wait2_orphaned"] == 30
    fixes_sane(mine)


def test_fin_wait2_single_owned_socket_fires_only_when_older_than_an_orphan(owners: Owners) -> None:
    def one(silent_s: int) -> list[Finding]:
        info = {"last_data_recv_ms": silent_s * MS, "last_ack_recv_ms": silent_s * MS}
        sock = Sock(FW2, HERE, 46000, PEER, 9000, inode=600, info=info)
        return run(fin_wait2, context(snapshot([sock])))

    owners.hold(55, "halfclose", [600])
    assert one(30) == []
    assert only(one(61)).severity is Severity.INFO


# --- fin-wait1-stuck / last-ack-stuck -----------------------------------------------------


def test_fin_wait1_stuck_orphans_with_give_up_time() -> None:
    finding = only(run(fin_wait1_stuck, context(snapshot(stuck(FW1, 12)))))
    e = ev(finding)
    assert finding.severity is Severity.WARNING
    assert (e["peer"], e["stuck"], e["orphaned"], e["owned"]) == ("10.0.0.2:443", 12, 12, 0)
    assert e["max_retransmissions"] == 4 and e["peer_silent_s"] == 8.0
    assert e["tcp_orphan_retries"] == 0 and e["orphan_retries_effective"] == 8
    assert e["orphan_give_up_s"] == orphan_give_up(0).schedule.gives_up_at
    # 102.2 s budget from the first retransmission at 0.2 s: nominally 204.6 s after the
    # FIN, or 102.2 s when late timers at HZ=250 use up the last 0.2 s (test_timing.py).
    assert e["orphan_give_up_s"] == pytest.approx(204.6)
    assert e["orphan_late_give_up_s"] == pytest.approx(102.2)
    assert "about 204.6 s (3.4 min) after its FIN was first sent" in finding.explanation
    assert "or already at 102.2 s" in finding.explanation
    assert finding.fixes[0].kind is FixKind.INVESTIGATE
    assert finding.fixes[-1].sysctl == "net.ipv4.tcp_orphan_retries"
    assert "FIN_WAIT1" in finding.title
    fixes_sane(finding)


def test_fin_wait1_stuck_reads_tcp_orphan_retries_and_thresholds() -> None:
    ctx = context(snapshot(stuck(FW1, 3), sysctls={"tcp_orphan_retries": 5}))
    finding = only(run(fin_wait1_stuck, ctx))
    assert finding.severity is Severity.INFO
    assert ev(finding)["orphan_give_up_s"] == orphan_give_up(5).schedule.gives_up_at
    assert run(fin_wait1_stuck, context(snapshot(stuck(FW1, 50, retrans=2)))) == []


def test_fin_wait1_stuck_zero_window_probes_and_owned_sockets() -> None:
    socks = stuck(FW1, 4, timer=TimerCode.PROBE0, inode=700)
    finding = only(run(fin_wait1_stuck, context(snapshot(socks))))
    e = ev(finding)
    assert (e["probing"], e["owned"], e["orphaned"]) == (4, 4, 0)
    assert "zero window" in finding.explanation
    assert not any(f.kind is FixKind.SYSCTL for f in finding.fixes)  # no orphans to free
    assert any("TCP_USER_TIMEOUT" in f.summary for f in finding.fixes)


def test_last_ack_stuck_only_looks_at_last_ack() -> None:
    snap = snapshot(stuck(LA, 2) + stuck(FW1, 20))
    finding = only(run(last_ack_stuck, context(snap)))
    assert ev(finding)["stuck"] == 2 and "LAST_ACK" in finding.title
    assert any("Close promptly" in f.summary for f in finding.fixes)
    fixes_sane(finding)


# --- orphans ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "expected"),
    [(131072 // 4 - 1, None), (131072 // 4, Severity.WARNING), (131072 // 2, Severity.CRITICAL)],
)
def test_orphans_share_of_tcp_max_orphans(count: int, expected: Severity | None) -> None:
    snap = with_sockstat(snapshot(stuck(FW1, 3), sysctls=HOST_LIMITS), orphan=count)
    found = run(orphans, context(snap))
    assert [f.severity for f in found] == ([expected] if expected is not None else [])
    if found:
        e = ev(found[0])
        assert e["tcp_orphan"] == count and e["tcp_max_orphans"] == 131072
        assert e["orphans_in_namespace"] == 3 and e["penalised_kill_at"] == 131072 // 4
        assert e["host_namespace"] is False and "every namespace" in found[0].explanation
        fixes_sane(found[0])


def test_orphans_in_a_child_namespace_says_the_limit_is_invisible() -> None:
    ctx = context(with_sockstat(snapshot(sysctls={"tcp_max_orphans": None}), orphan=90_000))
    assert run(orphans, ctx) == []
    assert any("not visible" in line for line in ctx.limitations)


def test_orphans_killed_during_a_watch_is_critical_even_without_the_limit() -> None:
    ctx = watch({"TcpExt.TCPAbortOnMemory": 4}, {"TcpExt.TCPAbortOnMemory": 9},
                sysctls={"tcp_max_orphans": None})  # fmt: skip
    finding = only(run(orphans, ctx))
    e = ev(finding)
    assert finding.severity is Severity.CRITICAL
    assert (e["abort_on_memory_delta"], e["abort_on_memory_rate"]) == (5, 2.5)
    assert any(f.kind is FixKind.INFRASTRUCTURE for f in finding.fixes)


def test_orphans_totals_without_a_watch_are_info_at_most() -> None:
    snap = snapshot(counter_values={"TcpExt.TCPAbortOnMemory": 7}, sysctls=HOST_LIMITS)
    assert only(run(orphans, context(snap))).severity is Severity.INFO
    quiet = watch({"TcpExt.TCPAbortOnMemory": 7}, {"TcpExt.TCPAbortOnMemory": 7},
                  sysctls=HOST_LIMITS)  # fmt: skip
    assert run(orphans, quiet) == []


# --- abortive-close -----------------------------------------------------------------------


def test_abortive_close_rising_abort_on_data_during_a_watch() -> None:
    ctx = watch({"TcpExt.TCPAbortOnData": 100, "Tcp.OutRsts": 10},
                {"TcpExt.TCPAbortOnData": 120, "Tcp.OutRsts": 31})  # fmt: skip
    finding = only(run(abortive_close, ctx))
    e = ev(finding)
    assert finding.severity is Severity.WARNING
    assert (e["abort_on_data_delta"], e["abort_on_data_rate"], e["out_rsts_delta"]) == (
        20,
        10.0,
        21,
    )
    assert e["abort_on_data_total"] == 120 and e["watch_s"] == 2.0
    assert "zero linger" in finding.fixes[0].summary.lower()
    assert "linger" in finding.topics
    fixes_sane(finding)


def test_abortive_close_slow_rise_is_info_and_separate_per_cause() -> None:
    ctx = watch({"TcpExt.TCPAbortOnData": 0, "TcpExt.TCPAbortOnClose": 5},
                {"TcpExt.TCPAbortOnData": 0, "TcpExt.TCPAbortOnClose": 6}, seconds=10)  # fmt: skip
    finding = only(run(abortive_close, ctx))
    assert finding.severity is Severity.INFO
    assert ev(finding)["abort_on_close_delta"] == 1
    assert "unread" in finding.explanation and "Read what the peer sent" in finding.fixes[0].summary


@pytest.mark.parametrize(
    ("total", "opens", "fires"),
    [(500, 10_000, True), (50, 1_000, False), (500, 1_000_000, False)],
)
def test_abortive_close_totals_without_a_watch(total: int, opens: int, fires: bool) -> None:
    snap = snapshot(counter_values={"TcpExt.TCPAbortOnData": total, "Tcp.PassiveOpens": opens})
    found = run(abortive_close, context(snap))
    assert bool(found) is fires
    if found:
        e = ev(found[0])
        assert found[0].severity is Severity.INFO
        assert e["abort_on_data_share_pct"] == round(100 * total / opens, 2)
        assert "abort_on_data_delta" not in e


# --- listen-queue-overflow ----------------------------------------------------------------


def test_listen_queue_full_names_port_and_owner(owners: Owners) -> None:
    owners.hold(321, "slowserver", [1])
    snap = snapshot([listener(7002, rqueue=2, backlog=1)], counter_values={
        "TcpExt.ListenOverflows": 8, "TcpExt.ListenDrops": 8})  # fmt: skip
    finding = only(run(listen_queue_overflow, context(snap)))
    e = ev(finding)
    assert finding.severity is Severity.WARNING
    assert (e["listen_port"], e["listen_address"]) == (7002, "10.0.0.1:7002")
    assert (e["pid"], e["comm"], e["accept_queue"], e["backlog"]) == (321, "slowserver", 2, 1)
    assert e["queue_full"] is True and e["capped_by_somaxconn"] is False
    assert e["listen_overflows_total"] == 8 and "listen_overflows_delta" not in e
    assert "7002" in finding.title and "slowserver" in finding.title
    assert [f.kind for f in finding.fixes][:3] == [FixKind.APPLICATION, FixKind.APPLICATION,
                                                   FixKind.SYSCTL]  # fmt: skip
    assert any("tcp_abort_on_overflow" in f.summary for f in finding.fixes)
    fixes_sane(finding)


def test_listen_queue_full_and_overflows_rising_is_critical(owners: Owners) -> None:
    owners.hold(321, "slowserver", [1])
    ctx = watch({"TcpExt.ListenOverflows": 0, "TcpExt.ListenDrops": 0},
                {"TcpExt.ListenOverflows": 6, "TcpExt.ListenDrops": 6},
                socks=[listener(7002, rqueue=2, backlog=1)])  # fmt: skip
    finding = only(run(listen_queue_overflow, ctx))
    e = ev(finding)
    assert finding.severity is Severity.CRITICAL
    assert (e["listen_overflows_delta"], e["full_in_first_sample"]) == (6, True)


def test_listen_queue_at_backlog_capped_by_somaxconn_puts_the_sysctl_first() -> None:
    snap = snapshot([listener(80, rqueue=SOMAXCONN_DEFAULT, backlog=SOMAXCONN_DEFAULT)])
    finding = only(run(listen_queue_overflow, context(snap)))
    e = ev(finding)
    assert e["queue_full"] is False and e["capped_by_somaxconn"] is True
    assert finding.fixes[1].sysctl == "net.core.somaxconn"
    assert "at its backlog" in finding.title


def test_listen_queue_overflow_silent_without_a_full_queue_or_drops() -> None:
    assert run(listen_queue_overflow, context(snapshot([listener(rqueue=3, backlog=128)]))) == []
    assert run(listen_queue_overflow, context(snapshot([listener(rqueue=0, backlog=0)]))) == []
    quiet = watch({"TcpExt.ListenOverflows": 5}, {"TcpExt.ListenOverflows": 5}, socks=[listener()])
    assert run(listen_queue_overflow, quiet) == []


@pytest.mark.parametrize(("delta", "expected"), [(4, Severity.WARNING), (40, Severity.CRITICAL)])
def test_listen_overflows_rising_with_no_full_listener(delta: int, expected: Severity) -> None:
    ctx = watch({"TcpExt.ListenOverflows": 0, "TcpExt.ListenDrops": 0},
                {"TcpExt.ListenOverflows": delta, "TcpExt.ListenDrops": delta},
                socks=[listener(rqueue=100, backlog=128)])  # fmt: skip
    finding = only(run(listen_queue_overflow, ctx))
    assert finding.severity is expected and finding.subject == "namespace"
    assert ev(finding)["fullest_listeners"] == ":8080 100/128"


def test_listen_overflows_since_boot_are_info_and_abort_on_overflow_is_undone() -> None:
    snap = snapshot([listener(rqueue=129, backlog=128)], sysctls={"tcp_abort_on_overflow": 1})
    finding = only(run(listen_queue_overflow, context(snap)))
    assert finding.fixes[-1].sysctl == "net.ipv4.tcp_abort_on_overflow"
    only_counts = snapshot(counter_values={"TcpExt.ListenOverflows": 3})
    assert only(run(listen_queue_overflow, context(only_counts))).severity is Severity.INFO


# --- fd-limits ----------------------------------------------------------------------------


def held_sockets(owners: Owners, pid: int, comm: str, n: int, start: int) -> list[Sock]:
    socks = [Sock(EST, HERE, 8080, PEER, 30000 + i, inode=start + i) for i in range(n)]
    owners.hold(pid, comm, [s.inode for s in socks])
    return socks


@pytest.mark.parametrize(
    ("open_fds", "expected"), [(100, None), (820, Severity.WARNING), (1000, Severity.CRITICAL)]
)
def test_fd_limits_process_near_its_soft_limit(
    owners: Owners, proc: Path, open_fds: int, expected: Severity | None
) -> None:
    socks = held_sockets(owners, 600, "busy", 40, 10_000)
    socks += close_wait(5, first_inode=20_000)
    owners.hold(600, "busy", list(range(20_000, 20_005)))
    fake_process(proc, 600, open_fds, 1024, 4096)
    found = run(fd_limits, context(snapshot(socks)))
    assert [f.severity for f in found] == ([expected] if expected is not None else [])
    if found:
        e = ev(found[0])
        assert (e["pid"], e["comm"], e["open_fds"], e["tcp_sockets"]) == (600, "busy", open_fds, 45)
        assert (e["nofile_soft"], e["nofile_hard"], e["soft_is_legacy_default"]) == (
            1024,
            4096,
            True,
        )
        assert e["close_wait_held"] == 5
        assert "4-tuple" in found[0].explanation and "65,535" in found[0].explanation
        assert not any(f.kind is FixKind.SYSCTL for f in found[0].fixes)  # hard < nr_open
        fixes_sane(found[0])


def test_fd_limits_only_the_top_holders_are_read(owners: Owners, proc: Path) -> None:
    socks = held_sockets(owners, 1, "big", 30, 1000) + held_sockets(owners, 2, "small", 3, 5000)
    fake_process(proc, 1, 30, 32, 32)
    fake_process(proc, 2, 3, 3, 3)  # full, but not among the top 1
    found = run(fd_limits, context(snapshot(socks), options=DoctorOptions(top=1)))
    assert [ev(f)["comm"] for f in found] == ["big"]


def test_fd_limits_hard_limit_at_nr_open_suggests_raising_it(owners: Owners, proc: Path) -> None:
    socks = held_sockets(owners, 7, "db", 10, 1000)
    fake_process(proc, 7, 20, 20, NR_OPEN_DEFAULT)
    finding = only(run(fd_limits, context(snapshot(socks))))
    assert finding.fixes[-1].sysctl == "fs.nr_open"


def test_fd_limits_unreadable_limits_is_a_limitation_not_a_crash(
    owners: Owners, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(pid: int) -> None:
        raise PermissionDenied(f"cannot read /proc/{pid}/limits: permission denied")

    monkeypatch.setattr(proc_limits, "read_nofile", refuse)
    ctx = context(snapshot(held_sockets(owners, 8, "other", 5, 1000)))
    assert run(fd_limits, ctx) == []
    assert any("fd-limits: pid 8" in line for line in ctx.limitations)


def test_fd_limits_without_root_owners_are_a_limitation(owners: Owners) -> None:
    socks = [Sock(EST, HERE, 8080, PEER, 30000 + i, inode=1000 + i) for i in range(5)]
    ctx = context(snapshot(socks, privileged=False))
    assert run(fd_limits, ctx) == []
    assert any("fd-limits: 5 sockets have no known owner" in line for line in ctx.limitations)


def test_fd_limits_process_gone_meanwhile_is_skipped(owners: Owners) -> None:
    ctx = context(snapshot(held_sockets(owners, 99999, "gone", 5, 1000)))
    assert run(fd_limits, ctx) == [] and ctx.limitations == []


@pytest.mark.parametrize(("allocated", "expected"), [(790_000, None), (850_000, Severity.WARNING)])
def test_fd_limits_host_file_handles(proc: Path, allocated: int, expected: Severity | None) -> None:
    (proc / "sys" / "fs" / "file-nr").write_text(f"{allocated}\t0\t1000000\n")
    found = run(fd_limits, context(snapshot(sysctls={"file-max": 1_000_000})))
    assert [f.severity for f in found] == ([expected] if expected is not None else [])
    if found:
        assert ev(found[0])["file_use_pct"] == 85.0 and found[0].fixes[-1].sysctl == "fs.file-max"


# --- all together -------------------------------------------------------------------------


def _everything(owners: Owners) -> Iterator[Snapshot]:
    owners.hold(1, "srv", [1, *range(1000, 1150)])
    socks = [listener(rqueue=200, backlog=128), *close_wait(150), *orphan_fw2(30),
             *stuck(FW1, 12), *stuck(LA, 3)]  # fmt: skip
    yield with_sockstat(snapshot(socks, sysctls=HOST_LIMITS, counter_values={
        "TcpExt.TCPAbortOnData": 10, "TcpExt.TCPAbortOnMemory": 1}), orphan=70_000)  # fmt: skip
    yield with_sockstat(snapshot(socks, sysctls=HOST_LIMITS, taken_at=1_000_002.0, counter_values={
        "TcpExt.TCPAbortOnData": 30, "TcpExt.TCPAbortOnMemory": 4}), orphan=70_000)  # fmt: skip


def test_all_closing_rules_fire_together_through_the_engine(owners: Owners) -> None:
    ctx = context(*_everything(owners))
    result = diagnose(ctx, RULES)
    assert result.skipped == ()
    fired = {f.rule for f in result.findings}
    assert fired == {r.id for r in RULES} - {"fd-limits"}
    assert result.findings[0].severity is Severity.CRITICAL
    for finding in result.findings:
        fixes_sane(finding)


def test_fd_limits_reader_parses_unlimited_and_rejects_garbage(proc: Path) -> None:
    fake_process(proc, 11, 2, 1024, 4096)
    limits = proc / "11" / "limits"
    limits.write_text(limits.read_text().replace("1024                ", "unlimited           "))
    assert proc_limits.read_nofile(11) == proc_limits.NofileLimit(None, 4096)
    limits.write_text("Max open files            lots                 4096                 files\n")
    with pytest.raises(KernelInterfaceError):
        proc_limits.read_nofile(11)
    assert proc_limits.read_nofile(12) is None and proc_limits.count_fds(12) is None


def test_fd_limits_garbled_limits_become_a_limitation(owners: Owners, proc: Path) -> None:
    fake_process(proc, 13, 2, 1024, 4096)
    (proc / "13" / "limits").write_text("nothing useful\n")
    ctx = context(snapshot(held_sockets(owners, 13, "odd", 2, 1000)))
    assert run(fd_limits, ctx) == []
    assert any("fd-limits: pid 13" in line and "Max open files" in line for line in ctx.limitations)


def test_orphans_skips_without_counters() -> None:
    snap = dataclasses.replace(snapshot(), counters=None)
    with pytest.raises(RuleSkipped):
        run(orphans, context(snap))
    assert diagnose(context(snap), [orphans.RULE]).skipped[0].rule == "orphans"


def test_listen_queue_from_proc_cannot_judge_backlogs() -> None:
    snap = snapshot([listener(7002, rqueue=5, backlog=0)])
    snap = dataclasses.replace(snap, meta=snap.meta._replace(source=Source.PROC))
    ctx = context(snap)
    assert run(listen_queue_overflow, ctx) == []
    assert any("does not show a listener's backlog" in line for line in ctx.limitations)
