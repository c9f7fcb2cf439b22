"""ephemeral-port-exhaustion: a destination is running out of local ports for connect().

connect() picks a local port per (local address, remote address, remote port), so ports run
out per destination. For each destination of connect()-side sockets the rule compares the
ports held (open connections and TIME_WAITs) with the usable capacity: ip_local_port_range
minus ip_local_reserved_ports minus ports held by listeners. When tcp_tw_reuse applies to the
destination (tcp_twsk_unique(): timestamps on and 1, or 2 on loopback, and the peer uses
timestamps), TIME_WAITs older than tcp_tw_reuse_delay can be taken over by connect() and do
not count as blocking. The sustainable rate of new connections is capacity / port hold time
(kernel/timing.max_connection_rate).

Severity, on the blocking share of the capacity:

- warning from 50% (PORT_WARNING_SHARE): a burst or a slower peer can take the rest;
- critical from 85% (PORT_CRITICAL_SHARE): connect() failures are imminent or under way.

The --top most severe destinations are reported; a limitation says how many more there
were. With a watch, severity also follows a forecast: new local ports seen for the
destination give its new-connection rate (a lower bound); when that rate times the port
hold time exceeds the capacity and the ports in use grow, time to exhaustion = remaining /
growth. Within one TIME_WAIT period (60 s) that is critical, within FORECAST_HORIZON_S
(10 minutes) a warning.

Evidence: local_address, remote_address, remote_port, in_use, blocked, capacity, share_pct,
time_wait, time_wait_pct, established, port_range, reserved_in_range,
listener_ports_in_range, loopback, tw_reuse, tw_reuse_delay_ms (null before 6.14),
timestamps, peer_timestamps, tw_reuse_applies, reusable_time_wait, port_hold_s,
max_connection_rate, owners; with a watch also watch_s, new_connection_rate (whole
namespace), destination_connection_rate, port_use_growth, projected_in_use,
time_to_exhaustion_s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, Severity
from tcpdoctor.diagnose.rules._common import sysctl_line
from tcpdoctor.diagnose.rules._ports import (
    PORT_CRITICAL_SHARE,
    PORT_RANGE,
    PORT_WARNING_SHARE,
    TW_REUSE,
    WIDE_PORT_RANGE,
    Destination,
    ReuseSettings,
    capped,
    ceil_share,
    destination_rows,
    destinations,
    owner_names,
    pct,
    pooling_fix,
    rate_limit,
    rate_text,
    require_sysctls,
    reuse_settings,
    usable_ports,
    watching,
)
from tcpdoctor.kernel.constants import TCP_TIMEWAIT_LEN
from tcpdoctor.kernel.timing import ConnectionRateLimit, PortCapacity

RULE_ID = "ephemeral-port-exhaustion"
FORECAST_HORIZON_S = 600.0  # a forecast further out than this is not worth a finding
TOPICS = ("ports", "time-wait", "tw-reuse", "timestamps")


class Forecast(NamedTuple):
    """What a watch says about one destination."""

    elapsed: float
    namespace_rate: float | None  # Tcp.ActiveOpens per second, every destination
    destination_rate: float  # ports that appeared for this destination per second (at least)
    growth: float  # change of blocked ports per second
    projected_in_use: float  # destination_rate x port hold + the open connections
    time_to_exhaustion: float | None


class PortLook(NamedTuple):
    dest: Destination
    ports: PortCapacity
    reuse: ReuseSettings
    limit: ConnectionRateLimit
    blocked: int  # ports connect() cannot use now
    forecast: Forecast | None

    @property
    def share(self) -> float:
        return self.blocked / self.ports.capacity if self.ports.capacity else 1.0

    @property
    def severity(self) -> Severity | None:
        return _severity(self)


def check(ctx: Context) -> Iterator[Finding]:
    require_sysctls(ctx)
    ports = usable_ports(ctx)
    reuse = reuse_settings(ctx)
    candidates = destinations(
        ctx.snapshot,
        ctx.port_policy.port_range,
        reuse_delay_ms=reuse.tw_reuse_delay_ms,
        min_in_use=ceil_share(PORT_WARNING_SHARE, ports.capacity),
        top=ctx.options.top if watching(ctx) else 0,  # forecasts for the busiest
    )
    graded = [
        (severity, look)
        for look in (assess(ctx, dest, ports, reuse) for dest in candidates)
        if (severity := look.severity) is not None
    ]
    graded.sort(key=lambda item: (-item[0], -item[1].share))
    for severity, look in capped(ctx, RULE_ID, graded):
        yield _finding(ctx, look, severity)


def assess(ctx: Context, dest: Destination, ports: PortCapacity, reuse: ReuseSettings) -> PortLook:
    """This rule's view of one destination (client-churn uses it to stay out of our way)."""
    limit = rate_limit(ports, reuse, loopback=dest.loopback, peer_timestamps=dest.peer_timestamps)
    blocked = dest.in_use - (dest.reusable_time_wait if limit.tw_reuse_applies else 0)
    forecast = _forecast(ctx, dest, blocked, limit) if watching(ctx) else None
    return PortLook(dest, ports, reuse, limit, blocked, forecast)


