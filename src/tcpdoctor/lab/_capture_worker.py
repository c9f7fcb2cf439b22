"""Capture worker: the child process tcpdoctor.lab.capture.Capture starts inside a network
namespace with `ip netns exec NAME python -m tcpdoctor.lab._capture_worker ...`.

It reads an AF_PACKET socket (SOCK_RAW, ETH_P_ALL) with kernel timestamps and writes every
TCP-over-IP packet to a pcap (see tcpdoctor.lab.pcap for the format). It talks to the
parent with one JSON object per line on --status-fd:

    {"event": "ready"}                                        socket bound, file header out
    {"event": "error", "kind": "permission"|"setup"|"io", "message": "..."}
    {"event": "done", "packets": N, "seen": N, "kernel_drops": N, "stop": "..."}

It can never outlive its budget: it stops on SIGTERM/SIGINT/SIGHUP, when the parent dies
(PR_SET_PDEATHSIG plus a parent-pid check), after --max-seconds, after --max-packets, and
a SIGALRM set a little after --max-seconds kills it even if the loop were stuck in a write.

The death signal is SIGUSR1, not SIGTERM: the kernel sends it when the parent *thread*
exits, which also happens when a scenario started the capture from a short-lived thread
of a process that lives on. The handler tells the two apart with getppid() (the kernel
reparents before it signals), so only a real parent death stops the capture.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import math
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO, NoReturn

from tcpdoctor.lab import pcap

# linux/if_ether.h, linux/if_packet.h, asm-generic/socket.h, linux/prctl.h
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD; the control message type is the same number
SO_RCVBUFFORCE = 33
PR_SET_PDEATHSIG = 1
DEATH_SIGNAL = signal.SIGUSR1
ARPHRD_ETHER = 1

_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_TIMESPEC = struct.Struct("=qq")  # struct timespec on 64-bit Linux
_STATS = struct.Struct("=II")  # struct tpacket_stats
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_AUXDATA.size)
_LINK_HEADROOM = 256  # room for any link header ahead of the snap length we keep
_RCVBUF = 32 << 20  # room for a burst of tens of thousands of small packets
_BATCH = 4096  # packets read before the signal flag is looked at again
_POLL_CAP = 0.5  # seconds; also how often the parent-pid check runs
_ALARM_GRACE = 10  # seconds after --max-seconds at which SIGALRM kills a stuck worker


class WorkerError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Counters:
    packets: int = 0  # written to the pcap
    seen: int = 0  # read from the socket, any protocol
    software_timestamps: int = 0  # packets that came without a kernel timestamp
    ifindex_by_name: dict[str, int] = field(default_factory=dict)


@dataclass
class Stop:
    """Set by the signal handlers; the main loop looks at it between batches."""

    signal: int | None = None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tcpdoctor.lab._capture_worker")
    parser.add_argument("--pcap", required=True)
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--snaplen", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, required=True)
    parser.add_argument("--max-packets", type=int, required=True)
    parser.add_argument("--interface", action="append", default=[])
    return parser.parse_args(argv)


def tell(fd: int, event: str, **fields: object) -> None:
    line = json.dumps({"event": event, **fields}) + "\n"
    # The parent may be gone or have closed its end; the capture itself still matters.
    with contextlib.suppress(OSError):
        os.write(fd, line.encode())


# --- staying bounded ----------------------------------------------------------------------


def die_with_parent(parent_pid: int) -> None:
    """DEATH_SIGNAL when the parent thread goes; exit at once if the parent is already gone
    (the race between fork and prctl). Call after install_signals()."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL, 0, 0, 0)
    if os.getppid() != parent_pid:
        sys.exit(0)


