"""Helpers of the liveness rules (keepalive-vs-idle-timeout, slow-failure-detection).

Everything here reads one Context and returns numpy columns aligned with its newest
snapshot's sockets, or small records. Times are milliseconds in columns (as tcp_info and
inet_diag report them) and seconds in records.
"""

from __future__ import annotations

import functools
import math
import socket
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.idle_timeouts import (
    CONNTRACK_SYSCTL,
    USER_SOURCE,
    IdleTimeoutPreset,
    preset,
)
from tcpdoctor.kernel.constants import (
    REFERENCE_HZ,
    TCP_KEEPALIVE_INTVL,
    TCP_KEEPALIVE_PROBES,
    TCP_KEEPALIVE_TIME,
    TCP_RETR2,
    TCP_RTO_MAX,
    TCP_RTO_MIN,
    TCP_SYN_LINEAR_TIMEOUTS,
    TCP_SYN_RETRIES,
)
from tcpdoctor.kernel.sysctls import KernelVersion
from tcpdoctor.kernel.timing import (
    EstablishedGiveUp,
    KeepaliveDetection,
    RetransmitSchedule,
    SynGiveUp,
    established_give_up,
    keepalive_detection,
    syn_give_up,
)
from tcpdoctor.observe._records import pick
from tcpdoctor.observe.addresses import format_column
from tcpdoctor.observe.summary import listening_ports

UNKNOWN = -1  # a column value we could not read
_NO_VALUE = np.iinfo(np.int64).max
SYN_LINEAR_TIMEOUTS_SINCE = KernelVersion(6, 5)  # tcp_syn_linear_timeouts (D. Morley)


# --- the middlebox ------------------------------------------------------------------------


class IdleTimeout(NamedTuple):
    """The idle timeout the sockets are compared with, and where it came from."""

    seconds: float
    source: str  # "aws-nlb", "--idle-timeout", "conntrack", ...
    from_user: bool  # given with --idle-timeout; False: read from this namespace's conntrack
    preset: IdleTimeoutPreset | None

    @property
    def keepalive_resets(self) -> bool:
        """Whether an empty TCP keepalive probe keeps the flow (False for HTTP proxies)."""
        return self.preset.keepalive_resets if self.preset is not None else True

    @property
    def label(self) -> str:
        if self.source == USER_SOURCE:
            return f"{seconds_text(self.seconds)} (--idle-timeout)"
        return f"{seconds_text(self.seconds)} ({self.source})"


def idle_timeout(ctx: Context) -> IdleTimeout | None:
    """--idle-timeout when given, else this namespace's conntrack timeout when readable.

    `--idle-timeout conntrack` also prefers the namespace's value over the default.
    """
    conntrack = ctx.sysctl_int(CONNTRACK_SYSCTL)
    given = ctx.options.idle_timeout
    if given is not None and given > 0:
        source = ctx.options.idle_timeout_source or USER_SOURCE
        chosen = preset(source)
        if chosen is not None and chosen.name == "conntrack" and conntrack is not None:
            return IdleTimeout(float(conntrack), "conntrack", True, chosen)
        return IdleTimeout(float(given), source, True, chosen)
    if conntrack is not None and conntrack > 0:
        return IdleTimeout(float(conntrack), "conntrack", False, preset("conntrack"))
    return None


# --- per-socket columns ---------------------------------------------------------------------


def info_column(ctx: Context, name: str) -> np.ndarray:
    """A tcp_info field as int64 (-1 where absent), aligned with ctx.sockets."""
    info = ctx.snapshot.info
    if info is None:
        return np.full(len(ctx.sockets), UNKNOWN, dtype=np.int64)
    return np.asarray(info[name], dtype=np.int64)


def has_info(ctx: Context) -> bool:
    return ctx.snapshot.info is not None


def min_known(*columns: np.ndarray) -> np.ndarray:
    stacked = np.stack([np.where(c < 0, _NO_VALUE, c) for c in columns])
    low = stacked.min(axis=0)
    return np.where(low == _NO_VALUE, UNKNOWN, low)


def received_ms(ctx: Context) -> np.ndarray:
    """Time since the last segment received, as keepalive_time_elapsed() counts it."""
    return min_known(info_column(ctx, "last_data_recv_ms"), info_column(ctx, "last_ack_recv_ms"))


