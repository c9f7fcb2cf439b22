"""Sysctl catalogue, value parsers and the /proc/sys reader (against captured text)."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.faults import fail_reads_of
from support.scripts import load_script
from tcpdoctor.errors import InputError, KernelInterfaceError
from tcpdoctor.kernel import constants as k
from tcpdoctor.kernel.sysctls import (
    ALL_SYSCTLS,
    SYSCTLS,
    KernelVersion,
    Scope,
    SysctlSpec,
    SysctlValue,
    Unit,
    format_value,
    lookup_sysctl,
    parse_int,
    parse_port_range,
    parse_reserved_ports,
)
from tcpdoctor.observe.sysctls import ReadStatus, read_sysctl, read_sysctls

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
# Captured on 6.18 from a fresh netns after: ip_local_port_range="40000 40999",
# ip_local_reserved_ports=1000-1002,2000, tcp_fin_timeout=17, tcp_tw_reuse=1.
NETNS_PROC_SYS = FIXTURES / "proc_sys_netns"

REQUIRED = (
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_tw_recycle",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_retries1",
    "net.ipv4.tcp_retries2",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_synack_retries",
    "net.ipv4.tcp_syn_linear_timeouts",
    "net.ipv4.tcp_orphan_retries",
    "net.ipv4.tcp_max_orphans",
    "net.ipv4.tcp_rfc1337",
    "net.ipv4.tcp_rto_min_us",
    "net.ipv4.tcp_rto_max_ms",
    "net.ipv4.tcp_max_syn_backlog",
    "net.core.somaxconn",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.ip_autobind_reuse",
    "fs.file-max",
    "fs.nr_open",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.netfilter.nf_conntrack_tcp_timeout_fin_wait",
    "net.netfilter.nf_conntrack_tcp_timeout_syn_sent",
)


# --- Catalogue -----------------------------------------------------------------------------


def test_catalogue_has_every_required_knob_once() -> None:
    names = [spec.name for spec in ALL_SYSCTLS]
    assert len(names) == len(set(names))
    assert set(REQUIRED) <= set(names)


@pytest.mark.parametrize("spec", ALL_SYSCTLS, ids=lambda s: s.name)
def test_default_round_trips_through_kernel_text(spec: SysctlSpec) -> None:
    if spec.default is None:
        assert spec.default_rule
    else:
        assert spec.parse(spec.format(spec.default)) == spec.default


@pytest.mark.parametrize("spec", ALL_SYSCTLS, ids=lambda s: s.name)
def test_every_entry_explains_itself(spec: SysctlSpec) -> None:
    assert spec.meaning and spec.risks and spec.kernel_symbol
    assert spec.path == spec.name.replace(".", "/")


def test_defaults_come_from_the_constants() -> None:
    assert SYSCTLS["net.ipv4.ip_local_port_range"].default == k.DEFAULT_PORT_RANGE
    assert SYSCTLS["net.ipv4.tcp_fin_timeout"].default == 60
    assert SYSCTLS["net.ipv4.tcp_keepalive_time"].default == 7200
    assert SYSCTLS["net.ipv4.tcp_rto_min_us"].default == 200_000
    assert SYSCTLS["net.ipv4.tcp_rto_max_ms"].default == k.TCP_RTO_MAX_MS_MAX
    assert SYSCTLS["net.ipv4.tcp_tw_reuse_delay"].default == k.TCP_TW_REUSE_DELAY_MS
    assert SYSCTLS["net.netfilter.nf_conntrack_tcp_timeout_established"].default == 432_000


def test_scope_and_visibility_follow_the_kernel() -> None:
    orphans = SYSCTLS["net.ipv4.tcp_max_orphans"]
    assert orphans.scope is Scope.GLOBAL and not orphans.visible_in_child_netns
    assert SYSCTLS["fs.file-max"].scope is Scope.GLOBAL
    assert SYSCTLS["net.ipv4.tcp_max_tw_buckets"].scope is Scope.PER_NETNS
    assert SYSCTLS["net.core.somaxconn"].scope is Scope.PER_NETNS
    conntrack = [s for s in ALL_SYSCTLS if s.name.startswith("net.netfilter.")]
    assert conntrack and all(s.requires_module == "nf_conntrack" for s in conntrack)


def test_kernel_history() -> None:
    recycle = SYSCTLS["net.ipv4.tcp_tw_recycle"]
    delay = SYSCTLS["net.ipv4.tcp_tw_reuse_delay"]
    assert recycle.exists_in(KernelVersion(4, 11)) and not recycle.exists_in(KernelVersion(4, 12))
    assert not delay.exists_in(KernelVersion(6, 13)) and delay.exists_in(KernelVersion(6, 14))
    assert SYSCTLS["net.ipv4.tcp_syn_linear_timeouts"].added == (6, 5)
    assert SYSCTLS["net.ipv4.tcp_rto_min_us"].added == (6, 11)
    assert SYSCTLS["net.ipv4.tcp_rto_max_ms"].added == (6, 15)
    assert "4.12" in recycle.absence_reason()


def test_kernel_version_parse() -> None:
    assert KernelVersion.parse("6.18.44-fc-v657\n") == (6, 18)
    assert str(KernelVersion.parse("5.4")) == "5.4"
    with pytest.raises(KernelInterfaceError):
        KernelVersion.parse("linux")


def test_spec_demands_a_default_or_a_rule() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SysctlSpec("x.y", Unit.COUNT, Scope.PER_NETNS, None, "m", "r", "s")
    with pytest.raises(ValueError, match="exactly one"):
        SysctlSpec("x.y", Unit.COUNT, Scope.PER_NETNS, 1, "m", "r", "s", default_rule="r")


def test_lookup_by_full_short_and_path_name() -> None:
    spec = SYSCTLS["net.ipv4.tcp_fin_timeout"]
    assert lookup_sysctl("tcp_fin_timeout") is spec
    assert lookup_sysctl("net/ipv4/tcp_fin_timeout") is spec
    assert lookup_sysctl("net.ipv4.tcp_fin_timeout") is spec
    with pytest.raises(InputError):
        lookup_sysctl("tcp_fin_timeout_typo")


# --- Parsers -------------------------------------------------------------------------------


def test_parse_int_on_kernel_text() -> None:
    assert parse_int("60\n") == 60
    assert parse_int("-262144\n") == -262144  # tcp_ehash_entries of a shared hash


@pytest.mark.parametrize("text", ["", "\n", "abc", "1 2", "1_000", "+5", "١٢", "0x10", "1.5"])
def test_parse_int_rejects_garbage(text: str) -> None:
    with pytest.raises(KernelInterfaceError):
        parse_int(text)


def test_parse_port_range_on_captured_text() -> None:
    text = (NETNS_PROC_SYS / "net/ipv4/ip_local_port_range").read_text()
    assert text == "40000\t40999\n"
    assert parse_port_range(text) == (40000, 40999)
    assert parse_port_range("32768\t60999\n") == k.DEFAULT_PORT_RANGE


@pytest.mark.parametrize("text", ["", "1", "1 2 3", "60999 32768", "1 70000", "a b", "-1 5"])
def test_parse_port_range_rejects_garbage(text: str) -> None:
    with pytest.raises(KernelInterfaceError):
        parse_port_range(text)


def test_parse_reserved_ports_on_captured_text() -> None:
    text = (NETNS_PROC_SYS / "net/ipv4/ip_local_reserved_ports").read_text()
    assert parse_reserved_ports(text) == ((1000, 1002), (2000, 2000))
    assert parse_reserved_ports("\n") == ()


def test_parse_reserved_ports_sorts_and_merges_like_the_kernel() -> None:
    # The kernel prints "1000-1003,2000,3000" back after this write [measured, 6.18].
    ranges = parse_reserved_ports("2000,1000-1002,3000-3000,1003")
    assert ranges == ((1000, 1003), (2000, 2000), (3000, 3000))
    assert format_value(Unit.PORT_LIST, ranges) == "1000-1003,2000,3000"


@pytest.mark.parametrize("text", ["1000-", "-5", "5-3", "1,,2", "70000", "1-2-3", "a", "1;2"])
def test_parse_reserved_ports_rejects_garbage(text: str) -> None:
    with pytest.raises(KernelInterfaceError):
        parse_reserved_ports(text)


def test_error_messages_are_one_short_line() -> None:
    with pytest.raises(KernelInterfaceError) as info:
        parse_int("x" * 10_000 + "\nmore")
    message = str(info.value)
    assert "\n" not in message and len(message) < 120


def test_format_value_refuses_the_wrong_shape() -> None:
    with pytest.raises(TypeError):
        format_value(Unit.PORT_RANGE, ((1, 2),))
    with pytest.raises(TypeError):
        format_value(Unit.PORT_LIST, (1, 2))


ports = st.integers(min_value=0, max_value=65535)


@given(st.lists(st.tuples(ports, ports).map(lambda p: (min(p), max(p))), max_size=20))
def test_reserved_ports_format_parse_is_canonical(ranges: list[tuple[int, int]]) -> None:
    parsed = parse_reserved_ports(",".join(f"{lo}-{hi}" for lo, hi in ranges))
    assert parse_reserved_ports(format_value(Unit.PORT_LIST, parsed)) == parsed
    covered = {p for lo, hi in ranges for p in range(lo, min(hi, lo + 50) + 1)}
    assert all(any(lo <= p <= hi for lo, hi in parsed) for p in covered)
    assert all(b[0] > a[1] + 1 for a, b in pairwise(parsed))


def _outcome(parse: Callable[[str], SysctlValue], text: str) -> SysctlValue | None:
    """The parsed value, or None for a KernelInterfaceError; anything else propagates."""
    try:
        return parse(text)
    except KernelInterfaceError:
        return None


@given(st.text(max_size=200))
def test_parsers_never_raise_anything_else(text: str) -> None:
    assert isinstance(_outcome(parse_int, text), int | None)
    assert isinstance(_outcome(parse_port_range, text), tuple | None)
    assert isinstance(_outcome(parse_reserved_ports, text), tuple | None)


@given(st.text(alphabet="0123456789-, \t\n", max_size=80))
def test_parsers_on_near_valid_text(text: str) -> None:
    port_range = _outcome(parse_port_range, text)
    assert port_range is None or port_range == tuple(int(t) for t in text.split())
    ranges = _outcome(parse_reserved_ports, text)
    assert ranges is None or all(0 <= lo <= hi <= 65535 for lo, hi in ranges)


# --- Reader --------------------------------------------------------------------------------


def test_read_captured_netns_tree() -> None:
    values = read_sysctls(proc_sys=NETNS_PROC_SYS)
    assert len(values) == len(ALL_SYSCTLS)
    assert values.value("net.ipv4.ip_local_port_range") == (40000, 40999)
    assert values.value("ip_local_reserved_ports") == ((1000, 1002), (2000, 2000))
    assert values.value("tcp_fin_timeout") == 17
    assert values["tcp_fin_timeout"].is_default is False
    assert values["tcp_keepalive_time"].is_default is True
    assert values["tcp_max_tw_buckets"].is_default is None  # machine-dependent default
    assert values.value("tcp_tw_reuse") == 1


def test_absent_knobs_are_reported_with_a_reason() -> None:
    values = read_sysctls(proc_sys=NETNS_PROC_SYS)
    absent = {r.name: r for r in values.with_status(ReadStatus.ABSENT)}
    assert set(absent) == {"net.ipv4.tcp_tw_recycle", "net.ipv4.tcp_max_orphans"}
    assert "4.12" in absent["net.ipv4.tcp_tw_recycle"].reason
    assert "initial network namespace" in absent["net.ipv4.tcp_max_orphans"].reason
    assert absent["net.ipv4.tcp_max_orphans"].value is None


def test_conntrack_knobs_absent_without_the_module(tmp_path: Path) -> None:
    tree = tmp_path / "sys"
    shutil.copytree(NETNS_PROC_SYS, tree)
    shutil.rmtree(tree / "net" / "netfilter")
    reading = read_sysctls(proc_sys=tree)["nf_conntrack_tcp_timeout_established"]
    assert reading.status is ReadStatus.ABSENT
    assert "nf_conntrack" in reading.reason


def test_values_lookup_api() -> None:
    values = read_sysctls([SYSCTLS["net.ipv4.tcp_fin_timeout"]], proc_sys=NETNS_PROC_SYS)
    assert "tcp_fin_timeout" in values and "net.ipv4.tcp_fin_timeout" in values
    assert "tcp_keepalive_time" not in values and "no_such_knob" not in values
    with pytest.raises(KeyError):
        values["tcp_keepalive_time"]
    assert [r.name for r in values] == ["net.ipv4.tcp_fin_timeout"]


def test_missing_proc_sys_is_an_interface_error(tmp_path: Path) -> None:
    with pytest.raises(KernelInterfaceError, match="not a directory"):
        read_sysctls(proc_sys=tmp_path / "nope")


def test_permission_denied_marks_the_knob_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SYSCTLS["net.ipv4.tcp_fin_timeout"]
    denied = PermissionError(errno.EACCES, "Permission denied")
    fail_reads_of(monkeypatch, NETNS_PROC_SYS / spec.path, denied)
    values = read_sysctls(proc_sys=NETNS_PROC_SYS)
    assert values["tcp_fin_timeout"].status is ReadStatus.UNREADABLE
    assert values.value("tcp_fin_timeout") is None
    assert values["tcp_keepalive_time"].status is ReadStatus.PRESENT


def test_other_os_errors_become_interface_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SYSCTLS["net.ipv4.tcp_fin_timeout"]
    fail_reads_of(monkeypatch, NETNS_PROC_SYS / spec.path, OSError(errno.EIO, "I/O error"))
    with pytest.raises(KernelInterfaceError, match="I/O error"):
        read_sysctl(spec, NETNS_PROC_SYS)


@pytest.mark.parametrize("content", [b"sixty\n", b"\xff\xfe\n", b""])
def test_garbage_files_raise_interface_errors(tmp_path: Path, content: bytes) -> None:
    spec = SYSCTLS["net.ipv4.tcp_fin_timeout"]
    path = tmp_path / spec.path
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(KernelInterfaceError):
        read_sysctl(spec, tmp_path)


# --- Generated docs ------------------------------------------------------------------------


def test_sysctl_docs_are_generated_from_the_catalogue() -> None:
    expected = load_script("gen_catalogue_docs").render_sysctls()
    actual = (ROOT / "docs" / "sysctls.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/sysctls.md is stale: run scripts/gen_catalogue_docs.py"


def test_sysctl_docs_change_when_the_catalogue_does() -> None:
    script = load_script("gen_catalogue_docs")
    edited = (*ALL_SYSCTLS[:-1], SysctlSpec("x.y", Unit.COUNT, Scope.GLOBAL, 1, "m", "r", "s"))
    assert script.render_sysctls(edited) != script.render_sysctls()
