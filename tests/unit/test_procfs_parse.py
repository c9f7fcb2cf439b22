"""/proc/net/tcp{,6} parsing (`observe._procfs`): right on real text, garbage-proof.

fixtures/proc_net_tcp.txt and proc_net_tcp6.txt were captured on kernel 6.18 (HZ=250)
inside a throwaway namespace (lo up, 198.18.0.1 on lo, an nftables rule dropping
everything sent to 198.18.0.99). A Python script made exactly the sockets in KNOWN,
waited until /proc showed them, and read both files right away:

* listeners 127.0.0.1:7001 (backlog 16), [::1]:7002 and [::]:7003 (both IPV6_V6ONLY);
* 127.0.0.1:40001 -> :7001 ESTABLISHED, client socket made with euid 65534 and
  SO_KEEPALIVE + TCP_KEEPIDLE=600 (timer 2);
* 127.0.0.1:40002 -> :7001, client closed first: TIME_WAIT (timer 3, 60 s);
* 127.0.0.1:40003 -> :7001, client closed, server kept its end open: orphaned FIN_WAIT2
  minisock (timer 3) and a CLOSE_WAIT with the unread FIN in rx_queue;
* 198.18.0.1:40004 -> 198.18.0.99:80, non-blocking connect into the drop: SYN_SENT
  (timer 1, first retransmission after 1 s, the SYN in tx_queue);
* [::1]:40005 -> [::1]:7002 ESTABLISHED, and [::1]:40006 -> [::1]:7002 TIME_WAIT;
* an AF_INET6 client bound to ::ffff:127.0.0.1:40007 connected to the IPv4 listener.
"""

from __future__ import annotations

import re
import socket
import string
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.limits import time_limit
from tcpdoctor.errors import KernelInterfaceError
from tcpdoctor.kernel.states import ALL_STATES_MASK, TcpState, state_mask
from tcpdoctor.observe._procfs import parse_tcp_table, read_tcp
from tcpdoctor.observe._records import SOCKET_DTYPE

FIXTURES = Path(__file__).with_name("fixtures")
TCP_TEXT = (FIXTURES / "proc_net_tcp.txt").read_text()
TCP6_TEXT = (FIXTURES / "proc_net_tcp6.txt").read_text()
V4, V6 = int(socket.AF_INET), int(socket.AF_INET6)
HEADER4 = TCP_TEXT.splitlines()[0]
HEADER6 = TCP6_TEXT.splitlines()[0]
REAL_LINES = {V4: TCP_TEXT.splitlines()[1:], V6: TCP6_TEXT.splitlines()[1:]}

# (family, state, local, lport, remote, rport, timer, uid, has inode), as built.
KNOWN = {
    (V4, 10, "127.0.0.1", 7001, "0.0.0.0", 0, 0, 0, True),
    (V4, 1, "127.0.0.1", 40001, "127.0.0.1", 7001, 2, 65534, True),
    (V4, 1, "127.0.0.1", 7001, "127.0.0.1", 40001, 0, 0, True),
    (V4, 6, "127.0.0.1", 40002, "127.0.0.1", 7001, 3, 0, False),
    (V4, 5, "127.0.0.1", 40003, "127.0.0.1", 7001, 3, 0, False),
    (V4, 8, "127.0.0.1", 7001, "127.0.0.1", 40003, 0, 0, True),
    (V4, 2, "198.18.0.1", 40004, "198.18.0.99", 80, 1, 0, True),
    (V4, 1, "127.0.0.1", 7001, "127.0.0.1", 40007, 0, 0, True),
    (V6, 10, "::1", 7002, "::", 0, 0, 0, True),
    (V6, 10, "::", 7003, "::", 0, 0, 0, True),
    (V6, 1, "::ffff:127.0.0.1", 40007, "::ffff:127.0.0.1", 7001, 0, 0, True),
    (V6, 1, "::1", 40005, "::1", 7002, 0, 0, True),
    (V6, 1, "::1", 7002, "::1", 40005, 0, 0, True),
    (V6, 6, "::1", 40006, "::1", 7002, 3, 0, False),
}


def address(row: np.void, column: str) -> str:
    family = int(row["family"])
    width = 4 if family == V4 else 16
    return socket.inet_ntop(family, row[column].astype(">u4").tobytes()[:width])


