"""Lab child: a server that reports how each connection ended, and may never close it.

    python -m tcpdoctor.lab.scenarios._lifecycle_server --host 198.18.0.2 --port 8080
        --parent PID [--on-eof close|keep] [--max-seconds 600]

Answers every REQUEST with REPLY. When a peer goes away it prints one JSON line
{"kind": "peer_end", "peer_port": P, "how": "EOF" | "ECONNRESET" | ..., "t": unix time}:
what recv() returned, which is the point of the linger-reset scenario. With --on-eof close
it then closes the socket (the client keeps the TIME_WAIT); with --on-eof keep it never
does (the close-wait-leak bug: EOF read, close() forgotten). Prints {"kind": "ready"} once
listening and {"kind": "accepted", "peer_port": P} per connection. Stops when stdin
closes, the parent dies or max-seconds pass. Standard library only: it starts fast.
"""

from __future__ import annotations

import argparse
import errno
import selectors
import socket
import time

from tcpdoctor.lab._child import die_with_parent, emit, ignore_interrupts, stop_on_stdin_eof

REQUEST = b"req\n"
REPLY = b"ok\n"
BACKLOG = 4096
ON_EOF = ("close", "keep")
_POLL_S = 0.05


class _Conn:
    def __init__(self, sock: socket.socket, peer_port: int) -> None:
        self.sock = sock
        self.peer_port = peer_port
        self.pending = 0  # request bytes received but not yet answered


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcpdoctor.lab.scenarios._lifecycle_server")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--on-eof", choices=ON_EOF, default="close")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    return parser.parse_args(argv)


def _listen(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(BACKLOG)
    listener.setblocking(False)
    return listener


def _error_name(err: OSError) -> str:
    return errno.errorcode.get(err.errno or 0, type(err).__name__)


class _Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.keep_on_eof = args.on_eof == "keep"
        self.listener = _listen(args.host, args.port)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.kept: list[socket.socket] = []  # never closed on purpose (--on-eof keep)

    def accept(self) -> None:
        for _ in range(BACKLOG):  # drain the accept queue, bounded
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            conn = _Conn(sock, int(peer[1]))
            self.sel.register(sock, selectors.EVENT_READ, conn)
            emit({"kind": "accepted", "peer_port": conn.peer_port, "t": time.time()})

    def serve(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._ended(conn, _error_name(err), keep=False)  # a reset socket is dead anyway
            return
        if not data:
            self._ended(conn, "EOF", keep=self.keep_on_eof)
            return
        conn.pending += len(data)
        while conn.pending >= len(REQUEST):
            conn.pending -= len(REQUEST)
            try:
                conn.sock.sendall(REPLY)
            except OSError:
                return

    def _ended(self, conn: _Conn, how: str, *, keep: bool) -> None:
        emit({"kind": "peer_end", "peer_port": conn.peer_port, "how": how, "t": time.time()})
        self.sel.unregister(conn.sock)
        if keep:
            self.kept.append(conn.sock)
        else:
            conn.sock.close()


def serve(args: argparse.Namespace) -> None:
    stop = stop_on_stdin_eof()
    server = _Server(args)
    emit({"kind": "ready", "host": args.host, "port": args.port})
    deadline = time.monotonic() + args.max_seconds
    while not stop.is_set() and time.monotonic() < deadline:
        for key, _events in server.sel.select(timeout=_POLL_S):
            if key.data is None:
                server.accept()
            else:
                server.serve(key.data)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    die_with_parent(args.parent)
    ignore_interrupts()
    serve(args)


if __name__ == "__main__":
    main()
