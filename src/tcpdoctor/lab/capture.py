"""Packet capture inside a lab namespace, for packet-level times (SYN retries, RTO backoff,
FIN retransmissions, keepalive probes).

    with Capture("tdlab-client", result_dir / "client.pcap", interfaces=["veth0"]) as cap:
        ...  # run the experiment; the socket was bound before __enter__ returned
    syns = retransmission_times(cap.segments(), flow)

The capture runs in a child process started with `ip netns exec NAME python -m
tcpdoctor.lab._capture_worker`, so no thread of the caller ever changes namespace. The
worker reads an AF_PACKET socket with kernel timestamps (CLOCK_REALTIME) and writes the
TCP packets to a pcap (LINUX_SLL2; see tcpdoctor.lab.pcap for the format and the
direction rule). It is bounded on every path: stop() sends SIGTERM and waits, then kills;
the worker also stops by itself after max_seconds or max_packets and when the process
that started it dies (PR_SET_PDEATHSIG, delivered when the starting *thread* exits, so
start a capture from a thread that outlives it).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tcpdoctor.errors import PermissionDenied, ScenarioError, TcpDoctorError
from tcpdoctor.lab.pcap import MAX_RECORD, Keep, PcapContents, Segment, read_pcap

WORKER_MODULE = "tcpdoctor.lab._capture_worker"
# SLL2 (20) + IPv6 (40) + a TCP header with the full 40 bytes of options (60) = 120.
MIN_SNAPLEN = 128
DEFAULT_SNAPLEN = 128
DEFAULT_MAX_SECONDS = 900.0  # longer than any lab scenario (SYN give-up with defaults: 131 s)
DEFAULT_MAX_PACKETS = 500_000  # ~75 MB of pcap at the default snap length
START_TIMEOUT = 15.0  # python start-up inside the namespace on a loaded 2-core machine
STOP_TIMEOUT = 5.0
KILL_WAIT = 5.0
# Packets a namespace receives are delivered from softirq context a moment after the
# sender's copy; waiting this long before stopping lets the last ones reach the socket.
SETTLE = 0.05


class StopReason(Enum):
    SIGNAL = "signal"  # stop() asked for it
    TIME_LIMIT = "time_limit"  # max_seconds reached
    PACKET_LIMIT = "packet_limit"  # max_packets written
    PARENT_GONE = "parent_gone"
    INTERFACE_GONE = "interface_gone"  # the one bound interface was deleted
    KILLED = "killed"  # did not stop within STOP_TIMEOUT, or died without reporting
    FAILED = "failed"  # reported an error (could not start, could not write the pcap)


@dataclass(frozen=True)
class CaptureStats:
    """What the worker reported when it ended; counts are None when it was killed."""

    stop: StopReason
    packets: int | None  # TCP packets written to the pcap
    seen: int | None  # packets read from the socket, any protocol, any interface
    kernel_drops: int | None  # packets the socket queue overflowed on (any protocol)
    software_timestamps: int | None  # packets without a kernel timestamp

    @property
    def complete(self) -> bool:
        """True when nothing can be missing: stopped on request with no kernel drops."""
        return self.stop is StopReason.SIGNAL and self.kernel_drops == 0


class Capture:
    """A running capture in network namespace `netns`; use it as a context manager.

    interfaces=None captures on every interface of the namespace (including ones created
    later); a list keeps only those (resolved when the capture starts).
    """

    def __init__(
        self,
        netns: str,
        pcap: Path,
        *,
        interfaces: Sequence[str] | None = None,
        snaplen: int = DEFAULT_SNAPLEN,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_packets: int = DEFAULT_MAX_PACKETS,
        python: str | None = None,
    ) -> None:
        _check_limits(snaplen, max_seconds, max_packets)
        if interfaces is not None and not interfaces:
            raise ScenarioError("capture interfaces: give at least one name, or None for all")
        self.netns = netns
        self.pcap = Path(pcap).absolute()
        self.interfaces = None if interfaces is None else tuple(interfaces)
        self.snaplen = snaplen
        self.max_seconds = max_seconds
        self.max_packets = max_packets
        self.python = python or sys.executable
        self._proc: subprocess.Popen[bytes] | None = None
        self._status: _StatusPipe | None = None
        self._stderr: IO[bytes] | None = None
        self._stats: CaptureStats | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], Capture] | None = None

    # --- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
            return
        # The body's exception is the one worth seeing; a capture failure must not hide it.
        with contextlib.suppress(TcpDoctorError):
            self.stop()

    def start(self) -> None:
        """Start the worker; returns once its socket is bound and the pcap header written."""
        if self._proc is not None:
            raise ScenarioError("this capture was already started")
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        self._status = _StatusPipe(read_fd)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _release()
        try:
            self._proc = subprocess.Popen(
                self._argv(write_fd),
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
            )
        except OSError as exc:
            self._release()
            raise ScenarioError(f"cannot start the capture worker: {exc.strerror}") from None
        finally:
            os.close(write_fd)  # only the worker may hold the write end: EOF = it ended
        # A capture dropped without stop() (or left running at interpreter exit) still ends.
        self._finalizer = weakref.finalize(self, _terminate, self._proc)
        self._await_ready()

    def stop(self) -> CaptureStats:
        """Stop the worker (SIGTERM, bounded wait, then SIGKILL) and return its report.
        Calling it again returns the same report."""
        if self._stats is not None:
            return self._stats
        proc, status = self._proc, self._status
        if proc is None or status is None:
            raise ScenarioError("this capture was never started")
        try:
            if proc.poll() is None:
                time.sleep(SETTLE)
                _terminate(proc)
            event = status.last_event(time.monotonic() + KILL_WAIT)
            self._stats = _FAILED  # replaced below unless the report is an error
            self._stats = _stats_from(event, self._stderr_line(), self.netns)
        finally:
            self._release()
        return self._stats

    # --- results ----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The worker's pid (`ip netns exec` execs it in place, so it is Popen's pid)."""
        if self._proc is None:
            raise ScenarioError("this capture was never started")
        return self._proc.pid

    @property
    def stats(self) -> CaptureStats | None:
        return self._stats

    def read(self, *, keep: Keep = Keep.ONCE) -> PcapContents:
        """Parse the pcap (after stop). A killed worker may have left a cut-off last
        record, which is then ignored instead of being an error."""
        stats = self._stats if self._stats is not None else self.stop()
        return read_pcap(self.pcap, keep=keep, strict=stats.stop not in _UNCLEAN)

    def segments(self, *, keep: Keep = Keep.ONCE) -> tuple[Segment, ...]:
        return self.read(keep=keep).segments

    # --- internals --------------------------------------------------------------------

    def _argv(self, status_fd: int) -> list[str]:
        argv = ["ip", "netns", "exec", self.netns, self.python, "-m", WORKER_MODULE]
        argv += ["--pcap", str(self.pcap), "--status-fd", str(status_fd)]
        argv += ["--parent-pid", str(os.getpid()), "--snaplen", str(self.snaplen)]
        argv += ["--max-seconds", repr(self.max_seconds), "--max-packets", str(self.max_packets)]
        for name in self.interfaces or ():
            argv += ["--interface", name]
        return argv

    def _await_ready(self) -> None:
        assert self._proc is not None and self._status is not None
        event = self._status.next_event(time.monotonic() + START_TIMEOUT)
        if event is not None and event.get("event") == "ready":
            return
        if event is None and not self._status.eof:
            _terminate(self._proc)
            self._release()
            raise ScenarioError(
                f"capture worker in {self.netns} was not ready within {START_TIMEOUT:g} s"
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(KILL_WAIT)
        error = _worker_error(event, self._stderr_line(), self._proc.returncode, self.netns)
        self._stats = _FAILED
        self._release()
        raise error

    def _stderr_line(self) -> str:
        """The worker's (or `ip`'s) last stderr line: the one that explains a failure."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read(64 * 1024).decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else ""

    def _release(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            _terminate(self._proc)
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._status is not None:
            self._status.close()
            self._status = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


_FAILED = CaptureStats(StopReason.FAILED, None, None, None, None)
_UNCLEAN = frozenset({StopReason.KILLED, StopReason.FAILED})


def _check_limits(snaplen: int, max_seconds: float, max_packets: int) -> None:
    if not MIN_SNAPLEN <= snaplen <= MAX_RECORD:
        raise ScenarioError(f"capture snaplen must be {MIN_SNAPLEN}..{MAX_RECORD}, got {snaplen}")
    if not 0 < max_seconds < float("inf"):
        raise ScenarioError(f"capture max_seconds must be positive, got {max_seconds}")
    if max_packets < 1:
        raise ScenarioError(f"capture max_packets must be at least 1, got {max_packets}")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a bounded wait, then SIGKILL and another bounded wait."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(KILL_WAIT)


def _worker_error(
    event: dict[str, Any] | None, stderr_line: str, returncode: int | None, netns: str
) -> TcpDoctorError:
    if event is not None and event.get("event") == "error":
        message = f"capture in {netns}: {event.get('message', 'failed')}"
        if event.get("kind") == "permission":
            return PermissionDenied(message)
        return ScenarioError(message)
    detail = stderr_line or f"exit status {returncode}"
    return ScenarioError(f"capture worker in {netns} failed to start: {detail}")


def _stats_from(event: dict[str, Any] | None, stderr_line: str, netns: str) -> CaptureStats:
    if event is None:
        return CaptureStats(StopReason.KILLED, None, None, None, None)
    if event.get("event") != "done":
        raise _worker_error(event, stderr_line, None, netns)
    try:
        return CaptureStats(
            stop=StopReason(event["stop"]),
            packets=int(event["packets"]),
            seen=int(event["seen"]),
            kernel_drops=_count(event["kernel_drops"]),
            software_timestamps=int(event["software_timestamps"]),
        )
    except (KeyError, ValueError, TypeError):
        raise ScenarioError(f"capture worker in {netns} sent a bad report: {event}") from None


def _count(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int):
        raise TypeError(value)
    return value


class _StatusPipe:
    """The read end of the worker's status pipe: one JSON object per line."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        self._buffer = b""
        self.eof = False  # every write end is closed: the worker has ended

    def next_event(self, deadline: float) -> dict[str, Any] | None:
        """The next event, or None at EOF or when the deadline passes."""
        while b"\n" not in self._buffer:  # each pass reads, or ends at EOF / deadline
            remaining = deadline - time.monotonic()
            if self.eof or self.fd is None or remaining <= 0:
                return None
            if not select.select([self.fd], [], [], remaining)[0]:
                return None
            chunk = os.read(self.fd, 4096)
            self.eof = not chunk
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            event = json.loads(line)
        except ValueError:
            return {"event": "error", "kind": "setup", "message": f"bad status line {line!r}"}
        return event if isinstance(event, dict) else None

    def last_event(self, deadline: float) -> dict[str, Any] | None:
        """The last event before EOF (the worker has ended or is ending)."""
        last: dict[str, Any] | None = None
        for _ in range(64):  # the worker writes at most three lines
            event = self.next_event(deadline)
            if event is None:
                break
            last = event
        return last

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


__all__ = [
    "DEFAULT_MAX_PACKETS",
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_SNAPLEN",
    "Capture",
    "CaptureStats",
    "StopReason",
]
