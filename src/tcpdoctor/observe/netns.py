"""Choosing and entering a network namespace without moving the main thread.

setns(CLONE_NEWNET) changes only the calling thread, so work for another namespace runs
in a short-lived thread. Sockets it opens stay bound to that namespace, and paths under
/proc/thread-self/net and /proc/sys resolve in it (both follow the thread's nsproxy).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from tcpdoctor._background import Background
from tcpdoctor.errors import KernelInterfaceError, NamespaceError, PermissionDenied
from tcpdoctor.kernel import abi

NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` bind-mounts named namespaces
PROC_NET = "/proc/thread-self/net"  # per-thread view: correct inside and outside setns
PROC_SYS = "/proc/sys"

T = TypeVar("T")


class NetnsTarget(NamedTuple):
    """A namespace to observe: a bind-mounted name, a process's namespace, or a path."""

    path: str
    name: str | None = None
    pid: int | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.pid is not None:
            return f"pid {self.pid}"
        return self.path


class NetnsId(NamedTuple):
    """Identity of an observed namespace: its nsfs inode, and a name when it has one."""

    inode: int
    name: str | None
    pid: int | None
    is_host: bool | None  # None when pid 1's namespace is hidden from us (sandboxes)

    @property
    def label(self) -> str:
        """The namespace for a person: its name, the pid it was reached by, host, or inode."""
        if self.name:
            return self.name
        if self.pid:
            return f"of pid {self.pid}"
        return "host" if self.is_host else f"inode {self.inode}"


def resolve(name: str | None = None, pid: int | None = None) -> NetnsTarget | None:
    """Turn --netns / --pid into a target; None means the caller's own namespace."""
    if name is not None and pid is not None:
        raise NamespaceError("give either --netns or --pid, not both")
    if pid is not None:
        return _target_for_pid(pid)
    if name is not None:
        return _target_for_name(name)
    return None


def _target_for_name(name: str) -> NetnsTarget:
    if not name or name in {".", ".."}:
        raise NamespaceError(f"invalid network namespace name {name!r}")
    path = name if "/" in name else os.path.join(NETNS_RUN_DIR, name)
    _check_nsfs(path, f"no network namespace {name!r} (see 'ip netns list')")
    return NetnsTarget(path=path, name=None if "/" in name else name)


def _target_for_pid(pid: int) -> NetnsTarget:
    if pid <= 0:
        raise NamespaceError(f"invalid pid {pid}")
    path = f"/proc/{pid}/ns/net"
    _check_nsfs(path, f"no process with pid {pid}")
    return NetnsTarget(path=path, pid=pid)


def _check_nsfs(path: str, missing: str) -> None:
    try:
        os.stat(path)
    except FileNotFoundError:
        raise NamespaceError(missing) from None
    except PermissionError:
        raise PermissionDenied(f"not allowed to inspect {path}{_privilege_hint()}") from None
    except OSError as err:
        raise NamespaceError(f"cannot use {path}: {err.strerror}") from None


def _privilege_hint() -> str:
    if os.geteuid() != 0:
        return " (try as root)"
    # Root can still be refused: ptrace access checks, or a sandbox hiding pid 1.
    return " (refused even to root: a ptrace access check or a sandbox hides it)"


def identify(target: NetnsTarget | None) -> NetnsId:
    """Who is the namespace we are about to read (no entering needed)."""
    host = _inode("/proc/1/ns/net")
    inode = _inode(target.path if target else "/proc/thread-self/ns/net")
    name = (target.name if target else None) or _name_of(inode)
    return NetnsId(inode, name, target.pid if target else None, inode == host if host else None)


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except PermissionError:
        return 0  # /proc/1/ns/net is root-only; "unknown" is an honest answer
    except OSError as err:
        raise NamespaceError(f"cannot stat {path}: {err.strerror}") from None


def _name_of(inode: int) -> str | None:
    try:
        entries = os.listdir(NETNS_RUN_DIR)
    except OSError:
        return None
    for entry in sorted(entries):
        try:
            if os.stat(os.path.join(NETNS_RUN_DIR, entry)).st_ino == inode:
                return entry
        except OSError:
            continue
    return None


def run_in(target: NetnsTarget | None, work: Callable[[], T]) -> T:
    """Run `work` with the calling thread in `target` (or here, when target is None)."""
    if target is None:
        return work()

    def inside() -> T:
        _enter(target)
        return work()

    return Background(inside, f"netns:{target.label}").result()


def _enter(target: NetnsTarget) -> None:
    try:
        fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        raise PermissionDenied(f"not allowed to open {target.path}{_privilege_hint()}") from None
    except OSError as err:
        raise NamespaceError(f"cannot open namespace {target.label}: {err.strerror}") from None
    try:
        if _libc().setns(fd, abi.CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            if code in (errno.EPERM, errno.EACCES):
                raise PermissionDenied(
                    f"entering network namespace {target.label} needs CAP_SYS_ADMIN"
                    f"{_privilege_hint()}"
                )
            if code == errno.EINVAL:
                raise NamespaceError(f"{target.path} is not a network namespace")
            raise NamespaceError(f"setns({target.label}) failed: {os.strerror(code)}")
    finally:
        os.close(fd)


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC  # noqa: PLW0603 - loaded once, on first use
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError as err:
            raise KernelInterfaceError(f"cannot load the C library for setns(): {err}") from err
    return _LIBC
