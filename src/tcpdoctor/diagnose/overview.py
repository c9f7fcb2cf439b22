"""The parts of the doctor's report that are not findings: who holds CLOSE_WAITs, and
the sysctl audit (every lifecycle knob, its value, its default, and what the findings
say about it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.engine import Diagnosis
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.kernel.sysctls import Scope, SysctlValue
from tcpdoctor.observe.addresses import format_column
from tcpdoctor.observe.sysctls import ReadStatus


@dataclass(frozen=True, slots=True)
class ProcessCount:
    pid: int | None  # None: no owner visible (not root, or the process is gone)
    process: str
    count: int
    top_peers: tuple[tuple[str, int], ...]  # (peer address, sockets)


_NOBODY: dict[tuple[int | None, str], None] = {(None, "?"): None}


def close_wait_by_process(ctx: Context, top: int) -> tuple[ProcessCount, ...]:
    rows = ctx.sockets[ctx.sockets["state"] == TcpState.CLOSE_WAIT]
    if not len(rows):
        return ()
    peers = format_column(rows["family"], rows["dst"]).tolist()
    owner_map = ctx.owner_map()
    per_owner: dict[tuple[int | None, str], Counter[str]] = {}
    for inode, peer in zip(rows["inode"].tolist(), peers, strict=True):
        owners = owner_map.get(inode, ())
        keys = dict.fromkeys((o.pid, o.comm) for o in owners) if owners else _NOBODY
        for key in keys:
            counts = per_owner.get(key)
            if counts is None:
                counts = per_owner[key] = Counter()
            counts[peer] += 1
    ranked = sorted(per_owner.items(), key=lambda item: -sum(item[1].values()))
    return tuple(
        ProcessCount(pid, comm, sum(c.values()), tuple(c.most_common(3)))
        for (pid, comm), c in ranked[:top]
    )


class AuditLine(NamedTuple):
    name: str
    value: SysctlValue | None
    default: SysctlValue | None
    default_rule: str  # how the default is computed when it depends on the machine
    status: ReadStatus
    changed: bool | None  # None when the default is not a fixed number
    scope: Scope
    findings: tuple[str, ...]  # rules whose fixes change this knob
    verdict: str  # what to do about it, or why it is absent; "" when nothing to say

    @property
    def noteworthy(self) -> bool:
        return bool(self.changed or self.findings)


def sysctl_audit(ctx: Context, diagnosis: Diagnosis) -> tuple[AuditLine, ...]:
    values = ctx.snapshot.sysctls
    if values is None:
        return ()
    advice: dict[str, list[tuple[str, str]]] = {}
    for finding in diagnosis.findings:
        for fix in finding.fixes:
            if fix.sysctl:
                advice.setdefault(fix.sysctl, []).append((finding.rule, fix.summary))
    lines = []
    for reading in values:
        spec = reading.spec
        notes = advice.get(spec.name, [])
        verdict = "; ".join(dict.fromkeys(summary for _, summary in notes))
        if reading.status is not ReadStatus.PRESENT:
            verdict = verdict or reading.reason
        lines.append(
            AuditLine(
                name=spec.name,
                value=reading.value,
                default=spec.default,
                default_rule=spec.default_rule,
                status=reading.status,
                changed=reading.is_default is False if reading.is_default is not None else None,
                scope=spec.scope,
                findings=tuple(dict.fromkeys(rule for rule, _ in notes)),
                verdict=verdict,
            )
        )
    return tuple(lines)


def states_line(counts: dict[TcpState, int]) -> list[tuple[str, int]]:
    """(state name, count), most numerous first."""
    return [(s.label, n) for s, n in sorted(counts.items(), key=lambda kv: -kv[1])]
