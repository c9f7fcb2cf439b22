"""Shared by the port and TIME_WAIT rules: destinations of connect()-side sockets, the
namespace's TIME_WAIT-reuse settings, and the fix texts several of those rules give.

A "destination" is one (local address, remote address, remote port): the kernel picks an
ephemeral port per such triple, so that is where ports run out (kernel-notes 4.4).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Fix, FixKind, RuleSkipped
from tcpdoctor.kernel.constants import (
    MAX_PORT,
    TCP_TIMESTAMPS_DEFAULT,
    TCP_TIMEWAIT_LEN,
    TCP_TW_REUSE_DEFAULT,
    TCP_TW_REUSE_DELAY_MS,
    TCP_TW_REUSE_DELAY_MS_MAX,
    TCP_TW_REUSE_DELAY_MS_MIN,
    TCP_TW_REUSE_MAX,
)
from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.kernel.sysctls import SYSCTLS
from tcpdoctor.kernel.timing import ConnectionRateLimit, PortCapacity, max_connection_rate
from tcpdoctor.observe._records import TCPI_OPT_TIMESTAMPS, pick
from tcpdoctor.observe.addresses import format_column, is_loopback
from tcpdoctor.observe.snapshot import Snapshot
from tcpdoctor.observe.summary import client_groups, client_mask

T = TypeVar("T")

# --- thresholds shared by ephemeral-port-exhaustion and client-churn ----------------------
# Share of a destination's usable ports held (open or TIME_WAIT). At half the ports a burst
# or a slower peer can take the rest; at 85% connect() failures are imminent or under way
# (the kernel scans for a free port, so the last few percent also make connect() slow).
PORT_WARNING_SHARE = 0.50
PORT_CRITICAL_SHARE = 0.85

TW_REUSE = "net.ipv4.tcp_tw_reuse"
TW_REUSE_DELAY = "net.ipv4.tcp_tw_reuse_delay"
TIMESTAMPS = "net.ipv4.tcp_timestamps"
PORT_RANGE = "net.ipv4.ip_local_port_range"
MAX_TW_BUCKETS = "net.ipv4.tcp_max_tw_buckets"
TW_RECYCLE = "net.ipv4.tcp_tw_recycle"

# Our suggestion for a wide ephemeral range (not a kernel value): above the ports servers
# commonly listen on, up to the last port. Its ends have different parity, which the
# kernel prefers (connect() and bind(0) start from opposite parities, kernel-notes 4.2).
WIDE_PORT_RANGE = (10000, MAX_PORT)

# Said wherever a rule could tempt someone into a shortcut. Each sentence is a warning.
DO_NOT_SHORTCUT = (
    "Do not take the shortcuts that trade safety for ports: do not set SO_LINGER with a zero "
    "timeout (close() then sends RST, unsent data is lost and the peer sees a reset); do not "
    "lower net.ipv4.tcp_max_tw_buckets (closing sockets then skip TIME_WAIT silently and lose "
    "its protection against delayed segments); never enable net.ipv4.tcp_tw_recycle (removed "
    f"in Linux {SYSCTLS[TW_RECYCLE].removed}; it dropped SYNs from clients behind NAT)."
)


def require_sysctls(ctx: Context) -> None:
    if ctx.snapshot.sysctls is None:
        raise RuleSkipped("the namespace's sysctls were not read")


def watching(ctx: Context) -> bool:
    return len(ctx.samples) >= 2 and ctx.elapsed > 0


def capped(ctx: Context, rule_id: str, items: list[T]) -> list[T]:
    """The first --top items; a limitation says how many more were left out."""
    top = max(1, ctx.options.top)
    if len(items) > top:
        ctx.limitations.append(
            f"{rule_id}: {len(items) - top} more destinations not reported (raise --top)"
        )
    return items[:top]


def pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 100.0


# --- TIME_WAIT reuse settings -------------------------------------------------------------


class ReuseSettings(NamedTuple):
    tw_reuse: int
    tw_reuse_delay_ms: int
    delay_from_sysctl: bool  # False: before 6.14 (an implicit 0-1 s) or unreadable
    timestamps: int  # the sysctl; the compiled-in default when unreadable

    @property
    def timestamps_on(self) -> bool:
        return self.timestamps != 0

    def delay_text(self) -> str:
        if self.delay_from_sysctl:
            return f"{self.tw_reuse_delay_ms} ms (tcp_tw_reuse_delay)"
        added = SYSCTLS[TW_REUSE_DELAY].added
        return f"0-{TCP_TW_REUSE_DELAY_MS} ms (kernels before {added} have no tcp_tw_reuse_delay)"


def reuse_settings(ctx: Context) -> ReuseSettings:
    reuse = ctx.sysctl_int(TW_REUSE)
    delay = ctx.sysctl_int(TW_REUSE_DELAY)
    timestamps = ctx.sysctl_int(TIMESTAMPS)
    return ReuseSettings(
        tw_reuse=_clamp(reuse, 0, TCP_TW_REUSE_MAX, TCP_TW_REUSE_DEFAULT),
        tw_reuse_delay_ms=_clamp(
            delay, TCP_TW_REUSE_DELAY_MS_MIN, TCP_TW_REUSE_DELAY_MS_MAX, TCP_TW_REUSE_DELAY_MS
        ),
        delay_from_sysctl=delay is not None,
        timestamps=timestamps if timestamps is not None else TCP_TIMESTAMPS_DEFAULT,
    )


def _clamp(value: int | None, low: int, high: int, default: int) -> int:
    return default if value is None else min(max(value, low), high)


def rate_limit(
    ports: PortCapacity,
    reuse: ReuseSettings,
    *,
    loopback: bool,
    peer_timestamps: bool | None = None,
    tw_reuse: int | None = None,
) -> ConnectionRateLimit:
    """kernel/timing.max_connection_rate for one destination under these settings.

    peer_timestamps=False (the destination's connections carry no timestamps) makes reuse
    impossible just as tcp_timestamps=0 does: tcp_twsk_unique() needs ts_recent_stamp.
    """
    return max_connection_rate(
        ports,
        tw_reuse=reuse.tw_reuse if tw_reuse is None else tw_reuse,
        tw_reuse_delay_ms=reuse.tw_reuse_delay_ms,
        timestamps=reuse.timestamps_on and peer_timestamps is not False,
        loopback=loopback,
    )


def usable_ports(ctx: Context) -> PortCapacity:
    return ctx.port_policy.capacity(bound=ctx.listening_ports.tolist())


# --- destinations -------------------------------------------------------------------------


class Destination(NamedTuple):
    """connect()-side sockets sharing one (local address, remote address, remote port)."""

    family: int
    local_words: tuple[int, ...]
    remote_words: tuple[int, ...]
    local_address: str
    remote_address: str
    remote_port: int
    in_use: int
    time_wait: int
    established: int
    reusable_time_wait: int  # TIME_WAITs older than tcp_tw_reuse_delay (reusable if it applies)
    loopback: bool  # the loopback test of tcp_twsk_unique(): either address in 127/8 or ::1
    peer_timestamps: bool | None  # negotiated on the open connections; None: none to look at
    inodes: tuple[int, ...]  # of the full sockets, for owner lookup

    @property
    def label(self) -> str:
        remote = f"[{self.remote_address}]" if ":" in self.remote_address else self.remote_address
        return f"{self.local_address} -> {remote}:{self.remote_port}"

    def base_evidence(self) -> list[Evidence]:
        return [
            Evidence("local_address", "local address", self.local_address),
            Evidence("remote_address", "remote address", self.remote_address),
            Evidence("remote_port", "remote port", self.remote_port),
        ]


def destinations(
    snapshot: Snapshot,
    port_range: tuple[int, int],
    *,
    reuse_delay_ms: int,
    min_in_use: int = 0,
    top: int = 0,
) -> list[Destination]:
    """Destinations, busiest first: those holding at least `min_in_use` ports, plus the
    `top` busiest whatever they hold."""
    groups = client_groups(snapshot, port_range)
    keep = [
        gid
        for rank, gid in enumerate(groups.order.tolist())
        if rank < top or groups.sizes[gid] >= min_in_use
    ]
    if not keep:
        return []
    heads = snapshot.sockets[groups.rows[groups.starts[keep]]]
    local = format_column(heads["family"], heads["src"])
    remote = format_column(heads["family"], heads["dst"])
    loop = is_loopback(heads["family"], heads["src"]) | is_loopback(heads["family"], heads["dst"])
    return [
        _destination(
            snapshot,
            groups.members(gid),
            heads[i],
            local[i],
            remote[i],
            bool(loop[i]),
            reuse_delay_ms,
        )
        for i, gid in enumerate(keep)
    ]


def _destination(
    snapshot: Snapshot,
    rows: np.ndarray,
    head: np.void,
    local: str,
    remote: str,
    loopback: bool,
    reuse_delay_ms: int,
) -> Destination:
    mine = pick(snapshot.sockets, rows)
    info = pick(snapshot.info, rows) if snapshot.info is not None else None
    states = mine["state"]
    tw = states == TcpState.TIME_WAIT
    # A TIME_WAIT's age is TCP_TIMEWAIT_LEN minus what is left on its timer.
    age_ms = TCP_TIMEWAIT_LEN * 1000 - mine["expires_ms"].astype(np.int64)
    established = states == TcpState.ESTABLISHED
    return Destination(
        family=int(head["family"]),
        local_words=tuple(int(w) for w in head["src"]),
        remote_words=tuple(int(w) for w in head["dst"]),
        local_address=str(local),
        remote_address=str(remote),
        remote_port=int(head["dport"]),
        in_use=len(mine),
        time_wait=int(tw.sum()),
        established=int(established.sum()),
        reusable_time_wait=int((tw & (age_ms >= reuse_delay_ms)).sum()),
        loopback=loopback,
        peer_timestamps=_peer_timestamps(info[established] if info is not None else None),
        inodes=tuple(int(i) for i in mine["inode"][mine["inode"] != 0]),
    )


def _peer_timestamps(info: np.ndarray | None) -> bool | None:
    if info is None:
        return None
    options = info["options"]
    options = options[options >= 0]
    if not len(options):
        return None
    return bool(np.any(options & TCPI_OPT_TIMESTAMPS))


def destination_rows(
    snapshot: Snapshot, port_range: tuple[int, int], dest: Destination
) -> np.ndarray:
    """The connect()-side sockets of `dest` in another snapshot (e.g. a watch's first)."""
    sockets = snapshot.sockets
    mask = client_mask(snapshot, port_range)
    mask &= sockets["family"] == dest.family
    mask &= sockets["dport"] == dest.remote_port
    mask &= np.all(sockets["src"] == np.array(dest.local_words, dtype=np.uint64), axis=1)
    mask &= np.all(sockets["dst"] == np.array(dest.remote_words, dtype=np.uint64), axis=1)
    return pick(sockets, mask)


def owner_names(ctx: Context, inodes: Iterable[int], limit: int = 3) -> str | None:
    """ "comm[pid]" of the processes holding these sockets, busiest first."""
    counts: dict[str, int] = {}
    for inode in inodes:
        for owner in ctx.owners(inode):
            name = f"{owner.comm}[{owner.pid}]"
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return None
    ranked = sorted(counts, key=lambda n: -counts[n])
    return ", ".join(ranked[:limit]) + (" ..." if len(ranked) > limit else "")


def minisock_count(ctx: Context) -> int:
    """TIME_WAIT plus FIN_WAIT2 minisockets: what tcp_max_tw_buckets counts.

    The larger of the dump and /proc/net/sockstat's "tw" (the namespace's tw_refcount),
    as the two are read at slightly different moments."""
    sockets = ctx.sockets
    states = sockets["state"]
    dumped = int(
        np.count_nonzero(
            (states == TcpState.TIME_WAIT)
            | ((states == TcpState.FIN_WAIT2) & (sockets["timer"] == TimerCode.TIMEWAIT))
        )
    )
    counters = ctx.snapshot.counters
    return max(dumped, counters.sockstat.tcp_tw if counters is not None else 0)


# --- fixes shared by several rules --------------------------------------------------------


POOL_EXAMPLE = "session = requests.Session()  # created once, then session.get(...) per call"


def pooling_fix(target: str, *, warn: bool = True) -> Fix:
    detail = (
        f"A connection that carries many requests pays for its port, its handshake and its "
        f"TIME_WAIT once instead of once per request. Keep connections to {target} open and "
        "reuse them (HTTP keep-alive, a client-side pool, a database/redis pool), and size the "
        "pool to the concurrency you need."
    )
    return Fix(
        kind=FixKind.APPLICATION,
        summary=f"Reuse connections to {target} (keep-alive or a pool) instead of one per request",
        detail=f"{detail} {DO_NOT_SHORTCUT}" if warn else detail,
        example=POOL_EXAMPLE,
    )


def rate_text(limit: ConnectionRateLimit) -> str:
    hold = f"{limit.port_hold:g} s"
    return f"{limit.ports.capacity:,} ports / {hold} = {limit.max_rate:,.1f} new connections/s"


def ceil_share(share: float, capacity: int) -> int:
    return max(1, math.ceil(share * capacity))
