"""sock_diag dump parsing (`observe._netlink.parse_dump`): right on real and built dumps,
and garbage-proof: any input gives a valid DumpResult or KernelInterfaceError.

Messages are built here with struct from the uapi layouts (nlmsghdr 16 bytes,
inet_diag_msg 72 bytes, nlattr 4 bytes, struct tcp_info), not with tcpdoctor's own
constants, so a wrong offset on either side shows up as a mismatch.

REAL_V4_B64 / REAL_V6_B64 are raw dump replies (datagrams back to back) recorded on
kernel 6.18 inside a throwaway namespace, a few milliseconds before the /proc text in
fixtures/proc_net_tcp{,6}.txt was read from the same namespace. Request:
SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST|NLM_F_DUMP, states 0xFFE; IPv4 with idiag_ext=INFO
(seq 4242), IPv6 without (seq 4243). The namespace held exactly the sockets in KNOWN.
"""

from __future__ import annotations

import base64
import errno
import socket
import struct
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.limits import time_limit
from tcpdoctor.errors import KernelInterfaceError, PermissionDenied
from tcpdoctor.observe._netlink import DumpResult, parse_dump
from tcpdoctor.observe._procfs import parse_tcp_table
from tcpdoctor.observe._records import INFO_DTYPE, SOCKET_DTYPE

FIXTURES = Path(__file__).with_name("fixtures")

# include/uapi/linux/netlink.h, sock_diag.h, inet_diag.h
NLMSG_HDR = struct.Struct("<IHHII")  # len, type, flags, seq, pid
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
SOCK_DIAG_BY_FAMILY = 20
NLM_F_MULTI, NLM_F_DUMP_INTR = 0x2, 0x10
INET_DIAG_MEMINFO, INET_DIAG_INFO, INET_DIAG_SHUTDOWN, INET_DIAG_MARK = 1, 2, 8, 15
INET_DIAG_CGROUP_ID, INET_DIAG_SOCKOPT = 21, 22
SEQ = 77

# struct tcp_info (include/uapi/linux/tcp.h) up to the 6.1 size of 232 bytes, in order.
TCP_INFO_LAYOUT: list[tuple[str, str]] = [
    *[(n, "B") for n in ("state", "ca_state", "retransmits", "probes", "backoff", "options")],
    ("wscale", "B"),
    ("app_limited", "B"),
    *[(n, "I") for n in ("rto", "ato", "snd_mss", "rcv_mss", "unacked", "sacked", "lost")],
    *[(n, "I") for n in ("retrans", "fackets", "last_data_sent", "last_ack_sent")],
    *[(n, "I") for n in ("last_data_recv", "last_ack_recv", "pmtu", "rcv_ssthresh", "rtt")],
    *[(n, "I") for n in ("rttvar", "snd_ssthresh", "snd_cwnd", "advmss", "reordering")],
    *[(n, "I") for n in ("rcv_rtt", "rcv_space", "total_retrans")],
    *[(n, "Q") for n in ("pacing_rate", "max_pacing_rate", "bytes_acked", "bytes_received")],
    *[(n, "I") for n in ("segs_out", "segs_in", "notsent_bytes", "min_rtt")],
    *[(n, "I") for n in ("data_segs_in", "data_segs_out")],
    *[(n, "Q") for n in ("delivery_rate", "busy_time", "rwnd_limited", "sndbuf_limited")],
    *[(n, "I") for n in ("delivered", "delivered_ce")],
    *[(n, "Q") for n in ("bytes_sent", "bytes_retrans")],
    *[(n, "I") for n in ("dsack_dups", "reord_seen", "rcv_ooopack", "snd_wnd")],
]
TCP_INFO_STRUCT = struct.Struct("<" + "".join(kind for _, kind in TCP_INFO_LAYOUT))
assert TCP_INFO_STRUCT.size == 232
TCP_INFO_LEN_618 = 280  # what 6.18 sends (kernel-notes 10.7)

# tcpdoctor's info column -> the uapi field it must come from.
INFO_SOURCE = {
    "ca_state": "ca_state",
    "retransmits": "retransmits",
    "probes": "probes",
    "backoff": "backoff",
    "options": "options",
    "rto_us": "rto",
    "ato_us": "ato",
    "snd_mss": "snd_mss",
    "unacked": "unacked",
    "lost": "lost",
    "last_data_sent_ms": "last_data_sent",
    "last_ack_sent_ms": "last_ack_sent",
    "last_data_recv_ms": "last_data_recv",
    "last_ack_recv_ms": "last_ack_recv",
    "rtt_us": "rtt",
    "rttvar_us": "rttvar",
    "snd_cwnd": "snd_cwnd",
    "total_retrans": "total_retrans",
    "bytes_acked": "bytes_acked",
    "bytes_received": "bytes_received",
    "segs_out": "segs_out",
    "segs_in": "segs_in",
    "min_rtt_us": "min_rtt",
    "bytes_retrans": "bytes_retrans",
}


