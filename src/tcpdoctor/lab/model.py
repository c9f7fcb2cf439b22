"""The scenario model: parameters, checks (measured vs expected), results.

A scenario declares typed parameters, each with a default and a short value for CI
(`--quick`). It computes what the kernel should do from tcpdoctor.kernel formulas, runs
it for real, and reports each comparison as a Check. The result agrees when every check
does.

Tolerance for times (the acceptance rule of the lab): a measured interval agrees with the
expected one when it is within max(4 ms, 12.5 % of the interval) of it, plus the
timer-wheel slack of the kernel timer involved (late side only: timers never fire early),
plus the resolution of the measurement when it is sampled (e.g. one attempt interval).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcpdoctor.errors import InputError
from tcpdoctor.timeline import Timeline
from tcpdoctor.timeline import to_json as timeline_to_json

if TYPE_CHECKING:
    from tcpdoctor.lab._hz import KernelHz
    from tcpdoctor.lab._pcap_option import RunningCapture
    from tcpdoctor.lab.sysctl_args import SysctlSetting
    from tcpdoctor.lab.topology import Host, Topology

ParamValue = int | float | bool | None
ParamValues = Mapping[str, ParamValue]
Measure = int | float | bool | str | None

ABSOLUTE_TOLERANCE_S = 0.004
RELATIVE_TOLERANCE = 0.125


# --- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A scenario flag: `--<name with dashes>`."""

    name: str
    kind: type[int] | type[float] | type[bool]
    default: ParamValue
    quick: ParamValue
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[int, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: ParamValue) -> ParamValue:
        """Validate one value (None means "not set" and is always fine)."""
        if value is None or self.kind is bool:
            return value
        number = float(value)
        if not math.isfinite(number):
            raise InputError(f"{self.flag} must be a finite number, got {value}")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise InputError(f"{self.flag} must be one of {allowed}, got {value}")
        if self.minimum is not None and number < self.minimum:
            raise InputError(f"{self.flag} must be at least {self.minimum:g}, got {value}")
        if self.maximum is not None and number > self.maximum:
            raise InputError(f"{self.flag} must be at most {self.maximum:g}, got {value}")
        return value


def resolve_params(
    params: Sequence[Param], given: Mapping[str, ParamValue], *, quick: bool = False
) -> dict[str, ParamValue]:
    """Values for every parameter: given (not None) > quick value (with --quick) > default."""
    unknown = set(given) - {p.name for p in params}
    if unknown:
        raise InputError(f"unknown scenario parameter(s): {', '.join(sorted(unknown))}")
    values: dict[str, ParamValue] = {}
    for param in params:
        value = given.get(param.name)
        if value is None or (param.kind is bool and value is False):
            value = param.quick if quick else param.default
        values[param.name] = param.check(value)
    return values


# --- checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The accepted range for a measured interval, and how it was built."""

    expected: float
    margin: float  # max(4 ms, 12.5 % of expected), both sides
    slack: float  # timer-wheel lateness, late side only
    resolution: float  # sampling step of the measurement, late side only
    early: float = 0.0  # a known way the value can come out sooner (e.g. one more port)

    @property
    def low(self) -> float:
        return self.expected - self.margin - self.early

    @property
    def high(self) -> float:
        return self.expected + self.margin + self.slack + self.resolution

    def contains(self, measured: float) -> bool:
        return self.low <= measured <= self.high


def tolerance(
    expected: float, *, slack: float = 0.0, resolution: float = 0.0, early: float = 0.0
) -> Window:
    margin = max(ABSOLUTE_TOLERANCE_S, RELATIVE_TOLERANCE * abs(expected))
    return Window(expected, margin, max(0.0, slack), max(0.0, resolution), max(0.0, early))


@dataclass(frozen=True)
class Check:
    """One measured quantity against its expected value."""

    name: str  # snake_case key, also used in `expected` / `measured`
    what: str  # for a person
    expected: Measure
    measured: Measure
    agree: bool
    unit: str = ""
    low: float | None = None  # accepted range, when it is a range
    high: float | None = None
    basis: str = ""  # where the expectation comes from


def exact(
    name: str, what: str, expected: Measure, measured: Measure, *, unit: str = "", basis: str = ""
) -> Check:
    return Check(name, what, expected, measured, measured == expected, unit, basis=basis)


