"""Real servers (redis-server, nginx) inside a lab host: found, started, awaited, stopped.

A missing program or Python package is one ScenarioError line (exit 4) naming what to
install, raised before any namespace is built. A server runs inside its host's namespace
through tcpdoctor.lab._exec, so it dies with the lab even on SIGKILL; the run's cleanup
registry stops it (SIGTERM, then SIGKILL) before the namespaces go. Its output goes to a
log file in the run's temporary directory, whose tail explains a failed start.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tcpdoctor.errors import ScenarioError, TcpDoctorError
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.lab import _proc
from tcpdoctor.lab.topology import Host, Topology
from tcpdoctor.observe import snapshot

START_TIMEOUT_S = 15.0  # a cold start inside a namespace on a busy 2-core machine
STOP_GRACE_S = 2.0
_POLL_S = 0.05
_LOG_TAIL = 300


def require_program(program: str, package: str, scenario: str) -> str:
    """The program's path, or one line saying which Debian package provides it."""
    path = shutil.which(program)
    if path is None:
        raise ScenarioError(
            f"{scenario} needs `{program}` (Debian package {package}: apt-get install "
            f"{package}); it is not on PATH"
        )
    return path


def require_module(module: str, extra: str, scenario: str) -> None:
    """A Python package the scenario's client imports (inside a child process)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ScenarioError(
            f"{scenario} needs the Python package `{module}` (pip install 'tcpdoctor[{extra}]')"
        )


def work_dir(topo: Topology) -> Path:
    """A private temporary directory for configs, pid files and logs, removed at the end."""
    path = Path(tempfile.mkdtemp(prefix=f"tdlab-{topo.run_id}-"))
    topo.register(f"directory {path}", lambda: shutil.rmtree(path, ignore_errors=True))
    return path


class Daemon:
    """A server process inside a lab host."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return " ".join(text.split())[-_LOG_TAIL:]

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL. Safe to call twice."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                self.popen.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_GRACE_S)


def start(
    topo: Topology,
    host: Host,
    name: str,
    argv: Sequence[str],
    log: Path,
    listening: Sequence[tuple[str, int]],
    *,
    timeout: float = START_TIMEOUT_S,
) -> Daemon:
    """Start `argv` inside `host` and return once it listens on every (address, port)."""
    wrapped = [sys.executable, "-m", "tcpdoctor.lab._exec", "--parent", str(os.getpid()), "--"]
    command = _proc.in_netns(host.netns, [*wrapped, *argv])
    try:
        with log.open("ab") as out:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C is for the lab, not for it
            )
    except OSError as err:
        raise ScenarioError(f"cannot start {name} in {host.netns}: {err.strerror}") from None
    daemon = Daemon(name, popen, log)
    topo.register(f"{name} (pid {popen.pid}) in {host.netns}", daemon.stop)
    _await_listening(host, daemon, listening, timeout)
    return daemon


def _await_listening(
    host: Host, daemon: Daemon, wanted: Sequence[tuple[str, int]], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    missing = set(wanted)
    while True:
        if not daemon.running():
            detail = daemon.log_tail() or "no output"
            raise ScenarioError(
                f"{daemon.name} exited at start (status {daemon.popen.returncode}): {detail}"
            )
        missing -= _listening(host)
        if not missing:
            return
        if time.monotonic() >= deadline:
            shown = ", ".join(f"{a}:{p}" for a, p in sorted(missing))
            detail = daemon.log_tail() or "no output"
            raise ScenarioError(
                f"{daemon.name} did not listen on {shown} within {timeout:g} s: {detail}"
            )
        time.sleep(_POLL_S)


def _listening(host: Host) -> set[tuple[str, int]]:
    try:
        snap = snapshot.take(host.target)
    except TcpDoctorError:
        return set()  # the namespace is still being set up; the deadline bounds retries
    return {
        (row.local_address, row.local_port) for row in snap.rows() if row.state is TcpState.LISTEN
    }


__all__ = ["Daemon", "require_module", "require_program", "start", "work_dir"]
