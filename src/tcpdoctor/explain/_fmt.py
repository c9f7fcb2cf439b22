"""Small text helpers for topic prose: numbers without float noise, durations, versions."""

from __future__ import annotations

from collections.abc import Iterable

from tcpdoctor.kernel.counters import COUNTERS
from tcpdoctor.kernel.sysctls import SYSCTLS, KernelVersion

_MS = 1000
_US = 1_000_000
_MINUTE = 60
_HOUR = 3600
_DAY = 86400


def num(value: float, places: int = 3) -> str:
    """924.6 -> '924.6', 60.0 -> '60', 470.5333 (places=1) -> '470.5'."""
    text = f"{value:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def secs(value: float, places: int = 3) -> str:
    return f"{num(value, places)} s"


def ms(seconds: float) -> str:
    return f"{num(seconds * _MS)} ms"


def us(seconds: float) -> str:
    return f"{num(seconds * _US)} µs"


def hms(seconds: float) -> str:
    """7875 -> '2 h 11 min 15 s'; 924.6 -> '15 min 24.6 s'."""
    hours, rest = divmod(seconds, _HOUR)
    minutes, secs_left = divmod(rest, _MINUTE)
    parts = [f"{int(hours)} h"] if hours else []
    parts += [f"{int(minutes)} min"] if minutes or hours else []
    parts += [f"{num(secs_left)} s"] if secs_left else []
    return " ".join(parts) or "0 s"


def days(seconds: float) -> str:
    return num(seconds / _DAY, 1)


def times(values: Iterable[float]) -> str:
    """(1.0, 2.0, 3.0) -> '1, 2, 3'."""
    return ", ".join(num(v) for v in values)


def _version(value: KernelVersion | None, what: str) -> str:
    if value is None:
        raise LookupError(f"the catalogue gives no version for {what}")
    return str(value)


def sysctl_added(name: str) -> str:
    """Release that added a catalogued sysctl, e.g. '6.14'."""
    return _version(SYSCTLS[name].added, f"{name} (added)")


def sysctl_removed(name: str) -> str:
    return _version(SYSCTLS[name].removed, f"{name} (removed)")


def counter_added(key: str) -> str:
    return _version(COUNTERS[key].added, f"{key} (added)")
