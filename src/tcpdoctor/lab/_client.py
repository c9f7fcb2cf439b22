"""Lab child: a load generator making request after request at a fixed rate.

    python -m tcpdoctor.lab._client --host 198.18.0.2 --port 8080 --parent PID
        --rate 20 --count 1320 [--mode close|server-closes-first|pool] [--timeout 2]

Attempt i starts at t0 + i / rate (open loop: a failure does not slow the next attempt;
a late attempt runs at once). Modes:

* close: a new connection per request; the client closes first (its port goes to
  TIME_WAIT).
* server-closes-first: a new connection per request; the client waits for the server's
  FIN, then closes (TIME_WAIT lands on the server).
* pool: one connection for every request, reopened only after an error.

Prints JSON lines: {"kind": "start", "t0": ...}, one {"kind": "attempt", ...} per request
(times are CLOCK_MONOTONIC seconds, shared with the lab process), then {"kind": "done"}.
"""

from __future__ import annotations

import argparse
import errno
import socket
import time
from typing import Any

from tcpdoctor.lab._child import die_with_parent, emit, ignore_interrupts, stop_on_stdin_eof
from tcpdoctor.lab._server import REPLY, REQUEST

MODES = ("close", "server-closes-first", "pool")
_START_DELAY_S = 0.05


class _Failed(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _error_name(err: OSError) -> str:
    if isinstance(err, TimeoutError) and err.errno is None:
        return "TIMEOUT"
    if err.errno is None:
        return type(err).__name__
    return errno.errorcode.get(err.errno, f"errno {err.errno}")


def _recv_exact(sock: socket.socket, size: int) -> None:
    got = 0
    while got < size:
        chunk = sock.recv(size - got)
        if not chunk:
            raise _Failed("EOF")
        got += len(chunk)


def _drain_to_eof(sock: socket.socket) -> None:
    for _ in range(64):  # the server sends nothing more than its FIN; bounded anyway
        if not sock.recv(4096):
            return
    raise _Failed("NO_EOF")


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pooled: socket.socket | None = None

    def attempt(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            port, closed = self._pool() if self.args.mode == "pool" else self._one()
        except (OSError, _Failed) as err:
            name = err.name if isinstance(err, _Failed) else _error_name(err)
            return {"t": started, "ok": False, "error": name}
        return {"t": started, "ok": True, "port": port, "closed": closed}

    def _one(self) -> tuple[int, float]:
        sock = _connect(self.args.host, self.args.port, self.args.timeout)
        try:
            port = int(sock.getsockname()[1])
            sock.sendall(REQUEST)
            _recv_exact(sock, len(REPLY))
            if self.args.mode == "server-closes-first":
                _drain_to_eof(sock)
        finally:
            sock.close()
        return port, time.monotonic()

    def _pool(self) -> tuple[int, None]:
        if self.pooled is None:
            self.pooled = _connect(self.args.host, self.args.port, self.args.timeout)
        sock = self.pooled
        try:
            sock.sendall(REQUEST)
            _recv_exact(sock, len(REPLY))
        except BaseException:
            self.pooled = None
            sock.close()
            raise
        return int(sock.getsockname()[1]), None

    def finish(self) -> float | None:
        if self.pooled is None:
            return None
        self.pooled.close()
        self.pooled = None
        return time.monotonic()


def run(args: argparse.Namespace) -> None:
    stop = stop_on_stdin_eof()
    load = _Load(args)
    t0 = time.monotonic() + _START_DELAY_S
    emit({"kind": "start", "t0": t0, "rate": args.rate, "count": args.count})
    for index in range(args.count):
        due = t0 + index / args.rate
        if stop.wait(max(0.0, due - time.monotonic())):
            break
        emit({"kind": "attempt", "i": index, **load.attempt()})
    emit({"kind": "done", "pool_closed": load.finish()})


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcpdoctor.lab._client")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="close")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.count < 0 or args.timeout <= 0:
        parser.error("rate and timeout must be positive, count zero or more")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    die_with_parent(args.parent)
    ignore_interrupts()
    run(args)


if __name__ == "__main__":
    main()