def install_signals(stop: Stop, max_seconds: float) -> int:
    """Handlers that only record the signal, and a wake-up pipe so poll() returns at once.
    Returns the pipe's read end."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    def record(signum: int, _frame: object) -> None:
        stop.signal = signum

    def check_parent(_signum: int, _frame: object) -> None:
        pass  # the wake-up pipe ends the poll; the loop then asks getppid()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, record)
    signal.signal(DEATH_SIGNAL, check_parent)
    # Default SIGALRM action terminates: the last line of defence if the loop hangs.
    signal.alarm(math.ceil(max_seconds) + _ALARM_GRACE)
    return wake_r


# --- the socket ---------------------------------------------------------------------------


def open_socket(interfaces: list[str]) -> tuple[socket.socket, frozenset[int]]:
    """A packet socket with timestamps and auxdata; bound when one interface is asked for.
    Returns the socket and the interface indexes to keep (empty = all)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except PermissionError as exc:
        raise WorkerError("permission", f"cannot open a packet socket: {exc.strerror}") from None
    except OSError as exc:
        raise WorkerError("setup", f"cannot open a packet socket: {exc.strerror}") from None
    try:
        wanted = frozenset(_ifindex(name) for name in interfaces)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        _grow_buffer(sock)
        if len(interfaces) == 1:
            sock.bind((interfaces[0], ETH_P_ALL))
    except OSError as exc:
        sock.close()
        raise WorkerError("setup", f"cannot set up the packet socket: {exc.strerror}") from None
    except WorkerError:
        sock.close()
        raise
    return sock, wanted


def _ifindex(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise WorkerError("setup", f"no interface {name!r} in this namespace") from None


def _grow_buffer(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, _RCVBUF)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)