def _forecast(
    ctx: Context, dest: Destination, blocked: int, limit: ConnectionRateLimit
) -> Forecast:
    elapsed = ctx.elapsed
    before = destination_rows(ctx.samples[0], ctx.port_policy.port_range, dest)
    now = destination_rows(ctx.snapshot, ctx.port_policy.port_range, dest)
    # A connection opened during the watch still holds its port (open, or TIME_WAIT for
    # 60 s) at the last sample, so new local ports count new connections: a lower bound
    # (a port freed and handed out again within the watch is missed).
    fresh = len(set(now["sport"].tolist()) - set(before["sport"].tolist()))
    rate = fresh / elapsed
    growth = (blocked - len(before)) / elapsed
    projected = rate * limit.port_hold + dest.established
    capacity = limit.ports.capacity
    remaining = capacity - blocked
    tte: float | None = None
    if remaining <= 0:
        tte = 0.0
    elif growth > 0 and projected >= capacity:
        tte = remaining / growth
    return Forecast(
        elapsed=elapsed,
        namespace_rate=ctx.counter_rate("Tcp.ActiveOpens"),
        destination_rate=rate,
        growth=growth,
        projected_in_use=projected,
        time_to_exhaustion=tte,
    )


def _severity(look: PortLook) -> Severity | None:
    tte = look.forecast.time_to_exhaustion if look.forecast is not None else None
    if look.share >= PORT_CRITICAL_SHARE or (tte is not None and tte <= TCP_TIMEWAIT_LEN):
        return Severity.CRITICAL
    if look.share >= PORT_WARNING_SHARE or (tte is not None and tte <= FORECAST_HORIZON_S):
        return Severity.WARNING
    return None


def _finding(ctx: Context, look: PortLook, severity: Severity) -> Finding:
    dest = look.dest
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=_title(look),
        subject=dest.label,
        evidence=tuple(_evidence(ctx, look)),
        explanation=_explanation(ctx, look),
        fixes=tuple(_fixes(ctx, look)),
        topics=TOPICS,
    )


def _title(look: PortLook) -> str:
    capacity = look.ports.capacity
    text = (
        f"{look.dest.label}: {look.blocked:,} of {capacity:,} ephemeral ports in use "
        f"({look.share:.0%})"
    )
    if look.blocked >= capacity:
        return f"{text}; connect() fails with EADDRNOTAVAIL"
    tte = look.forecast.time_to_exhaustion if look.forecast is not None else None
    if tte is not None:
        return f"{text}; out of ports in about {tte:,.0f} s at the current rate"
    return text