def _layout_offsets() -> dict[str, tuple[int, int]]:
    """uapi field -> (offset, size)."""
    out: dict[str, tuple[int, int]] = {}
    offset = 0
    for name, kind in TCP_INFO_LAYOUT:
        size = struct.calcsize("<" + kind)
        out[name] = (offset, size)
        offset += size
    return out


TCP_INFO_OFFSETS = _layout_offsets()


def _distinct_value(index: int, kind: str) -> int:
    """A different value per field, using the full width (u64 fields exceed 2**32)."""
    if kind == "B":
        return 3 * index + 1
    if kind == "I":
        return 0x01000000 + 7919 * index
    return 0x0100000000 + 104729 * index


TCP_INFO_VALUES = {name: _distinct_value(i, kind) for i, (name, kind) in enumerate(TCP_INFO_LAYOUT)}
TCP_INFO_BLOB = TCP_INFO_STRUCT.pack(*TCP_INFO_VALUES.values()).ljust(TCP_INFO_LEN_618, b"\x5a")


def expected_info(length: int | None) -> dict[str, int]:
    """What tcpdoctor must report for a tcp_info attribute of `length` bytes (None: absent)."""
    out = {}
    for column, source in INFO_SOURCE.items():
        offset, size = TCP_INFO_OFFSETS[source]
        present = length is not None and offset + size <= length
        out[column] = TCP_INFO_VALUES[source] if present else -1
    return out


# --- building messages ----------------------------------------------------------------


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def nlmsg(kind: int, payload: bytes, seq: int = SEQ, flags: int = NLM_F_MULTI) -> bytes:
    return pad4(NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), kind, flags, seq, 0) + payload)


def nla(kind: int, payload: bytes) -> bytes:
    return pad4(struct.pack("<HH", 4 + len(payload), kind) + payload)


def done(seq: int = SEQ) -> bytes:
    return nlmsg(NLMSG_DONE, struct.pack("<i", 0), seq)


def error(code: int, seq: int = SEQ) -> bytes:
    """NLMSG_ERROR: negative errno, then the header of the request it answers."""
    request = NLMSG_HDR.pack(72, SOCK_DIAG_BY_FAMILY, 0x301, seq, 0)
    return nlmsg(NLMSG_ERROR, struct.pack("<i", -code) + request, seq, flags=0)


@dataclass(frozen=True)
class Sock:
    family: int
    state: int
    local: str
    sport: int
    remote: str
    dport: int
    timer: int = 0
    retrans: int = 0
    expires: int = 0
    rqueue: int = 0
    wqueue: int = 0
    uid: int = 0
    inode: int = 0
    ifindex: int = 0
    cookie: tuple[int, int] = (0, 0)

    def packed(self) -> bytes:
        """struct inet_diag_msg (72 bytes)."""
        src = socket.inet_pton(self.family, self.local).ljust(16, b"\0")
        dst = socket.inet_pton(self.family, self.remote).ljust(16, b"\0")
        return (
            struct.pack("<BBBB", self.family, self.state, self.timer, self.retrans)
            + struct.pack(">HH", self.sport, self.dport)
            + src
            + dst
            + struct.pack("<III", self.ifindex, *self.cookie)
            + struct.pack("<IIIII", self.expires, self.rqueue, self.wqueue, self.uid, self.inode)
        )

    def message(self, attrs: bytes = b"", seq: int = SEQ, flags: int = NLM_F_MULTI) -> bytes:
        body = self.packed()
        assert len(body) == 72
        return nlmsg(SOCK_DIAG_BY_FAMILY, body + attrs, seq, flags)

    def key(self) -> tuple[int, ...]:
        return (
            self.family,
            self.state,
            self.timer,
            self.retrans,
            *socket.inet_pton(self.family, self.local),
            self.sport,
            *socket.inet_pton(self.family, self.remote),
            self.dport,
            self.expires,
            self.rqueue,
            self.wqueue,
            self.uid,
            self.inode,
        )


def row_key(row: np.void) -> tuple[int, ...]:
    family = int(row["family"])
    width = 4 if family == socket.AF_INET else 16
    src = row["src"].astype(">u4").tobytes()[:width]
    dst = row["dst"].astype(">u4").tobytes()[:width]
    return (
        family,
        int(row["state"]),
        int(row["timer"]),
        int(row["retrans"]),
        *src,
        int(row["sport"]),
        *dst,
        int(row["dport"]),
        int(row["expires_ms"]),
        int(row["rqueue"]),
        int(row["wqueue"]),
        int(row["uid"]),
        int(row["inode"]),
    )


def info_dict(result: DumpResult, index: int) -> dict[str, int]:
    assert result.info is not None
    return {name: int(result.info[name][index]) for name in INFO_SOURCE}


# --- the safety net -------------------------------------------------------------------


def check_valid(result: DumpResult, want_info: bool) -> None:
    assert isinstance(result, DumpResult)
    assert result.sockets.dtype == SOCKET_DTYPE
    assert result.sockets.ndim == 1
    assert isinstance(result.interrupted, bool)
    if want_info:
        assert result.info is not None
        assert result.info.dtype == INFO_DTYPE
        assert len(result.info) == len(result.sockets)
        for name in INFO_DTYPE.names or ():
            assert (result.info[name] >= -1).all()
    else:
        assert result.info is None


