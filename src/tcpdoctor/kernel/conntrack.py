"""nf_conntrack facts for a TCP flow through a Linux middlebox (NAT, load balancer,
stateful firewall): when the box forgets an idle flow, and what it makes of the next
segment once it has.

Pure functions over seconds, like kernel/timing.py. Sources are named per function.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from tcpdoctor.errors import InputError
from tcpdoctor.kernel.timing import KeepaliveAnswered


class Midstream(Enum):
    """How conntrack classifies a segment without SYN that matches no entry."""

    NEW = "new"  # picked up mid-stream: a fresh entry, ct state new, NAT rules run again
    INVALID = "invalid"  # left untracked: ct state invalid, no NAT

    @property
    def label(self) -> str:
        return self.value


def midstream_state(tcp_loose: int) -> Midstream:
    """tcp_new() in net/netfilter/nf_conntrack_proto_tcp.c: a first segment whose flags
    lead from TCP_CONNTRACK_NONE to anything but SYN_SENT is refused when the namespace's
    nf_conntrack_tcp_loose is 0 (nf_conntrack_in() then leaves the packet without an entry:
    ct state invalid), and otherwise tracked from the segment's own sequence numbers with
    liberal window checks, as ESTABLISHED, under a new entry (ct state new)."""
    if tcp_loose < 0:
        raise InputError(f"nf_conntrack_tcp_loose must be 0 or more, got {tcp_loose}")
    return Midstream.NEW if tcp_loose else Midstream.INVALID


class IdleFlow(NamedTuple):
    """An established flow that pauses for `idle` seconds behind a conntrack box."""

    idle: float
    ct_timeout: float  # nf_conntrack_tcp_timeout_established of the box
    keepalive: KeepaliveAnswered | None
    probes: int  # keepalive probes sent during the pause
    longest_silence: float  # longest stretch without a segment through the box
    slack: float  # timer lateness a probe may add to a silence
    forgotten: bool | None  # None: too close to call (the silence is within slack of it)

    @property
    def survives(self) -> bool | None:
        return None if self.forgotten is None else not self.forgotten


def idle_flow(
    idle: float,
    ct_timeout: float,
    keepalive: KeepaliveAnswered | None = None,
    *,
    slack: float = 0.0,
) -> IdleFlow:
    """Whether the box still knows the flow when the pause ends.

    Every segment of an ESTABLISHED entry sets its timeout to now + ct_timeout
    (nf_ct_refresh_acct() from tcp_packet()); the entry is dead once that moment has
    passed: nf_ct_is_expired() tests `timeout - now <= 0` on every lookup, so there is no
    timer to be late and a segment arriving exactly ct_timeout after the last one already
    misses. Keepalive probes (and their ACKs) are segments, so they refresh the entry:
    with a live peer the first goes out `keepalive.first_probe` after the last segment
    and the next ones every `keepalive.period` (timing.keepalive_answered()). Each probe
    may fire up to `slack` late (timer wheel), which can only lengthen a silence.
    """
    if idle < 0 or ct_timeout <= 0 or slack < 0:
        raise InputError("idle and slack must be 0 or more, the conntrack timeout positive")
    times = _probe_times(idle, keepalive)
    starts = (0.0, *times)
    gaps = [b - a for a, b in zip(starts, (*times, idle), strict=True)]
    longest = max(gaps)
    # A probe ends every gap but the last; a late probe lengthens its gap by up to the
    # slack, but never past the end of the pause (the request then ends the silence).
    late = [min(g + slack, idle - a) for a, g in zip(starts, gaps[:-1], strict=False)]
    worst = max([longest, *late])
    forgotten: bool | None
    if longest >= ct_timeout:
        forgotten = True
    elif worst < ct_timeout:
        forgotten = False
    else:
        forgotten = None
    return IdleFlow(idle, ct_timeout, keepalive, len(times), longest, slack, forgotten)


def _probe_times(idle: float, keepalive: KeepaliveAnswered | None) -> tuple[float, ...]:
    """Probe times within [0, idle), counted from the last segment before the pause."""
    if keepalive is None:
        return ()
    times: list[float] = []
    at = keepalive.first_probe
    while at < idle:
        times.append(at)
        at += keepalive.period
    return tuple(times)


__all__ = ["IdleFlow", "Midstream", "idle_flow", "midstream_state"]