def _evidence(ctx: Context, look: PortLook) -> list[Evidence]:
    dest, ports, limit, reuse = look.dest, look.ports, look.limit, look.reuse
    low, high = ctx.port_policy.port_range
    items = [
        *dest.base_evidence(),
        Evidence("in_use", "ports held (open + TIME_WAIT)", dest.in_use, "sockets"),
        Evidence("blocked", "ports connect() cannot use now", look.blocked, "sockets"),
        Evidence("capacity", "usable ports for this destination", ports.capacity, "ports"),
        Evidence(
            "share_pct", "share of usable ports in use", pct(look.blocked, ports.capacity), "%"
        ),
        Evidence("time_wait", "of which TIME_WAIT", dest.time_wait, "sockets"),
        Evidence(
            "time_wait_pct", "TIME_WAIT share of ports held", pct(dest.time_wait, dest.in_use), "%"
        ),
        Evidence("established", "open (ESTABLISHED)", dest.established, "sockets"),
        Evidence("port_range", "ip_local_port_range", f"{low}-{high}"),
        Evidence(
            "reserved_in_range", "reserved ports in the range", ports.reserved_in_range, "ports"
        ),
        Evidence(
            "listener_ports_in_range", "listening ports in the range", ports.bound_in_range, "ports"
        ),
        Evidence("loopback", "loopback destination", dest.loopback),
        Evidence("tw_reuse", "tcp_tw_reuse", reuse.tw_reuse),
        Evidence(
            "tw_reuse_delay_ms",
            "tcp_tw_reuse_delay",
            reuse.tw_reuse_delay_ms if reuse.delay_from_sysctl else None,
            "ms",
        ),
        Evidence("timestamps", "tcp_timestamps on", reuse.timestamps_on),
        Evidence("peer_timestamps", "open connections carry timestamps", dest.peer_timestamps),
        Evidence("tw_reuse_applies", "connect() may reuse TIME_WAIT here", limit.tw_reuse_applies),
        Evidence(
            "reusable_time_wait",
            "TIME_WAITs old enough to reuse",
            dest.reusable_time_wait if limit.tw_reuse_applies else 0,
            "sockets",
        ),
        Evidence("port_hold_s", "time a closed connection holds its port", limit.port_hold, "s"),
        Evidence("max_connection_rate", "sustainable new connections", limit.max_rate, "conn/s"),
    ]
    owners = owner_names(ctx, dest.inodes)
    if owners is not None:
        items.append(Evidence("owners", "processes with open connections", owners))
    if look.forecast is not None:
        items.extend(_forecast_evidence(look.forecast))
    return items


def _forecast_evidence(fc: Forecast) -> list[Evidence]:
    return [
        Evidence("watch_s", "watched for", fc.elapsed, "s"),
        Evidence(
            "new_connection_rate", "new connections, whole namespace", fc.namespace_rate, "conn/s"
        ),
        Evidence(
            "destination_connection_rate",
            "new connections to this destination (at least)",
            fc.destination_rate,
            "conn/s",
        ),
        Evidence("port_use_growth", "change of ports in use", fc.growth, "ports/s"),
        Evidence(
            "projected_in_use", "ports needed at this rate", round(fc.projected_in_use), "sockets"
        ),
        Evidence("time_to_exhaustion_s", "out of ports in", fc.time_to_exhaustion, "s"),
    ]


def _explanation(ctx: Context, look: PortLook) -> str:
    dest, ports, limit = look.dest, look.ports, look.limit
    low, high = ctx.port_policy.port_range
    parts = [
        f"Every connection from {dest.local_address} to {dest.remote_address}:"
        f"{dest.remote_port} needs a local port of its own, picked from {low}-{high}: "
        f"{ports.capacity:,} usable after {ports.reserved_in_range:,} reserved and "
        f"{ports.bound_in_range:,} listening ports. The side that closes first keeps its port "
        f"in TIME_WAIT for {TCP_TIMEWAIT_LEN:g} s after the connection is over; here "
        f"{dest.time_wait:,} of the {dest.in_use:,} ports held are such finished connections.",
        f"At most {rate_text(limit)} can be sustained to this destination; beyond that "
        'connect() fails with EADDRNOTAVAIL ("Cannot assign requested address") until '
        "TIME_WAITs expire, which applications see as errors that come and go by the minute.",
        _reuse_sentence(look),
    ]
    return " ".join(p for p in parts if p)


def _reuse_sentence(look: PortLook) -> str:
    dest, reuse, limit = look.dest, look.reuse, look.limit
    if limit.tw_reuse_applies:
        return (
            f"tcp_tw_reuse={reuse.tw_reuse} applies here, so connect() may take over a "
            f"TIME_WAIT after {reuse.delay_text()}; {dest.reusable_time_wait:,} TIME_WAITs are "
            "already that old and are not counted as in use."
        )
    if not reuse.timestamps_on:
        return (
            "tcp_timestamps=0, so tcp_tw_reuse can never take a TIME_WAIT over "
            "(see the timestamps-disabled finding)."
        )
    if dest.peer_timestamps is False:
        return (
            "The open connections to this destination carry no TCP timestamps (the peer or a "
            "middlebox does not use them), so tcp_tw_reuse could not take their TIME_WAITs "
            "over either."
        )
    if reuse.tw_reuse == 0:
        return "tcp_tw_reuse=0: TIME_WAIT ports are never reused by connect()."
    return (
        f"tcp_tw_reuse={reuse.tw_reuse} reuses TIME_WAITs only for loopback connections, "
        "and this destination is not loopback."
    )