def parse_or_reject(data: bytes, seq: int = SEQ, *, want_info: bool = False) -> DumpResult | None:
    """parse_dump's contract: a valid result, or KernelInterfaceError; nothing else.

    An NLMSG_ERROR carrying EPERM/EACCES is deliberately translated to PermissionDenied
    (exit code 3); that one other outcome is accepted, by its message.
    """
    with time_limit(10, "parse_dump"):
        try:
            result = parse_dump(data, seq, want_info=want_info)
        except KernelInterfaceError:
            return None
        except PermissionDenied as err:
            assert str(err).startswith("sock_diag refused the dump"), err
            return None
    check_valid(result, want_info)
    return result


FUZZ = settings(
    max_examples=250,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- real captures --------------------------------------------------------------------

REAL_V4_B64 = (
    "mAEAABQAAgCSEAAA9jEAAAIKAAAbWQAAfwAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA24kLAAAA"
    "AAAAAAAAAAAAABAAAAAAAAAA79BnAAUACAAAAAAACAAPAAAAAAAMABUAAQAAAAAAAAAGABYAUgAAABwBAgAKAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAoAAAAAAAAAAwAAAAAAAAAAAAAAAAAAAP////////////////////8AAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAmAEAABQAAgCSEAAA9jEAAAIBAgCcQRtZfwAAAQAAAAAAAAAAAAAAAH8AAAEAAAAAAAAAAAAA"
    "AAAAAAAA3IkLAAAAAACYJwkAAAAAAAAAAAD+/wAA8tBnAAUACAAAAAAACAAPAAAAAAAMABUAAQAAAAAAAAAGABYA"
    "UgAAABwBAgABAAAAAAeqAeAcAwAAAAAA5X8AABgCAAAAAAAAAAAAAAAAAAAAAAAAAAAAACgAAAAAAAAAKAAAACgA"
    "AAD//wAA1/8AACUAAAASAAAA////fwoAAADL/wAAAwAAAAAAAADX/wAAAAAAAKfhVeMFAAAA//////////8BAAAA"
    "AAAAAAAAAAAAAAAAAgAAAAEAAAAAAAAAJQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAADL/wAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAYAAAABQAAgCSEAAA9jEAAAIGAwCcQhtZfwAAAQAAAAAAAAAAAAAAAH8A"
    "AAEAAAAAAAAAAAAAAAAAAAAA3YkLAAAAAAA46gAAAAAAAAAAAAAAAAAAAAAAAAgADwAAAAAAYAAAABQAAgCSEAAA"
    "9jEAAAIFAwCcQxtZfwAAAQAAAAAAAAAAAAAAAH8AAAEAAAAAAAAAAAAAAAAAAAAA3okLAAAAAABA6gAAAAAAAAAA"
    "AAAAAAAAAAAAAAgADwAAAAAAmAEAABQAAgCSEAAA9jEAAAIBAAAbWZxHfwAAAQAAAAAAAAAAAAAAAH8AAAEAAAAA"
    "AAAAAAAAAAAAAAAA34kLAAAAAAAAAAAAAAAAAAAAAAAAAAAA/tBnAAUACAAAAAAACAAPAAAAAAAMABUAAQAAAAAA"
    "AAAGABYAUgAAABwBAgABAAAAAAeqAUANAwAAAAAAAIAAABgCAAAAAAAAAAAAAAAAAAAAAAAAAAAAACgAAAAAAAAA"
    "KAAAACgAAAD//wAAy/8AAAYAAAADAAAA////fwoAAADL/wAAAwAAAAAAAADL/wAAAAAAAHbp5lYkAAAA////////"
    "//8AAAAAAAAAAAAAAAAAAAAAAAAAAAIAAAAAAAAABgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAy/8AAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAmAEAABQAAgCSEAAA9jEAAAIIAAAbWZxDfwAAAQAAAAAAAAAA"
    "AAAAAH8AAAEAAAAAAAAAAAAAAAAAAAAA4IkLAAAAAAAAAAAAAQAAAAAAAAAAAAAA99BnAAUACAABAAAACAAPAAAA"
    "AAAMABUAAQAAAAAAAAAGABYAUgAAABwBAgAIAAAAAAeqAUANAwBAnAAAAIAAABgCAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAACgAAAAAAAAAKAAAACgAAAD//wAAy/8AAAYAAAADAAAA////fwoAAADL/wAAAwAAAAAAAADL/wAAAAAAAHbp"
    "5lYkAAAA//////////8AAAAAAAAAAAEAAAAAAAAAAQAAAAMAAAAAAAAABgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAAAABAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAmAEAABQAAgCSEAAA9jEAAAICAQCcRABQ"
    "xhIAAQAAAAAAAAAAAAAAAMYSAGMAAAAAAAAAAAAAAAAAAAAA4YkLAAAAAADAAwAAAAAAAAEAAAAAAAAA+NBnAAUA"
    "CAAAAAAACAAPAAAAAAAMABUAAQAAAAAAAAAGABYAUgAAABwBAgACAAAAAAAAAUBCDwAAAAAADAIAAFgAAAABAAAA"
    "AAAAAAAAAAAAAAAAAAAAAOxdBgAAAAAA7F0GAOxdBgD//wAA1/8AAAAAAACQ0AMA////fwoAAADX/wAAAwAAAAAA"
    "AAAAAAAAAAAAAP////////////////////8AAAAAAAAAAAAAAAAAAAAAAQAAAAAAAAAAAAAA/////wAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAA1/8AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAmAEAABQAAgCSEAAA"
    "9jEAAAIBAAAbWZxBfwAAAQAAAAAAAAAAAAAAAH8AAAEAAAAAAAAAAAAAAAAAAAAA4okLAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAA89BnAAUACAAAAAAACAAPAAAAAAAMABUAAQAAAAAAAAAGABYAUgAAABwBAgABAAAAAAeqAeAcAwAAAAAA"
    "AIAAABgCAAAAAAAAAAAAAAAAAAAAAAAAAAAAACgAAAAAAAAAKAAAACgAAAD//wAAy/8AABYAAAALAAAA////fwoA"
    "AADL/wAAAwAAAAAAAADL/wAAAAAAAA2yJ+kJAAAA//////////8AAAAAAAAAAAAAAAAAAAAAAAAAAAIAAAAAAAAA"
    "FgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAEAy/8AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "FAAAAAMAAgCSEAAA9jEAAAAAAAA="
)
REAL_V6_B64 = (
    "hAAAABQAAgCTEAAA9jEAAAoKAAAbWgAAAAAAAAAAAAAAAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAA44kLAAAA"
    "AAAAAAAAAAAAABAAAAAAAAAA8NBnAAUACAAAAAAABQALAAEAAAAIAA8AAAAAAAwAFQABAAAAAAAAAAYAFgASAAAA"
    "hAAAABQAAgCTEAAA9jEAAAoKAAAbWwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA5IkLAAAA"
    "AAAAAAAAAAAAABAAAAAAAAAA8dBnAAUACAAAAAAABQALAAEAAAAIAA8AAAAAAAwAFQABAAAAAAAAAAYAFgASAAAA"
    "fAAAABQAAgCTEAAA9jEAAAoBAACcRxtZAAAAAAAAAAAAAP//fwAAAQAAAAAAAAAAAAD//38AAAEAAAAA5YkLAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAA/dBnAAUACAAAAAAACAAPAAAAAAAMABUAAQAAAAAAAAAGABYAEgAAAHwAAAAUAAIA"
    "kxAAAPYxAAAKAQAAG1qcRQAAAAAAAAAAAAAAAAAAAAEAAAAAAAAAAAAAAAAAAAABAAAAAOaJCwAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAPrQZwAFAAgAAAAAAAgADwAAAAAADAAVAAEAAAAAAAAABgAWABIAAAB8AAAAFAACAJMQAAD2MQAA"
    "CgEAAJxFG1oAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAQAAAADniQsAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAD50GcABQAIAAAAAAAIAA8AAAAAAAwAFQABAAAAAAAAAAYAFgASAAAAYAAAABQAAgCTEAAA9jEAAAoGAwCcRhta"
    "AAAAAAAAAAAAAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAEAAAAA6IkLAAAAAAA46gAAAAAAAAAAAAAAAAAAAAAAAAgA"
    "DwAAAAAAFAAAAAMAAgCTEAAA9jEAAAAAAAA="
)
REAL_V4 = base64.b64decode("".join(REAL_V4_B64))
REAL_V6 = base64.b64decode("".join(REAL_V6_B64))
REAL_V4_SEQ, REAL_V6_SEQ = 4242, 4243

V4, V6 = int(socket.AF_INET), int(socket.AF_INET6)
# (family, state, local, lport, remote, rport, timer, uid, has inode) of the capture.
KNOWN = {
    (V4, 10, "127.0.0.1", 7001, "0.0.0.0", 0, 0, 0, True),
    (V4, 1, "127.0.0.1", 40001, "127.0.0.1", 7001, 2, 65534, True),  # keepalive 600 s
    (V4, 1, "127.0.0.1", 7001, "127.0.0.1", 40001, 0, 0, True),
    (V4, 6, "127.0.0.1", 40002, "127.0.0.1", 7001, 3, 0, False),  # client TIME_WAIT
    (V4, 5, "127.0.0.1", 40003, "127.0.0.1", 7001, 3, 0, False),  # orphan FIN_WAIT2
    (V4, 8, "127.0.0.1", 7001, "127.0.0.1", 40003, 0, 0, True),  # its CLOSE_WAIT peer
    (V4, 2, "198.18.0.1", 40004, "198.18.0.99", 80, 1, 0, True),  # SYN into a blackhole
    (V4, 1, "127.0.0.1", 7001, "127.0.0.1", 40007, 0, 0, True),  # from a v4-mapped client
    (V6, 10, "::1", 7002, "::", 0, 0, 0, True),
    (V6, 10, "::", 7003, "::", 0, 0, 0, True),
    (V6, 1, "::ffff:127.0.0.1", 40007, "::ffff:127.0.0.1", 7001, 0, 0, True),
    (V6, 1, "::1", 40005, "::1", 7002, 0, 0, True),
    (V6, 1, "::1", 7002, "::1", 40005, 0, 0, True),
    (V6, 6, "::1", 40006, "::1", 7002, 3, 0, False),
}


def text_rows(rows: np.ndarray) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for row in rows:
        family = int(row["family"])
        width = 4 if family == V4 else 16
        local = socket.inet_ntop(family, row["src"].astype(">u4").tobytes()[:width])
        remote = socket.inet_ntop(family, row["dst"].astype(">u4").tobytes()[:width])
        out.append(
            (
                family,
                int(row["state"]),
                local,
                int(row["sport"]),
                remote,
                int(row["dport"]),
                int(row["timer"]),
                int(row["uid"]),
                int(row["inode"]) != 0,
            )
        )
    return out


def test_real_capture_parses_to_the_known_sockets() -> None:
    v4 = parse_dump(REAL_V4, REAL_V4_SEQ, want_info=True)
    v6 = parse_dump(REAL_V6, REAL_V6_SEQ)
    check_valid(v4, True)
    check_valid(v6, False)
    rows = text_rows(v4.sockets) + text_rows(v6.sockets)
    assert len(rows) == len(set(rows))
    assert set(rows) == KNOWN
    both = np.concatenate([v4.sockets, v6.sockets])
    for row, described in zip(both, rows, strict=True):
        state, timer, expires = described[1], described[6], int(row["expires_ms"])
        if timer == 3:  # TIME_WAIT / FIN_WAIT2 minisock: 60 s, read right after creation
            assert 55_000 < expires <= 60_000
            assert int(row["uid"]) == int(row["inode"]) == int(row["rqueue"]) == 0
        elif timer == 2:
            assert 590_000 < expires <= 600_000  # TCP_KEEPIDLE 600
        elif timer == 1:
            assert 0 < expires <= 1_000  # first SYN retransmission after 1 s
            assert int(row["wqueue"]) == 1  # the SYN itself
        else:
            assert expires == 0
        if state == 8:
            assert int(row["rqueue"]) == 1  # the FIN, not yet read (kernel-notes 7.1)
        if state == 10:
            assert int(row["wqueue"]) == 16  # inet_diag: a listener's backlog


def test_real_capture_info_is_present_for_full_sockets_only() -> None:
    result = parse_dump(REAL_V4, REAL_V4_SEQ, want_info=True)
    assert result.info is not None
    for index, row in enumerate(result.sockets):
        info = info_dict(result, index)
        if int(row["timer"]) == 3:  # minisocks carry no INET_DIAG_INFO
            assert set(info.values()) == {-1}
            continue
        assert all(value >= 0 for value in info.values()), info
        assert info["snd_cwnd"] > 0
        if int(row["state"]) == 1:
            assert info["rtt_us"] > 0
            assert info["snd_mss"] > 0
        if int(row["state"]) == 2:
            assert info["unacked"] == 1
            assert info["rto_us"] == 1_000_000  # initial RTO, no RTT sample yet


def test_real_capture_agrees_with_proc_text_read_just_after() -> None:
    netlink = np.concatenate(
        [parse_dump(REAL_V4, REAL_V4_SEQ).sockets, parse_dump(REAL_V6, REAL_V6_SEQ).sockets]
    )
    proc = np.concatenate(
        [
            parse_tcp_table((FIXTURES / "proc_net_tcp.txt").read_text(), V4),
            parse_tcp_table((FIXTURES / "proc_net_tcp6.txt").read_text(), V6),
        ]
    )
    by_key = {row: index for index, row in enumerate(text_rows(proc))}
    assert set(by_key) == set(text_rows(netlink))
    for row, described in zip(netlink, text_rows(netlink), strict=True):
        other = proc[by_key[described]]
        assert int(row["rqueue"]) == int(other["rqueue"])
        assert int(row["retrans"]) == int(other["retrans"])
        # /proc was read a few ms later and counts in 10 ms ticks.
        assert 0 <= int(row["expires_ms"]) - int(other["expires_ms"]) < 100


def test_every_truncation_of_a_real_dump_is_rejected() -> None:
    for data, seq in ((REAL_V4, REAL_V4_SEQ), (REAL_V6, REAL_V6_SEQ)):
        assert parse_or_reject(data, seq, want_info=True) is not None
        for cut in range(len(data)):
            assert parse_or_reject(data[:cut], seq, want_info=True) is None, cut


def test_real_dump_with_another_seq_is_all_stale() -> None:
    # Replies to an abandoned attempt are skipped, DONE included: no DONE for us.
    assert parse_or_reject(REAL_V4, REAL_V4_SEQ + 1) is None


# --- built messages: exact parsing ----------------------------------------------------

TW4 = Sock(V4, 6, "127.0.0.1", 40000, "127.0.0.1", 80, timer=3, expires=59_000)
EST6 = Sock(
    V6,
    1,
    "2001:db8::1",
    443,
    "fc00::2:3",
    51234,
    timer=2,
    retrans=3,
    expires=7_200_000,
    rqueue=5,
    wqueue=17,
    uid=1000,
    inode=123456789,
    ifindex=7,
    cookie=(1, 2),
)
LISTEN4 = Sock(V4, 10, "198.18.0.1", 8080, "0.0.0.0", 0, wqueue=4096, inode=42)


def test_ports_addresses_state_inode_of_ipv4_and_ipv6() -> None:
    data = TW4.message() + EST6.message() + LISTEN4.message() + done()
    result = parse_dump(data, SEQ)
    assert [row_key(row) for row in result.sockets] == [TW4.key(), EST6.key(), LISTEN4.key()]
    rows = text_rows(result.sockets)
    assert rows[1][:6] == (V6, 1, "2001:db8::1", 443, "fc00::2:3", 51234)
    assert int(result.sockets["inode"][1]) == 123456789
    assert int(result.sockets["sport"][2]) == 8080
    assert result.interrupted is False
    assert result.info is None


def test_several_datagrams_in_one_buffer() -> None:
    first = b"".join(
        Sock(V4, 1, "127.0.0.1", 1000 + i, "127.0.0.1", 80).message() for i in range(5)
    )
    second = b"".join(
        Sock(V4, 6, "127.0.0.1", 2000 + i, "127.0.0.1", 80, timer=3).message() for i in range(40)
    )
    third = EST6.message() + done()
    result = parse_dump(first + second + third, SEQ)
    assert len(result.sockets) == 46
    assert result.sockets["sport"].tolist() == [*range(1000, 1005), *range(2000, 2040), 443]


def test_attributes_are_skipped_and_info_found_among_them() -> None:
    attrs = (
        nla(INET_DIAG_SHUTDOWN, b"\x00")
        + nla(INET_DIAG_MARK, struct.pack("<I", 0))
        + nla(INET_DIAG_CGROUP_ID, struct.pack("<Q", 99))
        + nla(INET_DIAG_SOCKOPT, b"\x01\x00")
        + nla(INET_DIAG_INFO, TCP_INFO_BLOB)
        + nla(INET_DIAG_MEMINFO, b"\x11" * 16)
    )
    data = EST6.message(attrs) + TW4.message(nla(INET_DIAG_MARK, b"\0" * 4)) + done()
    plain = parse_dump(data, SEQ)
    assert plain.info is None
    assert [row_key(row) for row in plain.sockets] == [EST6.key(), TW4.key()]
    with_info = parse_dump(data, SEQ, want_info=True)
    assert info_dict(with_info, 0) == expected_info(TCP_INFO_LEN_618)
    assert info_dict(with_info, 1) == expected_info(None)  # no INFO attribute: all -1


@pytest.mark.parametrize("mark", [0, SEQ])  # SEQ in a payload: headers are found one by one
@pytest.mark.parametrize("layouts", [3, 12])  # 12 is more than the reader's templates
def test_info_found_in_every_layout_of_a_long_datagram(layouts: int, mark: int) -> None:
    """Sockets with different attributes before tcp_info (and different tcp_info lengths),
    interleaved with minisocks (whose payload may hold our sequence number), and decoys
    with payload bytes shaped like a tcp_info header: every row gets exactly its own
    tcp_info, in dump order."""
    lengths = [TCP_INFO_LEN_618, 104, 232]
    fake_header = struct.pack("<HH", 4 + TCP_INFO_LEN_618, INET_DIAG_INFO)
    messages, expected = [], []
    for i in range(60):
        if i % 3:
            messages.append(TW4.message(nla(INET_DIAG_MARK, struct.pack("<I", mark))))
            expected.append(expected_info(None))
            continue
        layout = (i // 3) % layouts
        length = lengths[layout % len(lengths)]
        first = nla(INET_DIAG_SHUTDOWN, b"\x00")
        if i % 9 == 3:  # where the first layout has its tcp_info header, a look-alike
            first = nla(INET_DIAG_CGROUP_ID, b"\0" * 4 + fake_header)
            length = TCP_INFO_LEN_618  # long enough to hold the look-alike's tcp_info
        before = b"".join(nla(INET_DIAG_MARK, struct.pack("<I", n)) for n in range(layout))
        info = nla(INET_DIAG_INFO, TCP_INFO_BLOB[:length])
        messages.append(EST6.message(first + before + info))
        expected.append(expected_info(length))
    result = parse_dump(b"".join(messages) + done(), SEQ, want_info=True)
    assert len(result.sockets) == len(expected)
    assert [info_dict(result, i) for i in range(len(expected))] == expected


def test_info_columns_are_the_ones_checked_here() -> None:
    assert set(INFO_DTYPE.names or ()) == set(INFO_SOURCE)


@pytest.mark.parametrize("length", [0, 1, 5, 8, 11, 12, 70, 72, 100, 124, 128, 200, 216, 232])
def test_short_tcp_info_gives_minus_one_for_missing_fields(length: int) -> None:
    data = EST6.message(nla(INET_DIAG_INFO, TCP_INFO_BLOB[:length])) + done()
    result = parse_dump(data, SEQ, want_info=True)
    assert info_dict(result, 0) == expected_info(length)


def test_control_messages() -> None:
    one = EST6.message()
    # NOOP and other unknown types are skipped; stale replies (other seq) are skipped.
    data = nlmsg(NLMSG_NOOP, b"") + nlmsg(99, b"\x01\x02\x03") + TW4.message(seq=SEQ + 1) + one
    result = parse_dump(data + done(), SEQ)
    assert [row_key(r) for r in result.sockets] == [EST6.key()]
    # Messages after DONE are not part of this dump.
    result = parse_dump(one + done() + TW4.message(), SEQ)
    assert [row_key(r) for r in result.sockets] == [EST6.key()]
    # NLM_F_DUMP_INTR on any of our messages marks the dump as interrupted.
    result = parse_dump(one + TW4.message(flags=NLM_F_MULTI | NLM_F_DUMP_INTR) + done(), SEQ)
    assert result.interrupted is True
    assert len(result.sockets) == 2


@pytest.mark.parametrize("code", [0, errno.ENOENT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP])
def test_errors_meaning_no_such_family_end_the_dump(code: int) -> None:
    result = parse_dump(EST6.message() + error(code), SEQ)
    assert len(result.sockets) == 1


def test_other_errors_are_reported() -> None:
    with pytest.raises(KernelInterfaceError):
        parse_dump(EST6.message() + error(errno.EINVAL), SEQ)
    with pytest.raises(KernelInterfaceError):
        parse_dump(nlmsg(NLMSG_ERROR, b"\x00\x00"), SEQ)  # too short for an errno
    with pytest.raises(PermissionDenied):
        parse_dump(error(errno.EPERM), SEQ)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(EST6.message(), id="no-done"),
        pytest.param(done()[:12], id="short-header"),
        pytest.param(nlmsg(SOCK_DIAG_BY_FAMILY, b"\0" * 71) + done(), id="short-diag-msg"),
        pytest.param(NLMSG_HDR.pack(8, 3, 2, SEQ, 0) + b"\0" * 8, id="nlmsg-len-below-header"),
        pytest.param(NLMSG_HDR.pack(4000, 20, 2, SEQ, 0) + b"\0" * 88, id="nlmsg-len-past-end"),
    ],
)
def test_malformed_dumps_raise_kernel_interface_error(data: bytes) -> None:
    with pytest.raises(KernelInterfaceError):
        parse_dump(data, SEQ)


