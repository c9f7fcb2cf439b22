"""fin-wait2: this side closed, the peer acknowledged, and the peer never closes its side.

Two kinds, told apart by whether a process still holds the socket:

* orphaned (inode 0: a FIN_WAIT2 minisock with the "timewait" timer, or, when the fin time is
  over 60 s, a full socket on its "keepalive" timer): the application called close(); the
  kernel drops it after the orphan lifetime (kernel/timing.fin_wait2_lifetime).
* owned (inode set): the application called shutdown(SHUT_WR) and kept the descriptor. No
  FIN_WAIT2 timer exists for it; it lasts until the peer closes, resets, or we close().

Thresholds. Orphaned, per peer: >= 20 info, >= 500 warning (each lives at most the orphan
lifetime, so the count is roughly close rate x lifetime; they mostly cost a port and a
minisock). Owned, per process and peer: >= 10 sockets or >= 1 older than the orphan
lifetime is info; >= 100 sockets or >= 10 that old is a warning.

Evidence, orphaned: peer, fin_wait2_orphaned, minisocks, full_sockets, tcp_fin_timeout_s,
orphan_lifetime_s, lifetime_outcome, oldest_age_s (from the timer's time left),
peer_close_wait_here and peer_pid/peer_comm (when the peer end lives in this namespace).
Owned: pid, comm, peer, fin_wait2_owned, peer_silent_s (tcp_info), older_than_orphan_lifetime,
orphan_lifetime_s, timer.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, Severity
from tcpdoctor.diagnose.rules._closing import (
    UNKNOWN_HOLDER,
    Holder,
    Peer,
    by_row,
    grade,
    group_by_holder,
    group_by_peer,
    holder_of,
    max_or_none,
    note_unknown_owners,
    plural,
    ranked,
    rows_where,
    seconds_text,
    silent_for_s,
    worst,
)
from tcpdoctor.diagnose.rules._common import in_state, sysctl_line
from tcpdoctor.kernel.constants import TCP_FIN_TIMEOUT, TCP_TIMEWAIT_LEN
from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.kernel.timing import FinWait2Lifetime, FinWait2Outcome, fin_wait2_lifetime
from tcpdoctor.observe._records import pick

RULE_ID = "fin-wait2"
FIN_TIMEOUT = "net.ipv4.tcp_fin_timeout"
ORPHANED_LEVELS = ((20, Severity.INFO), (500, Severity.WARNING))
OWNED_COUNT_LEVELS = ((10, Severity.INFO), (100, Severity.WARNING))
OWNED_OLD_LEVELS = ((1, Severity.INFO), (10, Severity.WARNING))
SUGGESTED_FIN_TIMEOUT = 15  # seconds: still hundreds of RTTs on any sane path
_MS_PER_S = 1000.0


def check(ctx: Context) -> Iterator[Finding]:
    fin_wait2 = in_state(ctx, TcpState.FIN_WAIT2)
    if not fin_wait2.any():
        return
    fin_timeout = ctx.sysctl_int(FIN_TIMEOUT)
    life = fin_wait2_lifetime(fin_timeout if fin_timeout is not None else TCP_FIN_TIMEOUT)
    orphaned = rows_where(fin_wait2 & (ctx.sockets["inode"] == 0))
    owned = rows_where(fin_wait2 & (ctx.sockets["inode"] != 0))
    found = [*_orphaned_findings(ctx, orphaned, life), *_owned_findings(ctx, owned, life)]
    found.sort(key=lambda f: -f.severity)
    yield from found[: ctx.options.top]


# --- orphaned -----------------------------------------------------------------------------


def _orphan_ages(ctx: Context, rows: np.ndarray, life: FinWait2Lifetime) -> np.ndarray:
    """Lower bound of each orphan's age from the time its timer has left."""
    sockets = pick(ctx.sockets, rows)
    left = sockets["expires_ms"].astype(np.float64) / _MS_PER_S
    ages = np.full(len(rows), np.nan)
    two_phase = life.outcome is FinWait2Outcome.FULL_SOCKET_THEN_MINISOCK
    mini = sockets["timer"] == TimerCode.TIMEWAIT
    full = sockets["timer"] == TimerCode.KEEPALIVE
    before = life.full_socket_phase if two_phase else 0.0
    ages[mini] = before + np.maximum(life.minisock_phase - left[mini], 0.0)
    ages[full] = np.maximum(life.full_socket_phase - left[full], 0.0)
    return ages


def _close_wait_here(ctx: Context, rows: np.ndarray) -> dict[int, int]:
    """FIN_WAIT2 row -> the local CLOSE_WAIT row of the same connection (peer in this netns)."""
    waits = rows_where(in_state(ctx, TcpState.CLOSE_WAIT))
    if not len(waits) or not len(rows):
        return {}
    by_key = dict(zip(_connection_keys(ctx, waits, reverse=True), waits.tolist(), strict=True))
    found = (by_key.get(key) for key in _connection_keys(ctx, rows, reverse=False))
    return {
        row: match for row, match in zip(rows.tolist(), found, strict=True) if match is not None
    }


