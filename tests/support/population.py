"""A ground-truth TCP population inside a throwaway namespace, for checking the scanner.

`populated_netns()` makes a `tdlab-` namespace, puts a blackhole in it (an nftables table
named `tdlab-blackhole` that drops everything sent to 198.18.0.99, reached through a
route over lo), and starts tests/support/population_holder.py inside it. The holder
builds every socket, waits (bounded) until its namespace's /proc/net/tcp{,6} shows
exactly the expected counts, reports one JSON line and holds its descriptors:

| state       | what                                                 | owner           |
|-------------|------------------------------------------------------|-----------------|
| LISTEN      | 3 on 127.0.0.1 (ports 5001-5003), 1 on [::1]:5004    | holder          |
| ESTABLISHED | 20 IPv4 pairs to :5001 (client ends uid 65534),      | holder          |
|             | 4 IPv6 pairs to [::1]:5004                           |                 |
| TIME_WAIT   | 30 client ends of connections to :5002 (client       | none (minisock) |
|             | closed first)                                        |                 |
| CLOSE_WAIT  | 15 server ends of connections to :5003, never closed | holder          |
| FIN_WAIT2   | the 15 orphaned client ends of those (minisocks)     | none (minisock) |
| SYN_SENT    | 8 from 198.18.0.1 to 198.18.0.99:80 (dropped)        | holder          |

Nothing else lives in the namespace, so these are exact counts, not just minimums.
The TIME_WAIT and FIN_WAIT2 minisocks expire 60 s after they were made (TCP_TIMEWAIT_LEN;
tcp_fin_timeout is set to 60 in the namespace, which keeps orphans as minisocks), so
a population is only static for about a minute: `assert_fresh()` says so loudly
instead of letting counts drift. SYN_SENT retransmits (1, 3, 7, 15 s ...) but stays
SYN_SENT for 131 s.
"""

from __future__ import annotations

import json
import re
import select
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from support.netns import PYTHON, TestNetns, netns

HOLDER = Path(__file__).with_name("population_holder.py")
NFT_TABLE = "tdlab-blackhole"
# TIME_WAIT and the FIN_WAIT2 minisocks last 60 s; keep a margin for timer-wheel jitter
# (they never fire early) and for the time a test needs between its readings.
FRESH_FOR_S = 50.0


class PopulationError(RuntimeError):
    """The population could not be built as specified (the test cannot be trusted)."""


@dataclass(frozen=True, slots=True)
class PopulationSpec:
    established: int = 20  # IPv4 pairs (two ESTABLISHED sockets each)
    established6: int = 4  # IPv6 pairs over ::1
    time_wait: int = 30
    close_wait: int = 15  # also the number of FIN_WAIT2 peers
    syn_sent: int = 8
    client_uid: int = 65534  # uid of the IPv4 ESTABLISHED client sockets
    v4: str = "127.0.0.1"
    v6: str = "::1"
    blackhole_src: str = "198.18.0.1"
    blackhole: str = "198.18.0.99"
    blackhole_port: int = 80
    ports: dict[str, int] = field(
        default_factory=lambda: {
            "established": 5001,
            "time_wait": 5002,
            "close_wait": 5003,
            "established6": 5004,
        }
    )
    fin_timeout_s: int = 60  # <= 60: orphaned FIN_WAIT2 become minisocks (kernel-notes 1.5)
    settle_s: float = 15.0  # how long the holder may wait for states to settle
    hold_s: float = 300.0  # the holder exits by itself after this

    @property
    def listeners_v4(self) -> int:
        return 3

    @property
    def listeners_v6(self) -> int:
        return 1

    def expected_states(self) -> dict[str, int]:
        """Exact socket count per kernel state name (states with no sockets are left out)."""
        counts = {
            "ESTABLISHED": 2 * (self.established + self.established6),
            "SYN_SENT": self.syn_sent,
            "TIME_WAIT": self.time_wait,
            "CLOSE_WAIT": self.close_wait,
            "FIN_WAIT2": self.close_wait,
            "LISTEN": self.listeners_v4 + self.listeners_v6,
        }
        return {state: count for state, count in counts.items() if count}

    @property
    def total(self) -> int:
        return sum(self.expected_states().values())

    @property
    def total_v6(self) -> int:
        return 2 * self.established6 + self.listeners_v6

    @property
    def total_v4(self) -> int:
        return self.total - self.total_v6