def described(rows: np.ndarray) -> list[tuple[object, ...]]:
    return [
        (
            int(row["family"]),
            int(row["state"]),
            address(row, "src"),
            int(row["sport"]),
            address(row, "dst"),
            int(row["dport"]),
            int(row["timer"]),
            int(row["uid"]),
            int(row["inode"]) != 0,
        )
        for row in rows
    ]


# --- the real capture -----------------------------------------------------------------


def test_real_text_parses_to_the_known_sockets() -> None:
    v4 = parse_tcp_table(TCP_TEXT, V4)
    v6 = parse_tcp_table(TCP6_TEXT, V6)
    assert (len(v4), len(v6)) == (8, 6)
    rows = described(v4) + described(v6)
    assert len(set(rows)) == len(rows)
    assert set(rows) == KNOWN


def _raw_columns(line: str) -> dict[str, int]:
    """The numeric columns of one line, read with a regex (not the parser under test)."""
    match = re.match(
        r"\s*\d+: \w+:\w+ \w+:\w+ (?P<st>\w\w) (?P<tx>\w{8}):(?P<rx>\w{8}) "
        r"(?P<tr>\w\w):(?P<when>\w{8}) (?P<retr>\w{8}) +(?P<uid>\d+) +(?P<probes>\d+) "
        r"(?P<inode>\d+)",
        line,
    )
    assert match is not None, line
    hexa = ("st", "tx", "rx", "tr", "when", "retr")
    return {k: int(v, 16) if k in hexa else int(v) for k, v in match.groupdict().items()}


@pytest.mark.parametrize("family", [V4, V6])
def test_real_text_columns_queues_and_timers(family: int) -> None:
    rows = parse_tcp_table(TCP_TEXT if family == V4 else TCP6_TEXT, family)
    for row, line in zip(rows, REAL_LINES[family], strict=True):
        raw = _raw_columns(line)
        assert int(row["state"]) == raw["st"]
        assert (int(row["wqueue"]), int(row["rqueue"])) == (raw["tx"], raw["rx"])
        assert int(row["timer"]) == raw["tr"]
        assert int(row["expires_ms"]) == (raw["when"] * 10 if raw["tr"] else 0)  # USER_HZ
        assert (int(row["uid"]), int(row["inode"])) == (raw["uid"], raw["inode"])
        assert int(row["family"]) == family
        timer, expires = int(row["timer"]), int(row["expires_ms"])
        if timer == 3:  # TIME_WAIT / FIN_WAIT2 minisock: 60 s, read right after creation
            assert 55_000 < expires <= 60_000
            assert int(row["inode"]) == int(row["uid"]) == 0
        elif timer == 2:
            assert 590_000 < expires <= 600_000  # TCP_KEEPIDLE=600
        elif timer == 1:
            assert 0 < expires <= 1_000
            assert int(row["wqueue"]) == 1  # the unacknowledged SYN
        if int(row["state"]) == TcpState.CLOSE_WAIT:
            assert int(row["rqueue"]) == 1  # the FIN is still "unread"


# --- exact semantics on small built lines ---------------------------------------------


def line4(
    st_hex: str = "01",
    timer: str = "00:00000000",
    retr: str = "00000000",
    uid: str = "0",
    probes: str = "0",
    inode: str = "1",
    local: str = "0100007F:1B59",
    remote: str = "0100007F:9C41",
    queues: str = "00000000:00000000",
) -> str:
    return f"   0: {local} {remote} {st_hex} {queues} {timer} {retr} {uid} {probes} {inode} 1 0"


def parse1(line: str, family: int = V4) -> np.void:
    rows = parse_tcp_table((HEADER4 if family == V4 else HEADER6) + "\n" + line + "\n", family)
    assert len(rows) == 1
    row: np.void = rows[0]
    return row


def test_addresses_are_network_order_words_printed_in_host_order() -> None:
    row = parse1(line4(local="0100007F:0050", remote="630012C6:FFFF"))
    assert (address(row, "src"), int(row["sport"])) == ("127.0.0.1", 80)
    assert (address(row, "dst"), int(row["dport"])) == ("198.18.0.99", 65535)
    v6 = parse1(
        line4(
            local="B80D0120000000000000000001000000:01BB",
            remote="0000000000000000FFFF00000100007F:1B59",
        ),
        V6,
    )
    assert address(v6, "src") == "2001:db8::1"
    assert address(v6, "dst") == "::ffff:127.0.0.1"
    assert (int(v6["sport"]), int(v6["dport"])) == (443, 7001)