def kernel_drops(sock: socket.socket) -> int | None:
    """Packets the socket's queue had no room for (PACKET_STATISTICS; reading resets it);
    None when the kernel would not say."""
    try:
        _packets, drops = _STATS.unpack(sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except OSError:
        return None
    return int(drops)


# --- one packet ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    t_ns: int
    kernel_time: bool  # False: the kernel gave no timestamp and we took the clock
    ifname: str
    protocol: int
    pkttype: int
    hatype: int
    address: bytes
    network: bytes  # from the network header on
    wire_len: int  # network-layer length on the wire


def decode(
    data: bytes, ancdata: list[tuple[int, int, bytes]], address: tuple[str, int, int, int, bytes]
) -> Packet:
    """One recvmsg() result; the address is Python's AF_PACKET tuple
    (ifname, protocol, pkttype, hatype, hardware address)."""
    t_ns: int | None = None
    link_len: int | None = None
    orig_len = len(data)
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
            seconds, nanos = _TIMESPEC.unpack_from(payload)
            t_ns = seconds * 1_000_000_000 + nanos
        elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(payload) >= _AUXDATA.size:
            _status, orig_len, _snap, _mac, link_len, _tci, _tpid = _AUXDATA.unpack_from(payload)
    ifname, protocol, pkttype, hatype, hwaddr = address[:5]
    if link_len is None:  # no auxdata: the two header shapes lab links have
        link_len = 14 if hatype in (ARPHRD_ETHER, pcap.ARPHRD_LOOPBACK) else 0
    return Packet(
        t_ns=time.time_ns() if t_ns is None else t_ns,
        kernel_time=t_ns is not None,
        ifname=ifname,
        protocol=protocol,
        pkttype=pkttype,
        hatype=hatype,
        address=hwaddr,
        network=data[link_len:],
        wire_len=max(0, orig_len - link_len),
    )


# --- the loop -----------------------------------------------------------------------------


@dataclass
class Sink:
    """The packet socket and the pcap it fills."""

    sock: socket.socket
    out: BinaryIO
    wanted: frozenset[int]
    snaplen: int
    max_packets: int
    counters: Counters = field(default_factory=Counters)

    def ifindex(self, name: str) -> int:
        # Interfaces can come and go during a run; a vanished one is recorded as 0.
        index = self.counters.ifindex_by_name.get(name)
        if index is None:
            try:
                index = socket.if_nametoindex(name)
            except OSError:
                index = 0
            self.counters.ifindex_by_name[name] = index
        return index

    def drain(self) -> str | None:
        """Read what is queued (at most one batch). Returns a stop reason or None."""
        bufsize = self.snaplen + _LINK_HEADROOM
        for _ in range(_BATCH):
            if self.counters.packets >= self.max_packets:
                return "packet_limit"
            try:
                data, anc, _flags, address = self.sock.recvmsg(
                    bufsize, _ANC_SIZE, socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno == errno.ENETDOWN:
                    return "interface_gone"
                raise WorkerError("io", f"packet socket read failed: {exc.strerror}") from None
            self.counters.seen += 1
            self.keep(decode(data, anc, address))
        return None

    def keep(self, packet: Packet) -> None:
        ifindex = self.ifindex(packet.ifname)
        if self.wanted and ifindex not in self.wanted:
            return
        if not pcap.carries_tcp(packet.protocol, packet.network):
            return
        self.counters.software_timestamps += not packet.kernel_time
        record = pcap.sll2_record(
            packet.t_ns,
            protocol=packet.protocol,
            ifindex=ifindex,
            hatype=packet.hatype,
            pkttype=packet.pkttype,
            address=packet.address,
            packet=packet.network,
            wire_len=packet.wire_len,
            snaplen=self.snaplen,
        )
        try:
            self.out.write(record)
        except OSError as exc:
            raise WorkerError("io", f"cannot write the pcap: {exc.strerror}") from None
        self.counters.packets += 1

    def flush(self) -> None:
        try:
            self.out.flush()
        except OSError as exc:
            raise WorkerError("io", f"cannot write the pcap: {exc.strerror}") from None


def run_loop(cap: Sink, stop: Stop, wake_r: int, max_seconds: float, parent_pid: int) -> str:
    """Capture until a stop condition; returns why it stopped."""
    deadline = time.monotonic() + max_seconds
    poller = select.poll()
    poller.register(cap.sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    # Each pass waits at most _POLL_CAP, and the deadline bounds the number of passes.
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "time_limit"
        poller.poll(min(remaining, _POLL_CAP) * 1000)
        _clear_wakeups(wake_r)
        if stop.signal is not None:
            return "parent_gone" if os.getppid() != parent_pid else "signal"
        if os.getppid() != parent_pid:
            return "parent_gone"
        reason = cap.drain()
        cap.flush()
        if reason is not None:
            return reason


def _clear_wakeups(wake_r: int) -> None:
    """Empty the wake-up pipe, or poll() would return at once forever after a signal."""
    with contextlib.suppress(BlockingIOError):
        os.read(wake_r, 4096)  # one byte per signal; a handful can be pending at most


def finish(cap: Sink, reason: str) -> None:
    """Pick up what is still queued (what the parent saw happen before it said stop)."""
    if reason in ("signal", "time_limit", "parent_gone"):
        for _ in range(cap.max_packets // _BATCH + 1):
            if cap.drain() is not None or not _pending(cap.sock):
                break
    cap.flush()


def _pending(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def open_pcap(path: str, snaplen: int) -> BinaryIO:
    try:
        out = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by main()
        out.write(pcap.global_header(snaplen))
        out.flush()
    except OSError as exc:
        raise WorkerError("io", f"cannot write {path}: {exc.strerror}") from None
    return out


def main(argv: list[str] | None = None) -> NoReturn:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stop = Stop()
    wake_r = install_signals(stop, args.max_seconds)
    die_with_parent(args.parent_pid)
    try:
        sock, wanted = open_socket(args.interface)
        out = open_pcap(args.pcap, args.snaplen)
        cap = Sink(sock, out, wanted, args.snaplen, args.max_packets)
        tell(args.status_fd, "ready")
        reason = run_loop(cap, stop, wake_r, args.max_seconds, args.parent_pid)
        finish(cap, reason)
        out.close()
        tell(
            args.status_fd,
            "done",
            packets=cap.counters.packets,
            seen=cap.counters.seen,
            kernel_drops=kernel_drops(sock),
            software_timestamps=cap.counters.software_timestamps,
            stop=reason,
        )
    except WorkerError as exc:
        tell(args.status_fd, "error", kind=exc.kind, message=str(exc))
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
