"""fd-limits: processes holding many sockets close to their open-files limit, and the host's
file-handle limit.

Every socket a process holds is a file descriptor, so its RLIMIT_NOFILE (soft limit) caps
its connections: past it accept() and socket() fail with EMFILE. Only the top socket holders
(ctx.options.top) are looked at: their /proc/PID/limits and /proc/PID/fd.

Thresholds (open descriptors / soft limit, and allocated file handles / fs.file-max):
>= WARNING_SHARE (80 %) warning, >= CRITICAL_SHARE (95 %) critical. A process whose limits
cannot be read (not root, or it exited) is skipped with a limitation.

Evidence, per process: pid, comm, open_fds, tcp_sockets, nofile_soft, nofile_hard,
fd_use_pct, soft_is_legacy_default, close_wait_held, fs_nr_open. Host: file_handles,
file_max, file_use_pct.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import NamedTuple

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Rule, Severity
from tcpdoctor.diagnose.rules._closing import grade, plural
from tcpdoctor.diagnose.rules._common import sysctl_line
from tcpdoctor.errors import TcpDoctorError
from tcpdoctor.kernel.constants import DEFAULT_PORT_RANGE, INR_OPEN_CUR, MAX_PORT, NR_OPEN_DEFAULT
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.observe import limits

RULE_ID = "fd-limits"
WARNING_SHARE = 0.80
CRITICAL_SHARE = 0.95
LEVELS = ((WARNING_SHARE, Severity.WARNING), (CRITICAL_SHARE, Severity.CRITICAL))
FILE_MAX = "fs.file-max"
NR_OPEN = "fs.nr_open"
TOPICS = ("fd-limits", "ports", "close-wait")

MYTH = (
    f"There is no limit of {MAX_PORT:,} sockets. A TCP connection is identified by its "
    "4-tuple (local address, local port, remote address, remote port), so one listening port "
    f"can carry far more than {MAX_PORT:,} connections. What does cap a process is its "
    "open-files limit, because every socket is a file descriptor; what caps outgoing "
    "connections to one destination (address and port) is the ephemeral port range "
    f"({DEFAULT_PORT_RANGE[0]}-{DEFAULT_PORT_RANGE[1]} by default)."
)


class Holders(NamedTuple):
    """TCP sockets of this namespace per holding pid (a shared socket counts for each)."""

    sockets: Counter[int]
    close_wait: Counter[int]
    names: dict[int, str]


def check(ctx: Context) -> Iterator[Finding]:
    holders = _holders(ctx)
    for pid, sockets in holders.sockets.most_common(ctx.options.top):
        finding = _process(ctx, pid, sockets, holders)
        if finding is not None:
            yield finding
    host = _host(ctx)
    if host is not None:
        yield host


def _holders(ctx: Context) -> Holders:
    sockets = ctx.sockets[ctx.sockets["inode"] != 0]
    close_wait = sockets["state"] == TcpState.CLOSE_WAIT
    held: Counter[int] = Counter()
    waiting: Counter[int] = Counter()
    names: dict[int, str] = {}
    unknown = 0
    owner_map = ctx.owner_map()
    for inode, cw in zip(sockets["inode"].tolist(), close_wait.tolist(), strict=True):
        owners = owner_map.get(inode)
        if not owners:
            unknown += 1
            continue
        for owner in owners:
            names.setdefault(owner.pid, owner.comm)
        for pid in {owner.pid for owner in owners} if len(owners) > 1 else (owners[0].pid,):
            held[pid] += 1
            waiting[pid] += cw
    if unknown and not ctx.snapshot.meta.privileged:
        ctx.limitations.append(
            f"{RULE_ID}: {unknown} sockets have no known owner (not root), so their processes' "
            "descriptor limits were not checked"
        )
    return Holders(held, waiting, names)


def _process(ctx: Context, pid: int, sockets: int, holders: Holders) -> Finding | None:
    try:
        limit = limits.read_nofile(pid)
        open_fds = limits.count_fds(pid)
    except TcpDoctorError as err:
        ctx.limitations.append(f"{RULE_ID}: pid {pid}: {err}")
        return None
    if limit is None or open_fds is None or limit.soft is None or limit.soft <= 0:
        return None  # exited meanwhile, or no limit to be near
    share = open_fds / limit.soft
    severity = grade(share, LEVELS)
    if severity is None:
        return None
    comm = holders.names.get(pid, "?")
    nr_open = ctx.sysctl_int(NR_OPEN)
    close_wait = holders.close_wait[pid]
    evidence = (
        Evidence("pid", "process id", pid),
        Evidence("comm", "process name", comm),
        Evidence("open_fds", "open descriptors", open_fds, "fds"),
        Evidence("tcp_sockets", "TCP sockets in this namespace", sockets, "sockets"),
        Evidence("nofile_soft", "open-files limit (soft)", limit.soft, "fds"),
        Evidence("nofile_hard", "open-files limit (hard)", limit.hard, "fds"),
        Evidence("fd_use_pct", "share of the soft limit in use", round(100 * share, 1), "%"),
        Evidence(
            "soft_is_legacy_default",
            f"soft limit is the old default {INR_OPEN_CUR}",
            limit.soft == INR_OPEN_CUR,
        ),
        Evidence("close_wait_held", "of its sockets in CLOSE_WAIT", close_wait, "sockets"),
        Evidence("fs_nr_open", "fs.nr_open (ceiling for the hard limit)", nr_open, "fds"),
    )
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=(
            f"{comm} (pid {pid}) uses {open_fds:,} of {limit.soft:,} descriptors "
            f"({100 * share:.0f} %), {plural(sockets, 'TCP socket')} here"
        ),
        subject=f"{comm} (pid {pid})",
        evidence=evidence,
        explanation=(
            "Each socket is a file descriptor, so a process can hold at most its soft "
            "RLIMIT_NOFILE of them; beyond it accept() and socket() fail with EMFILE ('Too "
            "many open files') and new connections are refused or dropped. " + MYTH
        ),
        fixes=_process_fixes(pid, comm, limit, nr_open, close_wait),
        topics=TOPICS,
    )


def _process_fixes(
    pid: int,
    comm: str,
    limit: limits.NofileLimit,
    nr_open: int | None,
    close_wait: int,
) -> tuple[Fix, ...]:
    soft = limit.soft or 0
    target = max(soft * 4, 65536)
    hard = limit.hard
    ceiling = nr_open if nr_open is not None else NR_OPEN_DEFAULT
    fixes = [
        Fix(
            FixKind.INVESTIGATE,
            "First make sure the descriptors are not leaking",
            f"{plural(close_wait, 'socket')} of this process sit in CLOSE_WAIT (see "
            "close-wait-leak); a leak fills any limit, a higher limit only delays it.",
            f"ls /proc/{pid}/fd | wc -l; ss -tanp | grep -c 'pid={pid},'",
        ),
        Fix(
            FixKind.APPLICATION,
            f"Raise {comm}'s open-files limit where it is started",
            "The soft limit can be raised up to the hard limit by the process itself "
            "(setrlimit) or by its service manager; the hard limit up to fs.nr_open.",
            f"systemd: LimitNOFILE={target}; shell: ulimit -n {target}; "
            f"docker: --ulimit nofile={target}:{target}",
        ),
    ]
    if hard is not None and hard >= ceiling:
        fixes.append(
            Fix(
                FixKind.SYSCTL,
                "Raise fs.nr_open: the hard limit already sits at it",
                "fs.nr_open is host-wide; it only allows higher limits, it raises nobody's.",
                sysctl_line(NR_OPEN, ceiling * 2),
                sysctl=NR_OPEN,
            )
        )
    return tuple(fixes)


def _host(ctx: Context) -> Finding | None:
    try:
        handles = limits.read_file_handles()
    except TcpDoctorError as err:
        ctx.limitations.append(f"{RULE_ID}: {err}")
        return None
    if handles is None:
        return None
    maximum = ctx.sysctl_int(FILE_MAX) or handles.maximum
    if maximum <= 0:
        return None
    share = handles.allocated / maximum
    severity = grade(share, LEVELS)
    if severity is None:
        return None
    return Finding(
        rule=RULE_ID,
        severity=severity,
        title=(
            f"{handles.allocated:,} of {maximum:,} file handles in use on the host "
            f"({100 * share:.0f} %)"
        ),
        subject="host",
        evidence=(
            Evidence("file_handles", "file handles allocated (whole host)", handles.allocated),
            Evidence("file_max", "fs.file-max", maximum),
            Evidence("file_use_pct", "share in use", round(100 * share, 1), "%"),
        ),
        explanation=(
            "fs.file-max caps open files on the whole host; once reached every process gets "
            "ENFILE, whatever its own limit. " + MYTH
        ),
        fixes=(
            Fix(
                FixKind.INVESTIGATE,
                "Find the processes holding most descriptors",
                "A leak (often sockets left in CLOSE_WAIT) is the usual cause.",
                'for p in /proc/[0-9]*; do echo "$(ls $p/fd 2>/dev/null | wc -l) $p"; done | '
                "sort -rn | head",
            ),
            Fix(
                FixKind.SYSCTL,
                "Raise fs.file-max if the load is real",
                "Host-wide; each open file costs a little kernel memory.",
                sysctl_line(FILE_MAX, maximum * 2),
                sysctl=FILE_MAX,
            ),
        ),
        topics=TOPICS,
    )


RULE = Rule(RULE_ID, "Processes near their open-files limit, and the host's file limit", check)
