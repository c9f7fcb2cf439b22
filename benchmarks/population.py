"""Build a large TCP socket population in a throwaway `tdlab-bench-*` network namespace.

The population is what a host with a connection-churn problem looks like:

* a bulk of TIME_WAIT sockets. They hold no file descriptor, so a million of them fit
  under the per-process open-files limit, but the kernel drops each one 60 s after it
  was made. Build fast, then measure inside that window (`Population.valid_until`).
* a CLOSE_WAIT subset held by one process (the "holder"), which accepted connections
  whose clients then closed and never closed its side. The clients' ends are orphaned
  FIN_WAIT2 sockets; tcp_fin_timeout is raised inside the namespace so they outlive a run.

Only the namespace's own sysctls are set; the host is read, never written. All traffic is
on the namespace's loopback. The namespace is deleted on every exit path: the class is a
context manager, and the standalone entry point turns SIGTERM/SIGHUP into a clean exit.

Standalone: `python benchmarks/population.py --size 100000` builds, reports, cleans up.
The same file is the worker run inside the namespace (`_holder`, `_fill` subcommands).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

HERE = Path(__file__).resolve()
NETNS_PREFIX = "tdlab-bench-"

TW_LIFETIME_S = 60.0  # TCP_TIMEWAIT_LEN (include/net/tcp.h); not tunable
FIN_TIMEOUT_S = 3600  # inside the namespace only: orphaned FIN_WAIT2 peers outlive a run
LOCAL_PORTS = (2000, 65535)  # ephemeral range inside the namespace
HOLDER_PORT = 1050  # listeners stay below the ephemeral range so they always bind
FILL_BASE_PORT = 1100
FILL_PORTS_PER_WORKER = 8
PER_PAIR_TARGET = 500  # TIME_WAITs per (daddr, dport) pair: far below the port range
HOST_OCTETS = 254  # 127.K.A.1 .. 127.K.A.254
MAX_WORKERS = 64
HOLDER_MAX_LIFETIME_S = 4 * 3600  # the holder exits on its own even if nobody stops it
MIN_FILL_RATE = 2000.0  # sockets/s: below this a fill is hopeless; bounds its deadline
FILL_CHECK_EVERY = 1024  # loop iterations between deadline checks
MAX_CONNECT_ERRORS = 1000
CMD_TIMEOUT_S = 30.0


class PopulationError(RuntimeError):
    """The population could not be built (namespace, sysctl, or socket failure)."""


# --------------------------------------------------------------------------- host side


@dataclass
class BuildReport:
    size: int  # sockets asked for (all states)
    closewait: int
    workers: int
    netns: str
    holder_s: float = 0.0  # building the CLOSE_WAIT subset
    fill_s: float = 0.0  # building the TIME_WAIT bulk
    build_s: float = 0.0  # whole build, namespace creation included
    fill_rate: float = 0.0  # TIME_WAIT sockets per second
    tw_created: int = 0
    connect_errors: int = 0
    count_after_build: int = 0
    sockstat_after_build: dict[str, int] = field(default_factory=dict)


class Population:
    """A fresh namespace with `size` TCP sockets; use as a context manager."""

    def __init__(
        self,
        size: int,
        *,
        closewait: int = 2000,
        workers: int = 2,
        python: str = sys.executable,
        fill_timeout_s: float | None = None,
    ) -> None:
        if closewait < 0 or size < 2 * closewait + 1 + 100:
            raise PopulationError(f"size {size} too small for {closewait} CLOSE_WAIT pairs")
        if not 1 <= workers <= MAX_WORKERS:
            raise PopulationError(f"workers must be 1..{MAX_WORKERS}")
        self.size = size
        self.closewait = closewait
        self.workers = workers
        self.python = python
        self.fill_timeout_s = fill_timeout_s or 30.0 + size / MIN_FILL_RATE
        self.name = f"{NETNS_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.report = BuildReport(size, closewait, workers, self.name)
        self.tw_started = 0.0  # monotonic: first TIME_WAIT can appear from here on
        self.tw_finished = 0.0
        self._holder: subprocess.Popen[str] | None = None
        self._created = False

    # ---- lifecycle

    def __enter__(self) -> Population:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def build(self) -> BuildReport:
        started = time.monotonic()
        self._create_netns()
        t0 = time.monotonic()
        self._start_holder()
        self.report.holder_s = time.monotonic() - t0
        self._fill(self.size - self.fixed_sockets)
        self.report.build_s = time.monotonic() - started
        self.report.sockstat_after_build = self.sockstat()
        self.report.count_after_build = self.count()
        return self.report

    def close(self) -> None:
        holder, self._holder = self._holder, None
        if holder is not None:
            _stop(holder)
        if self._created:
            self._created = False
            subprocess.run(
                ["ip", "netns", "delete", self.name],
                check=False,
                capture_output=True,
                timeout=CMD_TIMEOUT_S,
            )

    # ---- facts about the population

    @property
    def fixed_sockets(self) -> int:
        """Sockets that do not expire: the holder's listener and its CLOSE_WAIT pairs."""
        return 2 * self.closewait + 1

    @property
    def holder_pid(self) -> int:
        if self._holder is None:
            raise PopulationError("no holder process")
        return self._holder.pid  # `ip netns exec` execs, so this is the Python holder

    @property
    def valid_until(self) -> float:
        """Monotonic time up to which at least 95% of `size` sockets should still exist.

        TIME_WAITs made at a steady rate start expiring TW_LIFETIME_S after the first one;
        the 5% allowance lasts 5% of the fill time. One second of margin for jitter.
        """
        fill = self.tw_finished - self.tw_started
        return self.tw_started + TW_LIFETIME_S + 0.05 * fill - 1.0

    def sockstat(self) -> dict[str, int]:
        """The namespace's TCP line of /proc/net/sockstat{,6}, read through the holder."""
        out: dict[str, int] = {}
        for name, prefix in (("sockstat", "TCP:"), ("sockstat6", "TCP6:")):
            path = f"/proc/{self.holder_pid}/net/{name}"
            with open(path, encoding="ascii") as handle:
                for line in handle:
                    if line.startswith(prefix + " "):
                        words = line.split()[1:]
                        tag = "" if prefix == "TCP:" else "6"
                        for key, value in zip(words[::2], words[1::2], strict=True):
                            out[f"{key}{tag}"] = int(value)
        return out

    def count(self) -> int:
        """TCP sockets in the namespace: hashed ones (both families) plus TIME_WAITs."""
        stat = self.sockstat()
        return stat.get("inuse", 0) + stat.get("inuse6", 0) + stat.get("tw", 0)

    def exec_argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    # ---- building

    def _create_netns(self) -> None:
        _run("ip", "netns", "add", self.name)
        self._created = True
        _run("ip", "-n", self.name, "link", "set", "lo", "up")
        settings = {
            "net.ipv4.ip_local_port_range": f"{LOCAL_PORTS[0]} {LOCAL_PORTS[1]}",
            "net.ipv4.tcp_max_tw_buckets": str(max(2 * self.size, 262144)),
            # loopback default 2 would let connect() recycle our TIME_WAITs
            "net.ipv4.tcp_tw_reuse": "0",
            "net.ipv4.tcp_fin_timeout": str(FIN_TIMEOUT_S),
        }
        for key, value in settings.items():
            _run(*self.exec_argv("sysctl", "-qw", f"{key}={value}"))

    def _start_holder(self) -> None:
        argv = self.exec_argv(self.python, str(HERE), "_holder", "--count", str(self.closewait))
        self._holder = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._holder.stdout is not None
        line = _readline_with_timeout(self._holder.stdout, CMD_TIMEOUT_S + self.closewait / 500)
        if not line:
            raise PopulationError("the CLOSE_WAIT holder did not start")
        ready = json.loads(line)
        if ready.get("closewait") != self.closewait:
            raise PopulationError(f"holder built {ready} instead of {self.closewait} CLOSE_WAITs")

    def _fill(self, count: int) -> None:
        argv = self.exec_argv(
            self.python,
            str(HERE),
            "_fill",
            "--count",
            str(count),
            "--workers",
            str(self.workers),
            "--deadline-s",
            f"{self.fill_timeout_s:.1f}",
        )
        self.tw_started = time.monotonic()
        done = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=self.fill_timeout_s + CMD_TIMEOUT_S,
        )
        self.tw_finished = time.monotonic()
        if done.returncode != 0:
            raise PopulationError(f"fill failed: {done.stderr.strip()[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        self.report.fill_s = self.tw_finished - self.tw_started
        self.report.tw_created = int(result["created"])
        self.report.connect_errors = int(result["errors"])
        self.report.fill_rate = self.report.tw_created / max(self.report.fill_s, 1e-9)
        if self.report.tw_created < 0.99 * count:
            raise PopulationError(f"fill made {self.report.tw_created} of {count} TIME_WAITs")


def _run(*argv: str) -> None:
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    if done.returncode != 0:
        raise PopulationError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()  # the holder exits on EOF
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def _readline_with_timeout(stream: IO[str], timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return stream.readline()


# --------------------------------------------------------------------- namespace side


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent exits."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, sig)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def holder_main(count: int) -> int:
    """Hold `count` CLOSE_WAIT sockets until stdin closes (or the lifetime bound)."""
    die_with_parent()
    _raise_nofile()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", HOLDER_PORT))
    listener.listen(4096)
    held: list[socket.socket] = []
    batch = 1000  # clients open at once: keeps us far from the descriptor limit
    for first in range(0, count, batch):
        clients = []
        for _ in range(min(batch, count - first)):
            client = socket.socket()
            client.connect(("127.0.0.1", HOLDER_PORT))
            clients.append(client)
            held.append(listener.accept()[0])
        for client in clients:
            client.close()  # orphaned FIN_WAIT2; our accepted end goes to CLOSE_WAIT
    print(json.dumps({"closewait": len(held), "pid": os.getpid()}), flush=True)
    deadline = time.monotonic() + HOLDER_MAX_LIFETIME_S
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(sys.stdin, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=5.0) and not sys.stdin.readline():
                break  # EOF: the parent is done with us (or died)
    for sock in held:
        sock.close()
    listener.close()
    return 0


def _fill_worker(index: int, count: int, deadline: float) -> tuple[int, int]:
    """Make `count` TIME_WAITs: connect, accept, close the client, then the server end."""
    ports = [
        FILL_BASE_PORT + index * FILL_PORTS_PER_WORKER + p for p in range(FILL_PORTS_PER_WORKER)
    ]
    listeners = []
    for port in ports:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(4096)
        listeners.append(listener)
    pairs_per_block = HOST_OCTETS * len(ports)
    blocks = max(1, math.ceil(count / (pairs_per_block * PER_PAIR_TARGET)))
    if blocks > 256:
        raise PopulationError("too many sockets per worker; add workers")
    dsts = [f"127.{index + 1}.{a}.{b}" for a in range(blocks) for b in range(1, HOST_OCTETS + 1)]
    nd = len(dsts)
    created = errors = 0
    j = 0
    while created < count:
        if j % FILL_CHECK_EVERY == 0 and time.monotonic() > deadline:
            break
        which = (j // nd) % len(ports)
        dst = dsts[j % nd]
        j += 1
        client = socket.socket()
        try:
            client.connect((dst, ports[which]))
        except OSError:
            client.close()
            errors += 1
            if errors > MAX_CONNECT_ERRORS:
                break
            continue
        server, _ = listeners[which].accept()
        client.close()  # active close: the client end becomes the TIME_WAIT
        server.close()
        created += 1
    for listener in listeners:
        listener.close()
    return created, errors


def fill_main(count: int, workers: int, deadline_s: float) -> int:
    die_with_parent()
    deadline = time.monotonic() + deadline_s
    shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    children: list[tuple[int, int]] = []  # (pid, read end)
    for index, share in enumerate(shares):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # worker
            code = 0
            try:
                die_with_parent()
                os.close(read_fd)
                created, errors = _fill_worker(index, share, deadline)
                os.write(write_fd, json.dumps([created, errors]).encode())
            except BaseException as err:  # report, never fall back into the parent's loop
                os.write(2, f"fill worker {index}: {err!r}\n".encode())
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        children.append((pid, read_fd))
    created = errors = 0
    failed = 0
    for pid, read_fd in children:
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            failed += 1
            continue
        made, errs = json.loads(data)
        created += made
        errors += errs
    print(json.dumps({"created": created, "errors": errors, "failed_workers": failed}))
    return 1 if failed else 0


# ------------------------------------------------------------------------ entry point


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """SIGTERM / SIGHUP become SystemExit, SIGINT KeyboardInterrupt (even if a parent had
    it ignored), so `finally` blocks delete the namespace."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    holder = sub.add_parser("_holder", help="(internal) hold CLOSE_WAIT sockets")
    holder.add_argument("--count", type=int, required=True)
    fill = sub.add_parser("_fill", help="(internal) make TIME_WAIT sockets")
    fill.add_argument("--count", type=int, required=True)
    fill.add_argument("--workers", type=int, default=2)
    fill.add_argument("--deadline-s", type=float, required=True)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--closewait", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--hold", type=float, default=0.0, help="seconds to keep it (max 600)")
    args = parser.parse_args(argv)
    if args.cmd == "_holder":
        return holder_main(args.count)
    if args.cmd == "_fill":
        return fill_main(args.count, args.workers, args.deadline_s)
    install_signal_handlers()
    with Population(args.size, closewait=args.closewait, workers=args.workers) as pop:
        report: dict[str, Any] = asdict(pop.report)
        print(json.dumps(report, indent=2))
        if args.hold > 0:
            time.sleep(min(args.hold, 600.0))
            print(json.dumps({"count_after_hold": pop.count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
