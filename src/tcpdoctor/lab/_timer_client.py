"""Lab child: one client connection whose kernel timers the lab watches.

    python -m tcpdoctor.lab._timer_client --host 198.18.1.2 --port 8080 --parent PID
        --mode syn|hold [--syncnt N] [--user-timeout-ms MS] [--keepalive] [--max-seconds S]

* syn: a non-blocking connect(); prints {"kind": "connecting", "port", "t"} once the SYN is
  on its way and {"kind": "result", "error", "t"} when connect() finishes (an error name,
  or null when it succeeded).
* hold: connect(), one request and its reply, then {"kind": "established", "port",
  "t_reply", "rto_us", "rtt_us", "rttvar_us"}. It then obeys one command per stdin line:
  "send N" (N bytes, then wait for the socket to fail), "wait" (only wait), "close"
  (close the socket, {"kind": "closed", "t", "mono", "rto_us"}). A wait ends with
  {"kind": "error", "error", "t"}.

Times "t" are CLOCK_REALTIME seconds (time.time()), the clock of the capture's packet
timestamps; "mono" is CLOCK_MONOTONIC, the lab's own clock. Every wait is bounded by
--max-seconds; end of stdin or the parent's death stops the child. Standard library only.
"""

from __future__ import annotations

import argparse
import errno
import select
import socket
import struct
import sys
import time
from typing import Any

from tcpdoctor.lab._child import die_with_parent, emit, ignore_interrupts
from tcpdoctor.lab._holding_server import REPLY, REQUEST

MODES = ("syn", "hold")
CONNECT_TIMEOUT_S = 5.0
# struct tcp_info (include/uapi/linux/tcp.h): tcpi_rto at byte 8, tcpi_rtt and tcpi_rttvar
# at 68 and 72, all u32 microseconds.
_TCP_INFO_LEN = 104
_RTO_OFFSET = 8
_RTT_OFFSET = 68


def _error_name(err: OSError) -> str:
    if err.errno is None:
        return type(err).__name__
    return errno.errorcode.get(err.errno, f"errno {err.errno}")


def _options(sock: socket.socket, args: argparse.Namespace) -> None:
    if args.syncnt is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, args.syncnt)
    if args.user_timeout_ms is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, args.user_timeout_ms)
    if args.keepalive:
        # Idle, interval and count come from the namespace's tcp_keepalive_* sysctls.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def _tcp_info(sock: socket.socket) -> dict[str, int]:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    (rto,) = struct.unpack_from("<I", raw, _RTO_OFFSET)
    rtt, rttvar = struct.unpack_from("<II", raw, _RTT_OFFSET)
    return {"rto_us": rto, "rtt_us": rtt, "rttvar_us": rttvar}


# --- syn: one connect() and its outcome -----------------------------------------------------


def run_syn(args: argparse.Namespace) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _options(sock, args)
    sock.setblocking(False)
    code = sock.connect_ex((args.host, args.port))
    started = time.time()
    emit({"kind": "connecting", "port": sock.getsockname()[1], "t": started, "code": code})
    if code not in (0, errno.EINPROGRESS):
        emit({"kind": "result", "error": errno.errorcode.get(code, str(code)), "t": time.time()})
        return
    deadline = time.monotonic() + args.max_seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, writable, _ = select.select([sys.stdin], [sock], [], left)
        if writable:
            failure = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            name = errno.errorcode.get(failure, str(failure)) if failure else None
            emit({"kind": "result", "error": name, "t": time.time()})
            return
        if readable and not sys.stdin.readline():
            return  # the lab is done with us
    emit({"kind": "result", "error": "LAB_TIMEOUT", "t": time.time()})


# --- hold: an established connection, driven by commands ------------------------------------


def _establish(args: argparse.Namespace) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _options(sock, args)
    sock.settimeout(CONNECT_TIMEOUT_S)
    sock.connect((args.host, args.port))
    sock.sendall(REQUEST)
    got = b""
    while len(got) < len(REPLY):  # the reply is three bytes: at most three reads
        chunk = sock.recv(len(REPLY) - len(got))
        if not chunk:
            raise ConnectionError("the server closed before replying")
        got += chunk
    return sock


def _wait_for_failure(sock: socket.socket, seconds: float) -> dict[str, Any]:
    """Block in recv() until the kernel reports an error on the socket (or time runs out)."""
    sock.settimeout(seconds)
    try:
        data = sock.recv(4096)
    except TimeoutError as err:
        name = "LAB_TIMEOUT" if err.errno is None else _error_name(err)
        return {"kind": "error", "error": name, "t": time.time()}
    except OSError as err:
        return {"kind": "error", "error": _error_name(err), "t": time.time()}
    return {"kind": "error", "error": "DATA" if data else "EOF", "t": time.time()}


def _command(sock: socket.socket, line: str, args: argparse.Namespace) -> bool:
    """Run one command; False once the socket is closed."""
    word, _, rest = line.strip().partition(" ")
    if word == "send":
        sent_at = time.time()
        sock.send(b"x" * max(1, int(rest or "1")))
        emit({"kind": "sent", "t": sent_at})
        emit(_wait_for_failure(sock, args.max_seconds))
    elif word == "wait":
        emit(_wait_for_failure(sock, args.max_seconds))
    elif word == "close":
        info = _tcp_info(sock)
        closed_at, mono = time.time(), time.monotonic()
        sock.close()
        emit({"kind": "closed", "t": closed_at, "mono": mono, "rto_us": info["rto_us"]})
        return False
    return True


def run_hold(args: argparse.Namespace) -> None:
    try:
        sock = _establish(args)
    except OSError as err:
        emit({"kind": "error", "error": _error_name(err), "t": time.time()})
        return
    replied = time.time()
    port = sock.getsockname()[1]
    emit({"kind": "established", "port": port, "t_reply": replied, **_tcp_info(sock)})
    for _ in range(16):  # a handful of commands at most; end of stdin ends the loop
        line = sys.stdin.readline()
        if not line or not _command(sock, line, args):
            break


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcpdoctor.lab._timer_client")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--syncnt", type=int)
    parser.add_argument("--user-timeout-ms", type=int)
    parser.add_argument("--keepalive", action="store_true")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.max_seconds <= 0:
        parser.error("--max-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    die_with_parent(args.parent)
    ignore_interrupts()
    if args.mode == "syn":
        run_syn(args)
    else:
        run_hold(args)


if __name__ == "__main__":
    main()
