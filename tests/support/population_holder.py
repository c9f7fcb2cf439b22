"""The socket holder of a ground-truth population (stdlib only; runs inside a test netns).

Started as ``python population_holder.py CONFIG_JSON`` by tests/support/population.py. It
builds every socket of the population, waits (bounded) until /proc/net/tcp{,6} of its
namespace shows exactly the expected state counts, prints ONE JSON line describing what
it built (with its pid), then holds every descriptor until it is killed, its parent
dies, or ``hold_s`` passes.

Kept free of tcpdoctor imports on purpose: the population is the ground truth the
scanner is checked against, so it must not be built or verified with the scanner.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
from typing import Any

# include/net/tcp_states.h, as printed in the "st" column of /proc/net/tcp.
_STATE_NAMES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}
_PR_SET_PDEATHSIG = 1


class BuildError(Exception):
    pass


def _die_with_parent() -> None:
    """Ask for SIGKILL when the test process goes away, so no holder outlives a crash."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass  # the hold_s bound still applies


def _listener(family: int, address: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(128)
    sock.settimeout(5.0)  # accept() never blocks for ever
    return sock


def _pair(
    listener: socket.socket, family: int, address: str, port: int, uid: int | None
) -> tuple[socket.socket, socket.socket]:
    """connect() + accept(); the client socket is created with euid `uid` when given."""
    if uid is not None:
        os.seteuid(uid)  # the socket inode (and inet_diag uid) takes the creator's fsuid
    try:
        client = socket.socket(family, socket.SOCK_STREAM)
    finally:
        if uid is not None:
            os.seteuid(0)
    client.settimeout(5.0)
    client.connect((address, port))
    server, _ = listener.accept()
    server.settimeout(5.0)
    return client, server


def _read_to_eof(sock: socket.socket) -> None:
    for _ in range(100):  # bounded: each recv has the 5 s socket timeout
        if not sock.recv(4096):
            return
    raise BuildError("peer never sent FIN")


def _count_states() -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, encoding="ascii") as handle:
                lines = handle.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3:
                state = _STATE_NAMES.get(int(fields[3], 16), fields[3])
                counts[state] = counts.get(state, 0) + 1
    return counts


def _wait_for(expected: dict[str, int], timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    counts = _count_states()
    while counts != expected:
        if time.monotonic() > deadline:
            raise BuildError(f"states never settled: want {expected}, have {counts}")
        time.sleep(0.05)
        counts = _count_states()
    return counts


def build(cfg: dict[str, Any]) -> tuple[dict[str, Any], list[socket.socket]]:
    held: list[socket.socket] = []
    v4, v6, ports = cfg["v4"], cfg["v6"], cfg["ports"]
    listeners = {
        "established": _listener(socket.AF_INET, v4, ports["established"]),
        "time_wait": _listener(socket.AF_INET, v4, ports["time_wait"]),
        "close_wait": _listener(socket.AF_INET, v4, ports["close_wait"]),
        "established6": _listener(socket.AF_INET6, v6, ports["established6"]),
    }
    held.extend(listeners.values())

    # ESTABLISHED: both ends stay open. The IPv4 client ends belong to another uid.
    for _ in range(cfg["established"]):
        held.extend(
            _pair(
                listeners["established"],
                socket.AF_INET,
                v4,
                ports["established"],
                cfg["client_uid"],
            )
        )
    for _ in range(cfg["established6"]):
        held.extend(
            _pair(listeners["established6"], socket.AF_INET6, v6, ports["established6"], None)
        )

    # TIME_WAIT on the client: it closes first, the server reads EOF and closes too.
    for _ in range(cfg["time_wait"]):
        client, server = _pair(listeners["time_wait"], socket.AF_INET, v4, ports["time_wait"], None)
        client.close()
        _read_to_eof(server)
        server.close()

    # CLOSE_WAIT leak: the client closes (its end becomes an orphaned FIN_WAIT2 minisock),
    # the server end is held here and never closed.
    for _ in range(cfg["close_wait"]):
        client, server = _pair(
            listeners["close_wait"], socket.AF_INET, v4, ports["close_wait"], None
        )
        client.close()
        held.append(server)

    # SYN_SENT: non-blocking connects to an address whose packets nftables drops.
    for _ in range(cfg["syn_sent"]):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((cfg["blackhole"], cfg["blackhole_port"]))
        if code != 115:  # EINPROGRESS
            raise BuildError(f"connect to the blackhole returned {os.strerror(code)}")
        held.append(sock)

    wanted = {
        "ESTABLISHED": 2 * (cfg["established"] + cfg["established6"]),
        "TIME_WAIT": cfg["time_wait"],
        "CLOSE_WAIT": cfg["close_wait"],
        "FIN_WAIT2": cfg["close_wait"],
        "SYN_SENT": cfg["syn_sent"],
        "LISTEN": len(listeners),
    }
    # /proc lists only states that have sockets: a state asked for 0 times is absent.
    expected = {state: count for state, count in wanted.items() if count}
    counts = _wait_for(expected, cfg["settle_s"])
    return {"pid": os.getpid(), "states": counts, "fds": len(held)}, held


def main() -> int:
    cfg = json.loads(sys.argv[1])
    _die_with_parent()
    try:
        record, held = build(cfg)
    except (OSError, BuildError) as err:
        print(json.dumps({"ok": False, "pid": os.getpid(), "error": repr(err)}), flush=True)
        return 1
    print(json.dumps({"ok": True, **record}), flush=True)
    deadline = time.monotonic() + cfg["hold_s"]
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    for sock in held:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