def within(
    name: str,
    what: str,
    window: Window,
    measured: float | None,
    *,
    unit: str = "s",
    basis: str = "",
) -> Check:
    agree = measured is not None and window.contains(measured)
    return Check(
        name,
        what,
        round(window.expected, 6),
        None if measured is None else round(measured, 6),
        agree,
        unit,
        round(window.low, 6),
        round(window.high, 6),
        basis,
    )


def between(
    name: str, what: str, low: int, high: int, measured: int | None, *, basis: str = ""
) -> Check:
    """A count the kernel fixes up to a known spread (low == high: exact)."""
    agree = measured is not None and low <= measured <= high
    if low == high:
        return Check(name, what, low, measured, agree, basis=basis)
    return Check(name, what, low, measured, agree, "", low, high, basis)


def at_least(
    name: str, what: str, minimum: float, measured: float | None, *, unit: str = "", basis: str = ""
) -> Check:
    agree = measured is not None and measured >= minimum
    return Check(name, what, minimum, measured, agree, unit, minimum, None, basis)


def at_most(
    name: str, what: str, maximum: float, measured: float | None, *, unit: str = "", basis: str = ""
) -> Check:
    agree = measured is not None and measured <= maximum
    return Check(name, what, maximum, measured, agree, unit, None, maximum, basis)


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    run_id: str
    params: Mapping[str, ParamValue]
    sysctls: Mapping[str, Mapping[str, str]]  # host role -> knob -> value read back
    expected: Mapping[str, Measure]
    measured: Mapping[str, Measure]
    checks: tuple[Check, ...]
    verdict: str
    timeline: Timeline
    duration_s: float
    kernel_release: str
    hz: int | None
    hz_source: str
    notes: tuple[str, ...] = ()
    pcap: str | None = None

    @property
    def agree(self) -> bool:
        return bool(self.checks) and all(c.agree for c in self.checks)


def result_to_json(result: ScenarioResult) -> dict[str, Any]:
    """The `lab run --json` object (keys documented in docs/json.md)."""
    return {
        "scenario": result.scenario,
        "run_id": result.run_id,
        "params": dict(result.params),
        "sysctls": {host: dict(values) for host, values in result.sysctls.items()},
        "expected": dict(result.expected),
        "measured": dict(result.measured),
        "agree": result.agree,
        "verdict": result.verdict,
        "checks": [
            {
                "name": c.name,
                "what": c.what,
                "expected": c.expected,
                "measured": c.measured,
                "low": c.low,
                "high": c.high,
                "unit": c.unit,
                "agree": c.agree,
                "basis": c.basis,
            }
            for c in result.checks
        ],
        "timeline": timeline_to_json(result.timeline),
        "duration_s": round(result.duration_s, 3),
        "kernel_release": result.kernel_release,
        "hz": result.hz,
        "hz_source": result.hz_source,
        "notes": list(result.notes),
        "pcap": result.pcap,
    }


# --- scenarios ----------------------------------------------------------------------------

Progress = Callable[[float, str], None]  # (seconds done, what is happening)


def _no_progress(_done: float, _what: str) -> None:
    return None


@dataclass
class RunContext:
    """What a scenario gets to work with during one run."""

    topology: Topology
    sysctls: tuple[SysctlSetting, ...]
    hz: KernelHz
    progress: Progress = _no_progress
    pcap: Path | None = None  # where --pcap wants the capture, if anywhere

    def start_capture(self, host: Host, interfaces: Sequence[str]) -> RunningCapture | None:
        """Capture `host`'s traffic on `interfaces` into self.pcap, when one was asked for.
        The capture is stopped by the cleanup registry if the scenario does not stop it."""
        if self.pcap is None:
            return None
        from tcpdoctor.lab._pcap_option import start_capture

        return start_capture(self.topology, host, interfaces, self.pcap)


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    summary: str
    params: tuple[Param, ...]
    run: Callable[[RunContext, ParamValues], ScenarioResult]
    # Raises InputError for a bad combination of parameters and --sysctl settings.
    validate: Callable[[ParamValues, tuple[SysctlSetting, ...]], None]
    # Seconds the run should take (for the progress bar and for timeouts).
    estimate: Callable[[ParamValues, tuple[SysctlSetting, ...]], float]
    teaches: str = ""