def test_bad_attribute_length_is_rejected_when_info_is_wanted() -> None:
    broken = EST6.packed() + struct.pack("<HH", 200, INET_DIAG_INFO) + b"\0" * 8
    data = nlmsg(SOCK_DIAG_BY_FAMILY, broken) + done()
    with pytest.raises(KernelInterfaceError):
        parse_dump(data, SEQ, want_info=True)
    assert len(parse_dump(data, SEQ).sockets) == 1  # attributes are not read otherwise


def test_dump_larger_than_one_slice_parses() -> None:
    count = 2000  # 2000 * 88 bytes = 176000 > 131072
    data = b"".join(
        Sock(V4, 6, "127.0.0.1", 1024 + i, "127.0.0.1", 80, timer=3).message() for i in range(count)
    )
    result = parse_dump(data + done(), SEQ)
    assert len(result.sockets) == count


# --- properties: valid dumps round-trip -----------------------------------------------

U32 = st.integers(0, 2**32 - 1)
ADDRESSES = {
    V4: st.integers(0, 2**32 - 1).map(lambda n: socket.inet_ntop(V4, n.to_bytes(4, "big"))),
    V6: st.integers(0, 2**128 - 1).map(lambda n: socket.inet_ntop(V6, n.to_bytes(16, "big"))),
}
OTHER_ATTRS = st.lists(
    st.tuples(
        st.sampled_from([INET_DIAG_MEMINFO, INET_DIAG_SHUTDOWN, INET_DIAG_MARK, 21, 22, 30]),
        st.binary(max_size=24),
    ),
    max_size=4,
)


