"""Synthetic snapshots for rule unit tests: sockets, sysctls and counters made by hand.

Real-kernel behaviour is covered by the kernel tests; these let a rule be checked on
exact, extreme or impossible-to-reproduce inputs (a million TIME_WAITs, kernel 4.9).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tcpdoctor.diagnose.context import Context, DoctorOptions
from tcpdoctor.kernel.constants import TCP_EHASH_ENTRIES_TYPICAL, TCP_MAX_TW_BUCKETS_EHASH_DIVISOR
from tcpdoctor.kernel.counters import Counters, Sockstat
from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.kernel.sysctls import ALL_SYSCTLS, SysctlValue
from tcpdoctor.observe._records import SOCKET_DTYPE, empty_info
from tcpdoctor.observe.counters import CounterSnapshot
from tcpdoctor.observe.netns import NetnsId
from tcpdoctor.observe.snapshot import Snapshot, SnapshotMeta, Source
from tcpdoctor.observe.sysctls import ReadStatus, SysctlReading, SysctlValues


@dataclass(frozen=True)
class Sock:
    """One socket. Addresses are text; IPv6 when they contain ':'."""

    state: TcpState
    local: str = "10.0.0.1"
    lport: int = 40000
    remote: str = "10.0.0.2"
    rport: int = 80
    timer: TimerCode = TimerCode.NONE
    expires_ms: int = 0
    retrans: int = 0
    rqueue: int = 0
    wqueue: int = 0
    uid: int = 0
    inode: int = 0
    info: Mapping[str, int] = field(default_factory=dict)  # tcp_info fields by INFO_DTYPE name


def _words(address: str) -> list[int]:
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return [int(ip), 0, 0, 0]
    value = int(ip)
    return [(value >> (96 - 32 * i)) & 0xFFFFFFFF for i in range(4)]


def sockets(socks: Sequence[Sock]) -> tuple[np.ndarray, np.ndarray]:
    rows = np.zeros(len(socks), dtype=SOCKET_DTYPE)
    info = empty_info(len(socks))
    for i, s in enumerate(socks):
        row = rows[i]
        row["family"] = socket.AF_INET6 if ":" in s.local else socket.AF_INET
        row["state"] = int(s.state)
        row["timer"] = int(s.timer)
        row["retrans"] = s.retrans
        row["sport"], row["dport"] = s.lport, s.rport
        row["src"], row["dst"] = _words(s.local), _words(s.remote)
        row["expires_ms"], row["rqueue"], row["wqueue"] = s.expires_ms, s.rqueue, s.wqueue
        row["uid"], row["inode"] = s.uid, s.inode
        for name, value in s.info.items():
            info[name][i] = value
    return rows, info


# Knobs whose default depends on the machine, at what a typical host has (a 0 would mean
# "no TIME_WAIT at all" to the rules).
_MACHINE_DEFAULTS: dict[str, SysctlValue | None] = {
    "net.ipv4.tcp_max_tw_buckets": TCP_EHASH_ENTRIES_TYPICAL // TCP_MAX_TW_BUCKETS_EHASH_DIVISOR,
    "net.ipv4.tcp_max_orphans": TCP_EHASH_ENTRIES_TYPICAL // 2,
    "net.ipv4.tcp_max_syn_backlog": 1024,
}


def sysctl_values(overrides: Mapping[str, SysctlValue | None] | None = None) -> SysctlValues:
    """Every catalogued knob at its compiled-in default (or 0 when the default depends on
    the machine), with `overrides` by full or short name; None marks a knob absent."""
    by_short = {spec.short_name: spec.name for spec in ALL_SYSCTLS}
    wanted = {**_MACHINE_DEFAULTS, **{by_short.get(k, k): v for k, v in (overrides or {}).items()}}
    readings = []
    for spec in ALL_SYSCTLS:
        value = wanted.get(spec.name, spec.default if spec.default is not None else 0)
        if spec.name in wanted and wanted[spec.name] is None:
            readings.append(SysctlReading(spec, ReadStatus.ABSENT, None, "synthetic"))
        else:
            readings.append(SysctlReading(spec, ReadStatus.PRESENT, value))
    return SysctlValues(tuple(readings), "synthetic")


def counters(values: Mapping[str, int] | None = None, *, taken_at: float = 0.0) -> CounterSnapshot:
    """Counters keyed "TcpExt.X" / "Tcp.X"; sockstat is filled from TcpExt-free defaults."""
    netstat = {k: v for k, v in (values or {}).items() if k.startswith("TcpExt.")}
    snmp = {k: v for k, v in (values or {}).items() if not k.startswith("TcpExt.")}
    sockstat = Sockstat(
        sockets_used=0, tcp_inuse=0, tcp_orphan=0, tcp_tw=0, tcp_alloc=0, tcp_mem_pages=0,
        fields=Counters({}),
    )  # fmt: skip
    return CounterSnapshot(Counters(netstat), Counters(snmp), sockstat, None, taken_at, "synthetic")


def snapshot(
    socks: Sequence[Sock] = (),
    *,
    sysctls: Mapping[str, SysctlValue | None] | None = None,
    counter_values: Mapping[str, int] | None = None,
    kernel: str = "6.18.0",
    taken_at: float = 1_000_000.0,
    privileged: bool = True,
) -> Snapshot:
    rows, info = sockets(socks)
    meta = SnapshotMeta(
        taken_at=taken_at,
        elapsed_s=0.0,
        kernel_release=kernel,
        hostname="synthetic",
        netns=NetnsId(1, "synthetic", None, False),
        source=Source.NETLINK,
        interrupted=False,
        privileged=privileged,
    )
    return Snapshot(
        rows,
        meta,
        info,
        sysctls=sysctl_values(sysctls),
        counters=counters(counter_values, taken_at=taken_at),
    )


def context(*samples: Snapshot, options: DoctorOptions | None = None) -> Context:
    return Context(samples=samples or (snapshot(),), options=options or DoctorOptions())
