"""Counter catalogue, /proc/net parsers and the counter reader (against captured text)."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.faults import fail_reads_of
from support.scripts import load_script
from tcpdoctor.errors import KernelInterfaceError, PermissionDenied
from tcpdoctor.kernel.counters import (
    ALL_COUNTERS,
    COUNTERS,
    SOCKSTAT_TCP,
    CounterKind,
    Counters,
    Sockstat,
    parse_netstat,
    parse_snmp,
    parse_sockstat,
    parse_sockstat_fields,
)
from tcpdoctor.kernel.sysctls import KernelVersion, Scope
from tcpdoctor.observe.counters import read_counters

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
HOST = FIXTURES / "proc_net_host"  # /proc/net of init_net on 6.18.44
NETNS_TW = FIXTURES / "proc_net_netns_tw"  # a fresh netns right after one TIME_WAIT
RUNNING = KernelVersion(6, 18)

REQUIRED_TCPEXT = [
    "TW",
    "TWKilled",
    "TWRecycled",
    "TCPTimeWaitOverflow",
    "PAWSActive",
    "PAWSEstab",
    "PAWSTimewait",
    "TCPAbortOnData",
    "TCPAbortOnClose",
    "TCPAbortOnLinger",
    "TCPAbortOnMemory",
    "TCPAbortOnTimeout",
    "TCPAbortFailed",
    "TCPKeepAlive",
    "TCPTimeouts",
    "TCPSynRetrans",
    "TCPLossProbes",
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
    "TCPACKSkippedTimeWait",
    "TCPACKSkippedFinWait2",
    "EmbryonicRsts",
]
REQUIRED_TCP = [
    "ActiveOpens",
    "PassiveOpens",
    "AttemptFails",
    "EstabResets",
    "CurrEstab",
    "InSegs",
    "OutSegs",
    "RetransSegs",
    "InErrs",
    "OutRsts",
]


def _text(directory: Path, name: str) -> str:
    return (directory / name).read_text(encoding="ascii")


# --- Catalogue -----------------------------------------------------------------------------


def test_catalogue_has_every_required_counter_once() -> None:
    keys = [c.key for c in ALL_COUNTERS]
    assert len(keys) == len(set(keys))
    assert {f"TcpExt.{n}" for n in REQUIRED_TCPEXT} <= set(keys)
    assert {f"Tcp.{n}" for n in REQUIRED_TCP} <= set(keys)
    assert {"sockets.used", "TCP.inuse", "TCP.orphan", "TCP.tw", "TCP.alloc", "TCP.mem"} <= set(
        keys
    )


def test_sockstat_scopes_match_sockstat_seq_show() -> None:
    # orphan/alloc/mem read host-wide counters; used/inuse/tw take the netns [measured 6.18].
    scopes = {c.name: c.scope for c in ALL_COUNTERS if c.source == SOCKSTAT_TCP}
    assert scopes == {
        "inuse": Scope.PER_NETNS,
        "orphan": Scope.GLOBAL,
        "tw": Scope.PER_NETNS,
        "alloc": Scope.GLOBAL,
        "mem": Scope.GLOBAL,
    }
    assert COUNTERS["sockets.used"].scope is Scope.PER_NETNS
    assert all(c.scope is Scope.PER_NETNS for c in ALL_COUNTERS if c.source.file != "sockstat")


def test_history() -> None:
    assert COUNTERS["TcpExt.PAWSTimewait"].exists_in(KernelVersion(6, 15))
    assert not COUNTERS["TcpExt.PAWSTimewait"].exists_in(KernelVersion(6, 14))
    assert not COUNTERS["TcpExt.PAWSPassive"].exists_in(KernelVersion(5, 4))
    assert COUNTERS["TcpExt.TW"].exists_in(KernelVersion(5, 4))


def test_gauges_are_marked() -> None:
    assert COUNTERS["Tcp.CurrEstab"].kind is CounterKind.GAUGE
    assert COUNTERS["TcpExt.TW"].kind is CounterKind.COUNTER
    assert all(c.kind is CounterKind.GAUGE for c in ALL_COUNTERS if c.source.file == "sockstat")


@pytest.mark.parametrize("fixture", [HOST, NETNS_TW], ids=["host", "netns"])
def test_catalogue_matches_what_this_kernel_prints(fixture: Path) -> None:
    printed = parse_netstat(_text(fixture, "netstat")).merged(parse_snmp(_text(fixture, "snmp")))
    sockstat = parse_sockstat(_text(fixture, "sockstat"))
    for spec in ALL_COUNTERS:
        found = sockstat.fields if spec.source.file == "sockstat" else printed
        assert (spec.key in found) == spec.exists_in(RUNNING), spec.key


def test_counters_that_do_not_exist_stay_out() -> None:
    printed = parse_netstat(_text(HOST, "netstat"))
    assert "TcpExt.TCPOrphanQueued" not in printed  # no such MIB in 6.18
    assert "TcpExt.PAWSPassive" not in printed  # removed with tcp_tw_recycle


# --- netstat / snmp parser -----------------------------------------------------------------


def test_parse_captured_netstat() -> None:
    netns = parse_netstat(_text(NETNS_TW, "netstat"))
    assert netns["TcpExt.TW"] == 1
    assert netns.section("TcpExt")["TW"] == 1
    assert netns.sections() == ("TcpExt", "IpExt", "MPTcpExt")
    assert all(isinstance(v, int) for v in netns.values())


def test_parse_captured_snmp_keeps_signed_values() -> None:
    snmp = parse_snmp(_text(HOST, "snmp"))
    assert snmp["Tcp.MaxConn"] == -1
    assert snmp["Tcp.RtoMin"] == 200
    assert "IcmpMsg" in snmp.sections()


def test_repeated_sections_are_merged() -> None:
    text = "IcmpMsg: InType3\nIcmpMsg: 4\nIcmpMsg: OutType0\nIcmpMsg: 5\n"
    assert dict(parse_snmp(text)) == {"IcmpMsg.InType3": 4, "IcmpMsg.OutType0": 5}


def test_merged_refuses_clashing_keys() -> None:
    counters = Counters({"Tcp.InSegs": 1})
    with pytest.raises(ValueError, match="both"):
        counters.merged({"Tcp.InSegs": 2})
    assert dict(counters.merged({"Udp.NoPorts": 2})) == {"Tcp.InSegs": 1, "Udp.NoPorts": 2}


BAD_NETSTAT = {
    "empty": "",
    "blank": "\n \n",
    "truncated": "TcpExt: TW TWKilled\nTcpExt: 1 2\nIpExt: InNoRoutes\n",
    "mismatched sections": "TcpExt: TW\nIpExt: 1\n",
    "too few values": "TcpExt: TW TWKilled\nTcpExt: 1\n",
    "too many values": "TcpExt: TW\nTcpExt: 1 2\n",
    "not a number": "TcpExt: TW\nTcpExt: x\n",
    "underscore number": "TcpExt: TW\nTcpExt: 1_0\n",
    "no label": "TW TWKilled\n1 2\n",
    "bare colon": ": TW\n: 1\n",
    "duplicate": "TcpExt: TW TW\nTcpExt: 1 2\n",
}


@pytest.mark.parametrize("text", BAD_NETSTAT.values(), ids=BAD_NETSTAT.keys())
def test_parse_netstat_rejects_garbage_with_one_line(text: str) -> None:
    with pytest.raises(KernelInterfaceError) as info:
        parse_netstat(text)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("/proc/net/netstat")


# --- sockstat parser -----------------------------------------------------------------------


def test_parse_captured_sockstat() -> None:
    sockstat = parse_sockstat(_text(NETNS_TW, "sockstat"))
    assert sockstat.tcp_tw == 1 and sockstat.sockets_used == 1 and sockstat.tcp_inuse == 1
    assert sockstat.fields["FRAG.memory"] == 0
    assert isinstance(sockstat, Sockstat)


def test_parse_sockstat6() -> None:
    assert parse_sockstat_fields(_text(HOST, "sockstat6"))["TCP6.inuse"] == 0


def test_sockstat_accepts_fields_newer_kernels_add() -> None:
    # A proposed patch appends "pressure N" to the TCP line; the parse must survive it.
    text = "sockets: used 3\nTCP: inuse 1 orphan 0 tw 2 alloc 4 mem 5 pressure 0\n"
    sockstat = parse_sockstat(text)
    assert sockstat.tcp_mem_pages == 5 and sockstat.fields["TCP.pressure"] == 0


BAD_SOCKSTAT = {
    "empty": "",
    "no tcp line": "sockets: used 3\n",
    "odd tokens": "sockets: used 3\nTCP: inuse 1 orphan\n",
    "not a number": "sockets: used x\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 1\n",
    "no label": "sockets used 3\n",
    "duplicate": "sockets: used 3 used 4\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 1\n",
}


@pytest.mark.parametrize("text", BAD_SOCKSTAT.values(), ids=BAD_SOCKSTAT.keys())
def test_parse_sockstat_rejects_garbage(text: str) -> None:
    with pytest.raises(KernelInterfaceError) as info:
        parse_sockstat(text)
    assert "\n" not in str(info.value)


# --- Fuzzing: a result or KernelInterfaceError, nothing else -------------------------------

PARSERS: tuple[Callable[[str], object], ...] = (
    parse_netstat,
    parse_snmp,
    parse_sockstat,
    parse_sockstat_fields,
)


def _outcome(parse: Callable[[str], object], text: str) -> object:
    try:
        return parse(text)
    except KernelInterfaceError:
        return None


@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    for parse in PARSERS:
        assert isinstance(_outcome(parse, text), Counters | Sockstat | None)


@given(st.text(alphabet="TcpExt: 0123456789-\n", max_size=300))
def test_near_valid_text(text: str) -> None:
    for parse in PARSERS:
        assert isinstance(_outcome(parse, text), Counters | Sockstat | None)


CAPTURED = [(d, n) for d in (HOST, NETNS_TW) for n in ("netstat", "snmp", "sockstat")]


@pytest.mark.parametrize(("directory", "name"), CAPTURED, ids=lambda v: str(v)[-12:])
@given(data=st.data())
def test_truncated_and_mangled_captures(directory: Path, name: str, data: st.DataObject) -> None:
    text = _text(directory, name)
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    spot = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    noise = data.draw(st.characters())
    parse = parse_sockstat if name == "sockstat" else parse_netstat
    truncated = _outcome(parse, text[:cut])
    mangled = _outcome(parse, text[:spot] + noise + text[spot + 1 :])
    assert isinstance(truncated, Counters | Sockstat | None)
    assert isinstance(mangled, Counters | Sockstat | None)


# --- Reader --------------------------------------------------------------------------------


def test_read_counters_from_a_captured_tree() -> None:
    snapshot = read_counters(proc_net=NETNS_TW)
    assert snapshot["TcpExt.TW"] == 1
    assert snapshot["Tcp.CurrEstab"] == 0
    assert snapshot.value(COUNTERS["TCP.tw"]) == 1
    assert snapshot.value(COUNTERS["TcpExt.PAWSPassive"]) is None
    assert snapshot.value("TcpExt.NoSuchCounter") is None
    assert snapshot.tcp6_inuse == 0
    assert snapshot.proc_net == str(NETNS_TW)
    assert snapshot.taken_at > 0


def test_delta_between_snapshots() -> None:
    before, after = read_counters(proc_net=HOST), read_counters(proc_net=NETNS_TW)
    tw = COUNTERS["TcpExt.TW"]
    now, then = after.value(tw), before.value(tw)
    assert now is not None and then is not None
    assert after.delta(before, tw) == now - then
    assert after.delta(before, "TcpExt.PAWSPassive") is None
    assert after.taken_at >= before.taken_at


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "net"
    shutil.copytree(NETNS_TW, tree)
    return tree


def test_sockstat6_is_optional(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    (tree / "sockstat6").unlink()
    assert read_counters(proc_net=tree).tcp6_inuse is None


def test_missing_required_file_is_an_interface_error(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    (tree / "netstat").unlink()
    with pytest.raises(KernelInterfaceError, match="netstat"):
        read_counters(proc_net=tree)


def test_garbage_file_names_its_path(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    (tree / "snmp").write_text("Tcp: InSegs\n")
    with pytest.raises(KernelInterfaceError, match=str(tree / "snmp")):
        read_counters(proc_net=tree)


def test_permission_denied_is_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    denied = PermissionError(errno.EACCES, "Permission denied")
    fail_reads_of(monkeypatch, NETNS_TW / "sockstat", denied)
    with pytest.raises(PermissionDenied, match="sockstat"):
        read_counters(proc_net=NETNS_TW)


def test_other_os_errors_are_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_reads_of(monkeypatch, NETNS_TW / "sockstat6", OSError(errno.EIO, "I/O error"))
    with pytest.raises(KernelInterfaceError, match="I/O error"):
        read_counters(proc_net=NETNS_TW)


# --- Generated docs ------------------------------------------------------------------------


def test_counter_docs_are_generated_from_the_catalogue() -> None:
    expected = load_script("gen_catalogue_docs").render_counters()
    actual = (ROOT / "docs" / "counters.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/counters.md is stale: run scripts/gen_catalogue_docs.py"
    assert all(f"`{c.key}`" in actual for c in ALL_COUNTERS)