@pytest.mark.parametrize(
    ("timer", "retr", "probes", "retrans", "expires"),
    [
        ("00:00000000", "00000005", "3", 0, 0),  # no timer: nothing pending
        ("01:00000064", "00000005", "3", 5, 1000),  # retransmit: icsk_retransmits
        ("02:00000064", "00000005", "3", 3, 1000),  # keepalive: probes_out
        ("03:0000176F", "00000000", "0", 0, 59_990),  # TIME_WAIT minisock
        ("04:00000001", "00000005", "7", 7, 10),  # zero-window probe: probes_out
        ("00:00001234", "00000000", "0", 0, 0),  # a stale "when" without a timer
    ],
)
def test_timer_retrans_and_expiry_columns(
    timer: str, retr: str, probes: str, retrans: int, expires: int
) -> None:
    row = parse1(line4(timer=timer, retr=retr, probes=probes))
    assert int(row["timer"]) == int(timer[:2], 16)
    assert int(row["retrans"]) == retrans  # what inet_diag's idiag_retrans would say
    assert int(row["expires_ms"]) == expires


@pytest.mark.parametrize(
    "text",
    ["", HEADER4, HEADER4 + "\n", HEADER4 + "\n\n   \n", "  " + HEADER4.lstrip() + "\n"],
)
def test_no_sockets(text: str) -> None:
    rows = parse_tcp_table(text, V4)
    assert len(rows) == 0
    assert rows.dtype == SOCKET_DTYPE


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("garbage\n" + line4(), id="bad-header"),
        pytest.param(HEADER4 + "\n" + line4()[:40], id="short-line"),
        pytest.param(HEADER4 + "\n" + line4(local="100007F:1B59"), id="address-width"),
        pytest.param(HEADER4 + "\n" + line4(local="0100007F:1B5"), id="port-width"),
        pytest.param(HEADER4 + "\n" + line4(local="0100007F1B59"), id="no-colon"),
        pytest.param(HEADER4 + "\n" + line4(st_hex="100"), id="state-over-255"),
        pytest.param(HEADER4 + "\n" + line4(timer="1FF:00000000"), id="timer-over-255"),
        pytest.param(HEADER4 + "\n" + line4(uid="-1"), id="negative-uid"),
        pytest.param(HEADER4 + "\n" + line4(inode="99999999999"), id="inode-over-u32"),
        pytest.param(HEADER4 + "\n" + line4(queues="1FFFFFFFF:0"), id="queue-over-u32"),
        pytest.param(HEADER4 + "\n" + line4(probes="x"), id="probes-not-a-number"),
        pytest.param(HEADER4 + "\n" + line4(local="GGGGGGGG:1B59"), id="not-hex"),
        pytest.param(HEADER4 + "\n" + line4(local="-1234567:1B59"), id="negative-word"),
        pytest.param(HEADER6 + "\n" + line4(), id="v4-line-in-tcp6"),
    ],
)
def test_malformed_text_raises_kernel_interface_error(text: str) -> None:
    family = V6 if text.startswith(HEADER6) else V4
    with pytest.raises(KernelInterfaceError):
        parse_tcp_table(text, family)


# --- read_tcp: files, families and the state mask --------------------------------------


@pytest.fixture
def proc_net(tmp_path: Path) -> Path:
    (tmp_path / "tcp").write_text(TCP_TEXT)
    (tmp_path / "tcp6").write_text(TCP6_TEXT)
    return tmp_path


def test_read_tcp_reads_both_files_and_applies_the_state_mask(proc_net: Path) -> None:
    everything = read_tcp(str(proc_net), (V4, V6), ALL_STATES_MASK)
    assert set(described(everything)) == KNOWN
    waits = read_tcp(str(proc_net), (V4, V6), state_mask([TcpState.TIME_WAIT]))
    assert sorted(int(p) for p in waits["sport"]) == [40002, 40006]
    only_v6 = read_tcp(str(proc_net), (V6,), ALL_STATES_MASK)
    assert {int(f) for f in only_v6["family"]} == {V6}
    assert len(only_v6) == 6


