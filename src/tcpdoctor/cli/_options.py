"""Options and helpers shared by several verbs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tcpdoctor.observe import netns
from tcpdoctor.observe.netns import NetnsTarget

F = TypeVar("F", bound=Callable[..., Any])


def namespace_options(command: F) -> F:
    """--netns NAME|PATH and --pid PID: which network namespace to look at."""
    command = click.option(
        "--pid",
        "netns_pid",
        type=int,
        metavar="PID",
        help="Look at the network namespace of this process (e.g. a container's).",
    )(command)
    command = click.option(
        "--netns",
        "netns_name",
        metavar="NAME|PATH",
        help="Look at this network namespace (a name from 'ip netns list', or a path).",
    )(command)
    return command


def resolve_target(netns_name: str | None, netns_pid: int | None) -> NetnsTarget | None:
    return netns.resolve(name=netns_name, pid=netns_pid)


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (docs/json.md).")(
        command
    )