@st.composite
def socks(draw: st.DrawFn) -> Sock:
    family = draw(st.sampled_from([V4, V6]))
    return Sock(
        family,
        draw(st.integers(1, 13)),
        draw(ADDRESSES[family]),
        draw(st.integers(0, 65535)),
        draw(ADDRESSES[family]),
        draw(st.integers(0, 65535)),
        timer=draw(st.integers(0, 4)),
        retrans=draw(st.integers(0, 255)),
        expires=draw(U32),
        rqueue=draw(U32),
        wqueue=draw(U32),
        uid=draw(U32),
        inode=draw(U32),
        ifindex=draw(U32),
        cookie=(draw(U32), draw(U32)),
    )


@dataclass(frozen=True)
class BuiltDump:
    data: bytes
    socks: list[Sock]
    info_lengths: list[int | None]
    interrupted: bool


@st.composite
def valid_dumps(draw: st.DrawFn, max_socks: int = 25) -> BuiltDump:
    chosen = draw(st.lists(socks(), max_size=max_socks))
    parts: list[bytes] = []
    lengths: list[int | None] = []
    interrupted = False
    for sock in chosen:
        if draw(st.booleans()):  # a stale reply from an earlier attempt, to be skipped
            parts.append(draw(socks()).message(seq=SEQ + draw(st.integers(1, 5))))
        attrs = [nla(kind, payload) for kind, payload in draw(OTHER_ATTRS)]
        length = draw(st.none() | st.integers(0, TCP_INFO_LEN_618))
        if length is not None:
            attrs.insert(
                draw(st.integers(0, len(attrs))), nla(INET_DIAG_INFO, TCP_INFO_BLOB[:length])
            )
        flags = NLM_F_MULTI | (NLM_F_DUMP_INTR if draw(st.integers(0, 9)) == 0 else 0)
        interrupted |= bool(flags & NLM_F_DUMP_INTR)
        parts.append(sock.message(b"".join(attrs), flags=flags))
        lengths.append(length)
    parts.append(done() if draw(st.booleans()) else error(errno.ENOENT))
    return BuiltDump(b"".join(parts), chosen, lengths, interrupted)