def _connection_keys(ctx: Context, rows: np.ndarray, *, reverse: bool) -> list[bytes]:
    """(family, one end, the other end) as bytes per row; `reverse` swaps the ends, so a
    socket's key equals its peer socket's reversed key."""
    sockets = pick(ctx.sockets, rows)
    near, far = ("dst", "dport"), ("src", "sport")
    if not reverse:
        near, far = far, near
    key = np.zeros(len(rows), dtype=_KEY_DTYPE)
    key["family"] = sockets["family"]
    key["near"], key["near_port"] = sockets[near[0]], sockets[near[1]]
    key["far"], key["far_port"] = sockets[far[0]], sockets[far[1]]
    blob = key.tobytes()
    size = _KEY_DTYPE.itemsize
    return [blob[at : at + size] for at in range(0, len(blob), size)]


_KEY_DTYPE = np.dtype(
    [
        ("family", "u1"),
        ("near", ">u4", (4,)),
        ("near_port", ">u2"),
        ("far", ">u4", (4,)),
        ("far_port", ">u2"),
    ]
)


def _orphaned_findings(ctx: Context, rows: np.ndarray, life: FinWait2Lifetime) -> Iterator[Finding]:
    if not len(rows):
        return
    ages = by_row(ctx, rows, _orphan_ages(ctx, rows, life))
    local = _close_wait_here(ctx, rows)
    for peer, found in ranked(group_by_peer(ctx, rows), len(rows)):
        severity = grade(len(found), ORPHANED_LEVELS)
        if severity is None:
            break  # ranked: every later group is smaller
        matched = [local[r] for r in found.tolist() if r in local]
        holders = {holder_of(ctx, inode) for inode in ctx.sockets["inode"][matched].tolist()}
        group_ages = ages[found]
        yield _orphaned(ctx, peer, found, group_ages, life, holders, len(matched), severity)


def _orphaned(
    ctx: Context,
    peer: Peer,
    rows: np.ndarray,
    ages: np.ndarray,
    life: FinWait2Lifetime,
    holders: set[Holder],
    here: int,
    severity: Severity,
) -> Finding:
    timers = ctx.sockets["timer"][rows]
    count = len(rows)
    lifetime = life.lifetime if life.lifetime is not None else TCP_TIMEWAIT_LEN
    known = sorted(h for h in holders if h.known)
    holder = known[0] if known else None
    evidence = (
        Evidence("peer", "peer", peer.label),
        Evidence("fin_wait2_orphaned", "orphaned FIN_WAIT2", count, "sockets"),
        Evidence(
            "minisocks",
            "as minisocks (timer 'timewait')",
            int(np.count_nonzero(timers == TimerCode.TIMEWAIT)),
            "sockets",
        ),
        Evidence(
            "full_sockets",
            "as full sockets (timer 'keepalive', fin time over 60 s)",
            int(np.count_nonzero(timers == TimerCode.KEEPALIVE)),
            "sockets",
        ),
        Evidence("tcp_fin_timeout_s", "tcp_fin_timeout", life.fin_timeout, "s"),
        Evidence("orphan_lifetime_s", "an orphan is dropped after", lifetime, "s"),
        Evidence("lifetime_outcome", "how the kernel keeps them", life.outcome.label),
        Evidence("oldest_age_s", "oldest, at least", max_or_none(ages), "s"),
        Evidence(
            "peer_close_wait_here", "peer end in CLOSE_WAIT in this namespace", here, "sockets"
        ),
        Evidence("peer_pid", "process holding the peer end", holder.pid if holder else None),
        Evidence("peer_comm", "its name", holder.comm if holder else None),
    )
    quirk = ""
    if life.outcome is FinWait2Outcome.FULL_SOCKET_THEN_MINISOCK:
        quirk = (
            f" With tcp_fin_timeout above {TCP_TIMEWAIT_LEN:g} s the kernel first keeps the full "
            f"socket for {life.full_socket_phase:g} s and then a minisock for another "
            f"{life.minisock_phase:g} s: {lifetime:g} s in total, not {life.fin_timeout:g} s."
        )
    explanation = (
        "This side closed first: the peer acknowledged our FIN but never sent its own, so the "
        "application at the other end has not closed its socket (it sits in CLOSE_WAIT there). "
        "Our application already called close(), so the socket is an orphan and the kernel "
        f"drops it silently after {seconds_text(lifetime)} (tcp_fin_timeout); a FIN arriving "
        "later is answered with a reset." + quirk
    )
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=(
            f"{plural(count, 'orphaned FIN_WAIT2 socket')} to {peer.label}: "
            "the peer application does not close"
        ),
        subject=peer.label,
        evidence=evidence,
        explanation=explanation,
        fixes=_orphaned_fixes(peer, holder, life),
        topics=("fin-wait2", "close-wait", "orphans"),
    )


