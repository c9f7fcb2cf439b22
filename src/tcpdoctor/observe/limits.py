"""Descriptor limits read from /proc: a process's RLIMIT_NOFILE and open descriptors, and
the host's file-handle count (used by the fd-limits rule).

OSError is translated here: a process that exited reads as None, a refusal raises
PermissionDenied.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from tcpdoctor.errors import KernelInterfaceError, PermissionDenied

PROC = "/proc"  # tests point this at a fake tree
_NOFILE_ROW = "Max open files"
_UNLIMITED = "unlimited"
_DENIED = frozenset({errno.EACCES, errno.EPERM})
_GONE = frozenset({errno.ENOENT, errno.ESRCH})


class NofileLimit(NamedTuple):
    soft: int | None  # None: unlimited
    hard: int | None


class FileHandles(NamedTuple):
    allocated: int
    maximum: int


def _fail(path: str, exc: OSError) -> Exception:
    if exc.errno in _DENIED:
        return PermissionDenied(f"cannot read {path}: permission denied")
    return KernelInterfaceError(f"cannot read {path}: {exc.strerror or exc}")


def _limit(token: str, path: str) -> int | None:
    if token == _UNLIMITED:
        return None
    if not token.isdigit():
        raise KernelInterfaceError(f"{path}: unexpected limit {token[:20]!r}")
    return int(token)


def read_nofile(pid: int) -> NofileLimit | None:
    """RLIMIT_NOFILE of `pid` from /proc/PID/limits; None if the process is gone."""
    path = f"{PROC}/{pid}/limits"
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise _fail(path, exc) from exc
    for line in text.splitlines():
        if line.startswith(_NOFILE_ROW):
            fields = line[len(_NOFILE_ROW) :].split()
            if len(fields) < 2:
                break
            return NofileLimit(_limit(fields[0], path), _limit(fields[1], path))
    raise KernelInterfaceError(f"{path}: no '{_NOFILE_ROW}' line")


def count_fds(pid: int) -> int | None:
    """Open descriptors of `pid`; None if the process is gone."""
    path = f"{PROC}/{pid}/fd"
    try:
        return len(os.listdir(path))
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise _fail(path, exc) from exc


def read_file_handles() -> FileHandles | None:
    """/proc/sys/fs/file-nr: allocated, free (always 0 since 2.6), maximum. Host-wide."""
    path = f"{PROC}/sys/fs/file-nr"
    try:
        with open(path, encoding="ascii") as handle:
            fields = handle.read().split()
    except OSError as exc:
        if exc.errno in _GONE:
            return None
        raise _fail(path, exc) from exc
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        raise KernelInterfaceError(f"{path}: expected three numbers")
    return FileHandles(allocated=int(fields[0]) - int(fields[1]), maximum=int(fields[2]))
