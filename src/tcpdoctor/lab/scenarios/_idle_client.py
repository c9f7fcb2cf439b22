"""Lab child for idle-timeout-middlebox: two connections, a pause, then one request each.

    python -m tcpdoctor.lab.scenarios._idle_client --host VIP --port 8080 --parent PID
        --idle 5 --timeout 2 --keepalive-idle 1 --keepalive-intvl 1 --keepalive-cnt 3

Connection "plain" has no keepalive; connection "keepalive" sets SO_KEEPALIVE with
TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT. Both make one request (the lab server's
REQUEST -> REPLY), stay silent for --idle seconds, then make one more request at the same
moment (one thread each), waiting at most --timeout for the reply. JSON lines (monotonic
times):

    {"kind": "connected", "ports": {"plain": P, "keepalive": Q}}
    {"kind": "request", "conn": "plain", "phase": "before", "sent": T, "ok": true, ...}
    {"kind": "idle", "start": T, "end": T}
    {"kind": "request", "conn": ..., "phase": "after", "ok": false, "error": "TIMEOUT"}
    {"kind": "done"}            then waits for "close" (or stdin EOF), closes both,
    {"kind": "closed", "t": T}
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from typing import Any

from tcpdoctor.lab._child import die_with_parent, emit, ignore_interrupts
from tcpdoctor.lab._server import REPLY, REQUEST
from tcpdoctor.lab.scenarios._loadgen import CLOSE_COMMAND, Failed, error_name

PLAIN, KEEPALIVE = "plain", "keepalive"
_RECV_LIMIT = 64


def _connect(args: argparse.Namespace, keepalive: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if keepalive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, args.keepalive_idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, args.keepalive_intvl)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, args.keepalive_cnt)
    sock.settimeout(args.timeout)
    try:
        sock.connect((args.host, args.port))
    except BaseException:
        sock.close()
        raise
    return sock


def _request(name: str, sock: socket.socket, phase: str) -> dict[str, Any]:
    sent = time.monotonic()
    try:
        sock.sendall(REQUEST)
        got = b""
        for _ in range(_RECV_LIMIT):  # REPLY is a few bytes; bounded anyway
            chunk = sock.recv(len(REPLY) - len(got))
            if not chunk:
                raise Failed("EOF")  # the peer closed instead of answering
            got += chunk
            if len(got) >= len(REPLY):
                break
    except (OSError, Failed) as err:
        return _record(name, phase, sent, ok=False, error=error_name(err))
    return _record(name, phase, sent, ok=True, error=None)


def _record(name: str, phase: str, sent: float, *, ok: bool, error: str | None) -> dict[str, Any]:
    return {
        "kind": "request",
        "conn": name,
        "phase": phase,
        "sent": sent,
        "ended": time.monotonic(),
        "ok": ok,
        "error": error,
    }


def _watch_stdin() -> threading.Event:
    """Set once the lab writes "close" or closes our stdin (the one reader of stdin)."""
    told = threading.Event()

    def watch() -> None:
        try:
            for line in sys.stdin:
                if line.strip() == CLOSE_COMMAND:
                    break
        except (OSError, ValueError):
            pass
        told.set()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
    return told


def run(args: argparse.Namespace) -> None:
    stop = _watch_stdin()
    conns = {PLAIN: _connect(args, False), KEEPALIVE: _connect(args, True)}
    ports = {name: int(sock.getsockname()[1]) for name, sock in conns.items()}
    emit({"kind": "connected", "ports": ports})
    for name, sock in conns.items():
        emit(_request(name, sock, "before"))
    start = time.monotonic()
    if stop.wait(args.idle):
        return  # the lab went away
    emit({"kind": "idle", "start": start, "end": time.monotonic()})
    _both_after(conns)
    emit({"kind": "done"})
    stop.wait()  # bounded by the lab: it closes our stdin when it is done with us
    for sock in conns.values():
        sock.close()
    emit({"kind": "closed", "t": time.monotonic()})


def _both_after(conns: dict[str, socket.socket]) -> None:
    """One request on each connection at the same moment: neither waits for the other."""
    results: dict[str, dict[str, Any]] = {}

    def one(name: str) -> None:
        results[name] = _request(name, conns[name], "after")

    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in conns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in conns:
        emit(results[name])


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcpdoctor.lab.scenarios._idle_client")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--idle", type=float, required=True)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--keepalive-idle", type=int, required=True)
    parser.add_argument("--keepalive-intvl", type=int, required=True)
    parser.add_argument("--keepalive-cnt", type=int, default=3)
    args = parser.parse_args(argv)
    if args.idle < 0 or args.timeout <= 0:
        parser.error("idle must be 0 or more, timeout positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    die_with_parent(args.parent)
    ignore_interrupts()
    run(args)


if __name__ == "__main__":
    main()
