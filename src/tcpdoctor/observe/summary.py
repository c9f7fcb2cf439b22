"""Aggregates over a Snapshot: counts by state, busiest remote endpoints, port use.

Everything is grouped with numpy on the raw columns; strings are made only for the few
groups that are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tcpdoctor.kernel.constants import DEFAULT_PORT_RANGE
from tcpdoctor.kernel.states import CONNECTED_STATES, TcpState
from tcpdoctor.observe.addresses import format_column
from tcpdoctor.observe.snapshot import Snapshot

_CONNECTED = np.array(sorted(int(s) for s in CONNECTED_STATES), dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class EndpointCount:
    remote_address: str
    remote_port: int
    total: int
    by_state: dict[TcpState, int]


@dataclass(frozen=True, slots=True)
class PortUse:
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


@dataclass(frozen=True, slots=True)
class Summary:
    total: int
    by_state: dict[TcpState, int]
    top_remote: tuple[EndpointCount, ...]
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
        top_remote=top_remote(snapshot, top),
        port_use=port_use(snapshot, port_range, usable, top),
        port_range=port_range,
    )


def _group(sockets: np.ndarray, fields: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(index of one row per group, group id of every row) for rows keyed on `fields`."""
    # Copy the key columns into a packed record: a multi-field view would still span
    # the other columns' bytes, and those must not take part in the comparison.
    packed = np.empty(len(sockets), dtype=[(f, sockets.dtype[f]) for f in fields])
    for field in fields:
        packed[field] = sockets[field]
    keys = packed.view(np.dtype((np.void, packed.dtype.itemsize))).reshape(-1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def top_remote(snapshot: Snapshot, top: int) -> tuple[EndpointCount, ...]:
    sockets = snapshot.sockets[np.isin(snapshot.states, _CONNECTED)]
    if not len(sockets):
        return ()
    first, group = _group(sockets, ("family", "dst", "dport"))
    totals = np.bincount(group)
    order = np.argsort(-totals, kind="stable")[:top]
    heads = sockets[first[order]]
    addresses = format_column(heads["family"], heads["dst"])
    result = []
    for rank, gid in enumerate(order.tolist()):
        states = np.bincount(sockets["state"][group == gid], minlength=len(TcpState) + 1)
        by_state = {TcpState(s): int(n) for s, n in enumerate(states) if n}
        result.append(
            EndpointCount(addresses[rank], int(heads["dport"][rank]), int(totals[gid]), by_state)
        )
    return tuple(result)


def listening_ports(snapshot: Snapshot) -> np.ndarray:
    listeners = snapshot.sockets[snapshot.states == TcpState.LISTEN]
    return np.unique(listeners["sport"].astype(np.int64))


def client_mask(snapshot: Snapshot, port_range: tuple[int, int]) -> np.ndarray:
    """Rows that look like the connect() side: ephemeral local port, not a listening port."""
    sockets = snapshot.sockets
    sport = sockets["sport"].astype(np.int64)
    mask = np.isin(sockets["state"], _CONNECTED)
    mask &= (sport >= port_range[0]) & (sport <= port_range[1])
    mask &= ~np.isin(sport, listening_ports(snapshot))
    return mask


def port_use(
    snapshot: Snapshot, port_range: tuple[int, int], capacity: int, top: int
) -> tuple[PortUse, ...]:
    sockets = snapshot.sockets[client_mask(snapshot, port_range)]
    if not len(sockets):
        return ()
    first, group = _group(sockets, ("family", "src", "dst", "dport"))
    totals = np.bincount(group)
    waits = np.bincount(group, weights=sockets["state"] == TcpState.TIME_WAIT)
    order = np.argsort(-totals, kind="stable")[:top]
    heads = sockets[first[order]]
    local = format_column(heads["family"], heads["src"])
    remote = format_column(heads["family"], heads["dst"])
    return tuple(
        PortUse(
            local_address=local[rank],
            remote_address=remote[rank],
            remote_port=int(heads["dport"][rank]),
            in_use=int(totals[gid]),
            time_wait=int(waits[gid]),
            capacity=capacity,
        )
        for rank, gid in enumerate(order.tolist())
    )
