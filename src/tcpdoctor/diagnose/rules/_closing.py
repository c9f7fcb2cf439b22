"""Helpers shared by the closing-state rules (close-wait-leak, fin-wait2, fin-wait1-stuck,
last-ack-stuck, orphans, abortive-close, listen-queue-overflow, fd-limits).

Sockets are grouped here by who holds them (a process, via Context.owners) and by whom they
talk to (a peer: address plus service port, like the scan summary). Ages come from tcp_info
and, during a watch, from the same socket being seen in the first and the last sample.
"""

from __future__ import annotations

import functools
import math
import socket
from collections.abc import Mapping, Sequence
from typing import NamedTuple, TypeVar

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Severity
from tcpdoctor.kernel.constants import REFERENCE_HZ
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.kernel.timing import OrphanGiveUp, orphan_give_up
from tcpdoctor.observe._records import pick
from tcpdoctor.observe.addresses import format_column
from tcpdoctor.observe.summary import group_rows

_MS_PER_S = 1000.0
K = TypeVar("K")


# --- who holds a socket -------------------------------------------------------------------


class Holder(NamedTuple):
    """The process a socket belongs to; pid 0 when nobody could be found."""

    pid: int
    comm: str

    @property
    def known(self) -> bool:
        return self.pid > 0

    @property
    def label(self) -> str:
        return f"{self.comm} (pid {self.pid})" if self.known else "an unidentified process"

    def evidence(self) -> tuple[Evidence, ...]:
        return (
            Evidence("pid", "process id", self.pid if self.known else None),
            Evidence("comm", "process name", self.comm if self.known else None),
        )


UNKNOWN_HOLDER = Holder(0, "?")


def holder_of(ctx: Context, inode: int) -> Holder:
    """The lowest pid holding `inode` (forked workers share sockets); UNKNOWN_HOLDER if none."""
    return _holders(ctx).get(int(inode), UNKNOWN_HOLDER) if inode else UNKNOWN_HOLDER


def _holders(ctx: Context) -> dict[int, Holder]:
    """inode -> Holder for every socket some process holds, built once per snapshot: rules
    ask per socket, and a CLOSE_WAIT leak means tens of thousands of sockets."""
    return ctx.snapshot.memo("holders", lambda: _holder_map(ctx))


def _holder_map(ctx: Context) -> dict[int, Holder]:
    per_pid: dict[int, Holder] = {}
    found: dict[int, Holder] = {}
    for inode, owners in ctx.owner_map().items():
        first = owners[0] if len(owners) == 1 else min(owners, key=lambda owner: owner.pid)
        holder = per_pid.get(first.pid)
        if holder is None:
            holder = per_pid[first.pid] = Holder(first.pid, first.comm)
        found[inode] = holder
    return found


def group_by_holder(ctx: Context, rows: np.ndarray) -> dict[Holder, np.ndarray]:
    """Row indices (into ctx.sockets) grouped by holding process."""
    holders = _holders(ctx)
    inodes = ctx.sockets["inode"][rows].tolist()
    keys = [holders.get(inode, UNKNOWN_HOLDER) for inode in inodes]
    groups: dict[Holder, list[int]] = {}
    for row, holder in zip(rows.tolist(), keys, strict=True):
        groups.setdefault(holder, []).append(row)
    return {holder: np.array(found, dtype=np.int64) for holder, found in groups.items()}


def note_unknown_owners(ctx: Context, rule: str, unknown: int, what: str) -> None:
    """Say why `unknown` sockets could not be tied to a process (a limitation, not an error)."""
    if unknown <= 0:
        return
    if ctx.snapshot.meta.privileged:
        why = "their process may have exited or live in a PID namespace we cannot see"
    else:
        why = "not running as root, so other users' processes cannot be inspected"
    ctx.limitations.append(f"{rule}: {unknown} {what} sockets have no known owner ({why})")


# --- whom a socket talks to ---------------------------------------------------------------


class Peer(NamedTuple):
    """A remote address on one service port: ours (inbound) or the peer's (outbound)."""

    address: str
    service_port: int
    inbound: bool

    @property
    def label(self) -> str:
        if self.inbound:
            return f"{self.address} (client of local port {self.service_port})"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.service_port}"


