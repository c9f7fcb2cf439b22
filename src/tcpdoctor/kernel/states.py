"""TCP states and timer codes as the kernel numbers them.

Source: include/net/tcp_states.h (states), net/ipv4/inet_diag.c inet_sk_diag_fill() and
net/ipv4/tcp_ipv4.c get_tcp4_sock() (timer codes).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class TcpState(IntEnum):
    """enum in include/net/tcp_states.h. Names are the contract used in JSON and tables."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
    # Request sockets live in the ehash as TCP_NEW_SYN_RECV, but inet_req_diag_fill() and
    # get_openreq4() report them as TCP_SYN_RECV (3); we never see 12 from the kernel.
    NEW_SYN_RECV = 12
    # inet_diag pseudo-state for bound, non-listening sockets (6.7+); only when asked for.
    BOUND_INACTIVE = 13

    @property
    def label(self) -> str:
        """The name printed in tables and JSON."""
        return "SYN_RECV" if self is TcpState.NEW_SYN_RECV else self.name

    @classmethod
    def parse(cls, text: str) -> TcpState:
        """Accept kernel names and the spellings ss and netstat use (time-wait, FIN-WAIT-2)."""
        key = text.strip().upper().replace("-", "_")
        key = _ALIASES.get(key, key)
        try:
            return cls[key]
        except KeyError:
            raise ValueError(f"unknown TCP state {text!r}") from None


_ALIASES = {
    "FIN_WAIT_1": "FIN_WAIT1",
    "FIN_WAIT_2": "FIN_WAIT2",
    "ESTAB": "ESTABLISHED",
    "SYN_RECEIVED": "SYN_RECV",
    "CLOSED": "CLOSE",
    "LISTENING": "LISTEN",
    "UNCONN": "CLOSE",
}

# States a dump returns by default: everything real (TCPF_ALL in ss is 0xfff minus
# NEW_SYN_RECV's own bit; the SYN_RECV bit also selects request sockets).
REPORTED_STATES: tuple[TcpState, ...] = tuple(s for s in TcpState if 1 <= s <= 11)

# Sockets whose 4-tuple holds a local port for connect() purposes (everything but LISTEN,
# CLOSE). Used when counting ephemeral port use.
CONNECTED_STATES: frozenset[TcpState] = frozenset(REPORTED_STATES) - {
    TcpState.LISTEN,
    TcpState.CLOSE,
}

# States on the way down after one side called close() or shutdown().
CLOSING_STATES: frozenset[TcpState] = frozenset(
    {
        TcpState.FIN_WAIT1,
        TcpState.FIN_WAIT2,
        TcpState.TIME_WAIT,
        TcpState.CLOSE_WAIT,
        TcpState.LAST_ACK,
        TcpState.CLOSING,
    }
)


def state_mask(states: Iterable[TcpState]) -> int:
    """idiag_states bitmask: TCPF_x = 1 << x (tcp_states.h)."""
    mask = 0
    for state in states:
        mask |= 1 << int(state)
    return mask


ALL_STATES_MASK = state_mask(REPORTED_STATES)


class TimerCode(IntEnum):
    """idiag_timer and the /proc/net/tcp "tr" column."""

    NONE = 0
    RETRANSMIT = 1  # ICSK_TIME_RETRANS / REO_TIMEOUT / LOSS_PROBE; any request socket
    KEEPALIVE = 2  # sk_timer: keepalive, and the full-socket FIN_WAIT2 timer when F > 60 s
    TIMEWAIT = 3  # TIME_WAIT / FIN_WAIT2 minisock timer
    PROBE0 = 4  # zero-window probe

    @property
    def label(self) -> str:
        return _TIMER_LABELS[self]


_TIMER_LABELS = {
    TimerCode.NONE: "off",
    TimerCode.RETRANSMIT: "on",
    TimerCode.KEEPALIVE: "keepalive",
    TimerCode.TIMEWAIT: "timewait",
    TimerCode.PROBE0: "persist",
}


def timer_label(code: int) -> str:
    """Label for a raw timer code; unknown codes print as their number."""
    try:
        return TimerCode(code).label
    except ValueError:
        return str(code)