def silent_ms(ctx: Context) -> np.ndarray:
    """Time since any segment went either way, as far as tcp_info shows (ms, -1 unknown).

    tcp_info has no "last ACK sent" (the kernel reports 0) and does not move
    last_ack_recv for out-of-window segments such as the PEER's keepalive probes, so a
    socket whose peer probes still looks silent here. With a watch, a socket whose segment
    counters moved between the first and the last sample had traffic within the watch.
    """
    silent = min_known(
        info_column(ctx, "last_data_recv_ms"),
        info_column(ctx, "last_data_sent_ms"),
        info_column(ctx, "last_ack_recv_ms"),
    )
    moved = moved_during_watch(ctx)
    window_ms = int(ctx.elapsed * 1000)
    return np.where(moved & (silent > window_ms), window_ms, silent)


def moved_during_watch(ctx: Context) -> np.ndarray:
    """Sockets (by inode) whose segs_in or segs_out changed between the first and last sample."""
    first = ctx.samples[0]
    now_info = ctx.snapshot.info
    if len(ctx.samples) < 2 or first.info is None or now_info is None or not len(first):
        return np.zeros(len(ctx.sockets), dtype=bool)
    order = np.argsort(first.sockets["inode"], kind="stable")
    inodes = first.sockets["inode"][order]
    now = ctx.sockets["inode"]
    at = np.minimum(np.searchsorted(inodes, now), len(inodes) - 1)
    seen = (inodes[at] == now) & (now != 0)  # minisocks and request socks have inode 0
    was_in = np.asarray(first.info["segs_in"])[order][at]
    was_out = np.asarray(first.info["segs_out"])[order][at]
    changed = (was_in != now_info["segs_in"]) | (was_out != now_info["segs_out"])
    return np.asarray(seen & changed, dtype=bool)


def keepalive_gap_ms(ctx: Context, namespace_time_s: float) -> np.ndarray:
    """Estimated longest silence SO_KEEPALIVE allows each socket (ms; meaningful on timer 2).

    The keepalive timer is lazy (tcp_keepalive_timer()): it fires, checks the time since
    the last received segment, and re-arms for the rest of the keepalive time, or for the
    probe interval after a probe. So for a socket with no unanswered probe,
    time-since-receive + time-to-expiry is the keepalive time (TCP_KEEPIDLE) before the
    first probe and max(keepalive time, TCP_KEEPINTVL) once probes are being answered
    [measured on 6.18: keepidle=1 with the default intvl 75 s re-armed for 75 s]. It
    underestimates while the timer still runs from an arming that predates the last
    received segment. Unanswered probes (idiag_retrans > 0) or missing tcp_info fall back
    to the namespace's tcp_keepalive_time.
    """
    received = received_ms(ctx)
    expires = ctx.sockets["expires_ms"].astype(np.int64)
    probing = ctx.sockets["retrans"].astype(np.int64) > 0  # icsk_probes_out on timer 2
    fallback = round(namespace_time_s * 1000)
    estimate = received + expires
    return np.where(probing | (received < 0), fallback, estimate)


# --- grouping -------------------------------------------------------------------------------


class Group(NamedTuple):
    key: str  # "198.18.0.2:443" or "local port 8080"
    inbound: bool  # accepted by a local listener (grouped by our port, not the peer)
    rows: np.ndarray  # indices into ctx.sockets

    @property
    def subject(self) -> str:
        if self.inbound:
            return f"clients of {self.key}"
        return f"connections to {self.key}"

    @property
    def target(self) -> str:
        """For titles: "N connections <target> ..."."""
        if self.inbound:
            return f"accepted on {self.key}"
        return f"to {self.key}"


def _endpoint(address: str, port: int, family: int) -> str:
    return f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"


def groups(ctx: Context, rows: np.ndarray) -> list[Group]:
    """Group socket indices by peer service (remote address:port), or, for connections a
    local listener accepted, by the local port; biggest first."""
    if not len(rows):
        return []
    sockets = pick(ctx.sockets, rows)
    inbound = np.isin(sockets["sport"].astype(np.int64), listening_ports(ctx.snapshot))
    peers = format_column(sockets["family"], sockets["dst"])
    buckets: dict[tuple[bool, str], list[int]] = {}
    columns = zip(
        rows.tolist(),
        inbound.tolist(),
        peers.tolist(),
        sockets["dport"].tolist(),
        sockets["sport"].tolist(),
        sockets["family"].tolist(),
        strict=True,
    )
    for index, is_in, peer, dport, sport, family in columns:
        key = f"local port {sport}" if is_in else _endpoint(peer, dport, family)
        buckets.setdefault((is_in, key), []).append(index)
    found = [
        Group(key, is_in, np.array(idx, dtype=np.int64)) for (is_in, key), idx in buckets.items()
    ]
    found.sort(key=lambda g: (-len(g.rows), g.key))
    return found


