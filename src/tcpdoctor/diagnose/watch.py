"""Collecting what the doctor looks at: one snapshot, or a watch of several over time.

A watch keeps only its first and last full snapshots (a million sockets is 72 MB each);
every sample in between is reduced to a WatchPoint for rates, forecasts and pictures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

from tcpdoctor.diagnose.context import Context, DoctorOptions
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.observe import snapshot as snapshot_mod
from tcpdoctor.observe.netns import NetnsTarget
from tcpdoctor.observe.portrange import policy_from
from tcpdoctor.observe.snapshot import Snapshot
from tcpdoctor.observe.summary import listening_ports, port_use

# Counters kept for every watch point (the rest are in the first and last snapshots).
WATCHED_COUNTERS = (
    "Tcp.ActiveOpens",
    "Tcp.PassiveOpens",
    "Tcp.AttemptFails",
    "Tcp.EstabResets",
    "Tcp.RetransSegs",
    "TcpExt.TW",
    "TcpExt.TWRecycled",
    "TcpExt.TCPTimeWaitOverflow",
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPAbortOnData",
    "TcpExt.TCPAbortOnClose",
    "TcpExt.TCPAbortOnTimeout",
    "TcpExt.TCPAbortOnMemory",
    "TcpExt.TCPAbortOnLinger",
    "TcpExt.TCPTimeouts",
)
MAX_SAMPLES = 3600  # a watch is bounded in count as well as in time


class WatchPoint(NamedTuple):
    offset_s: float  # since the first sample
    by_state: dict[TcpState, int]
    counters: dict[str, int]
    busiest_destination: str | None  # the destination using most ephemeral ports
    busiest_in_use: int
    port_capacity: int


def doctor_snapshot(target: NetnsTarget | None) -> Snapshot:
    return snapshot_mod.take(target, info=True, kernel_state=True)


def watch_point(snap: Snapshot, started: float) -> WatchPoint:
    assert snap.sysctls is not None and snap.counters is not None
    policy = policy_from(snap.sysctls)
    capacity = policy.capacity(bound=listening_ports(snap).tolist()).capacity
    busiest = port_use(snap, policy.port_range, capacity, top=1)
    counters = {
        key: value for key in WATCHED_COUNTERS if (value := snap.counters.value(key)) is not None
    }
    return WatchPoint(
        offset_s=snap.meta.taken_at - started,
        by_state=snap.count_by_state(),
        counters=counters,
        busiest_destination=(
            f"{busiest[0].remote_address}:{busiest[0].remote_port}" if busiest else None
        ),
        busiest_in_use=busiest[0].in_use if busiest else 0,
        port_capacity=capacity,
    )


def collect(
    target: NetnsTarget | None,
    options: DoctorOptions,
    *,
    watch: float = 0.0,
    interval: float = 1.0,
    on_sample: Callable[[int, int], None] | None = None,
) -> Context:
    """One snapshot, or samples every `interval` seconds for `watch` seconds."""
    first = doctor_snapshot(target)
    started = first.meta.taken_at
    points = [watch_point(first, started)]
    last = first
    count = min(MAX_SAMPLES, math.ceil(watch / interval)) if watch > 0 else 0
    deadline = time.monotonic() + watch
    for index in range(count):
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        last = doctor_snapshot(target)
        points.append(watch_point(last, started))
        if on_sample is not None:
            on_sample(index + 1, count)
    samples = (first,) if last is first else (first, last)
    ctx = Context(samples=samples, options=options, timeline=tuple(points))
    if not first.meta.privileged:
        ctx.limitations.append(
            "not running as root: sockets of other users' processes are listed, but their "
            "owners (pid, process) cannot be named"
        )
    return ctx
