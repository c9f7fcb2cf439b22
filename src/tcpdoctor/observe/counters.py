"""Read TCP counters of one network namespace: /proc/net/{netstat,snmp,sockstat,sockstat6}.

/proc/self/net follows the thread-group leader's namespace, so a thread that has entered
another netns must pass proc_net="/proc/thread-self/net"; nothing here assumes a path.
OSError is translated to tcpdoctor.errors at this boundary.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tcpdoctor.errors import KernelInterfaceError, PermissionDenied
from tcpdoctor.kernel.counters import (
    Counters,
    CounterSpec,
    Sockstat,
    parse_netstat,
    parse_snmp,
    parse_sockstat,
    parse_sockstat_fields,
)

PROC_NET = "/proc/net"

_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})


@dataclass(frozen=True)
class CounterSnapshot:
    """netstat + snmp + sockstat read together. `taken_at` is time.monotonic() seconds."""

    netstat: Counters
    snmp: Counters
    sockstat: Sockstat
    tcp6_inuse: int | None  # "TCP6: inuse" from sockstat6; None when IPv6 is off
    taken_at: float
    proc_net: str
    _all: Counters = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_all", self.netstat.merged(self.snmp))

    def __getitem__(self, key: str) -> int:
        """A netstat or snmp counter by key, e.g. snapshot["TcpExt.TW"]."""
        return self._all[key]

    def value(self, counter: str | CounterSpec) -> int | None:
        """Value of a catalogued counter or a netstat/snmp key; None if this kernel lacks it."""
        if isinstance(counter, CounterSpec):
            if counter.source.file == "sockstat":
                return self.sockstat.fields.get(counter.key)
            counter = counter.key
        return self._all.get(counter)

    def delta(self, earlier: CounterSnapshot, counter: str | CounterSpec) -> int | None:
        """How much a counter grew since `earlier`; for a gauge, the change of level."""
        now, before = self.value(counter), earlier.value(counter)
        if now is None or before is None:
            return None
        return now - before


def read_counters(proc_net: str | os.PathLike[str] = PROC_NET) -> CounterSnapshot:
    """Read the counter files below `proc_net` (default: the calling process's netns)."""
    root = Path(proc_net)
    taken_at = time.monotonic()
    sockstat6 = _read_optional(root / "sockstat6")
    return CounterSnapshot(
        netstat=parse_netstat(_read_text(root / "netstat"), what=str(root / "netstat")),
        snmp=parse_snmp(_read_text(root / "snmp"), what=str(root / "snmp")),
        sockstat=parse_sockstat(_read_text(root / "sockstat"), what=str(root / "sockstat")),
        tcp6_inuse=_tcp6_inuse(sockstat6, root / "sockstat6"),
        taken_at=taken_at,
        proc_net=str(root),
    )


def _tcp6_inuse(text: str | None, path: Path) -> int | None:
    if text is None:
        return None
    return parse_sockstat_fields(text, what=str(path)).get("TCP6.inuse")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _translate(path, exc) from exc
    return _decode(path, raw)


def _read_optional(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _translate(path, exc) from exc
    return _decode(path, raw)


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise KernelInterfaceError(f"{path}: not ASCII text") from None


def _translate(path: Path, exc: OSError) -> Exception:
    if exc.errno in _DENIED_ERRNOS:
        return PermissionDenied(f"cannot read {path}: permission denied")
    if exc.errno == errno.ENOENT:
        return KernelInterfaceError(f"{path} does not exist; is procfs mounted?")
    return KernelInterfaceError(f"cannot read {path}: {exc.strerror or exc}")