def _orphaned_fixes(peer: Peer, holder: Holder | None, life: FinWait2Lifetime) -> tuple[Fix, ...]:
    where = (
        f"The peer end is in this namespace, held by {holder.label}: see close-wait-leak."
        if holder is not None
        else f"Look at the application behind {peer.label} for sockets it never closes."
    )
    peer_fix = Fix(
        FixKind.APPLICATION,
        "Fix the peer application so it closes after this side closes",
        "The peer sees read() return 0 and must close(); until it does, its socket stays in "
        "CLOSE_WAIT and ours in FIN_WAIT2. " + where,
        f"on the peer host: ss -tanp state close-wait '( sport = :{peer.service_port} or "
        f"dport = :{peer.service_port} )'",
    )
    shorter = Fix(
        FixKind.SYSCTL,
        f"Lower tcp_fin_timeout to drop orphaned FIN_WAIT2 sooner (now {life.fin_timeout:g} s)",
        "Only orphans are affected: sockets still held by an application, TIME_WAIT, "
        "FIN_WAIT1 and LAST_ACK are not. Values above 60 s behave as 2 x (value - 60). It "
        "treats the symptom here; the peer still leaks.",
        sysctl_line(FIN_TIMEOUT, SUGGESTED_FIN_TIMEOUT),
        sysctl=FIN_TIMEOUT,
    )
    return (peer_fix, shorter)


# --- owned --------------------------------------------------------------------------------


def _owned_findings(ctx: Context, rows: np.ndarray, life: FinWait2Lifetime) -> Iterator[Finding]:
    if not len(rows):
        return
    limit = life.lifetime if life.lifetime is not None else TCP_TIMEWAIT_LEN
    ages = by_row(ctx, rows, silent_for_s(ctx, rows))
    unknown = 0
    for holder, held in group_by_holder(ctx, rows).items():
        for peer, found in ranked(group_by_peer(ctx, held), len(held)):
            group_ages = ages[found]
            old = int(np.count_nonzero(group_ages >= limit))
            severity = worst(grade(len(found), OWNED_COUNT_LEVELS), grade(old, OWNED_OLD_LEVELS))
            if severity is None:
                continue
            if holder == UNKNOWN_HOLDER:
                unknown += len(found)
            yield _owned(holder, peer, found, group_ages, old, limit, severity)
    note_unknown_owners(ctx, RULE_ID, unknown, "FIN_WAIT2")


def _owned(
    holder: Holder,
    peer: Peer,
    rows: np.ndarray,
    ages: np.ndarray,
    old: int,
    limit: float,
    severity: Severity,
) -> Finding:
    count = len(rows)
    evidence = (
        *holder.evidence(),
        Evidence("peer", "peer", peer.label),
        Evidence("fin_wait2_owned", "FIN_WAIT2 still held by the process", count, "sockets"),
        Evidence(
            "peer_silent_s", "longest the peer has been silent, at least", max_or_none(ages), "s"
        ),
        Evidence("older_than_orphan_lifetime", f"silent over {limit:g} s", old, "sockets"),
        Evidence("orphan_lifetime_s", "an orphan would have been dropped after", limit, "s"),
        Evidence("timer", "kernel timer ending them", "none"),
    )
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=(
            f"{plural(count, 'FIN_WAIT2 socket')} held open by {holder.label} to {peer.label}: "
            "no timer ends them"
        ),
        subject=holder.label,
        evidence=evidence,
        explanation=(
            "The application shut down its sending side (shutdown(SHUT_WR)) and kept the "
            "descriptor; the peer acknowledged our FIN but has not closed. tcp_fin_timeout only "
            "limits orphans, so while a process holds the socket no FIN_WAIT2 timer exists: it "
            "lasts until the peer closes or resets, or the application calls close(), after "
            f"which it becomes an orphan and is dropped within {seconds_text(limit)}."
        ),
        fixes=(
            Fix(
                FixKind.APPLICATION,
                f"Bound the wait for the peer's EOF in {_who(holder)}",
                "After a half-close, read with a deadline and close() when it expires: the "
                "kernel will not end the connection on its own.",
                "sock.shutdown(socket.SHUT_WR)\nsock.settimeout(30)\n"
                "while sock.recv(65536):\n    pass\nsock.close()",
            ),
            Fix(
                FixKind.INVESTIGATE,
                f"Check why the application behind {peer.label} does not close after reading EOF",
                "A request/response peer is expected to answer and close once it sees our FIN.",
                f"ss -tano state fin-wait-2 dst {peer.address}",
            ),
            Fix(
                FixKind.SOCKET_OPTION,
                "SO_KEEPALIVE or TCP_USER_TIMEOUT only catch a dead peer",
                "A live peer that keeps the connection open answers keepalive probes, so only "
                "the application's own deadline helps there.",
                "setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);",
            ),
        ),
        topics=("fin-wait2", "close-wait", "keepalive"),
    )


def _who(holder: Holder) -> str:
    return holder.comm if holder.known else "the application"


RULE = Rule(RULE_ID, "FIN_WAIT2 sockets whose peer never closes", check)
