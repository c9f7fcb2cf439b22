"""What the request-making children of redis-pool and nginx-keepalive share.

A child makes `count` requests with `workers` threads, each thread owning one Worker
(its client object), as fast as they go or on a fixed schedule (--rate: request i is due
at t0 + i / rate; open loop, so a slow request does not delay the schedule). Then it
reports and waits for the lab: the lab looks at the sockets while whatever the workers
hold (a pool, a keep-alive connection) is still open, then writes "close" (or closes our
stdin) and we close it. Protocol, JSON lines on stdout:

    {"kind": "start", "t0": T, "rate": R or null}
    {"kind": "done", "times": [...], "errors": {"NAME": [...]}, "ended": T, ...extra}
    {"kind": "closed", "t": T}

Times are CLOCK_MONOTONIC seconds (shared with the lab process). Standard library only:
the scenario-specific client library is imported by the worker factory.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tcpdoctor.lab._child import die_with_parent, emit, ignore_interrupts

CLOSE_COMMAND = "close"
MAX_WORKERS = 64
JOIN_GRACE_S = 5.0


class Worker(Protocol):
    def one(self) -> None:
        """Make one request; raise on failure."""

    def close(self) -> None:
        """Release whatever the worker holds (sockets, pools)."""


class Failed(Exception):
    """A request failed in a way that has no OSError (e.g. an HTTP status)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def error_name(err: BaseException) -> str:
    if isinstance(err, Failed):
        return err.name
    if isinstance(err, TimeoutError | socket.timeout) and getattr(err, "errno", None) is None:
        return "TIMEOUT"
    number = getattr(err, "errno", None)
    if isinstance(number, int):
        return errno.errorcode.get(number, f"errno {number}")
    cause = err.__cause__ or err.__context__
    if cause is not None and cause is not err and isinstance(cause, OSError):
        return error_name(cause)
    return type(err).__name__


@dataclass
class _Tally:
    """The request schedule and the completion times, shared by the worker threads."""

    count: int
    deadline: float
    rate: float | None  # requests per second (open loop), None: as fast as the workers go
    t0: float = field(default_factory=time.monotonic)
    taken: int = 0
    times: list[float] = field(default_factory=list)
    errors: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> float | None:
        """The due time of the next request, or None when the work is done."""
        with self.lock:
            if self.taken >= self.count or time.monotonic() >= self.deadline:
                return None
            index, self.taken = self.taken, self.taken + 1
        return self.t0 + index / self.rate if self.rate else 0.0

    def record(self, error: str | None) -> None:
        now = time.monotonic()
        with self.lock:
            if error is None:
                self.times.append(now)
            else:
                self.errors.setdefault(error, []).append(now)


def _work(worker: Worker, tally: _Tally) -> None:
    while (due := tally.take()) is not None:
        time.sleep(max(0.0, min(due, tally.deadline) - time.monotonic()))
        try:
            worker.one()
        except Exception as err:  # every failure is a measurement, never a crash
            tally.record(error_name(err))
        else:
            tally.record(None)


def run(
    workers: Sequence[Worker],
    count: int,
    max_seconds: float,
    extra: Callable[[], dict[str, Any]] = dict,
    finish: Callable[[], None] = lambda: None,
    *,
    rate: float | None = None,
) -> None:
    """Make the requests, report (with `extra()`), wait for the lab's "close", close each
    worker and then `finish()` (what the workers share), report again."""
    tally = _Tally(count, time.monotonic() + max_seconds, rate)
    emit({"kind": "start", "t0": tally.t0, "rate": rate})
    threads = [
        threading.Thread(target=_work, args=(w, tally), name=f"worker-{i}", daemon=True)
        for i, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max_seconds + JOIN_GRACE_S)
    with tally.lock:
        report = {"times": sorted(tally.times), "errors": tally.errors}
    emit({"kind": "done", **report, "ended": time.monotonic(), **extra()})
    _await_close()
    for worker in workers:
        try:
            worker.close()
        except Exception as err:  # a failed close is reported, the others still run
            emit({"kind": "close_error", "error": error_name(err)})
    try:
        finish()
    except Exception as err:
        emit({"kind": "close_error", "error": error_name(err)})
    emit({"kind": "closed", "t": time.monotonic()})


def _await_close() -> None:
    """Block until the lab writes "close" or closes our stdin (bounded by the lab's own
    deadline: it kills us when it gives up)."""
    for line in sys.stdin:
        if line.strip() == CLOSE_COMMAND:
            return


def parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s; 0: no pacing")
    return parser


def checked(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    if args.count < 0 or not 1 <= args.workers <= MAX_WORKERS:
        parser.error(f"count must be 0 or more, workers 1-{MAX_WORKERS}")
    if args.timeout <= 0 or args.max_seconds <= 0 or args.rate < 0:
        parser.error("timeout and max-seconds must be positive, rate 0 or more")
    return args


def start_child(args: argparse.Namespace) -> None:
    die_with_parent(args.parent)
    ignore_interrupts()


__all__ = ["Failed", "Worker", "checked", "error_name", "parser", "run", "start_child"]