def top_groups(ctx: Context, found: list[Group]) -> Iterator[Group]:
    yield from found[: ctx.options.top]


# --- namespace settings ---------------------------------------------------------------------


class KeepaliveSettings(NamedTuple):
    time: float
    intvl: float
    probes: int

    def detection(self, user_timeout: float | None = None) -> KeepaliveDetection:
        return keepalive_detection(self.time, self.intvl, self.probes, user_timeout=user_timeout)


def keepalive_settings(ctx: Context) -> KeepaliveSettings:
    """The namespace's keepalive sysctls (compiled-in defaults when unreadable)."""
    time = ctx.sysctl_int("net.ipv4.tcp_keepalive_time")
    intvl = ctx.sysctl_int("net.ipv4.tcp_keepalive_intvl")
    probes = ctx.sysctl_int("net.ipv4.tcp_keepalive_probes")
    return KeepaliveSettings(
        time=float(time) if time and time > 0 else TCP_KEEPALIVE_TIME,
        intvl=float(intvl) if intvl and intvl > 0 else TCP_KEEPALIVE_INTVL,
        probes=probes if probes and probes > 0 else TCP_KEEPALIVE_PROBES,
    )


class RetransmitSettings(NamedTuple):
    retries2: int
    rto_max: float  # seconds; tcp_rto_max_ms (6.15+) or TCP_RTO_MAX
    syn_retries: int
    syn_linear_timeouts: int  # 0 before 6.5


def retransmit_settings(ctx: Context) -> RetransmitSettings:
    retries2 = ctx.sysctl_int("net.ipv4.tcp_retries2")
    rto_max_ms = ctx.sysctl_int("net.ipv4.tcp_rto_max_ms")
    syn_retries = ctx.sysctl_int("net.ipv4.tcp_syn_retries")
    linear = ctx.sysctl_int("net.ipv4.tcp_syn_linear_timeouts")
    if linear is None:
        linear = TCP_SYN_LINEAR_TIMEOUTS if ctx.kernel >= SYN_LINEAR_TIMEOUTS_SINCE else 0
    return RetransmitSettings(
        retries2=retries2 if retries2 is not None else TCP_RETR2,
        rto_max=rto_max_ms / 1000 if rto_max_ms else TCP_RTO_MAX,
        syn_retries=syn_retries if syn_retries else TCP_SYN_RETRIES,
        syn_linear_timeouts=linear,
    )


@functools.lru_cache(maxsize=256)
def established_schedule(retries2: int, rto_max: float, initial_rto: float) -> EstablishedGiveUp:
    """The tcp_retries2 schedule, and whether late timers may end it an expiry sooner.

    The host's CONFIG_HZ is not visible from user space; timer lateness is judged at
    REFERENCE_HZ. Tail loss probes are not modelled (unknown from outside whether one went
    out): they would delay everything by up to one RTO.
    """
    return established_give_up(retries2, rto_max=rto_max, initial_rto=initial_rto, hz=REFERENCE_HZ)


@functools.lru_cache(maxsize=64)
def syn_schedule(syn_retries: int, linear_timeouts: int, rto_max: float) -> SynGiveUp:
    return syn_give_up(syn_retries, linear_timeouts=linear_timeouts, rto_max=rto_max)


def initial_rto(rto_us: int, backoff: int, rto_max: float) -> float:
    """The RTO before the losses began: tcpi_rto is already doubled `backoff` times.

    Rounded to the millisecond so the schedule cache stays small; unknown -> TCP_RTO_MIN.
    """
    if rto_us <= 0:
        return TCP_RTO_MIN
    base = rto_us / 1_000_000 / (1 << max(0, backoff))
    return min(max(round(base, 3), 0.001), rto_max)


def elapsed_in_schedule(schedule: RetransmitSchedule, retransmits: int, expires_s: float) -> float:
    """Seconds since the first transmission, placing a socket that has made `retransmits`
    retransmissions and whose timer fires in `expires_s` on the idealised schedule."""
    done = min(max(retransmits, 0), schedule.retransmissions)
    started = schedule.retransmit_times[done - 1] if done else 0.0
    wait = schedule.waits[done]
    return started + max(0.0, wait - max(0.0, expires_s))


# --- text -----------------------------------------------------------------------------------


def seconds_text(seconds: float) -> str:
    """350 s, 4 min, 1.5 h, 5 d: what a person would say."""
    if not math.isfinite(seconds):
        return "unknown"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size and seconds % (size / 2) == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:,.0f} s" if seconds >= 10_000 else f"{seconds:.4g} s"
