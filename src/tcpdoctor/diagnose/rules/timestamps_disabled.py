"""timestamps-disabled: net.ipv4.tcp_timestamps=0, so tcp_tw_reuse and PAWS cannot work.

tcp_twsk_unique() reuses a TIME_WAIT only when its connection carried timestamps
(tw_ts_recent_stamp != 0), and PAWS (RFC 7323) is what makes early reuse safe. With the
sysctl at 0 this namespace neither sends nor accepts them, so every closed outgoing
connection holds its port for the whole TIME_WAIT.

Severity: warning; critical when tcp_tw_reuse=1 (someone enabled reuse and believes it
works, but it never takes a TIME_WAIT over). Values 1 and 2 (and above) are on: silent.

Evidence: timestamps, tw_reuse, client_time_wait, tw_recycled_total, max_connection_rate,
max_connection_rate_with_reuse (both per destination with the current port range).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, RuleSkipped, Severity
from tcpdoctor.diagnose.rules._common import in_state, sysctl_line
from tcpdoctor.diagnose.rules._ports import (
    TIMESTAMPS,
    pooling_fix,
    rate_limit,
    require_sysctls,
    reuse_settings,
    usable_ports,
)
from tcpdoctor.kernel.constants import TCP_TIMEWAIT_LEN
from tcpdoctor.kernel.states import TcpState

RULE_ID = "timestamps-disabled"
TOPICS = ("timestamps", "tw-reuse", "time-wait", "ports")


def check(ctx: Context) -> Iterator[Finding]:
    require_sysctls(ctx)
    value = ctx.sysctl_int(TIMESTAMPS)
    if value is None:
        raise RuleSkipped(f"{TIMESTAMPS} could not be read")
    if value != 0:
        return
    reuse = reuse_settings(ctx)
    ports = usable_ports(ctx)
    now = rate_limit(ports, reuse, loopback=False)
    enabled = rate_limit(ports, reuse._replace(timestamps=1), loopback=False, tw_reuse=1)
    severity = Severity.CRITICAL if reuse.tw_reuse == 1 else Severity.WARNING
    tw = in_state(ctx, TcpState.TIME_WAIT)
    client_tw = tw & ~np.isin(ctx.sockets["sport"].astype(np.int64), ctx.listening_ports)
    evidence = (
        Evidence("timestamps", "tcp_timestamps", value),
        Evidence("tw_reuse", "tcp_tw_reuse", reuse.tw_reuse),
        Evidence(
            "client_time_wait",
            "TIME_WAIT of outgoing connections (not reusable)",
            int(np.count_nonzero(client_tw)),
            "sockets",
        ),
        Evidence(
            "tw_recycled_total",
            "TIME_WAITs reused by connect() (TWRecycled)",
            ctx.counter("TcpExt.TWRecycled"),
            "sockets",
        ),
        Evidence(
            "max_connection_rate",
            "sustainable new connections per destination now",
            now.max_rate,
            "conn/s",
        ),
        Evidence(
            "max_connection_rate_with_reuse",
            "with timestamps on and tcp_tw_reuse=1",
            enabled.max_rate,
            "conn/s",
        ),
    )
    title = (
        "tcp_tw_reuse=1 has no effect: tcp_timestamps=0"
        if reuse.tw_reuse == 1
        else "tcp_timestamps=0: no PAWS protection and no TIME_WAIT reuse"
    )
    yield Finding(
        rule=RULE_ID,
        severity=severity,
        title=title,
        subject=TIMESTAMPS,
        evidence=evidence,
        explanation=_explanation(reuse.tw_reuse, now.max_rate, enabled.max_rate),
        fixes=(
            Fix(
                kind=FixKind.SYSCTL,
                summary="Turn TCP timestamps back on",
                detail=(
                    "They are often turned off to hide a host's uptime; current kernels add a "
                    "random offset to every timestamp, so they no longer reveal it. They also "
                    "improve RTT measurement. Only connections opened after the change use "
                    "them, and the peer has to support them too."
                ),
                example=sysctl_line(TIMESTAMPS, 1),
                sysctl=TIMESTAMPS,
            ),
            pooling_fix("busy destinations"),
        ),
        topics=TOPICS,
    )


def _explanation(tw_reuse: int, rate_now: float, rate_reuse: float) -> str:
    believed = (
        " tcp_tw_reuse=1 is set here, so someone expects ports to be reused; they are not."
        if tw_reuse == 1
        else ""
    )
    return (
        "With tcp_timestamps=0 connections carry no TCP timestamps. Two things stop working. "
        "PAWS: old duplicate segments can no longer be told apart by their timestamp, which "
        "matters on fast links where sequence numbers wrap. TIME_WAIT reuse: connect() only "
        "takes over a TIME_WAIT whose connection carried timestamps, so tcp_tw_reuse does "
        f"nothing and every closed outgoing connection holds its port for "
        f"{TCP_TIMEWAIT_LEN:g} s. That caps new connections per destination at "
        f"{rate_now:,.1f}/s instead of {rate_reuse:,.1f}/s with reuse.{believed}"
    )


RULE = Rule(RULE_ID, "TCP timestamps disabled (no PAWS, tcp_tw_reuse inert)", check)
