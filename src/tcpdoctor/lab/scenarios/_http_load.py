"""Lab child for nginx-keepalive: HTTP/1.1 GET requests over one persistent connection.

    python -m tcpdoctor.lab.scenarios._http_load --host H --port 8080 --parent PID
        --count N [--timeout 2]

http.client speaks HTTP/1.1 and keeps the connection open unless the server's response
says "Connection: close"; then it closes after reading the body and reconnects for the
next request. So how many connections there are is the server's decision. The last
connection stays open until the lab says "close". Protocol: _loadgen.
"""

from __future__ import annotations

import argparse
import http.client

from tcpdoctor.lab.scenarios import _loadgen

PATH = "/"
HTTP_OK = 200


class _KeepAliveClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)

    def one(self) -> None:
        try:
            self.conn.request("GET", PATH)
            response = self.conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # start afresh on the next request
            raise
        if response.status != HTTP_OK:
            raise _loadgen.Failed(f"HTTP_{response.status}")

    def close(self) -> None:
        self.conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = _loadgen.parser("tcpdoctor.lab.scenarios._http_load")
    args = _loadgen.checked(parser.parse_args(argv), parser)
    _loadgen.start_child(args)
    workers: list[_loadgen.Worker] = [_KeepAliveClient(args) for _ in range(args.workers)]
    _loadgen.run(workers, args.count, args.max_seconds)


if __name__ == "__main__":
    main()