@dataclass(frozen=True, slots=True)
class Population:
    netns: str  # name under /run/netns
    holder_pid: int  # holds LISTEN, ESTABLISHED, CLOSE_WAIT and SYN_SENT sockets
    spec: PopulationSpec
    expected: dict[str, int]  # state -> count the holder built and saw settle
    built_at: float  # time.monotonic() before the first socket was made
    blackhole_drops: int  # packets the nftables rule dropped (>= one SYN per SYN_SENT)

    def age_s(self) -> float:
        return time.monotonic() - self.built_at

    def assert_fresh(self) -> None:
        """Fail clearly if the 60 s minisocks may have started to expire."""
        age = self.age_s()
        if age > FRESH_FOR_S:
            raise AssertionError(
                f"population is {age:.1f} s old; its TIME_WAIT/FIN_WAIT2 minisocks expire "
                f"60 s after creation, so counts are no longer ground truth (tests too slow)"
            )


def _setup_blackhole(ns: TestNetns, spec: PopulationSpec) -> None:
    if shutil.which("nft") is None:
        raise PopulationError("needs nftables' `nft` for the SYN_SENT blackhole (make deps)")
    ns.run("ip", "addr", "add", f"{spec.blackhole_src}/32", "dev", "lo")
    ns.run(
        "ip", "route", "add", f"{spec.blackhole}/32", "dev", "lo", "src", spec.blackhole_src
    )  # fmt: skip
    ns.run("nft", f"add table inet {NFT_TABLE}")
    ns.run(
        "nft",
        f"add chain inet {NFT_TABLE} out {{ type filter hook output priority 0; policy accept; }}",
    )
    ns.run("nft", f"add rule inet {NFT_TABLE} out ip daddr {spec.blackhole} counter drop")


def _blackhole_drops(ns: TestNetns) -> int:
    listing = ns.run("nft", f"list table inet {NFT_TABLE}").stdout
    found = re.search(r"counter packets (\d+)", listing)
    if found is None:
        raise PopulationError(f"no counter in the blackhole table:\n{listing}")
    return int(found.group(1))


def _read_report(ns: TestNetns, spec: PopulationSpec) -> dict[str, object]:
    cfg = asdict(spec)
    proc = ns.popen([PYTHON, str(HOLDER), json.dumps(cfg)])
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + spec.settle_s + 30.0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PopulationError("the population holder did not report in time")
        ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 1.0))
        if ready:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            line = proc.stdout.readline()
            break
    if not line:
        raise PopulationError(f"the holder exited without a report: {proc.stderr.read()[-2000:]}")
    report: dict[str, object] = json.loads(line)
    if not report.get("ok"):
        raise PopulationError(f"the holder failed: {report.get('error')}")
    if report["pid"] != proc.pid:  # `ip netns exec` execs the holder: same pid
        raise PopulationError(f"holder pid {report['pid']} is not the started {proc.pid}")
    return report


def build_population(ns: TestNetns, spec: PopulationSpec | None = None) -> Population:
    spec = spec or PopulationSpec()
    ns.sysctl(tcp_fin_timeout=spec.fin_timeout_s)
    _setup_blackhole(ns, spec)
    built_at = time.monotonic()
    report = _read_report(ns, spec)
    states = report["states"]
    assert isinstance(states, dict)
    if states != spec.expected_states():
        raise PopulationError(f"holder reports {states}, spec says {spec.expected_states()}")
    drops = _blackhole_drops(ns)
    if drops < spec.syn_sent:
        raise PopulationError(f"blackhole dropped {drops} packets for {spec.syn_sent} SYNs")
    pid = report["pid"]
    assert isinstance(pid, int)
    return Population(ns.name, pid, spec, dict(states), built_at, drops)


@contextmanager
def populated_netns(spec: PopulationSpec | None = None) -> Iterator[Population]:
    """A fresh namespace holding the population; namespace and holder die on exit."""
    with netns() as ns:
        yield build_population(ns, spec)
