"""Lab child: a server that answers requests and never closes a connection itself.

    python -m tcpdoctor.lab._holding_server --host 198.18.1.2 --port 8080 --parent PID
        [--max-seconds 600]

Each REQUEST gets a REPLY. When a client closes, the connection is left open on this side
(it stays in CLOSE_WAIT), so the client's FIN_WAIT2 can only end by its own timer; a
silent peer is what the timer scenarios need. Prints {"kind": "ready"} once listening.
Stops when stdin closes, the parent dies or max-seconds pass. Standard library only.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time

from tcpdoctor.lab._child import die_with_parent, emit, ignore_interrupts, stop_on_stdin_eof

REQUEST = b"req\n"
REPLY = b"ok\n"
MAX_CONNECTIONS = 64  # the timer scenarios open one or two
_POLL_S = 0.2


def _listen(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(MAX_CONNECTIONS)
    listener.setblocking(False)
    return listener


def _serve_one(sel: selectors.BaseSelector, conn: socket.socket, held: list[socket.socket]) -> None:
    try:
        data = conn.recv(4096)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        data = b""
    if not data:  # the peer closed (or reset): keep our end open, never send a FIN
        sel.unregister(conn)
        held.append(conn)
        return
    for _ in range(data.count(REQUEST)):
        try:
            conn.sendall(REPLY)
        except OSError:
            return


def serve(args: argparse.Namespace) -> None:
    stop = stop_on_stdin_eof()
    listener = _listen(args.host, args.port)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    held: list[socket.socket] = []  # closed by the peer, deliberately left open here
    emit({"kind": "ready", "host": args.host, "port": args.port})
    deadline = time.monotonic() + args.max_seconds
    accepted = 0
    while not stop.is_set() and time.monotonic() < deadline:
        for key, _events in sel.select(timeout=_POLL_S):
            if key.data is None:
                try:
                    conn, _peer = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                accepted += 1
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, conn)
                if accepted >= MAX_CONNECTIONS:
                    sel.unregister(listener)  # a bound on work, whatever the clients do
            else:
                _serve_one(sel, key.data, held)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcpdoctor.lab._holding_server")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    die_with_parent(args.parent)
    ignore_interrupts()
    serve(args)


if __name__ == "__main__":
    main()
