"""tw-recycle-enabled: net.ipv4.tcp_tw_recycle=1 on a kernel that still has it (< 4.12).

With it, the kernel remembered the newest TCP timestamp seen from each peer address and
silently dropped SYNs from that address carrying an older one (counted as PAWSPassive).
Hosts behind one NAT share an address but not a timestamp clock, so their SYNs were
dropped at random; from 4.10 (per-connection timestamp offsets) every client was hit.

Severity: always critical when the value is 1. From 4.12 the knob does not exist and the
rule is silent; on an older kernel where it cannot be read, the rule is skipped.

Evidence: tw_recycle, kernel, timestamps, per_connection_ts_offsets, listening_ports,
paws_passive_total; with a watch also paws_passive_during_watch.
"""

from __future__ import annotations

from collections.abc import Iterator

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, RuleSkipped, Severity
from tcpdoctor.diagnose.rules._common import sysctl_line
from tcpdoctor.diagnose.rules._ports import (
    POOL_EXAMPLE,
    TW_RECYCLE,
    TW_REUSE,
    require_sysctls,
    reuse_settings,
    watching,
)
from tcpdoctor.kernel.constants import TCP_PAWS_MSL, TCP_TS_OFFSET_RANDOMIZED_SINCE
from tcpdoctor.kernel.sysctls import SYSCTLS, KernelVersion

RULE_ID = "tw-recycle-enabled"
PAWS_PASSIVE = "TcpExt.PAWSPassive"
TOPICS = ("tw-recycle", "timestamps", "time-wait", "tw-reuse")
_REMOVED = SYSCTLS[TW_RECYCLE].removed


def check(ctx: Context) -> Iterator[Finding]:
    require_sysctls(ctx)
    value = ctx.sysctl_int(TW_RECYCLE)
    if value is None:
        if _REMOVED is not None and ctx.kernel >= _REMOVED:
            return  # gone from this kernel: nothing can be wrong
        raise RuleSkipped(f"{TW_RECYCLE} could not be read on Linux {ctx.kernel}")
    if value == 0:
        return
    yield _finding(ctx, value)


def _finding(ctx: Context, value: int) -> Finding:
    everyone = ctx.kernel >= KernelVersion(*TCP_TS_OFFSET_RANDOMIZED_SINCE)
    reuse = reuse_settings(ctx)
    evidence = [
        Evidence("tw_recycle", "tcp_tw_recycle", value),
        Evidence("kernel", "kernel release", str(ctx.kernel)),
        Evidence("timestamps", "tcp_timestamps on", reuse.timestamps_on),
        Evidence("per_connection_ts_offsets", "timestamp offsets random per connection", everyone),
        Evidence(
            "listening_ports",
            "listening ports (exposed to the SYN drops)",
            len(ctx.listening_ports),
            "ports",
        ),
        Evidence(
            "paws_passive_total",
            "SYNs dropped by the check (PAWSPassive)",
            ctx.counter(PAWS_PASSIVE),
            "packets",
        ),
    ]
    if watching(ctx):
        evidence.append(
            Evidence(
                "paws_passive_during_watch",
                "PAWSPassive during the watch",
                ctx.counter_delta(PAWS_PASSIVE),
                "packets",
            )
        )
    who = (
        "every client (this kernel gives each connection its own timestamp offset)"
        if everyone
        else "clients behind a shared NAT or load balancer"
    )
    return Finding(
        rule=RULE_ID,
        severity=Severity.CRITICAL,
        title=f"tcp_tw_recycle is on: connection attempts from {who} are dropped at random",
        subject=TW_RECYCLE,
        evidence=tuple(evidence),
        explanation=_explanation(reuse.timestamps_on, who),
        fixes=_fixes(reuse.timestamps_on),
        topics=TOPICS,
    )


def _explanation(timestamps_on: bool, who: str) -> str:
    text = (
        "tcp_tw_recycle makes the kernel remember the newest TCP timestamp it saw from each "
        f"peer address and, for {TCP_PAWS_MSL} s, silently drop any SYN from that address "
        "whose timestamp is older. Timestamps are only ordered within one sender's clock: "
        "hosts behind one NAT share an address but not a clock, so their connection attempts "
        f"vanish without an RST or a log line; {who} can be hit. They see connect() hang and "
        f"retry, often only from some networks. The option was removed in Linux {_REMOVED} "
        "for this reason; its PAWSPassive counter went with it."
    )
    if not timestamps_on:
        text += (
            " tcp_timestamps is 0 here, which keeps the check from firing for now; it is armed "
            "again as soon as timestamps are turned on."
        )
    return text


def _fixes(timestamps_on: bool) -> tuple[Fix, ...]:
    fixes = [
        Fix(
            kind=FixKind.SYSCTL,
            summary="Turn tcp_tw_recycle off",
            detail=(
                "Set it to 0 now and delete the line from /etc/sysctl.conf and /etc/sysctl.d, "
                f"so it does not come back at boot (on {_REMOVED} and later that line fails)."
            ),
            example=sysctl_line(TW_RECYCLE, 0),
            sysctl=TW_RECYCLE,
        )
    ]
    if timestamps_on:
        fixes.append(
            Fix(
                kind=FixKind.SYSCTL,
                summary="If the aim was to reuse ports for outgoing connections: tcp_tw_reuse=1",
                detail=(
                    "tcp_tw_reuse lets connect() take over an old TIME_WAIT on this host's own "
                    "outgoing connections, guarded by timestamps, and never drops anyone's SYN. "
                    "It does nothing for a server's accepted connections, which need no help."
                ),
                example=sysctl_line(TW_REUSE, 1),
                sysctl=TW_REUSE,
            )
        )
    fixes.append(
        Fix(
            kind=FixKind.APPLICATION,
            summary="Fewer TIME_WAITs by reusing connections (keep-alive, pools)",
            detail=(
                "TIME_WAIT is a symptom of opening and closing connections per request; reuse "
                "them and there is nothing to recycle."
            ),
            example=POOL_EXAMPLE,
        )
    )
    return tuple(fixes)


RULE = Rule(RULE_ID, "tcp_tw_recycle enabled (drops SYNs behind NAT)", check)
