"""Lab child for nginx-keepalive: HTTP/1.1 GET requests over a persistent connection.

    python -m tcpdoctor.lab.scenarios._http_load --host H --port 8080 --parent PID
        --count N [--rate R] [--timeout 2]

A small HTTP/1.1 client on a plain socket. It keeps its connection for the next request
unless a response says "Connection: close"; then it reads on until the server's FIN
(bounded by --timeout) and only then closes, so the server, which announced the close,
is the one that closes first. (A client that closes as soon as it has the whole body
races the server's close() and sometimes wins: the lab saw it on 1 of 200 connections on
a loaded machine, and that connection's TIME_WAIT then sat on the client.) So how many
connections there are is the server's decision. The last connection stays open until the
lab says "close". Protocol: _loadgen.
"""

from __future__ import annotations

import argparse
import socket

from tcpdoctor.lab.scenarios import _loadgen

HTTP_OK = 200
MAX_HEADER_BYTES = 16_384
MAX_DRAIN_READS = 64  # after "Connection: close" only the FIN should follow
_CHUNK = 4096


class _Response:
    def __init__(self, status: int, close: bool) -> None:
        self.status = status
        self.close = close


def _read_response(sock: socket.socket, buffer: bytearray) -> _Response:
    """Status line, headers and a Content-Length body from `sock` (nginx's `return 200`
    always sends Content-Length)."""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEADER_BYTES:
            raise _loadgen.Failed("HEADER_TOO_LONG")
        _fill(sock, buffer)
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise _loadgen.Failed("BAD_STATUS_LINE") from None
    headers = dict(_header(line) for line in lines[1:] if ":" in line)
    length = int(headers.get("content-length", "0") or 0)
    while len(rest) < length:
        chunk = sock.recv(_CHUNK)
        if not chunk:
            raise _loadgen.Failed("EOF")
        rest += chunk
    buffer[:] = rest[length:]
    return _Response(status, headers.get("connection", "").lower() == "close")


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip()


def _fill(sock: socket.socket, buffer: bytearray) -> None:
    chunk = sock.recv(_CHUNK)
    if not chunk:
        raise _loadgen.Failed("EOF")
    buffer += chunk


def _drain_to_eof(sock: socket.socket) -> None:
    for _ in range(MAX_DRAIN_READS):
        if not sock.recv(_CHUNK):
            return
    raise _loadgen.Failed("NO_EOF")


class _KeepAliveClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.request = f"GET / HTTP/1.1\r\nHost: {args.host}\r\n\r\n".encode()

    def one(self) -> None:
        if self.sock is None:
            self.sock = socket.create_connection(
                (self.args.host, self.args.port), timeout=self.args.timeout
            )
            self.buffer.clear()
        sock = self.sock
        try:
            sock.sendall(self.request)
            response = _read_response(sock, self.buffer)
            if response.close:
                _drain_to_eof(sock)
                self.close()
        except BaseException:
            self.close()  # start afresh on the next request
            raise
        if response.status != HTTP_OK:
            raise _loadgen.Failed(f"HTTP_{response.status}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def main(argv: list[str] | None = None) -> None:
    parser = _loadgen.parser("tcpdoctor.lab.scenarios._http_load")
    args = _loadgen.checked(parser.parse_args(argv), parser)
    _loadgen.start_child(args)
    workers: list[_loadgen.Worker] = [_KeepAliveClient(args) for _ in range(args.workers)]
    _loadgen.run(workers, args.count, args.max_seconds, rate=args.rate or None)


if __name__ == "__main__":
    main()
