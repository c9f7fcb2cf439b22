"""What a rule produces: a Finding, with the numbers that prove it and the fixes, in order."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from tcpdoctor.errors import InputError

if TYPE_CHECKING:
    from tcpdoctor.diagnose.context import Context


class Severity(enum.IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise InputError(f"unknown severity {text!r}; use one of {names}") from None


class Evidence(NamedTuple):
    """One measured number (or fact) behind a finding."""

    key: str  # snake_case, stable: scripts read it from JSON
    label: str  # for people
    value: int | float | str | bool | None
    unit: str = ""  # "s", "ms", "sockets", "conn/s", "%", ...

    def text(self) -> str:
        if not self.unit or self.value is None:
            # Unitless numbers are mostly identifiers (pids, ports): no digit grouping.
            return (
                str(self.value)
                if isinstance(self.value, int) and not isinstance(self.value, bool)
                else _format(self.value)
            )
        shown = _format(self.value)
        return f"{shown}{self.unit}" if self.unit == "%" else f"{shown} {self.unit}"


def _format(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "unknown"}[value]
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


class FixKind(enum.Enum):
    """Where the fix is made: most lifecycle problems are fixed in the application."""

    APPLICATION = "application"  # code or client/server configuration
    SOCKET_OPTION = "socket_option"  # setsockopt() in the application
    SYSCTL = "sysctl"  # a kernel setting, per namespace unless stated
    INFRASTRUCTURE = "infrastructure"  # load balancer, NAT, more addresses
    INVESTIGATE = "investigate"  # look further before changing anything

    @property
    def label(self) -> str:
        return self.value


class Fix(NamedTuple):
    kind: FixKind
    summary: str  # one line: what to do
    detail: str = ""  # why, and what to watch out for
    example: str = ""  # the exact line: a sysctl command, a code pattern, a config stanza
    sysctl: str = ""  # the knob this fix changes, full name (ties it to the sysctl audit)


class Finding(NamedTuple):
    rule: str  # rule id, e.g. "ephemeral-port-exhaustion"
    severity: Severity
    title: str  # one line, with the key number
    subject: str  # what it is about: a destination, a process, the namespace
    evidence: tuple[Evidence, ...]
    explanation: str  # why the kernel behaves so, short
    fixes: tuple[Fix, ...]  # ordered: the right fix first
    topics: tuple[str, ...] = ()  # `tcpdoctor explain TOPIC` for more


class RuleSkipped(Exception):
    """A rule could not look (missing privilege, data or kernel feature); not an error."""


class Rule(NamedTuple):
    id: str
    title: str  # what the rule looks for
    check: Callable[[Context], Iterable[Finding]]