def inbound(ctx: Context, rows: np.ndarray) -> np.ndarray:
    """Per row: the local port is a listening port, so the peer connected to us."""
    return np.isin(ctx.sockets["sport"][rows].astype(np.int64), ctx.listening_ports)


def group_by_peer(ctx: Context, rows: np.ndarray) -> dict[Peer, np.ndarray]:
    """Row indices grouped by Peer; one Peer is made per group, not per row."""
    if not len(rows):
        return {}
    sockets = pick(ctx.sockets, rows)
    into = inbound(ctx, rows)
    service = np.where(into, sockets["sport"], sockets["dport"]).astype(np.int64)
    first, group, order = group_rows(
        {"family": sockets["family"], "dst": sockets["dst"], "port": service, "in": into}
    )
    addresses = format_column(sockets["family"][first], sockets["dst"][first]).tolist()
    bounds = np.cumsum(np.bincount(group, minlength=len(first)))[:-1]
    members = np.split(rows[order].astype(np.int64), bounds)
    return {
        Peer(str(address), int(service[head]), bool(into[head])): found
        for address, head, found in zip(addresses, first.tolist(), members, strict=True)
    }


def top_peers_text(ctx: Context, rows: np.ndarray, top: int = 3) -> str:
    """'10.0.0.2:80 (12), 10.0.0.3:80 (3)' - the busiest peers of `rows`, for evidence."""
    groups = sorted(group_by_peer(ctx, rows).items(), key=lambda kv: (-len(kv[1]), kv[0]))
    shown = [f"{peer.label} ({len(found)})" for peer, found in groups[:top]]
    if len(groups) > top:
        shown.append(f"{len(groups) - top} more")
    return ", ".join(shown)


def local_endpoint(ctx: Context, row: int) -> str:
    sock = ctx.sockets[row : row + 1]
    address = str(format_column(sock["family"], sock["src"])[0])
    port = int(sock["sport"][0])
    if int(sock["family"][0]) == socket.AF_INET6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


# --- how old a socket is ------------------------------------------------------------------


def silent_for_s(ctx: Context, rows: np.ndarray) -> np.ndarray:
    """Seconds since the peer last sent anything (data or a bare ACK), per row; NaN unknown.

    tcp_info's last_data_recv and last_ack_recv count from the newest segment, so the smaller
    of the two is a lower bound of how long ago the peer's FIN (or its last ACK) arrived.
    """
    info = ctx.snapshot.info
    if info is None or not len(rows):
        return np.full(len(rows), np.nan)
    data = info["last_data_recv_ms"][rows].astype(np.float64)
    ack = info["last_ack_recv_ms"][rows].astype(np.float64)
    data[data < 0] = np.nan
    ack[ack < 0] = np.nan
    both = np.stack([data, ack])
    known = ~np.all(np.isnan(both), axis=0)
    out = np.full(len(rows), np.nan)
    out[known] = np.nanmin(both[:, known], axis=0) / _MS_PER_S
    return out


def _identity(sockets: np.ndarray) -> np.ndarray:
    """A socket's identity across samples: its inet_diag cookie, else its inode, else 0.

    /proc rows carry no cookie, and orphans and minisocks have inode 0: those cannot be
    followed from one sample to the next.
    """
    cookie = sockets["cookie"].astype(np.uint64)
    ident = cookie[:, 0] | (cookie[:, 1] << np.uint64(32))
    inode = sockets["inode"].astype(np.uint64)
    tagged = np.where(inode != 0, inode | np.uint64(1 << 63), np.uint64(0))
    return np.where(ident != 0, ident, tagged)


def persisted(ctx: Context, rows: np.ndarray, state: TcpState) -> np.ndarray:
    """Per row: the same socket was already in `state` in the first sample of the watch."""
    if len(ctx.samples) < 2 or not len(rows):
        return np.zeros(len(rows), dtype=np.bool_)
    first = ctx.samples[0].sockets
    earlier = _identity(first[first["state"] == int(state)])
    now = _identity(pick(ctx.sockets, rows))
    return np.asarray((now != 0) & np.isin(now, earlier[earlier != 0]), dtype=np.bool_)


