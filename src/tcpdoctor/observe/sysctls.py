"""Read the catalogued sysctls of the calling thread's network namespace.

/proc/sys/net shows the namespace of the task that opens the file, so a thread that has
entered another netns reads that namespace's knobs through the same path. Every catalogued
knob comes back with an explicit status: present with a typed value, absent (with the likely
reason), or unreadable. OSError never escapes: errors become tcpdoctor.errors here.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import NamedTuple

from tcpdoctor.errors import InputError, KernelInterfaceError
from tcpdoctor.kernel.sysctls import ALL_SYSCTLS, SysctlSpec, SysctlValue, lookup_sysctl

PROC_SYS = "/proc/sys"

_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR})
_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})


class ReadStatus(Enum):
    PRESENT = "present"
    ABSENT = "absent"  # the file does not exist here: removed, too new, module, init_net only
    UNREADABLE = "unreadable"  # exists, but we may not read it


class SysctlReading(NamedTuple):
    """One knob as found. `value` is set exactly when status is PRESENT."""

    spec: SysctlSpec
    status: ReadStatus
    value: SysctlValue | None = None
    reason: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_default(self) -> bool | None:
        """True/False when both value and compiled-in default are known, else None."""
        if self.value is None or self.spec.default is None:
            return None
        return self.value == self.spec.default


@dataclass(frozen=True)
class SysctlValues:
    """Readings of one namespace, in catalogue order, looked up by name."""

    readings: tuple[SysctlReading, ...]
    proc_sys: str
    _by_name: dict[str, SysctlReading] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {r.name: r for r in self.readings})

    def __getitem__(self, name: str) -> SysctlReading:
        """By full name, or by last part when unambiguous ('tcp_fin_timeout').

        KeyError for a catalogued knob that was not read; InputError for an unknown name.
        """
        reading = self._by_name.get(name)
        if reading is None:
            reading = self._by_name.get(lookup_sysctl(name).name)
        if reading is None:
            raise KeyError(name)
        return reading

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self[name]
        except (KeyError, InputError):
            return False
        return True

    def __iter__(self) -> Iterator[SysctlReading]:
        return iter(self.readings)

    def __len__(self) -> int:
        return len(self.readings)

    def value(self, name: str) -> SysctlValue | None:
        """The typed value, or None when the knob is absent or unreadable."""
        return self[name].value

    def with_status(self, status: ReadStatus) -> tuple[SysctlReading, ...]:
        return tuple(r for r in self.readings if r.status is status)


def read_sysctls(
    specs: Iterable[SysctlSpec] = ALL_SYSCTLS, proc_sys: str | os.PathLike[str] = PROC_SYS
) -> SysctlValues:
    """Read each knob below `proc_sys`; raise KernelInterfaceError if that is not a directory."""
    root = Path(proc_sys)
    if not root.is_dir():
        raise KernelInterfaceError(f"{root} is not a directory; is procfs mounted?")
    return SysctlValues(tuple(read_sysctl(spec, root) for spec in specs), str(root))


def read_sysctl(spec: SysctlSpec, proc_sys: str | os.PathLike[str] = PROC_SYS) -> SysctlReading:
    """Read one knob. Unparsable text raises KernelInterfaceError naming the knob."""
    path = Path(proc_sys) / spec.path
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return _unavailable(spec, path, exc)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise KernelInterfaceError(f"{path}: not ASCII text") from None
    return SysctlReading(spec, ReadStatus.PRESENT, spec.parse(text))


def _unavailable(spec: SysctlSpec, path: Path, exc: OSError) -> SysctlReading:
    if exc.errno in _ABSENT_ERRNOS:
        return SysctlReading(spec, ReadStatus.ABSENT, reason=spec.absence_reason())
    if exc.errno in _DENIED_ERRNOS:
        return SysctlReading(spec, ReadStatus.UNREADABLE, reason=f"{path}: permission denied")
    raise KernelInterfaceError(f"cannot read {path}: {exc.strerror or exc}") from exc
