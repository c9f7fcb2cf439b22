"""Lab child: a tiny TCP server that answers every request with a short reply.

    python -m tcpdoctor.lab._server --host 198.18.0.2 --port 8080 --parent PID
        [--server-closes-first] [--max-seconds 600]

For every REQUEST_BYTES received it sends REPLY. By default it closes a connection only
after the client has closed (so the client does the active close and owns the
TIME_WAIT); with --server-closes-first it closes right after the reply. Prints one JSON
line {"kind": "ready"} once listening. Stops when stdin closes, the parent dies or
max-seconds pass. Standard library only.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time

from tcpdoctor.lab._child import die_with_parent, emit, ignore_interrupts, stop_on_stdin_eof

REQUEST = b"req\n"
REPLY = b"ok\n"
BACKLOG = 4096
_POLL_S = 0.2


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = 0  # request bytes received but not yet answered


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcpdoctor.lab._server")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--server-closes-first", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    return parser.parse_args(argv)


def _listen(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(BACKLOG)
    listener.setblocking(False)
    return listener


def _serve_one(sel: selectors.BaseSelector, conn: _Conn, closes_first: bool) -> None:
    try:
        data = conn.sock.recv(4096)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        data = b""
    if not data:  # the client closed: now we close too (or it reset us)
        sel.unregister(conn.sock)
        conn.sock.close()
        return
    conn.pending += len(data)
    answered = False
    while conn.pending >= len(REQUEST):
        conn.pending -= len(REQUEST)
        try:
            conn.sock.sendall(REPLY)
        except OSError:
            break
        answered = True
    if answered and closes_first:
        sel.unregister(conn.sock)
        conn.sock.close()


def serve(args: argparse.Namespace) -> None:
    stop = stop_on_stdin_eof()
    listener = _listen(args.host, args.port)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    emit({"kind": "ready", "host": args.host, "port": args.port})
    deadline = time.monotonic() + args.max_seconds
    while not stop.is_set() and time.monotonic() < deadline:
        for key, _events in sel.select(timeout=_POLL_S):
            if key.data is None:
                _accept(sel, listener)
            else:
                _serve_one(sel, key.data, args.server_closes_first)


def _accept(sel: selectors.BaseSelector, listener: socket.socket) -> None:
    for _ in range(BACKLOG):  # drain the accept queue, bounded
        try:
            sock, _peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(True)
        sock.settimeout(1.0)
        sel.register(sock, selectors.EVENT_READ, _Conn(sock))


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    die_with_parent(args.parent)
    ignore_interrupts()
    serve(args)


if __name__ == "__main__":
    main()
