"""Plain-text pieces of a topic page, shared by the terminal view and the generated docs."""

from __future__ import annotations

from tcpdoctor.explain._fmt import num
from tcpdoctor.explain.model import KeyNumber
from tcpdoctor.kernel.counters import COUNTERS
from tcpdoctor.kernel.sysctls import SYSCTLS, SysctlSpec, Unit

_UNIT_SUFFIX = {
    Unit.SECONDS: " s",
    Unit.MILLISECONDS: " ms",
    Unit.MICROSECONDS: " µs",
}


def key_number_text(number: KeyNumber) -> str:
    """'60 s', '470.5 conn/s', '3.5 × RTO', '2'."""
    value = num(number.value)
    return f"{value} {number.unit}" if number.unit else value


def _history(spec: SysctlSpec) -> str:
    if spec.removed is not None:
        return f" (removed in Linux {spec.removed})"
    if spec.added is not None:
        return f" (Linux {spec.added}+)"
    return ""


def sysctl_default_text(name: str) -> str:
    """The catalogue default of a sysctl as a person reads it: '60 s', '32768-60999'."""
    spec = SYSCTLS[name]
    if spec.default is None:
        return f"{spec.default_rule}{_history(spec)}"
    text = spec.format(spec.default)
    if spec.unit is Unit.PORT_RANGE:
        text = text.replace(" ", "-")
    elif spec.unit is Unit.PORT_LIST and not text:
        text = "(empty)"
    else:
        text += _UNIT_SUFFIX.get(spec.unit, "")
    return f"{text}{_history(spec)}"


def counter_meaning(key: str) -> str:
    """The catalogue's one-sentence meaning of a counter, with its kernel history."""
    spec = COUNTERS[key]
    history = ""
    if spec.removed is not None:
        history = f" (removed in Linux {spec.removed})"
    elif spec.added is not None:
        history = f" (Linux {spec.added}+)"
    return f"{spec.meaning}{history}"
