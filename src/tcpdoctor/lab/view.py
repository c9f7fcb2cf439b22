"""Terminal output of `tcpdoctor lab`: a scenario result, the scenario list, a cleanup."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from tcpdoctor.lab.leftovers import Outcome
from tcpdoctor.lab.model import Check, Measure, ScenarioResult, ScenarioSpec
from tcpdoctor.timeline import Phase, phases


def _num(value: Measure, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    return f"{text} {unit}".rstrip()


def _accepted(check: Check) -> str:
    if check.low is not None and check.high is not None:
        return f"{_num(check.expected, check.unit)}  [{_num(check.low)} .. {_num(check.high)}]"
    if check.low is not None:
        return f">= {_num(check.expected, check.unit)}"
    if check.high is not None:
        return f"<= {_num(check.expected, check.unit)}"
    return _num(check.expected, check.unit)


def render_result(console: Console, result: ScenarioResult) -> None:
    console.print(
        f"[bold]{result.scenario}[/bold]  run {result.run_id}  "
        f"kernel {result.kernel_release}  HZ {result.hz or '?'}"
    )
    params = ", ".join(f"{k}={_num(v)}" for k, v in result.params.items() if v not in (None, False))
    console.print(f"parameters: {params}")
    for host, values in result.sysctls.items():
        shown = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items())
        console.print(f"{host}: {shown}")
    table = Table(show_edge=False, pad_edge=False)
    for column in ("check", "expected", "measured", ""):
        table.add_column(column)
    for check in result.checks:
        mark = "[green]agree[/green]" if check.agree else "[red]DISAGREE[/red]"
        table.add_row(check.what, _accepted(check), _num(check.measured, check.unit), mark)
    console.print(table)
    console.print("timeline:")
    for phase in phases(result.timeline):
        console.print(f"  {_phase_line(phase)}")
    for note in result.notes:
        console.print(f"note: {note}")
    if result.pcap:
        console.print(f"packets: {result.pcap}")
    colour = "green" if result.agree else "red"
    console.print(f"[{colour}]{result.verdict}[/{colour}]")


def _phase_line(phase: Phase) -> str:
    span = f"{phase.start:>4}-{phase.end:<4} s"
    parts = [f"{phase.successes} ok"] if phase.successes else []
    parts += [f"{n} {name}" for name, n in phase.failures.items()]
    return f"{span} {phase.outcome:<8} {', '.join(parts) or '-'}"


def render_list(console: Console, specs: Sequence[ScenarioSpec]) -> None:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("scenario")
    table.add_column("what it shows")
    table.add_column("flags")
    for spec in specs:
        flags = " ".join(p.flag for p in spec.params)
        table.add_row(spec.name, spec.summary, flags)
    console.print(table)


def render_cleanup(console: Console, outcomes: Sequence[Outcome]) -> None:
    if not outcomes:
        console.print("nothing to clean up: no tdlab- namespaces, links or nft tables")
        return
    for outcome in outcomes:
        label = outcome.leftover.label
        if outcome.removed:
            extra = f" ({outcome.reason})" if outcome.reason else ""
            console.print(f"removed {label}{extra}")
        else:
            console.print(f"kept {label}: {outcome.reason}")
