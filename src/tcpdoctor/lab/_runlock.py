"""Which lab runs are alive: one lock file per run, flock-held for the run's lifetime.

`lab cleanup` must never tear down the namespaces of a run that is still going (another
terminal, a parallel test). Each run holds an exclusive flock on RUN_DIR/<run id>.lock;
the kernel drops the lock when the process dies, even by SIGKILL, so a lock file nobody
holds marks a dead run whose objects are leftovers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tcpdoctor.errors import PermissionDenied, ScenarioError

RUN_DIR = Path("/run/tcpdoctor-lab")
_SUFFIX = ".lock"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    alive: bool
    pid: int | None  # the pid written by the run (informational)
    path: Path


@contextmanager
def hold(run_id: str, run_dir: Path = RUN_DIR) -> Iterator[Path]:
    """Mark `run_id` alive until the block ends; the lock file is removed afterwards."""
    path = run_dir / f"{run_id}{_SUFFIX}"
    try:
        run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError:
        raise PermissionDenied(f"cannot write {run_dir} (the lab needs root)") from None
    except OSError as err:
        raise ScenarioError(f"cannot create {path}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def runs(run_dir: Path = RUN_DIR) -> dict[str, RunRecord]:
    """Every run with a lock file, alive or not."""
    try:
        entries = sorted(run_dir.glob(f"*{_SUFFIX}"))
    except OSError:
        return {}
    found = {}
    for path in entries:
        run_id = path.name[: -len(_SUFFIX)]
        found[run_id] = RunRecord(run_id, _is_held(path), _pid(path), path)
    return found


def forget(record: RunRecord) -> None:
    """Remove the lock file of a dead run (after its leftovers are gone)."""
    if not record.alive:
        with contextlib.suppress(OSError):
            record.path.unlink()


def _is_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        return err.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
