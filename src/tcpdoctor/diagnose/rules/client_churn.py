"""client-churn: many short connections to one destination, i.e. no connection reuse.

The TIME_WAITs of a destination (connect() side) record the last TCP_TIMEWAIT_LEN
seconds: each connection this host closed in that time left one. So time_wait / 60 s is
the recent rate of new connections, and by Little's law established / rate is how long a
connection lives on average.

Fires for a destination when all of these hold:

- time_wait >= min(500, 25% of its usable ports) (CHURN_MIN_TIME_WAIT, CHURN_CAPACITY_SHARE);
- time_wait >= 4 x established (CHURN_RATIO: connections live ~15 s or less on average);
- ephemeral-port-exhaustion has nothing to say about it: this is churn before the ports
  run out; once they do, that rule reports the destination, with the same first fix.

Severity: info; warning when the churn rate (the TIME_WAIT estimate, or with a watch the
measured rate to this destination if higher) reaches 25% of the sustainable rate
(CHURN_WARNING_OF_MAX). The busiest --top destinations are reported (most TIME_WAITs
first); a limitation says how many more there were.

Evidence: local_address, remote_address, remote_port, time_wait, established, churn_rate,
mean_lifetime_s, max_connection_rate, rate_of_max_pct, capacity, share_pct, owners; with a
watch also destination_connection_rate and new_connection_rate.
"""

from __future__ import annotations

from collections.abc import Iterator

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, Severity
from tcpdoctor.diagnose.rules._ports import (
    Destination,
    capped,
    ceil_share,
    destinations,
    owner_names,
    pct,
    pooling_fix,
    require_sysctls,
    reuse_settings,
    usable_ports,
)
from tcpdoctor.diagnose.rules.ephemeral_port_exhaustion import PortLook, assess
from tcpdoctor.kernel.constants import TCP_TIMEWAIT_LEN

RULE_ID = "client-churn"
CHURN_MIN_TIME_WAIT = 500  # ~8 new connections/s to one destination for a minute
CHURN_CAPACITY_SHARE = 0.25
CHURN_RATIO = 4
CHURN_WARNING_OF_MAX = 0.25
TOPICS = ("time-wait", "ports", "tw-reuse")


def check(ctx: Context) -> Iterator[Finding]:
    require_sysctls(ctx)
    ports = usable_ports(ctx)
    reuse = reuse_settings(ctx)
    threshold = min(CHURN_MIN_TIME_WAIT, ceil_share(CHURN_CAPACITY_SHARE, ports.capacity))
    candidates = destinations(
        ctx.snapshot,
        ctx.port_policy.port_range,
        reuse_delay_ms=reuse.tw_reuse_delay_ms,
        min_in_use=threshold,
    )
    churning = [
        look
        for dest in candidates
        if dest.time_wait >= threshold and dest.time_wait >= CHURN_RATIO * dest.established
        if (look := assess(ctx, dest, ports, reuse)).severity is None
    ]
    churning.sort(key=lambda look: -look.dest.time_wait)
    for look in capped(ctx, RULE_ID, churning):
        yield _finding(ctx, look)


def _finding(ctx: Context, look: PortLook) -> Finding:
    dest, limit = look.dest, look.limit
    tw_rate = dest.time_wait / TCP_TIMEWAIT_LEN
    measured = look.forecast.destination_rate if look.forecast is not None else None
    rate = max(tw_rate, measured or 0.0)
    lifetime = dest.established / tw_rate
    severity = Severity.WARNING if rate >= CHURN_WARNING_OF_MAX * limit.max_rate else Severity.INFO
    evidence = [
        *dest.base_evidence(),
        Evidence("time_wait", "TIME_WAIT to this destination", dest.time_wait, "sockets"),
        Evidence("established", "open connections to it", dest.established, "sockets"),
        Evidence(
            "churn_rate",
            f"new connections (average over the last {TCP_TIMEWAIT_LEN:g} s)",
            tw_rate,
            "conn/s",
        ),
        Evidence("mean_lifetime_s", "average connection lifetime", lifetime, "s"),
        Evidence("max_connection_rate", "sustainable new connections", limit.max_rate, "conn/s"),
        Evidence(
            "rate_of_max_pct",
            "churn as a share of the sustainable rate",
            pct(rate, limit.max_rate),
            "%",
        ),
        Evidence("capacity", "usable ports for this destination", look.ports.capacity, "ports"),
        Evidence(
            "share_pct", "share of usable ports in use", pct(look.blocked, look.ports.capacity), "%"
        ),
    ]
    if look.forecast is not None:
        evidence += [
            Evidence(
                "destination_connection_rate",
                "new connections to it during the watch (at least)",
                look.forecast.destination_rate,
                "conn/s",
            ),
            Evidence(
                "new_connection_rate",
                "new connections, whole namespace",
                look.forecast.namespace_rate,
                "conn/s",
            ),
        ]
    owners = owner_names(ctx, dest.inodes)
    if owners is not None:
        evidence.append(Evidence("owners", "processes with open connections", owners))
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=(
            f"{dest.label}: about {rate:,.1f} new connections/s and {dest.established:,} open: "
            "a connection per request"
        ),
        subject=dest.label,
        evidence=tuple(evidence),
        explanation=_explanation(look, tw_rate, lifetime),
        fixes=_fixes(dest),
        topics=TOPICS,
    )


def _explanation(look: PortLook, tw_rate: float, lifetime: float) -> str:
    dest, limit = look.dest, look.limit
    return (
        f"This host closed {dest.time_wait:,} connections to {dest.remote_address}:"
        f"{dest.remote_port} in the last {TCP_TIMEWAIT_LEN:g} s (each left a TIME_WAIT), about "
        f"{tw_rate:,.1f} per second, while {dest.established:,} are open: a connection lives "
        f"about {lifetime:,.1f} s, so connections are opened per request instead of reused. "
        "Each one costs a handshake round trip (and TLS setup, if any) before the request can "
        f"go out, and holds a local port for {TCP_TIMEWAIT_LEN:g} s after it closes. Ports "
        f"are not short yet ({look.share:.0%} of {look.ports.capacity:,} in use), but at "
        f"{limit.max_rate:,.1f} new connections/s to this destination they would be."
    )


def _fixes(dest: Destination) -> tuple[Fix, ...]:
    target = f"{dest.remote_address}:{dest.remote_port}"
    remote = f"[{dest.remote_address}]" if ":" in dest.remote_address else dest.remote_address
    return (
        pooling_fix(target),
        Fix(
            kind=FixKind.INVESTIGATE,
            summary="Find the client that opens these connections",
            detail=(
                "The open connections name their process (the owners evidence, when run as "
                "root); TIME_WAITs have no owner any more. A proxy in between (an nginx "
                "upstream without keepalive, a sidecar) is a common culprit: its upstream "
                "connections need pooling too."
            ),
            example=f"ss -tnp state established dst {remote} dport = :{dest.remote_port}",
        ),
    )


RULE = Rule(RULE_ID, "Many short connections to one destination (no reuse)", check)