@FUZZ
@given(valid_dumps(), st.booleans())
def test_valid_dumps_round_trip(dump: BuiltDump, want_info: bool) -> None:
    result = parse_or_reject(dump.data, SEQ, want_info=want_info)
    assert result is not None
    assert [row_key(row) for row in result.sockets] == [s.key() for s in dump.socks]
    assert result.interrupted is dump.interrupted
    if want_info:
        for index, length in enumerate(dump.info_lengths):
            assert info_dict(result, index) == expected_info(length)


# --- properties: garbage never crashes ------------------------------------------------


@FUZZ
@given(st.binary(max_size=4096), st.sampled_from([0, SEQ, 2**32 - 1]), st.booleans())
@example(b"\x10\x00\x00\x00\x03\x00\x02\x00\x4d\x00\x00\x00\x00\x00\x00\x00", SEQ, False)
@example(b"\x14\x00\x00\x00\x02\x00\x00\x00\x4d\x00\x00\x00\x00\x00\x00\x00\xff", SEQ, True)
def test_random_bytes(data: bytes, seq: int, want_info: bool) -> None:
    parse_or_reject(data, seq, want_info=want_info)


INTERESTING_U32 = st.sampled_from(
    [0, 1, 3, 4, 15, 16, 17, 19, 20, 71, 72, 87, 88, 89, 92, 96, 4096, 2**31, 2**32 - 1]
)
RAW_MESSAGES = st.lists(
    st.tuples(
        INTERESTING_U32 | U32,  # nlmsg_len, often wrong
        st.sampled_from([NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, SOCK_DIAG_BY_FAMILY, 0, 65535]),
        st.sampled_from([0, NLM_F_MULTI, NLM_F_DUMP_INTR, 0xFFFF]),
        st.sampled_from([SEQ, SEQ + 1]),
        st.binary(max_size=400),
    ),
    max_size=12,
)


