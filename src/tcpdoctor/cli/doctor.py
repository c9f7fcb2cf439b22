"""`tcpdoctor doctor` (also the bare `tcpdoctor`): what is wrong here, why, and the fix."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from tcpdoctor.cli._options import json_option, namespace_options, resolve_target
from tcpdoctor.diagnose.context import DoctorOptions
from tcpdoctor.diagnose.model import Severity

if TYPE_CHECKING:
    from tcpdoctor.diagnose.context import Context
    from tcpdoctor.diagnose.engine import Diagnosis
    from tcpdoctor.diagnose.overview import AuditLine, ProcessCount
    from tcpdoctor.observe.netns import NetnsTarget

MAX_WATCH_S = 3600.0
_OVERLAP_SWITCH_S = 0.0002


@click.command()
@namespace_options
@click.option(
    "--watch",
    type=click.FloatRange(0, MAX_WATCH_S),
    default=0.0,
    metavar="SECONDS",
    help="Sample repeatedly for this long: adds rates, trends and forecasts.",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 60),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between samples during --watch.",
)
@click.option(
    "--idle-timeout",
    metavar="SECONDS|PRESET",
    help="Idle timeout of a middlebox on the path (e.g. 350, 5m, aws-nlb, conntrack).",
)
@click.option(
    "--fail-on",
    type=click.Choice([s.label for s in Severity]),
    help="Exit 1 when a finding is at least this severe (for scripts and CI).",
)
@click.option("--top", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--all-sysctls", is_flag=True, help="List every lifecycle sysctl in the audit.")
@json_option
def doctor(
    netns_name: str | None,
    netns_pid: int | None,
    watch: float,
    interval: float,
    idle_timeout: str | None,
    fail_on: str | None,
    top: int,
    all_sysctls: bool,
    as_json: bool,
) -> None:
    """Diagnose TCP connection-lifecycle problems, with evidence and the fix."""
    from tcpdoctor.render import doctor_view

    prepare = _load_json_writer if as_json else doctor_view.load_rich
    run = run_doctor(netns_name, netns_pid, watch, interval, idle_timeout, top, prepare)
    if as_json:
        from tcpdoctor.render.json import dumps

        sys.stdout.write(dumps(run.document()) + "\n")
    else:
        doctor_view.print_report(
            run.ctx, run.diagnosis, run.audit, run.close_wait, all_sysctls=all_sysctls
        )
    if fail_on is not None and run.diagnosis.at_least(Severity.parse(fail_on)):
        raise click.exceptions.Exit(1)


class DoctorRun(NamedTuple):
    """Everything one doctor run found; `doctor` and `report` render it."""

    ctx: Context
    diagnosis: Diagnosis
    audit: tuple[AuditLine, ...]
    close_wait: tuple[ProcessCount, ...]

    def document(self) -> dict[str, Any]:
        from tcpdoctor.render.doctor_view import document

        return document(self.ctx, self.diagnosis, self.audit, self.close_wait)


def run_doctor(
    netns_name: str | None,
    netns_pid: int | None,
    watch: float,
    interval: float,
    idle_timeout: str | None,
    top: int,
    prepare: Callable[[], object] = lambda: None,
) -> DoctorRun:
    """Collect (with a progress bar on stderr during a watch), diagnose, audit.

    `prepare` (e.g. importing the renderer) runs while the snapshot is being read.
    """
    from tcpdoctor.diagnose.engine import diagnose
    from tcpdoctor.diagnose.overview import close_wait_by_process, sysctl_audit

    target = resolve_target(netns_name, netns_pid)
    seconds, source = _idle_timeout(idle_timeout)
    options = DoctorOptions(idle_timeout=seconds, idle_timeout_source=source, top=top)
    if watch > 0:
        ctx = _collect(target, options, watch, interval)
    else:
        ctx = _collect_meanwhile(lambda: _collect(target, options, 0, interval), prepare)
    diagnosis = diagnose(ctx)
    return DoctorRun(ctx, diagnosis, sysctl_audit(ctx, diagnosis), close_wait_by_process(ctx, top))


def _collect_meanwhile(collect: Callable[[], Context], prepare: Callable[[], object]) -> Context:
    """Collect in a thread while this one loads the rules and the renderer.

    Most of a large dump is spent waiting for the kernel. The reading thread needs the GIL
    back after every datagram, so the importing thread hands it over sooner than the
    default 5 ms while both run.
    """
    from tcpdoctor._background import Background
    from tcpdoctor.diagnose.rules import all_rules

    switch = sys.getswitchinterval()
    sys.setswitchinterval(_OVERLAP_SWITCH_S)
    try:
        pending = Background(collect, "doctor:collect")
        all_rules()
        prepare()
        return pending.result()
    finally:
        sys.setswitchinterval(switch)


def _load_json_writer() -> None:
    import tcpdoctor.render.json  # noqa: F401  (loaded while the snapshot is read)


def _idle_timeout(text: str | None) -> tuple[float | None, str | None]:
    if text is None:
        return None, None
    from tcpdoctor.diagnose.idle_timeouts import parse_idle_timeout

    return parse_idle_timeout(text)


def _collect(
    target: NetnsTarget | None, options: DoctorOptions, watch: float, interval: float
) -> Context:
    from tcpdoctor.diagnose.watch import collect

    if watch <= 0:
        return collect(target, options)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("watching"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} samples"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        task = progress.add_task("watch", total=max(1, round(watch / interval)))
        return collect(
            target,
            options,
            watch=watch,
            interval=interval,
            on_sample=lambda done, total: progress.update(task, completed=done, total=total),
        )
