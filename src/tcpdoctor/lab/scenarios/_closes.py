"""Who closed each connection first, read from a capture, and the TIME_WAITs that follow.

The kernel rule (tcp_time_wait() from tcp_fin() / tcp_rcv_state_process(), notes 1.2): the
side that sends the first FIN (the active closer) ends in TIME_WAIT for TCP_TIMEWAIT_LEN
once the peer's FIN arrives; the passive closer goes CLOSE_WAIT -> LAST_ACK -> gone and
keeps nothing. A connection ended by an RST leaves no TIME_WAIT on either side. So where
TIME_WAIT lands is a fact of the capture, and how many TIME_WAITs a host should show at a
given moment follows from it. Pure functions over pcap Segments; no kernel access here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tcpdoctor.kernel.constants import TCP_TIMEWAIT_LEN
from tcpdoctor.lab.pcap import Segment, TcpFlags

Endpoint = tuple[str, int]


class Closer(enum.Enum):
    CLIENT = "client"  # the side that sent the SYN sent the first FIN
    SERVER = "server"
    RESET = "reset"  # ended by an RST before any FIN
    OPEN = "open"  # neither FIN nor RST seen (still open when the capture stopped)

    @property
    def label(self) -> str:
        return self.value


@dataclass(frozen=True)
class Connection:
    """One incarnation of a 4-tuple, oriented from the side that sent the SYN."""

    client: Endpoint
    server: Endpoint
    syn_at: float  # first SYN (capture clock: CLOCK_REALTIME seconds)
    closer: Closer
    first_fin_at: float | None
    second_fin_at: float | None  # the passive side's FIN: the active closer's TIME_WAIT starts

    @property
    def time_wait_since(self) -> float | None:
        """When the active closer entered TIME_WAIT (None: it never did)."""
        if self.closer in (Closer.CLIENT, Closer.SERVER):
            return self.second_fin_at
        return None


@dataclass
class _Open:
    client: Endpoint
    server: Endpoint
    syn_at: float
    closer: Closer = Closer.OPEN
    first_fin_at: float | None = None
    second_fin_at: float | None = None
    ended: bool = False  # an RST, or FINs from both sides

    def freeze(self) -> Connection:
        return Connection(
            self.client,
            self.server,
            self.syn_at,
            self.closer,
            self.first_fin_at,
            self.second_fin_at,
        )


def _is_syn(segment: Segment) -> bool:
    return segment.flags & (TcpFlags.SYN | TcpFlags.ACK) == TcpFlags.SYN


def connections(segments: Iterable[Segment]) -> list[Connection]:
    """Every connection whose SYN was captured, in order of their SYNs. A retransmitted
    SYN belongs to the same connection; a SYN after the 4-tuple was closed starts a new
    one (port reuse). Segments of connections whose SYN was not seen are ignored."""
    current: dict[frozenset[Endpoint], _Open] = {}
    done: list[_Open] = []
    for segment in segments:
        src, dst = (segment.src, segment.sport), (segment.dst, segment.dport)
        key = frozenset((src, dst))
        conn = current.get(key)
        if _is_syn(segment):
            if conn is not None and not (conn.ended or conn.first_fin_at is not None):
                continue  # a retransmitted SYN
            if conn is not None:
                done.append(conn)
            current[key] = _Open(src, dst, segment.t)
            continue
        if conn is not None and not conn.ended:
            _track_close(conn, segment, src)
    done.extend(current.values())
    return [c.freeze() for c in sorted(done, key=lambda c: c.syn_at)]


def _track_close(conn: _Open, segment: Segment, sender: Endpoint) -> None:
    side = Closer.CLIENT if sender == conn.client else Closer.SERVER
    if segment.flags & TcpFlags.RST:
        if conn.first_fin_at is None:
            conn.closer = Closer.RESET
        conn.ended = True
    elif segment.flags & TcpFlags.FIN:
        if conn.first_fin_at is None:
            conn.closer, conn.first_fin_at = side, segment.t
        elif side is not conn.closer and conn.second_fin_at is None:
            conn.second_fin_at = segment.t
            conn.ended = True


def to_server(conns: Iterable[Connection], address: str) -> list[Connection]:
    """The connections made to one server address (one variant of a scenario)."""
    return [c for c in conns if c.server[0] == address]


def closers(conns: Iterable[Connection]) -> dict[str, int]:
    """How many connections each side closed first: {"client": n, "server": m, ...}."""
    counts: dict[str, int] = {}
    for conn in conns:
        counts[conn.closer.label] = counts.get(conn.closer.label, 0) + 1
    return dict(sorted(counts.items()))


def closer_summary(conns: Sequence[Connection]) -> str | None:
    """One side's name when every connection was closed first by it, else "mixed: ..."."""
    counts = closers(conns)
    if not counts:
        return None
    if len(counts) == 1:
        return next(iter(counts))
    return "mixed: " + ", ".join(f"{n} {side}" for side, n in counts.items())


@dataclass(frozen=True)
class TimeWaitCount:
    """TIME_WAIT sockets a side should hold at one moment, as a range."""

    low: int  # entered less than TCP_TIMEWAIT_LEN ago: certainly still there
    high: int  # also those the timer wheel may keep up to `slack` longer

    @property
    def exact(self) -> int | None:
        return self.low if self.low == self.high else None


def time_wait_expected(
    conns: Iterable[Connection],
    side: Closer,
    at: float,
    *,
    slack: float = 0.0,
    max_buckets: int | None = None,
) -> TimeWaitCount:
    """TIME_WAITs `side` holds at time `at` (capture clock): one per connection it closed
    first whose TIME_WAIT began within TCP_TIMEWAIT_LEN (plus up to `slack` of timer
    lateness) before `at`. A 4-tuple holds one socket at most: a later connection on the
    same 4-tuple took the earlier one's TIME_WAIT over (a SYN accepted by the TIME_WAIT,
    notes 1.3, or tcp_tw_reuse), so only each 4-tuple's latest connection counts.
    tcp_max_tw_buckets caps the count: past it the kernel destroys the socket instead
    (TCPTimeWaitOverflow, notes 1.4)."""
    latest: dict[tuple[Endpoint, Endpoint], Connection] = {}
    for conn in conns:
        if conn.syn_at <= at:
            latest[(conn.client, conn.server)] = conn  # conns come in SYN order
    sure = maybe = 0
    for conn in latest.values():
        since = conn.time_wait_since
        if conn.closer is not side or since is None or since > at:
            continue
        age = at - since
        if age < TCP_TIMEWAIT_LEN:
            sure += 1
        elif age < TCP_TIMEWAIT_LEN + slack:
            maybe += 1
    low, high = sure, sure + maybe
    if max_buckets is not None:
        low, high = min(low, max_buckets), min(high, max_buckets)
    return TimeWaitCount(low, high)


__all__ = [
    "Closer",
    "Connection",
    "TimeWaitCount",
    "closer_summary",
    "closers",
    "connections",
    "time_wait_expected",
    "to_server",
]
