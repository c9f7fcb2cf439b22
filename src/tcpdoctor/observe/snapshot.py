"""The Snapshot: every TCP socket of one namespace, kept columnar, plus its metadata."""

from __future__ import annotations

import enum
import os
import socket
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import numpy as np

from tcpdoctor.errors import KernelInterfaceError
from tcpdoctor.kernel.states import TcpState, timer_label
from tcpdoctor.observe import _netlink
from tcpdoctor.observe import netns as netns_mod
from tcpdoctor.observe._records import pick
from tcpdoctor.observe.addresses import format_column
from tcpdoctor.observe.filters import SocketFilter
from tcpdoctor.observe.netns import NetnsId, NetnsTarget

if TYPE_CHECKING:
    from tcpdoctor.observe.counters import CounterSnapshot
    from tcpdoctor.observe.sysctls import SysctlValues

T = TypeVar("T")

DEFAULT_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class Source(enum.Enum):
    """Where socket rows come from. AUTO tries netlink and falls back to /proc."""

    AUTO = "auto"
    NETLINK = "netlink"
    PROC = "proc"

    @property
    def label(self) -> str:
        return self.value


class SnapshotMeta(NamedTuple):
    taken_at: float  # unix time
    elapsed_s: float  # how long the socket read took
    kernel_release: str
    hostname: str
    netns: NetnsId
    source: Source  # the reader that produced the rows (never AUTO)
    interrupted: bool  # the dump changed under us on every retry (NLM_F_DUMP_INTR)
    privileged: bool  # effective uid 0: all fields and owners visible


class SocketRow(NamedTuple):
    """One socket, for display; the Snapshot itself keeps columns."""

    family: int
    state: TcpState
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    timer: str
    expires_ms: int
    retrans: int
    rqueue: int
    wqueue: int
    uid: int
    inode: int


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    sockets: np.ndarray  # SOCKET_DTYPE rows (observe/_records.py)
    meta: SnapshotMeta
    info: np.ndarray | None = None  # INFO_DTYPE rows aligned with sockets, when asked
    sysctls: SysctlValues | None = None  # the namespace's lifecycle knobs, when asked
    counters: CounterSnapshot | None = None  # netstat/snmp/sockstat, when asked
    # Aggregates derived from the rows, computed once however many readers ask.
    _memo: dict[Hashable, Any] = field(default_factory=dict, repr=False, compare=False)

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value for `key`, computed on first use (rows never change)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return cast(T, self._memo[key])

    def __len__(self) -> int:
        return len(self.sockets)

    @property
    def states(self) -> np.ndarray:
        return self.sockets["state"]

    def count_by_state(self) -> dict[TcpState, int]:
        counts = np.bincount(self.states, minlength=len(TcpState) + 1)
        return {state: int(counts[state]) for state in TcpState if counts[state]}

    def select(self, mask: np.ndarray) -> Snapshot:
        info = pick(self.info, mask) if self.info is not None else None
        return replace(self, sockets=pick(self.sockets, mask), info=info, _memo={})

    def rows(self) -> Iterator[SocketRow]:
        sockets = self.sockets
        local = format_column(sockets["family"], sockets["src"])
        remote = format_column(sockets["family"], sockets["dst"])
        columns = zip(
            sockets["family"].tolist(),
            sockets["state"].tolist(),
            local.tolist(),
            sockets["sport"].tolist(),
            remote.tolist(),
            sockets["dport"].tolist(),
            sockets["timer"].tolist(),
            sockets["expires_ms"].tolist(),
            sockets["retrans"].tolist(),
            sockets["rqueue"].tolist(),
            sockets["wqueue"].tolist(),
            sockets["uid"].tolist(),
            sockets["inode"].tolist(),
            strict=True,
        )
        for fam, st, la, lp, ra, rp, tm, exp, rt, rq, wq, uid, ino in columns:
            yield SocketRow(
                fam, TcpState(st), la, lp, ra, rp, timer_label(tm), exp, rt, rq, wq, uid, ino
            )

    @property
    def nbytes(self) -> int:
        info = self.info.nbytes if self.info is not None else 0
        return int(self.sockets.nbytes + info)


def take(
    target: NetnsTarget | None = None,
    *,
    socket_filter: SocketFilter | None = None,
    families: tuple[int, ...] = DEFAULT_FAMILIES,
    info: bool = False,
    source: Source = Source.AUTO,
    kernel_state: bool = False,
) -> Snapshot:
    """Read every TCP socket of `target` (default: our own namespace).

    kernel_state adds the namespace's sysctls and counters, read from inside it.
    """
    chosen = socket_filter or SocketFilter()
    netns_id = netns_mod.identify(target)

    def work() -> Snapshot:
        started = time.perf_counter()
        taken_at = time.time()
        rows, info_rows, used, interrupted = _read(families, chosen.states_mask, info, source)
        meta = SnapshotMeta(
            taken_at=taken_at,
            elapsed_s=time.perf_counter() - started,
            kernel_release=os.uname().release,
            hostname=socket.gethostname(),
            netns=netns_id,
            source=used,
            interrupted=interrupted,
            privileged=os.geteuid() == 0,
        )
        if not kernel_state:
            return Snapshot(rows, meta, info_rows)
        # The catalogues are imported only when asked for: they cost start-up time that
        # a plain `scan` should not pay.
        from tcpdoctor.observe.counters import read_counters
        from tcpdoctor.observe.sysctls import read_sysctls

        return Snapshot(
            rows,
            meta,
            info_rows,
            sysctls=read_sysctls(proc_sys=netns_mod.PROC_SYS),
            counters=read_counters(proc_net=netns_mod.PROC_NET),
        )

    snapshot = netns_mod.run_in(target, work)
    if chosen.needs_rows:
        snapshot = snapshot.select(chosen.mask(snapshot.sockets))
    return snapshot


def _read(
    families: tuple[int, ...], states_mask: int, info: bool, source: Source
) -> tuple[np.ndarray, np.ndarray | None, Source, bool]:
    if source is not Source.PROC:
        try:
            dump = _netlink.dump_tcp(families, states_mask, want_info=info)
            return dump.sockets, dump.info, Source.NETLINK, dump.interrupted
        except KernelInterfaceError:
            if source is Source.NETLINK:
                raise
    from tcpdoctor.observe import _procfs  # the fallback: loaded only when used

    rows = _procfs.read_tcp(netns_mod.PROC_NET, families, states_mask)
    return rows, None, Source.PROC, False