def age_lower_bound_s(ctx: Context, rows: np.ndarray, state: TcpState) -> np.ndarray:
    """Best lower bound of each row's time in `state`: tcp_info silence, or the watch span."""
    ages = silent_for_s(ctx, rows)
    seen = persisted(ctx, rows, state)
    span = ctx.elapsed
    ages[seen] = np.fmax(ages[seen], span)
    return ages


def by_row(ctx: Context, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` (one per row of `rows`) spread over all of ctx.sockets, so a group's values
    are `by_row(...)[group_rows]`; rows not given read NaN (or False for booleans)."""
    fill: float | bool = False if values.dtype == np.bool_ else np.nan
    spread = np.full(len(ctx.sockets), fill, dtype=values.dtype)
    spread[rows] = values
    return spread


def max_or_none(values: np.ndarray, digits: int = 1) -> float | None:
    known = values[~np.isnan(values)] if len(values) else values
    if not len(known):
        return None
    return round(float(known.max()), digits)


# --- counters -----------------------------------------------------------------------------


class Trend(NamedTuple):
    """One counter: its total since the namespace started, and its growth over a watch."""

    key: str
    total: int | None
    delta: int | None  # None without a watch
    rate: float | None  # per second, None without a watch

    @property
    def watched(self) -> bool:
        return self.delta is not None

    @property
    def rising(self) -> bool:
        return self.delta is not None and self.delta > 0

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[-1]

    def evidence(self, stem: str, unit: str = "events") -> tuple[Evidence, ...]:
        found = [
            Evidence(f"{stem}_total", f"{self.name} since the namespace started", self.total, unit)
        ]
        if self.watched:
            found.append(
                Evidence(f"{stem}_delta", f"{self.name} during the watch", self.delta, unit)
            )
            rate = None if self.rate is None else round(self.rate, 2)
            found.append(Evidence(f"{stem}_rate", f"{self.name} rate", rate, f"{unit}/s"))
        return tuple(found)


def trend(ctx: Context, key: str) -> Trend:
    return Trend(key, ctx.counter(key), ctx.counter_delta(key), ctx.counter_rate(key))


def watch_evidence(ctx: Context) -> tuple[Evidence, ...]:
    if len(ctx.samples) < 2:
        return ()
    return (Evidence("watch_s", "watched for", round(ctx.elapsed, 1), "s"),)


# --- grading ------------------------------------------------------------------------------


def grade(value: float | None, levels: Sequence[tuple[float, Severity]]) -> Severity | None:
    """The highest severity whose threshold `value` reaches; levels are (threshold, severity)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    reached = [severity for threshold, severity in levels if value >= threshold]
    return max(reached) if reached else None


def worst(*severities: Severity | None) -> Severity | None:
    present = [s for s in severities if s is not None]
    return max(present) if present else None


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def seconds_text(value: float) -> str:
    return f"{value:g} s" if value < 120 else f"{value:g} s ({value / 60:.1f} min)"


@functools.lru_cache(maxsize=64)
def orphan_schedule(retries: int) -> OrphanGiveUp:
    """The tcp_orphan_retries schedule at the minimum RTO, and where late timers may end it
    an expiry sooner. The host's CONFIG_HZ is not visible from user space: lateness is
    judged at REFERENCE_HZ. Tail loss probes are not modelled (up to one RTO later)."""
    return orphan_give_up(retries, hz=REFERENCE_HZ)


def orphan_end_text(give_up: OrphanGiveUp) -> str:
    """When an unanswered orphan ends, counted from its FIN's first transmission: the
    nominal schedule, and the earlier expiry late timers may end it at, if any."""
    text = f"about {seconds_text(give_up.schedule.gives_up_at)} after its FIN was first sent"
    if give_up.sooner_give_up_at is not None:
        text += (
            f", or already at {seconds_text(give_up.sooner_give_up_at)} if timers firing "
            "late use up the rest of the budget"
        )
    return text


def rows_where(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def ranked(groups: Mapping[K, np.ndarray], top: int) -> list[tuple[K, np.ndarray]]:
    """Groups by size, biggest first, at most `top`."""
    return sorted(groups.items(), key=lambda kv: -len(kv[1]))[: max(top, 0)]
