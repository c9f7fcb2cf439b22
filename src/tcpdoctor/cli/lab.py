"""`tcpdoctor lab`: watch TCP lifecycle problems happen on the real kernel.

    tcpdoctor lab list
    tcpdoctor lab run NAME [--sysctl KNOB=VALUE ...] [scenario flags] [--quick] [--json]
                           [--plot out.png] [--pcap out.pcap]
    tcpdoctor lab cleanup

Each scenario builds throwaway `tdlab-` network namespaces, runs the experiment, compares
what it measured with what the kernel's rules predict, and removes everything again.
Exit codes: 0 measured agrees with expected, 1 it does not, 2 bad input, 3 not root,
4 environment (no namespaces, a tool or extra missing).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tcpdoctor.errors import ExitCode
from tcpdoctor.lab import registry
from tcpdoctor.lab.model import Param, ParamValue, ScenarioSpec, result_to_json

PROGRESS_MIN_S = 3.0  # shorter runs need no progress bar


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


@click.group(name="lab")
def lab() -> None:
    """Reproduce TCP lifecycle problems on the real kernel, in throwaway namespaces.

    Needs root. Everything it creates is named tdlab-... and removed when the run ends.
    """


@lab.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/json.md).")
def list_scenarios(as_json: bool) -> None:
    """The scenarios and their flags."""
    specs = registry.all_specs()
    if as_json:
        click.echo(json.dumps([_spec_json(s) for s in specs], indent=2))
        return
    from tcpdoctor.lab.view import render_list

    render_list(_console(), specs)


def _spec_json(spec: ScenarioSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "summary": spec.summary,
        "teaches": spec.teaches,
        "params": [
            {
                "name": p.name,
                "flag": p.flag,
                "type": p.kind.__name__,
                "default": p.default,
                "quick": p.quick,
                "help": p.help,
            }
            for p in spec.params
        ],
    }


@lab.command("cleanup")
@click.option(
    "--force",
    is_flag=True,
    help="Also remove tdlab- namespaces not made by a lab run even if they look in use "
    "(processes inside, or younger than 10 minutes). A running lab is never touched.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/json.md).")
def cleanup(force: bool, as_json: bool) -> None:
    """Remove tdlab- namespaces, links and nft tables a killed run left behind.

    Only names starting with tdlab- are considered. Objects that may still be in use (a
    running lab; a tdlab- namespace from a test or benchmark with processes inside or made
    less than 10 minutes ago) are kept and listed. Safe to run any number of times.
    """
    from tcpdoctor.lab import leftovers
    from tcpdoctor.lab.runner import check_environment

    check_environment()
    outcomes = leftovers.sweep(force=force)
    if as_json:
        rows = [
            {
                "kind": o.leftover.kind.label,
                "name": o.leftover.name,
                "family": o.leftover.family,
                "removed": o.removed,
                "reason": o.reason,
            }
            for o in outcomes
        ]
        click.echo(json.dumps({"objects": rows}, indent=2))
        return
    from tcpdoctor.lab.view import render_cleanup

    render_cleanup(_console(), outcomes)


# --- lab run NAME -------------------------------------------------------------------------


class _ScenarioGroup(click.Group):
    """`lab run NAME`: one subcommand per scenario, built from its parameters."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return registry.names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _scenario_command(registry.get(cmd_name))  # unknown name: InputError, exit 2


@lab.group("run", cls=_ScenarioGroup)
def run() -> None:
    """Run one scenario (see 'tcpdoctor lab list'); 'lab run NAME --help' shows its flags."""


def _param_option(param: Param) -> click.Option:
    if param.kind is bool:
        return click.Option([param.flag, param.name], is_flag=True, default=False, help=param.help)
    shown = f" [default: {param.default}; --quick: {param.quick}]"
    if param.default is None:
        shown = ""
    return click.Option(
        [param.flag, param.name], type=param.kind, default=None, help=param.help + shown
    )


def _common_options() -> list[click.Parameter]:
    return [
        click.Option(
            ["--sysctl", "sysctl_texts"],
            multiple=True,
            metavar="KNOB=VALUE",
            help="A kernel setting for the lab's hosts, e.g. net.ipv4.tcp_tw_reuse=1 "
            "(the net.ipv4. prefix is optional; repeatable).",
        ),
        click.Option(
            ["--quick"],
            is_flag=True,
            help="Short parameters, the ones the test suite uses.",
        ),
        click.Option(["--json", "as_json"], is_flag=True, help="Print one JSON object."),
        click.Option(
            ["--plot", "plot_path"],
            type=click.Path(dir_okay=False, path_type=Path),
            help="Also draw the timeline into this PNG (needs the plot extra).",
        ),
        click.Option(
            ["--pcap", "pcap_path"],
            type=click.Path(dir_okay=False, path_type=Path),
            help="Also capture the client's packets into this pcap file.",
        ),
    ]


def _scenario_command(spec: ScenarioSpec) -> click.Command:
    def callback(**kwargs: Any) -> None:
        _run_scenario(spec, kwargs)

    return click.Command(
        name=spec.name,
        callback=callback,
        params=[*(_param_option(p) for p in spec.params), *_common_options()],
        help=f"{spec.summary}.\n\n{spec.teaches}",
        short_help=spec.summary,
    )


def _run_scenario(spec: ScenarioSpec, options: dict[str, Any]) -> None:
    from tcpdoctor.lab import runner

    given: dict[str, ParamValue] = {p.name: options.pop(p.name) for p in spec.params}
    prepared = runner.prepare(
        spec.name, given, options["sysctl_texts"], quick=bool(options["quick"])
    )
    plot_path: Path | None = options["plot_path"]
    if plot_path is not None:
        from tcpdoctor.lab.plot import require_matplotlib

        require_matplotlib()
    pcap_path = _pcap_path(options["pcap_path"])
    with _progress(prepared.estimate_s) as progress:
        result = runner.execute(prepared, progress=progress, pcap=pcap_path)
    if plot_path is not None:
        from tcpdoctor.lab.plot import plot_result

        plot_result(result, plot_path)
    if options["as_json"]:
        click.echo(json.dumps(result_to_json(result), indent=2))
    else:
        from tcpdoctor.lab.view import render_result

        render_result(_console(), result)
        if plot_path is not None:
            click.echo(f"plot: {plot_path}")
    if not result.agree:
        # Not click's Exit: under standalone_mode=False click returns its code instead.
        sys.exit(int(ExitCode.FINDINGS))


def _pcap_path(path: Path | None) -> Path | None:
    if path is None:
        return None
    from tcpdoctor.lab._pcap_option import capture_available, unavailable_reason

    if not capture_available():
        click.echo(f"tcpdoctor: note: {unavailable_reason()}", err=True)
        return None
    return path


@contextmanager
def _progress(estimate_s: float) -> Iterator[Callable[[float, str], None] | None]:
    """A rich progress bar on stderr for long runs on a terminal; nothing otherwise."""
    if estimate_s < PROGRESS_MIN_S or not sys.stderr.isatty():
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>5.0f}/{task.total:.0f} s"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task("starting", total=estimate_s)

        def update(done: float, what: str) -> None:
            bar.update(task, completed=min(done, estimate_s), description=what)

        yield update
