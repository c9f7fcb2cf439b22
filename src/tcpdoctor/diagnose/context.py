"""What rules look at: one or more snapshots of a namespace, its sysctls and counters,
socket owners on demand, and the user's options."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from tcpdoctor.kernel.sysctls import KernelVersion, SysctlValue
from tcpdoctor.observe.owners import Owner, OwnerScan, find_owners
from tcpdoctor.observe.portrange import PortPolicy, policy_from
from tcpdoctor.observe.snapshot import Snapshot
from tcpdoctor.observe.summary import Summary, listening_ports, summarize

if TYPE_CHECKING:
    from tcpdoctor.diagnose.watch import WatchPoint


class DoctorOptions(NamedTuple):
    idle_timeout: float | None = None  # seconds a middlebox keeps an idle flow
    idle_timeout_source: str | None = None  # the preset name, or "--idle-timeout"
    top: int = 10


@dataclass(eq=False)
class Context:
    """Samples are oldest first; rules mostly read the newest (`snapshot`)."""

    samples: Sequence[Snapshot]  # one, or the first and last of a watch
    options: DoctorOptions = field(default_factory=DoctorOptions)
    timeline: tuple[WatchPoint, ...] = ()  # every sample of a watch, reduced
    limitations: list[str] = field(default_factory=list)  # what we could not see

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Context needs at least one snapshot")

    @property
    def snapshot(self) -> Snapshot:
        return self.samples[-1]

    @property
    def sockets(self) -> np.ndarray:
        return self.snapshot.sockets

    @functools.cached_property
    def kernel(self) -> KernelVersion:
        return KernelVersion.parse(self.snapshot.meta.kernel_release)

    # --- sysctls ------------------------------------------------------------------------

    def sysctl(self, name: str) -> SysctlValue | None:
        """The namespace's value, or None when absent or unreadable."""
        values = self.snapshot.sysctls
        if values is None or name not in values:
            return None
        return values.value(name)

    def sysctl_int(self, name: str) -> int | None:
        value = self.sysctl(name)
        return value if isinstance(value, int) else None

    @functools.cached_property
    def port_policy(self) -> PortPolicy:
        assert self.snapshot.sysctls is not None, "doctor snapshots carry sysctls"
        return policy_from(self.snapshot.sysctls)

    @functools.cached_property
    def listening_ports(self) -> np.ndarray:
        return listening_ports(self.snapshot)

    @functools.cached_property
    def summary(self) -> Summary:
        policy = self.port_policy
        capacity = policy.capacity(bound=self.listening_ports.tolist()).capacity
        return summarize(
            self.snapshot,
            port_range=policy.port_range,
            capacity=capacity,
            top=self.options.top,
        )

    # --- counters -----------------------------------------------------------------------

    def counter(self, key: str) -> int | None:
        """Latest value of e.g. "TcpExt.TCPTimeWaitOverflow", None when the kernel lacks it."""
        counters = self.snapshot.counters
        return counters.value(key) if counters is not None else None

    @property
    def elapsed(self) -> float:
        """Seconds between the first and the last sample (0 for a single snapshot)."""
        return self.snapshot.meta.taken_at - self.samples[0].meta.taken_at

    def counter_delta(self, key: str) -> int | None:
        """Growth over the watch; None without a watch or when the counter is missing."""
        first, last = self.samples[0].counters, self.snapshot.counters
        if len(self.samples) < 2 or first is None or last is None:
            return None
        return last.delta(first, key)

    def counter_rate(self, key: str) -> float | None:
        delta = self.counter_delta(key)
        if delta is None or self.elapsed <= 0:
            return None
        return delta / self.elapsed

    # --- owners -------------------------------------------------------------------------

    @functools.cached_property
    def _owner_scan(self) -> OwnerScan:
        inodes = self.sockets["inode"]
        scan = find_owners(inodes[inodes != 0].tolist())
        if scan.unreadable_pids:
            self.limitations.append(
                f"socket owners: {scan.unreadable_pids} processes could not be inspected "
                "(run as root to name every owner)"
            )
        return scan

    def owner_map(self) -> Mapping[int, tuple[Owner, ...]]:
        """inode -> processes holding it, for every socket some process holds."""
        return self._owner_scan.owners

    def owners(self, inode: int) -> tuple[Owner, ...]:
        """Processes holding a socket (one walk of /proc, on first use)."""
        return self._owner_scan.owners.get(int(inode), ())
