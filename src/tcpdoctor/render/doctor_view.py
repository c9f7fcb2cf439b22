"""What `tcpdoctor doctor` prints: a terminal report, or one JSON document (docs/json.md).

The JSON document is also what the HTML report is drawn from, so the three never differ
in substance.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.engine import Diagnosis
from tcpdoctor.diagnose.model import Finding, Severity
from tcpdoctor.diagnose.overview import AuditLine, ProcessCount, states_line
from tcpdoctor.kernel.sysctls import format_value
from tcpdoctor.render.json import to_jsonable
from tcpdoctor.render.scan_view import meta_json, summary_json

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

_STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def document(
    ctx: Context,
    diagnosis: Diagnosis,
    audit: tuple[AuditLine, ...],
    close_wait: tuple[ProcessCount, ...],
) -> dict[str, Any]:
    meta = meta_json(ctx.snapshot)
    meta["rules_run"] = list(diagnosis.rules_run)
    meta["watch"] = {"duration_s": ctx.elapsed, "samples": len(ctx.timeline)}
    meta["idle_timeout"] = (
        {"seconds": ctx.options.idle_timeout, "source": ctx.options.idle_timeout_source}
        if ctx.options.idle_timeout is not None
        else None
    )
    return {
        "meta": meta,
        "summary": summary_json(ctx.summary),
        "close_wait_by_process": to_jsonable(close_wait),
        "sysctl_audit": [_audit_json(line) for line in audit],
        "findings": [_finding_json(f) for f in diagnosis.findings],
        "counts": {
            s.label: len([f for f in diagnosis.findings if f.severity is s]) for s in Severity
        },
        "limitations": list(diagnosis.limitations),
        "skipped_rules": to_jsonable(diagnosis.skipped),
        "timeline": to_jsonable(ctx.timeline),
    }


def _finding_json(finding: Finding) -> dict[str, Any]:
    data: dict[str, Any] = to_jsonable(finding)
    return data


def _audit_json(line: AuditLine) -> dict[str, Any]:
    data: dict[str, Any] = to_jsonable(line)
    data["status"] = line.status.value
    data["scope"] = line.scope.value
    return data


# --- terminal ----------------------------------------------------------------------------


def load_rich() -> None:
    """Import what print_report() uses (so it can be loaded ahead, while data is read)."""
    import rich.console
    import rich.markup
    import rich.table  # noqa: F401


def print_report(
    ctx: Context,
    diagnosis: Diagnosis,
    audit: tuple[AuditLine, ...],
    close_wait: tuple[ProcessCount, ...],
    *,
    all_sysctls: bool = False,
) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    _header(console, ctx)
    _ports(console, ctx)
    _close_wait(console, close_wait)
    _audit(console, audit, all_sysctls)
    _findings(console, diagnosis)
    for note in diagnosis.limitations:
        console.print(f"[dim]could not see: {note}[/]")
    for skipped in diagnosis.skipped:
        console.print(f"[dim]rule {skipped.rule} skipped: {skipped.reason}[/]")


def _header(console: Console, ctx: Context) -> None:
    meta = ctx.snapshot.meta
    where = meta.netns.label
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(meta.taken_at))
    console.print(
        f"[bold]tcpdoctor doctor[/]  {meta.hostname}  netns {where}  kernel "
        f"{meta.kernel_release}  {when}"
    )
    watch = f", watched {ctx.elapsed:.0f} s ({len(ctx.timeline)} samples)" if ctx.elapsed else ""
    console.print(f"{len(ctx.snapshot)} TCP sockets, read in {meta.elapsed_s * 1000:.0f} ms{watch}")
    states = "  ".join(
        f"{name} {count}" for name, count in states_line(ctx.snapshot.count_by_state())
    )
    console.print(f"[dim]states:[/] {states or 'none'}")


def _table(title: str, columns: list[str], rows: list[list[str]]) -> RenderableType:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold")
    for name in columns:
        table.add_column(
            name, justify="right" if name[:1].isupper() and name in _NUMERIC else "left"
        )
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


_NUMERIC = {"In use", "TIME_WAIT", "Capacity", "Share", "CLOSE_WAIT", "PID"}


def _ports(console: Console, ctx: Context) -> None:
    use = ctx.summary.port_use
    if not use:
        return
    lo, hi = ctx.summary.port_range
    rows = [
        [p.local_address, f"{p.remote_address}:{p.remote_port}", str(p.in_use), str(p.time_wait),
         str(p.capacity), f"{p.share:.1%}"]
        for p in use[:5]
    ]  # fmt: skip
    console.print(
        _table(
            f"Top destinations by ephemeral-port use (range {lo}-{hi})",
            ["Local", "Destination", "In use", "TIME_WAIT", "Capacity", "Share"],
            rows,
        )
    )


def _close_wait(console: Console, close_wait: tuple[ProcessCount, ...]) -> None:
    if not close_wait:
        return
    rows = [
        [str(p.pid) if p.pid is not None else "?", p.process, str(p.count),
         ", ".join(f"{peer} ({n})" for peer, n in p.top_peers)]
        for p in close_wait
    ]  # fmt: skip
    console.print(
        _table("Top processes by CLOSE_WAIT", ["PID", "Process", "CLOSE_WAIT", "Peers"], rows)
    )


def _audit(console: Console, audit: tuple[AuditLine, ...], all_sysctls: bool) -> None:
    shown = [line for line in audit if all_sysctls or line.noteworthy]
    if not shown:
        console.print("[dim]sysctl audit: every lifecycle knob is at its default[/]")
        return
    rows = [
        [
            line.name,
            _value(line),
            _default(line),
            line.verdict or ("changed" if line.changed else ""),
        ]
        for line in shown
    ]
    title = "Sysctl audit" + ("" if all_sysctls else " (changed or flagged; --all-sysctls for all)")
    console.print(_table(title, ["Sysctl", "Value", "Default", "Verdict"], rows))


def _value(line: AuditLine) -> str:
    if line.value is None:
        return line.status.value
    return format_value(_unit_of(line.name), line.value)


def _default(line: AuditLine) -> str:
    if line.default is None:
        return line.default_rule or "-"
    return format_value(_unit_of(line.name), line.default)


def _unit_of(name: str) -> Any:
    from tcpdoctor.kernel.sysctls import lookup_sysctl

    return lookup_sysctl(name).unit


def _findings(console: Console, diagnosis: Diagnosis) -> None:
    if not diagnosis.findings:
        console.print("\n[bold green]No lifecycle problems found.[/]")
        return
    counts = ", ".join(
        f"{n} {s.label}"
        for s in reversed(Severity)
        if (n := len([f for f in diagnosis.findings if f.severity is s]))
    )
    console.print(f"\n[bold]Findings:[/] {counts}")
    for finding in diagnosis.findings:
        _finding(console, finding)


def _finding(console: Console, finding: Finding) -> None:
    from rich.markup import escape  # titles and addresses may contain "[" (IPv6)

    style = _STYLE[finding.severity]
    head = f"[{style}]{finding.severity.label.upper()}[/] [bold]{escape(finding.title)}[/]"
    # One print per finding: rich's cost is mostly per call, not per line.
    lines = [f"\n{head}  [dim]({finding.rule})[/]", f"  [dim]about:[/] {escape(finding.subject)}"]
    lines += [f"  [dim]{escape(e.label)}:[/] {escape(e.text())}" for e in finding.evidence]
    lines.append(f"  [dim]why:[/] {escape(finding.explanation)}")
    for number, fix in enumerate(finding.fixes, start=1):
        kind = escape(f"[{fix.kind.label}]")
        lines.append(f"  [green]fix {number}[/] [dim]{kind}[/] {escape(fix.summary)}")
        if fix.detail:
            lines.append(f"        {escape(fix.detail)}")
        if fix.example:
            lines += [f"        [bold]{escape(line)}[/]" for line in fix.example.splitlines()]
    if finding.topics:
        more = ", ".join(f"tcpdoctor explain {t}" for t in finding.topics)
        lines.append(f"  [dim]more: {more}[/]")
    console.print("\n".join(lines))
