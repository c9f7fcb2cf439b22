"""The fallback: /proc/net/tcp and /proc/net/tcp6 parsed into the same rows as netlink.

Format: tcp4_seq_show() / get_tcp4_sock() / get_timewait4_sock() / get_openreq4() in
net/ipv4/tcp_ipv4.c and their tcp6 twins. Addresses are the raw network-order words
printed as host-order hex; the timer column is in USER_HZ ticks.
"""

from __future__ import annotations

import os
import socket
import sys

import numpy as np

from tcpdoctor.errors import KernelInterfaceError, PermissionDenied
from tcpdoctor.kernel.constants import USER_HZ
from tcpdoctor.kernel.states import TimerCode
from tcpdoctor.observe._records import SOCKET_DTYPE

_MS_PER_TICK = 1000 // USER_HZ
_PROBE_TIMERS = (TimerCode.KEEPALIVE, TimerCode.PROBE0)  # idiag_retrans shows probes_out
_MIN_FIELDS = 10  # sl local remote st queues timer retrnsmt uid timeout inode


def read_tcp(proc_net: str, families: tuple[int, ...], states_mask: int) -> np.ndarray:
    """Rows for every socket in <proc_net>/tcp{,6} whose state bit is in states_mask."""
    parts = []
    for family in families:
        name = "tcp" if family == socket.AF_INET else "tcp6"
        text = _read(os.path.join(proc_net, name), missing_ok=family == socket.AF_INET6)
        parts.append(parse_tcp_table(text, family))
    rows = np.concatenate(parts, dtype=SOCKET_DTYPE) if parts else np.zeros(0, SOCKET_DTYPE)
    keep = ((np.uint32(1) << rows["state"].astype(np.uint32)) & np.uint32(states_mask)) != 0
    return np.asarray(rows[keep])


def _read(path: str, *, missing_ok: bool) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        if missing_ok:
            return ""
        raise KernelInterfaceError(f"{path} is missing (no TCP in this kernel?)") from None
    except PermissionError:
        raise PermissionDenied(f"not allowed to read {path}") from None
    except OSError as err:
        raise KernelInterfaceError(f"cannot read {path}: {err.strerror}") from None


def parse_tcp_table(text: str, family: int) -> np.ndarray:
    """Parse the text of /proc/net/tcp (AF_INET) or tcp6 (AF_INET6)."""
    lines = text.splitlines()
    if lines and not lines[0].lstrip().startswith("sl"):
        raise KernelInterfaceError("unexpected /proc/net/tcp header")
    body = [line for line in lines[1:] if line.strip()]
    rows = np.zeros(len(body), dtype=SOCKET_DTYPE)
    words = 1 if family == socket.AF_INET else 4
    for index, line in enumerate(body):
        try:
            _fill(rows[index], line.split(), family, words)
        except (ValueError, IndexError, OverflowError) as err:
            raise KernelInterfaceError(f"unparsable /proc/net/tcp line {index + 1}") from err
    return rows


def _fill(row: np.void, fields: list[str], family: int, words: int) -> None:
    if len(fields) < _MIN_FIELDS:
        raise ValueError("short line")
    local_addr, local_port = _endpoint(fields[1], words)
    remote_addr, remote_port = _endpoint(fields[2], words)
    tx_queue, rx_queue = (int(part, 16) for part in _pair(fields[4]))
    timer_text, when_text = _pair(fields[5])
    timer = int(timer_text, 16)
    row["family"] = family
    row["state"] = _byte(int(fields[3], 16))
    row["timer"] = _byte(timer)
    row["sport"], row["dport"] = local_port, remote_port
    row["src"][:words] = local_addr
    row["dst"][:words] = remote_addr
    row["expires_ms"] = int(when_text, 16) * _MS_PER_TICK if timer else 0
    retransmits, probes = int(fields[6], 16), int(fields[8])
    row["retrans"] = _byte(probes if timer in _PROBE_TIMERS else retransmits if timer else 0)
    row["rqueue"], row["wqueue"] = rx_queue, tx_queue
    row["uid"], row["inode"] = int(fields[7]), int(fields[9])


def _pair(text: str) -> tuple[str, str]:
    first, sep, second = text.partition(":")
    if not sep:
        raise ValueError("missing ':'")
    return first, second


def _endpoint(text: str, words: int) -> tuple[list[int], int]:
    address, port = _pair(text)
    if len(address) != 8 * words or len(port) != 4:
        raise ValueError("bad endpoint width")
    # Each 8-digit group is a network-order word printed as a host-order integer.
    values = [
        int.from_bytes(int(address[8 * i : 8 * i + 8], 16).to_bytes(4, sys.byteorder), "big")
        for i in range(words)
    ]
    return values, int(port, 16)


def _byte(value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError("field out of range")
    return value