def test_read_tcp_drops_states_outside_the_mask(proc_net: Path) -> None:
    # States the kernel may add later (or garbage) are not in any mask we ask for.
    extra = [line4(st_hex=h, local=f"0100007F:{p:04X}") for h, p in (("0E", 1), ("FF", 2))]
    (proc_net / "tcp").write_text(TCP_TEXT + "\n".join(extra) + "\n")
    rows = read_tcp(str(proc_net), (V4,), ALL_STATES_MASK | state_mask([TcpState.NEW_SYN_RECV]))
    assert len(rows) == 8
    assert set(int(s) for s in rows["state"]) <= {int(s) for s in TcpState}


def test_read_tcp_without_ipv6_and_without_tcp(proc_net: Path) -> None:
    (proc_net / "tcp6").unlink()
    assert len(read_tcp(str(proc_net), (V4, V6), ALL_STATES_MASK)) == 8  # no IPv6: fine
    (proc_net / "tcp").unlink()
    with pytest.raises(KernelInterfaceError):
        read_tcp(str(proc_net), (V4,), ALL_STATES_MASK)


# --- properties: garbage never crashes ------------------------------------------------


def parse_or_reject(text: str, family: int) -> np.ndarray | None:
    """The contract: rows for every non-blank body line, or KernelInterfaceError."""
    with time_limit(10, "parse_tcp_table"):
        try:
            rows = parse_tcp_table(text, family)
        except KernelInterfaceError:
            return None
    assert isinstance(rows, np.ndarray)
    assert rows.dtype == SOCKET_DTYPE
    body = [line for line in text.splitlines()[1:] if line.strip()]
    assert len(rows) == len(body)
    assert (rows["family"] == family).all()
    return rows


FUZZ = settings(
    max_examples=250,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FAMILIES = st.sampled_from([V4, V6])


@FUZZ
@given(st.text(max_size=2000), FAMILIES, st.booleans())
@example("sl\n\x1c\n", V4, False)  # str.splitlines() also splits on \x1c, \u2028 ...
@example("sl\n0: 0:0 0:0 0 0:0 0:0 0 0 0 0", V4, False)
def test_random_text(text: str, family: int, with_header: bool) -> None:
    parse_or_reject((HEADER4 + "\n" if with_header else "") + text, family)


FIELD_TEXT = st.one_of(
    st.text(alphabet=string.hexdigits + ":-+_ x", max_size=40),
    st.integers(-(2**70), 2**70).map(lambda n: f"{n:X}" if n >= 0 else f"-{-n:X}"),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0100007F:1B59", "00:00000000", "03:0000176F", "0A", "\u0663", "ï"]),
)


@FUZZ
@given(st.lists(st.lists(FIELD_TEXT, min_size=0, max_size=18), max_size=20), FAMILIES)
def test_random_field_lines(lines: list[list[str]], family: int) -> None:
    text = "\n".join([HEADER4, *("   0: " + " ".join(fields) for fields in lines)])
    parse_or_reject(text, family)


CHAR_MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "cut"]),
        st.integers(0, 4000),
        st.sampled_from([*"0123456789ABCDEFabcdefxX:- +_\t\n\x00\u0663\u2028g"]),
    ),
    min_size=1,
    max_size=6,
)


def mutate(text: str, mutations: list[tuple[str, int, str]]) -> str:
    chars = list(text)
    for op, where, char in mutations:
        at = where % (len(chars) + 1)
        if op == "set" and chars:
            chars[where % len(chars)] = char
        elif op == "insert":
            chars.insert(at, char)
        elif op == "delete":
            del chars[at : at + 1]
        elif op == "cut":
            del chars[at:]
    return "".join(chars)


@FUZZ
@given(FAMILIES, CHAR_MUTATIONS)
def test_mutated_real_text(family: int, mutations: list[tuple[str, int, str]]) -> None:
    text = TCP_TEXT if family == V4 else TCP6_TEXT
    parse_or_reject(mutate(text, mutations), family)


@FUZZ
@given(FAMILIES, st.data())
def test_shuffled_fields_of_real_lines(family: int, data: st.DataObject) -> None:
    lines = REAL_LINES[family]
    line = data.draw(st.sampled_from(lines))
    fields = data.draw(st.permutations(line.split()))
    count = data.draw(st.integers(0, len(fields)))
    parse_or_reject(HEADER4 + "\n" + " ".join(fields[:count]) + "\n", family)


def test_every_truncation_of_real_lines() -> None:
    for family, text in ((V4, TCP_TEXT), (V6, TCP6_TEXT)):
        assert parse_or_reject(text, family) is not None
        for cut in range(len(text)):
            parse_or_reject(text[:cut], family)