@FUZZ
@given(RAW_MESSAGES, st.booleans())
def test_random_message_headers(
    messages: list[tuple[int, int, int, int, bytes]], want: bool
) -> None:
    data = b"".join(
        NLMSG_HDR.pack(length, kind, flags, seq, 0) + payload
        for length, kind, flags, seq, payload in messages
    )
    parse_or_reject(data, SEQ, want_info=want)


MUTATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
        st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
        st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 16)),
        st.tuples(st.just("word"), st.integers(0, 2_500), INTERESTING_U32 | U32),
        st.tuples(st.just("half"), st.integers(0, 5_000), st.integers(0, 65535)),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, value in mutations:
        at = where % (len(buf) + 1)
        if op == "set" and buf:
            buf[where % len(buf)] = value
        elif op == "cut":
            del buf[at:]
        elif op == "insert":
            buf[at:at] = bytes([value])
        elif op == "delete":
            del buf[at : at + value]
        elif op == "word" and len(buf) >= 4:
            pos = (4 * where) % (len(buf) - 3) & ~3
            buf[pos : pos + 4] = struct.pack("<I", value)
        elif op == "half" and len(buf) >= 2:
            pos = (2 * where) % (len(buf) - 1) & ~1
            buf[pos : pos + 2] = struct.pack("<H", value)
    return bytes(buf)


@FUZZ
@given(valid_dumps(max_socks=8), MUTATIONS, st.booleans())
def test_mutated_valid_dumps(
    dump: BuiltDump, mutations: list[tuple[str, int, int]], want: bool
) -> None:
    parse_or_reject(mutate(dump.data, mutations), SEQ, want_info=want)


@FUZZ
@given(MUTATIONS, st.booleans())
def test_mutated_real_dumps(mutations: list[tuple[str, int, int]], want_info: bool) -> None:
    parse_or_reject(mutate(REAL_V4, mutations), REAL_V4_SEQ, want_info=want_info)
    parse_or_reject(mutate(REAL_V6, mutations), REAL_V6_SEQ, want_info=want_info)
