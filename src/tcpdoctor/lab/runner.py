"""Running one scenario: checks first, then the run inside a cleanup registry.

prepare() does everything that can fail on bad input (exit 2) without touching the
kernel; execute() checks the environment (root: exit 3; tools, namespaces: exit 4), marks
the run alive, builds the topology through the scenario and always tears it down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tcpdoctor.errors import PermissionDenied, ScenarioError
from tcpdoctor.lab import _names, _proc, _runlock, registry
from tcpdoctor.lab._hz import kernel_hz
from tcpdoctor.lab.cleanup import CleanupRegistry, stop_on_signals
from tcpdoctor.lab.model import (
    ParamValue,
    Progress,
    RunContext,
    ScenarioResult,
    ScenarioSpec,
    resolve_params,
)
from tcpdoctor.lab.sysctl_args import SysctlSetting, parse_settings
from tcpdoctor.lab.topology import Topology

SETUP_ESTIMATE_S = 2.0


@dataclass(frozen=True)
class PreparedRun:
    spec: ScenarioSpec
    values: Mapping[str, ParamValue]
    sysctls: tuple[SysctlSetting, ...]
    estimate_s: float


def prepare(
    name: str,
    given: Mapping[str, ParamValue],
    sysctl_texts: Sequence[str] = (),
    *,
    quick: bool = False,
) -> PreparedRun:
    """Validate the scenario name, its parameters and the --sysctl settings (InputError)."""
    spec = registry.get(name)
    values = resolve_params(spec.params, given, quick=quick)
    settings = parse_settings(sysctl_texts)
    spec.validate(values, settings)
    return PreparedRun(spec, values, settings, spec.estimate(values, settings) + SETUP_ESTIMATE_S)


def check_environment() -> None:
    """Root, `ip`, and network namespace support, or one clear error."""
    if os.geteuid() != 0:
        raise PermissionDenied("tcpdoctor lab needs root: it creates network namespaces (try sudo)")
    _proc.require_tool("ip")
    _proc.require_tool("sysctl")
    if not os.path.exists("/proc/self/ns/net"):
        raise ScenarioError("this kernel has no network namespaces (CONFIG_NET_NS is off)")


def execute(
    run: PreparedRun, *, progress: Progress | None = None, pcap: Path | None = None
) -> ScenarioResult:
    check_environment()
    run_id = _names.new_run_id()
    with stop_on_signals(), _runlock.hold(run_id), CleanupRegistry() as undo:
        context = RunContext(
            topology=Topology(run.spec.name, undo, run_id),
            sysctls=run.sysctls,
            hz=kernel_hz(),
            pcap=pcap,
        )
        if progress is not None:
            context.progress = progress
        return run.spec.run(context, run.values)
