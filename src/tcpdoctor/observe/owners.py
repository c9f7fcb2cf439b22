"""Socket owners: which processes hold a socket inode, looked up only for the inodes asked.

There is no kernel index from socket to process; like ss -p we walk /proc/PID/fd, but we
stop reading a process's details unless one of its descriptors is a wanted socket.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

_SOCKET_LINK_PREFIX = "socket:["


class Owner(NamedTuple):
    pid: int
    comm: str
    fd: int


class OwnerScan(NamedTuple):
    owners: dict[int, tuple[Owner, ...]]  # inode -> holders
    unreadable_pids: int  # processes whose fd table we could not read (not root)


def find_owners(inodes: Iterable[int], proc: str = "/proc") -> OwnerScan:
    wanted = {int(i) for i in inodes if i}
    found: dict[int, list[Owner]] = {}
    unreadable = 0
    if not wanted:
        return OwnerScan({}, 0)
    for pid in _pids(proc):
        hits, denied = _scan_fds(proc, pid, wanted)
        unreadable += denied
        if hits:
            comm = _comm(proc, pid)
            for inode, fd in hits:
                found.setdefault(inode, []).append(Owner(pid, comm, fd))
    return OwnerScan({k: tuple(v) for k, v in found.items()}, unreadable)


def _pids(proc: str) -> list[int]:
    try:
        return [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return []


def _scan_fds(proc: str, pid: int, wanted: set[int]) -> tuple[list[tuple[int, int]], int]:
    fd_dir = f"{proc}/{pid}/fd"
    hits: list[tuple[int, int]] = []
    try:
        names = os.listdir(fd_dir)
    except PermissionError:
        return hits, 1
    except OSError:
        return hits, 0  # the process exited while we looked
    prefix_len = len(_SOCKET_LINK_PREFIX)
    for name in names:
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if link.startswith(_SOCKET_LINK_PREFIX):
            inode = int(link[prefix_len:-1])
            if inode in wanted:
                hits.append((inode, int(name)))
    return hits, 0


def _comm(proc: str, pid: int) -> str:
    try:
        with open(f"{proc}/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return "?"
