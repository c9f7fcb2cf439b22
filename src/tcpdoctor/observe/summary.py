"""Aggregates over a Snapshot: counts by state, busiest peers, ephemeral-port use.

Everything is grouped with numpy on the raw columns; strings are made only for the few
groups that are reported.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tcpdoctor.kernel.constants import DEFAULT_PORT_RANGE
from tcpdoctor.kernel.states import CONNECTED_STATES, TcpState
from tcpdoctor.observe._records import pick
from tcpdoctor.observe.addresses import format_column
from tcpdoctor.observe.snapshot import Snapshot

_CONNECTED = np.array(sorted(int(s) for s in CONNECTED_STATES), dtype=np.uint8)


class Direction(enum.Enum):
    """Who opened the connections of a peer group, judged by the local port."""

    OUTBOUND = "out"  # we connect()ed to the peer's service port
    INBOUND = "in"  # the peer connected to one of our listening ports

    @property
    def label(self) -> str:
        return self.value


class PeerCount(NamedTuple):
    """Connections with one peer address on one service port, in one direction."""

    peer_address: str
    service_port: int  # the listening side's port: the peer's (out) or ours (in)
    direction: Direction
    total: int
    by_state: dict[TcpState, int]


class PortUse(NamedTuple):
    """connect()-side sockets sharing one (local address, remote address, remote port)."""

    local_address: str
    remote_address: str
    remote_port: int
    in_use: int  # ports of the ephemeral range held by this destination
    time_wait: int  # of which in TIME_WAIT
    capacity: int  # usable ports for this destination

    @property
    def share(self) -> float:
        return self.in_use / self.capacity if self.capacity else 1.0


class Summary(NamedTuple):
    total: int
    by_state: dict[TcpState, int]
    top_peers: tuple[PeerCount, ...]
    port_use: tuple[PortUse, ...]
    port_range: tuple[int, int]


def summarize(
    snapshot: Snapshot,
    *,
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
    capacity: int | None = None,
    top: int = 10,
) -> Summary:
    """capacity defaults to the size of port_range (reserved ports are the caller's job)."""
    usable = capacity if capacity is not None else port_range[1] - port_range[0] + 1
    return Summary(
        total=len(snapshot),
        by_state=snapshot.count_by_state(),
        top_peers=top_peers(snapshot, top),
        port_use=port_use(snapshot, port_range, usable, top),
        port_range=port_range,
    )


class RowGroups(NamedTuple):
    first: np.ndarray  # one row of each group
    group: np.ndarray  # the group id of every row
    order: np.ndarray  # every row, group after group (group 0 first)


def group_rows(columns: dict[str, np.ndarray]) -> RowGroups:
    """Rows grouped on the values of `columns` (equal values in every column: one group).

    Rows are grouped on a 64-bit hash of their key, which sorts far faster than the
    key bytes; a hash collision is detected (two different keys in one group) and then
    the exact byte comparison is used instead.
    """
    flat = [c.reshape(len(c), int(np.prod(c.shape[1:]))) for c in columns.values()]
    # A word equal in every row cannot split groups: leave it out (IPv4 rows leave
    # three address words at zero, and most hosts have one local address).
    varying = [w for col in flat for w in col.T if len(w) and w.min() != w.max()]
    rows = len(flat[0])
    if not varying:
        every = np.arange(rows, dtype=np.intp)
        return RowGroups(every[:1], np.zeros(rows, dtype=np.intp), every)
    words = np.stack([w.astype(np.uint64) for w in varying], axis=1)
    digest = np.zeros(len(words), dtype=np.uint64)
    for column in words.T:
        digest = digest * _HASH_MULTIPLIER + column + np.uint64(1)
    # Any row of a group can stand for it, so the sort need not be stable (quicksort).
    order = np.argsort(digest)
    found = _runs(digest[order], order)
    if np.array_equal(words, words[found.first[found.group]]):
        return found
    return _group_exact(words)


_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd


def _group_exact(words: np.ndarray) -> RowGroups:
    keys = np.ascontiguousarray(words).view(np.dtype((np.void, words.shape[1] * 8))).reshape(-1)
    order = np.argsort(keys, kind="stable")
    return _runs(keys[order], order)


def _runs(ordered: np.ndarray, order: np.ndarray) -> RowGroups:
    """Groups from keys already sorted (`ordered` = keys[order])."""
    starts = np.ones(len(ordered), dtype=np.bool_)
    starts[1:] = ordered[1:] != ordered[:-1]
    group = np.empty(len(order), dtype=np.intp)
    group[order] = np.cumsum(starts) - 1
    return RowGroups(order[starts], group, order)


def _by_state(states: np.ndarray) -> dict[TcpState, int]:
    counts = np.bincount(states, minlength=len(TcpState) + 1)
    return {TcpState(s): int(n) for s, n in enumerate(counts) if n}


def top_peers(snapshot: Snapshot, top: int) -> tuple[PeerCount, ...]:
    """Busiest peers. A socket whose local port is a listening port is inbound, and is
    grouped on that port; anything else is outbound, grouped on the remote port, so the
    thousands of ephemeral ports on the client side collapse into one row."""
    connected = np.isin(snapshot.states, _CONNECTED)
    sockets = pick(snapshot.sockets, connected)
    if not len(sockets):
        return ()
    inbound = np.isin(sockets["sport"], listening_ports(snapshot))
    service = np.where(inbound, sockets["sport"], sockets["dport"]).astype(np.uint16)
    first, group, _ = group_rows(
        {"family": sockets["family"], "dst": sockets["dst"], "port": service, "in": inbound}
    )
    totals = np.bincount(group)
    order = np.argsort(-totals, kind="stable")[:top]
    heads = first[order]
    addresses = format_column(sockets["family"][heads], sockets["dst"][heads])
    return tuple(
        PeerCount(
            peer_address=addresses[rank],
            service_port=int(service[heads[rank]]),
            direction=Direction.INBOUND if inbound[heads[rank]] else Direction.OUTBOUND,
            total=int(totals[gid]),
            by_state=_by_state(sockets["state"][group == gid]),
        )
        for rank, gid in enumerate(order.tolist())
    )


def listening_ports(snapshot: Snapshot) -> np.ndarray:
    listeners = snapshot.sockets[snapshot.states == TcpState.LISTEN]
    # Few listeners; a set avoids np.unique's plain path, which imports numpy.ma (~15 ms).
    return np.array(sorted(set(listeners["sport"].tolist())), dtype=np.int64)


def client_mask(snapshot: Snapshot, port_range: tuple[int, int]) -> np.ndarray:
    """Rows that look like the connect() side: ephemeral local port, not a listening port."""
    sockets = snapshot.sockets
    sport = sockets["sport"].astype(np.int64)
    mask = np.isin(sockets["state"], _CONNECTED)
    mask &= (sport >= port_range[0]) & (sport <= port_range[1])
    mask &= ~np.isin(sport, listening_ports(snapshot))
    return mask


@dataclass(frozen=True, eq=False)
class ClientGroups:
    """connect()-side sockets grouped by (family, local address, remote address, remote
    port): the unit of ephemeral-port capacity. Computed once per snapshot."""

    rows: np.ndarray  # indexes into snapshot.sockets, group after group
    starts: np.ndarray  # where each group starts in `rows`
    sizes: np.ndarray  # sockets per group
    order: np.ndarray  # group ids, most sockets first

    def members(self, group: int) -> np.ndarray:
        start = int(self.starts[group])
        return self.rows[start : start + int(self.sizes[group])]


def client_groups(snapshot: Snapshot, port_range: tuple[int, int]) -> ClientGroups:
    return snapshot.memo(
        ("client_groups", port_range), lambda: _client_groups(snapshot, port_range)
    )


def _client_groups(snapshot: Snapshot, port_range: tuple[int, int]) -> ClientGroups:
    index = np.flatnonzero(client_mask(snapshot, port_range))
    if not len(index):
        empty = np.zeros(0, dtype=np.intp)
        return ClientGroups(empty, empty, empty, empty)
    sockets = pick(snapshot.sockets, index)
    _, group, by_group = group_rows({f: sockets[f] for f in ("family", "src", "dst", "dport")})
    sizes = np.bincount(group)
    return ClientGroups(
        rows=index[by_group],
        starts=np.cumsum(sizes) - sizes,
        sizes=sizes,
        order=np.argsort(-sizes, kind="stable"),
    )


def port_use(
    snapshot: Snapshot, port_range: tuple[int, int], capacity: int, top: int
) -> tuple[PortUse, ...]:
    groups = client_groups(snapshot, port_range)
    chosen = groups.order[:top].tolist()
    if not chosen:
        return ()
    heads = snapshot.sockets[groups.rows[groups.starts[chosen]]]
    local = format_column(heads["family"], heads["src"])
    remote = format_column(heads["family"], heads["dst"])
    states = snapshot.sockets["state"]
    return tuple(
        PortUse(
            local_address=local[rank],
            remote_address=remote[rank],
            remote_port=int(heads["dport"][rank]),
            in_use=int(groups.sizes[gid]),
            time_wait=int(np.count_nonzero(states[groups.members(gid)] == TcpState.TIME_WAIT)),
            capacity=capacity,
        )
        for rank, gid in enumerate(chosen)
    )
