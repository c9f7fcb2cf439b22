"""Lab child: opens N connections, then closes each one the way the lab tells it to.

    python -m tcpdoctor.lab.scenarios._lifecycle_client --host 198.18.0.2 --port 8080
        --parent PID --count N [--max-seconds 600]

Every connection makes one request/reply exchange first, so it is fully established and
idle. Prints {"kind": "open", "i": I, "port": P} per connection, then {"kind": "ready"}.
Then reads commands from stdin, one per line, "HOW I", and closes connection I:

* close:    plain close() (a FIN; this side holds the TIME_WAIT if the peer closes too)
* linger0:  SO_LINGER {on, 0} then close() (an RST, nothing left behind)
* unread:   send one more request, wait for the reply to arrive, close() without reading
            it (an RST too: unread data is discarded, RFC 2525 2.17)
* shutdown: shutdown(SHUT_WR), read until the peer's FIN, then close(): the TIME_WAIT
            then always starts from FIN_WAIT2 on a full socket, never from a minisock

and prints {"kind": "closed", "i", "how", "port", "t_call", "t", "error"} (unix times
around the call; error is null or a name). Exits at stdin EOF, when the parent dies, or
after max-seconds (SIGALRM). Standard library only.
"""

from __future__ import annotations

import argparse
import errno
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

from tcpdoctor.lab._child import die_with_parent, emit, ignore_interrupts

REQUEST = b"req\n"
REPLY = b"ok\n"
HOWS = ("close", "linger0", "unread", "shutdown")
IO_TIMEOUT_S = 5.0
_LINGER_OFF_NOW = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}


class _Failed(Exception):
    pass


def _error_name(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno is not None:
        return errno.errorcode.get(err.errno, f"errno {err.errno}")
    return type(err).__name__ if not isinstance(err, _Failed) else str(err)


def _recv_exact(sock: socket.socket, size: int) -> None:
    got = 0
    while got < size:
        chunk = sock.recv(size - got)
        if not chunk:
            raise _Failed("EOF")
        got += len(chunk)


def _open(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=IO_TIMEOUT_S)
    try:
        sock.sendall(REQUEST)
        _recv_exact(sock, len(REPLY))
    except BaseException:
        sock.close()
        raise
    return sock


def _wait_readable(sock: socket.socket) -> None:
    if not select.select([sock], [], [], IO_TIMEOUT_S)[0]:
        raise _Failed("TIMEOUT")


def _drain_to_eof(sock: socket.socket) -> None:
    for _ in range(64):  # the server sends nothing but its FIN here; bounded anyway
        _wait_readable(sock)
        if not sock.recv(4096):
            return
    raise _Failed("NO_EOF")


def _close(sock: socket.socket, how: str) -> None:
    if how == "linger0":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF_NOW)
    elif how == "unread":
        sock.sendall(REQUEST)
        _wait_readable(sock)  # the reply sits in the receive queue, unread
    elif how == "shutdown":
        sock.shutdown(socket.SHUT_WR)
        _drain_to_eof(sock)
    sock.close()


def _command(line: str, socks: list[socket.socket | None]) -> dict[str, Any] | None:
    parts = line.split()
    if len(parts) != 2 or parts[0] not in HOWS or not parts[1].isdigit():
        return {"kind": "bad_command", "line": line.strip()[:80]}
    how, index = parts[0], int(parts[1])
    sock = socks[index] if index < len(socks) else None
    if sock is None:
        return {"kind": "bad_command", "line": line.strip()[:80]}
    socks[index] = None
    port = int(sock.getsockname()[1])
    t_call = time.time()
    error: str | None = None
    try:
        _close(sock, how)
    except (OSError, _Failed) as err:
        error = _error_name(err)
        sock.close()
    return {"kind": "closed", "i": index, "how": how, "port": port, "t_call": t_call,
            "t": time.time(), "error": error}  # fmt: skip


def run(args: argparse.Namespace) -> None:
    socks: list[socket.socket | None] = []
    for index in range(args.count):
        try:
            sock = _open(args.host, args.port)
        except (OSError, _Failed) as err:
            emit({"kind": "error", "i": index, "error": _error_name(err)})
            return
        socks.append(sock)
        emit({"kind": "open", "i": index, "port": int(sock.getsockname()[1])})
    emit({"kind": "ready", "count": args.count})
    for line in sys.stdin:  # EOF: the lab is done with us
        record = _command(line, socks)
        if record is not None:
            emit(record)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcpdoctor.lab.scenarios._lifecycle_client")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--max-seconds", type=int, default=600)
    args = parser.parse_args(argv)
    if args.count < 0 or args.max_seconds < 1:
        parser.error("count must be zero or more, max-seconds at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    die_with_parent(args.parent)
    ignore_interrupts()
    signal.alarm(args.max_seconds)  # default SIGALRM action ends us: a hard bound
    run(args)


if __name__ == "__main__":
    main()