def _fixes(ctx: Context, look: PortLook) -> list[Fix]:
    dest = look.dest
    target = f"{dest.remote_address}:{dest.remote_port}"
    fixes = [pooling_fix(target)]
    reuse_fix = _tw_reuse_fix(look)
    if reuse_fix is not None:
        fixes.append(reuse_fix)
    range_fix = _range_fix(ctx, look)
    if range_fix is not None:
        fixes.append(range_fix)
    fixes.append(_spread_fix(look))
    fixes.append(_no_port_fix())
    return fixes


def _tw_reuse_fix(look: PortLook) -> Fix | None:
    dest, reuse, limit = look.dest, look.reuse, look.limit
    if limit.tw_reuse_applies or not reuse.timestamps_on or dest.peer_timestamps is False:
        return None
    better = rate_limit(look.ports, reuse, loopback=dest.loopback, tw_reuse=1)
    why_not_now = (
        "0 turns reuse off"
        if reuse.tw_reuse == 0
        else f"{reuse.tw_reuse}, the default, reuses TIME_WAITs of loopback connections only "
        f"(127.0.0.0/8, ::1), and {dest.remote_address} is not loopback"
    )
    return Fix(
        kind=FixKind.SYSCTL,
        summary="Let connect() take over old TIME_WAITs: net.ipv4.tcp_tw_reuse=1",
        detail=(
            f"The current value {why_not_now}. With 1, connect() may reuse the 4-tuple of a "
            f"TIME_WAIT once {reuse.delay_text()} has passed, provided that connection used "
            "TCP timestamps (they are on here): PAWS then rejects stray segments of the old "
            f"connection. That raises the limit from {limit.max_rate:,.1f} to "
            f"{better.max_rate:,.1f} new connections/s. It only affects connections this host "
            "opens, and it is per network namespace: set it in the namespace (container) that "
            "makes the connections."
        ),
        example=sysctl_line(TW_REUSE, 1),
        sysctl=TW_REUSE,
    )


def _range_fix(ctx: Context, look: PortLook) -> Fix | None:
    low, high = ctx.port_policy.port_range
    wide_low, wide_high = WIDE_PORT_RANGE
    if high - low >= wide_high - wide_low:
        return None
    wide = ctx.port_policy._replace(port_range=WIDE_PORT_RANGE)
    ports = wide.capacity(bound=ctx.listening_ports.tolist())
    better = rate_limit(
        ports, look.reuse, loopback=look.dest.loopback, peer_timestamps=look.dest.peer_timestamps
    )
    return Fix(
        kind=FixKind.SYSCTL,
        summary=f"Widen the ephemeral port range ({low}-{high} now) to {wide_low}-{wide_high}",
        detail=(
            f"That gives {ports.capacity:,} usable ports per destination instead of "
            f"{look.ports.capacity:,} ({better.max_rate:,.1f} instead of "
            f"{look.limit.max_rate:,.1f} new connections/s). It buys headroom, not a cure. Add "
            "the ports local servers listen on to net.ipv4.ip_local_reserved_ports first, so "
            "that an outgoing connection never occupies one before its server starts."
        ),
        example=sysctl_line(PORT_RANGE, f'"{wide_low} {wide_high}"'),
        sysctl=PORT_RANGE,
    )


def _spread_fix(look: PortLook) -> Fix:
    return Fix(
        kind=FixKind.INFRASTRUCTURE,
        summary="Spread connections over more destination addresses/ports or source addresses",
        detail=(
            "Ports are counted per (source address, destination address, destination port): "
            "each extra backend address or listening port, or each extra local source address "
            f"the clients bind to, adds another {look.ports.capacity:,} ports."
        ),
        example="ip addr add <second source address>/<prefix> dev <interface>",
    )


def _no_port_fix() -> Fix:
    return Fix(
        kind=FixKind.SOCKET_OPTION,
        summary="Clients that bind() a source address first: set IP_BIND_ADDRESS_NO_PORT",
        detail=(
            "bind() with port 0 picks the port at bind time, for that socket alone, without "
            "knowing the destination; connect() never shares such a port, so each connection "
            "uses up a port for every destination at once. With IP_BIND_ADDRESS_NO_PORT "
            "the address is bound now and the port is chosen at connect(), per "
            "destination, like an unbound client. Set it before bind()."
        ),
        example="setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);",
    )


RULE = Rule(RULE_ID, "Ephemeral ports running out towards one destination", check)
