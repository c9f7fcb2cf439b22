"""Lab child for redis-pool: INCR commands through redis-py, one of two ways.

    python -m tcpdoctor.lab.scenarios._redis_load --host H --port 6379 --parent PID
        --count N --workers W --mode new|pool [--timeout 2] [--report-counter]

* new: every command builds its own redis.Redis client and closes it afterwards, the way
  code that creates a client per request behaves: one TCP connection per command.
* pool: the workers share one redis.ConnectionPool (at most W connections), kept open
  until the lab says "close"; then pool.disconnect() closes them.

--report-counter adds the key's final value to the "done" record (read over the pool, so
no extra connection is made). Protocol: tcpdoctor.lab.scenarios._loadgen.
"""

from __future__ import annotations

import argparse
from typing import Any

from tcpdoctor.lab.scenarios import _loadgen

KEY = "tdlab:commands"
MODES = ("new", "pool")


class _NewClientPerCommand:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def one(self) -> None:
        import redis

        client = redis.Redis(
            host=self.args.host,
            port=self.args.port,
            socket_timeout=self.args.timeout,
            socket_connect_timeout=self.args.timeout,
        )
        try:
            client.incr(KEY)
        finally:
            client.close()  # redis-py: disconnect() = shutdown(SHUT_RDWR) + close()

    def close(self) -> None:
        return None


class _Pooled:
    def __init__(self, client: Any) -> None:
        self.client = client

    def one(self) -> None:
        self.client.incr(KEY)

    def close(self) -> None:
        return None  # the pool is shared: disconnected once, after every worker


def main(argv: list[str] | None = None) -> None:
    parser = _loadgen.parser("tcpdoctor.lab.scenarios._redis_load")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--report-counter", action="store_true")
    args = _loadgen.checked(parser.parse_args(argv), parser)
    _loadgen.start_child(args)
    import redis

    pool = redis.ConnectionPool(
        host=args.host,
        port=args.port,
        max_connections=args.workers,
        socket_timeout=args.timeout,
        socket_connect_timeout=args.timeout,
    )
    shared = redis.Redis(connection_pool=pool)
    workers: list[_loadgen.Worker]
    if args.mode == "new":
        workers = [_NewClientPerCommand(args) for _ in range(args.workers)]
    else:
        workers = [_Pooled(shared) for _ in range(args.workers)]

    def extra() -> dict[str, Any]:
        if not args.report_counter:
            return {}
        try:
            value = shared.get(KEY)
        except redis.RedisError as err:
            return {"counter_error": _loadgen.error_name(err)}
        return {"counter": int(value or 0)}

    # pool.disconnect() closes every pooled connection (shutdown + close, client first).
    _loadgen.run(workers, args.count, args.max_seconds, extra, pool.disconnect)


if __name__ == "__main__":
    main()
