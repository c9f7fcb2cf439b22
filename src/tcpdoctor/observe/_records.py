"""The columnar socket record: one row per socket, laid out like the kernel's inet_diag_msg.

Keeping the kernel's own 72-byte layout means the netlink reader copies rows straight out
of the receive buffer with no per-field conversion; the /proc reader fills the same dtype.
Source: include/uapi/linux/inet_diag.h (struct inet_diag_msg, struct inet_diag_sockid).
"""

from __future__ import annotations

from typing import Final

import numpy as np

# struct inet_diag_msg: ports and addresses are in network byte order, the rest native.
SOCKET_DTYPE: Final = np.dtype(
    [
        ("family", "u1"),
        ("state", "u1"),
        ("timer", "u1"),
        ("retrans", "u1"),
        ("sport", ">u2"),
        ("dport", ">u2"),
        ("src", ">u4", (4,)),  # IPv4 uses word 0
        ("dst", ">u4", (4,)),
        ("ifindex", "<u4"),
        ("cookie", "<u4", (2,)),
        ("expires_ms", "<u4"),
        ("rqueue", "<u4"),
        ("wqueue", "<u4"),
        ("uid", "<u4"),
        ("inode", "<u4"),
    ]
)
assert SOCKET_DTYPE.itemsize == 72

# A subset of struct tcp_info (include/uapi/linux/tcp.h), by byte offset. The kernel's
# struct grows over releases (232 bytes in 6.1 uapi, 280 on 6.18), so each field is taken
# only when the attribute is long enough to hold it; shorter ones read as -1.
TCP_INFO_FIELDS: Final[tuple[tuple[str, int, str], ...]] = (
    ("ca_state", 1, "u1"),
    ("retransmits", 2, "u1"),
    ("probes", 3, "u1"),
    ("backoff", 4, "u1"),
    ("options", 5, "u1"),
    ("rto_us", 8, "<u4"),
    ("ato_us", 12, "<u4"),
    ("snd_mss", 16, "<u4"),
    ("unacked", 24, "<u4"),
    ("lost", 32, "<u4"),
    ("last_data_sent_ms", 44, "<u4"),
    ("last_ack_sent_ms", 48, "<u4"),
    ("last_data_recv_ms", 52, "<u4"),
    ("last_ack_recv_ms", 56, "<u4"),
    ("rtt_us", 68, "<u4"),
    ("rttvar_us", 72, "<u4"),
    ("snd_cwnd", 80, "<u4"),
    ("total_retrans", 100, "<u4"),
    ("bytes_acked", 120, "<u8"),
    ("bytes_received", 128, "<u8"),
    ("segs_out", 136, "<u4"),
    ("segs_in", 140, "<u4"),
    ("min_rtt_us", 148, "<u4"),
    ("bytes_retrans", 208, "<u8"),
)

# Stored signed so that -1 can mean "absent": u8 kernel fields as int64, the narrower ones
# as int32 (half the memory per socket); a u32 value above 2^31 - 1 (e.g. a socket idle
# for 25 days, or min_rtt's "no sample" ~0U) is stored clamped at that maximum.
INFO_DTYPE: Final = np.dtype(
    [(name, "<i8" if np.dtype(kind).itemsize == 8 else "<i4") for name, _, kind in TCP_INFO_FIELDS]
)

# tcpi_options bits (include/uapi/linux/tcp.h).
TCPI_OPT_TIMESTAMPS: Final = 1


def empty_info(count: int) -> np.ndarray:
    """`count` rows of tcp_info with every field absent (-1: all bits set, whatever the width)."""
    return np.full(count * INFO_DTYPE.itemsize, 0xFF, dtype=np.uint8).view(INFO_DTYPE)


def pick(rows: np.ndarray, which: np.ndarray) -> np.ndarray:
    """rows[which] for a mask or an index array, gathered as opaque items: numpy copies a
    structured dtype field by field, five to ten times slower at 100k rows."""
    items = np.dtype((np.void, rows.dtype.itemsize))
    picked: np.ndarray = np.ascontiguousarray(rows).view(items)[which].view(rows.dtype)
    return picked
