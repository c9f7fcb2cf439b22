"""Shared by fin-wait1-stuck and last-ack-stuck: sockets whose FIN is never acknowledged.

A socket counts as stuck when its FIN (or the data queued before it) has been sent again at
least STUCK_RETRANSMISSIONS times without an answer (timer "on", retrans >= 3: 1.4 s of
silence even at the minimum RTO, hundreds of round trips on any working path), or when the
zero-window probe timer ("persist") has fired as often. Per peer: 1-9 stuck sockets are
info, WARNING_SOCKETS (10) or more a warning.

The persist timer on a closing socket means the segment could not go out at all: either the
peer advertises a zero window (its application stopped reading) or a local firewall drops
our own output, which leaves the segment unsent [measured on 6.18: an nftables output drop
turned a FIN_WAIT1 retransmission into "persist" with a rising probe count].
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Severity
from tcpdoctor.diagnose.rules._closing import (
    Peer,
    group_by_peer,
    max_or_none,
    orphan_end_text,
    orphan_schedule,
    plural,
    ranked,
    rows_where,
    seconds_text,
    silent_for_s,
)
from tcpdoctor.diagnose.rules._common import in_state, sysctl_line
from tcpdoctor.kernel.constants import TCP_ORPHAN_RETRIES, TCP_RETR2
from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.kernel.timing import established_give_up
from tcpdoctor.observe._records import pick

STUCK_RETRANSMISSIONS = 3
WARNING_SOCKETS = 10
SUGGESTED_ORPHAN_RETRIES = 5
ORPHAN_RETRIES = "net.ipv4.tcp_orphan_retries"
RETRIES2 = "net.ipv4.tcp_retries2"


class StuckKind(NamedTuple):
    rule_id: str
    state: TcpState
    situation: str  # one sentence: how a socket gets into this state
    extra_fix: Fix | None  # a fix specific to this state, placed after the investigation
    topics: tuple[str, ...]


def stuck_rows(ctx: Context, state: TcpState) -> np.ndarray:
    sockets = ctx.sockets
    waiting = np.isin(sockets["timer"], [int(TimerCode.RETRANSMIT), int(TimerCode.PROBE0)])
    stuck = in_state(ctx, state) & waiting & (sockets["retrans"] >= STUCK_RETRANSMISSIONS)
    return rows_where(stuck)


def stuck_findings(ctx: Context, kind: StuckKind) -> Iterator[Finding]:
    rows = stuck_rows(ctx, kind.state)
    if not len(rows):
        return
    silent = dict(zip(rows.tolist(), silent_for_s(ctx, rows), strict=True))
    for peer, found in ranked(group_by_peer(ctx, rows), ctx.options.top):
        yield _finding(ctx, kind, peer, found, np.array([silent[r] for r in found.tolist()]))


def _finding(
    ctx: Context, kind: StuckKind, peer: Peer, rows: np.ndarray, silent: np.ndarray
) -> Finding:
    sockets = pick(ctx.sockets, rows)
    count = len(rows)
    orphaned = int(np.count_nonzero(sockets["inode"] == 0))
    probing = int(np.count_nonzero(sockets["timer"] == TimerCode.PROBE0))
    retries = ctx.sysctl_int(ORPHAN_RETRIES)
    retries = TCP_ORPHAN_RETRIES if retries is None else retries
    orphan = orphan_schedule(retries)
    retries2 = ctx.sysctl_int(RETRIES2)
    owned = established_give_up(TCP_RETR2 if retries2 is None else retries2)
    name = kind.state.label
    evidence = (
        Evidence("peer", "peer", peer.label),
        Evidence("stuck", f"{name} sockets retrying their FIN", count, "sockets"),
        Evidence("orphaned", "already closed by the application (orphans)", orphaned, "sockets"),
        Evidence("owned", "still held by a process", count - orphaned, "sockets"),
        Evidence("retransmitting", "on the retransmission timer", count - probing, "sockets"),
        Evidence("probing", "on the zero-window probe timer", probing, "sockets"),
        Evidence("max_retransmissions", "most retries so far", int(sockets["retrans"].max())),
        Evidence("peer_silent_s", "peer silent for, at least", max_or_none(silent), "s"),
        Evidence("tcp_orphan_retries", "tcp_orphan_retries", retries),
        Evidence("orphan_retries_effective", "retries an orphan gets", orphan.effective_retries),
        Evidence("orphan_give_up_s", "an orphan gives up after", orphan.schedule.gives_up_at, "s"),
        Evidence(
            "orphan_late_give_up_s",
            "late timers may end an orphan at",
            orphan.sooner_give_up_at,
            "s",
        ),
        Evidence(
            "owned_give_up_s", "a held socket gives up after", owned.schedule.gives_up_at, "s"
        ),
    )
    cause = (
        "the peer has stopped answering: its host is gone or unreachable, or something on the "
        "path (a firewall, NAT or load balancer that forgot the flow) drops the segments"
    )
    if probing:
        cause += (
            "; on the sockets using the zero-window probe timer the segment never left: the peer "
            "advertises a zero window (its application does not read) or a local firewall "
            "drops our own output"
        )
    explanation = (
        f"{kind.situation} These sockets keep sending their FIN and nothing acknowledges it, so "
        f"{cause}. An orphan gives up {orphan_end_text(orphan)}: "
        f"tcp_orphan_retries={retries} ({orphan.effective_retries} retries) is a "
        f"{seconds_text(orphan.budget)} budget counted from the first retransmission. "
        "Orphans vanish without a reset; sockets still held by a process wait for the "
        f"tcp_retries2 budget ({seconds_text(owned.schedule.gives_up_at)}). Each one holds "
        "memory, a port and, "
        "while orphaned, a place under tcp_max_orphans."
    )
    severity = Severity.WARNING if count >= WARNING_SOCKETS else Severity.INFO
    return Finding(
        rule=kind.rule_id,
        severity=severity,
        title=(
            f"{plural(count, f'{name} socket')} to {peer.label} "
            + ("keeps retransmitting its FIN" if count == 1 else "keep retransmitting their FIN")
        ),
        subject=peer.label,
        evidence=evidence,
        explanation=explanation,
        fixes=_fixes(kind, peer, probing, orphaned, retries),
        topics=kind.topics,
    )


def _fixes(
    kind: StuckKind, peer: Peer, probing: int, orphaned: int, retries: int
) -> tuple[Fix, ...]:
    fixes = [
        Fix(
            FixKind.INVESTIGATE,
            f"Find out why {peer.label} stopped answering",
            "Check that the peer host is up and reachable, and look for a firewall, NAT or load "
            "balancer that dropped the flow's state before the connection finished closing.",
            f"tcpdump -ni any host {peer.address} and tcp port {peer.service_port}",
        )
    ]
    if probing:
        fixes.append(
            Fix(
                FixKind.INVESTIGATE,
                "For the zero-window ones: is the peer reading, or do we drop our own output?",
                "A FIN behind a zero window waits for the peer's application to read. A local "
                "drop rule on output has the same look: the segment stays unsent.",
                f"ss -tnoi state {kind.state.name.lower().replace('_', '-')} dst {peer.address}; "
                "nft list ruleset",
            )
        )
    if kind.extra_fix is not None:
        fixes.append(kind.extra_fix)
    if orphaned:
        shorter = orphan_schedule(SUGGESTED_ORPHAN_RETRIES)
        fixes.append(
            Fix(
                FixKind.SYSCTL,
                f"Consider a lower tcp_orphan_retries (now {retries}) to free orphans sooner",
                f"At the minimum RTO, {SUGGESTED_ORPHAN_RETRIES} ends an orphan "
                f"{orphan_end_text(shorter)}. The budget is a time, so slow paths get fewer "
                "retries; too low a value abandons FINs on lossy paths, and the peer may then "
                "hold a half-open connection.",
                sysctl_line(ORPHAN_RETRIES, SUGGESTED_ORPHAN_RETRIES),
                sysctl=ORPHAN_RETRIES,
            )
        )
    return tuple(fixes)
