"""The fast path: a raw NETLINK_SOCK_DIAG dump parsed in bulk with numpy.

Python touches each netlink message once (to find where it starts); the fixed-size
inet_diag_msg rows and the tcp_info fields are then gathered for a whole batch at once.
Sources: net/ipv4/inet_diag.c (inet_diag_dump, inet_sk_diag_fill, inet_twsk_diag_fill,
inet_req_diag_fill), net/netlink/af_netlink.c (netlink_dump, netlink_recvmsg).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tcpdoctor.errors import KernelInterfaceError, PermissionDenied
from tcpdoctor.kernel import abi
from tcpdoctor.observe._records import (
    INFO_DTYPE,
    SOCKET_DTYPE,
    TCP_INFO_FIELDS,
    empty_info,
    empty_sockets,
)

# One dump datagram is at most ~32 KiB (netlink_recvmsg caps max_recvmsg_len); a batch
# buffer several times larger keeps the per-batch numpy overhead small.
_BATCH_BYTES = 4 << 20
_MAX_DATAGRAM = 256 << 10
_RCVBUF = 4 << 20
_MAX_ATTEMPTS = 4  # retries on NLM_F_DUMP_INTR and ENOBUFS
_HDR = struct.Struct("<IHHII")
_REQ = struct.Struct("<IHHIIBBBBI48x")
_ATTR = struct.Struct("<HH")
_ERRNO = struct.Struct("<i")
_MSG_START = abi.NLMSG_HDRLEN
_ATTR_START = abi.NLMSG_HDRLEN + abi.INET_DIAG_MSG_LEN
_ROW_INDEX = np.arange(abi.INET_DIAG_MSG_LEN, dtype=np.intp)
_seq = itertools.count(1)
_MIN_RUN = 16  # below this the strided check costs more than the scalar walk
_HDR_DTYPE = np.dtype([("len", "<u4"), ("type", "<u2"), ("flags", "<u2"), ("seq", "<u4")])


@dataclass(frozen=True, slots=True)
class DumpResult:
    sockets: np.ndarray  # SOCKET_DTYPE rows
    info: np.ndarray | None  # INFO_DTYPE rows aligned with sockets, when asked for
    interrupted: bool  # NLM_F_DUMP_INTR persisted through every retry


def dump_tcp(
    families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
    states_mask: int = 0xFFE,
    *,
    want_info: bool = False,
) -> DumpResult:
    """Dump the TCP sockets of the calling thread's network namespace."""
    sock = _open_socket()
    try:
        parts = [_dump_family_retrying(sock, fam, states_mask, want_info) for fam in families]
    finally:
        sock.close()
    sockets = np.concatenate([p.sockets for p in parts]) if parts else empty_sockets()
    info = None
    if want_info:
        info = np.concatenate([p.info for p in parts if p.info is not None]) if parts else None
    return DumpResult(sockets, info, any(p.interrupted for p in parts))


def _open_socket() -> socket.socket:
    try:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, abi.NETLINK_SOCK_DIAG
        )
    except OSError as err:
        raise KernelInterfaceError(f"cannot open a sock_diag netlink socket: {err}") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.bind((0, 0))
    except OSError as err:
        sock.close()
        raise KernelInterfaceError(f"cannot bind the sock_diag socket: {err}") from err
    return sock


def _dump_family_retrying(
    sock: socket.socket, family: int, states_mask: int, want_info: bool
) -> DumpResult:
    result = DumpResult(empty_sockets(), None, True)
    for _ in range(_MAX_ATTEMPTS):
        try:
            result = _dump_family(sock, family, states_mask, want_info)
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise _translate(err) from err
            # The socket lost messages; a fresh one with a larger buffer starts over.
            _drain(sock)
            _grow_rcvbuf(sock)
            continue
        if not result.interrupted:
            return result
    return result


def _dump_family(sock: socket.socket, family: int, states_mask: int, want_info: bool) -> DumpResult:
    seq = next(_seq)
    ext = 1 << (abi.INET_DIAG_INFO - 1) if want_info else 0
    sock.send(_request(family, states_mask, ext, seq))
    reader = _BatchReader(want_info)
    while not reader.done:
        reader.receive(sock, seq)
    return reader.result()


def parse_dump(data: bytes, seq: int, *, want_info: bool = False) -> DumpResult:
    """Parse the bytes of a whole dump reply (several datagrams, back to back).

    The socket path feeds datagrams one by one; this entry point exists for tests and
    fuzzing. Malformed input raises KernelInterfaceError, never anything else.
    """
    reader = _BatchReader(want_info)
    view = memoryview(data)
    while view and not reader.done:
        chunk = view[: _MAX_DATAGRAM // 2]
        reader.feed(bytes(chunk), seq)
        view = view[len(chunk) :]
    if not reader.done:
        raise KernelInterfaceError("sock_diag dump ended without NLMSG_DONE")
    return reader.result()


def _request(family: int, states_mask: int, ext: int, seq: int) -> bytes:
    length = abi.NLMSG_HDRLEN + abi.INET_DIAG_REQ_V2_LEN
    flags = abi.NLM_F_REQUEST | abi.NLM_F_DUMP
    return _REQ.pack(
        length,
        abi.SOCK_DIAG_BY_FAMILY,
        flags,
        seq,
        0,
        family,
        abi.IPPROTO_TCP,
        ext,
        0,
        states_mask,
    )


class _BatchReader:
    """Receives dump datagrams into one buffer and parses them a batch at a time."""

    def __init__(self, want_info: bool) -> None:
        self.want_info = want_info
        self.buffer = bytearray(_BATCH_BYTES)
        self.view = memoryview(self.buffer)
        self.used = 0
        self.offsets: list[int] = []  # scalar-walked messages not yet in a piece
        # In arrival order: (start, stride, count) for a run of equal messages, or
        # (-1, 0, n) for the next n entries of `scalar_starts`.
        self.pieces: list[tuple[int, int, int]] = []
        self.scalar_starts: list[int] = []
        self.info_spans: list[tuple[int, int]] = []
        self.sockets: list[np.ndarray] = []
        self.info: list[np.ndarray] = []
        self.interrupted = False
        self.done = False

    def receive(self, sock: socket.socket, seq: int) -> None:
        if len(self.buffer) - self.used < _MAX_DATAGRAM:
            self._flush()
        room = len(self.buffer) - self.used
        size = sock.recv_into(self.view[self.used :], room, socket.MSG_TRUNC)
        if size > room:
            raise KernelInterfaceError("a sock_diag datagram was larger than the buffer")
        if size == 0:
            raise KernelInterfaceError("sock_diag dump ended without NLMSG_DONE")
        self._walk(self.used, self.used + size, seq)
        self.used += size

    def feed(self, data: bytes, seq: int) -> None:
        """Take bytes that arrived some other way (tests); same checks as receive()."""
        if len(self.buffer) - self.used < max(len(data), _MAX_DATAGRAM):
            self._flush()
        self.buffer[self.used : self.used + len(data)] = data
        self._walk(self.used, self.used + len(data), seq)
        self.used += len(data)

    def _walk(self, start: int, end: int, seq: int) -> None:
        buf = self.buffer
        offset = start
        while offset < end:
            if end - offset < abi.NLMSG_HDRLEN:
                raise KernelInterfaceError("truncated netlink message header in sock_diag dump")
            length, kind, flags, msg_seq, _ = _HDR.unpack_from(buf, offset)
            if length < abi.NLMSG_HDRLEN or offset + length > end:
                raise KernelInterfaceError(f"bad netlink message length {length} in dump")
            step = (length + 3) & ~3
            if msg_seq != seq:
                offset += step  # a stale reply from an abandoned attempt
                continue
            if flags & abi.NLM_F_DUMP_INTR:
                self.interrupted = True
            if kind == abi.SOCK_DIAG_BY_FAMILY:
                offset = self._accept_run(offset, end, step, length, flags, seq)
            elif kind == abi.NLMSG_DONE:
                self.done = True
                return
            elif kind == abi.NLMSG_ERROR:
                self._error(offset, length)
                return
            else:
                offset += step

    def _accept_run(
        self, offset: int, end: int, step: int, length: int, flags: int, seq: int
    ) -> int:
        """Accept the message at `offset` and every following one of the same shape.

        A dump datagram is mostly a run of equally long messages (all TIME_WAITs, or all
        full sockets), so a strided numpy view checks a whole run at once; the scalar
        walk resumes at the first message that differs.
        """
        count = (end - offset) // step
        if count < _MIN_RUN or self.want_info or step % 4:
            self._accept(offset, length)
            return offset + step
        header = np.ndarray(
            (count,), dtype=_HDR_DTYPE, buffer=self.buffer, offset=offset, strides=(step,)
        )
        same = (
            (header["len"] == length)
            & (header["type"] == abi.SOCK_DIAG_BY_FAMILY)
            & (header["flags"] == flags)
            & (header["seq"] == seq)
        )
        run = int(count if same.all() else np.argmin(same))
        if length < _ATTR_START:
            raise KernelInterfaceError(f"short inet_diag message ({length} bytes)")
        self._close_scalars()
        self.pieces.append((offset, step, run))
        return offset + step * run

    def _accept(self, offset: int, length: int) -> None:
        if length < _ATTR_START:
            raise KernelInterfaceError(f"short inet_diag message ({length} bytes)")
        self.offsets.append(offset)
        if self.want_info:
            self.info_spans.append(_find_attr(self.buffer, offset, length, abi.INET_DIAG_INFO))

    def _error(self, offset: int, length: int) -> None:
        if length < abi.NLMSG_HDRLEN + 4:
            raise KernelInterfaceError("truncated netlink error message")
        code = -_ERRNO.unpack_from(self.buffer, offset + abi.NLMSG_HDRLEN)[0]
        if code in (0, errno.ENOENT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
            # 0 is an ACK; ENOENT / EAFNOSUPPORT mean the family is not there (no IPv6).
            self.done = True
            return
        raise _translate(OSError(code, errno.errorcode.get(code, "error")))

    def _close_scalars(self) -> None:
        if self.offsets:
            self.pieces.append((-1, 0, len(self.offsets)))
            self.scalar_starts.extend(self.offsets)
            self.offsets.clear()

    def _flush(self) -> None:
        self._close_scalars()
        if self.pieces:
            raw = np.frombuffer(self.buffer, dtype=np.uint8, count=self.used)
            self.sockets.append(self._rows(raw))
            if self.want_info:
                self.info.append(_gather_info(raw, self.info_spans))
        self.pieces.clear()
        self.scalar_starts.clear()
        self.info_spans.clear()
        self.used = 0

    def _rows(self, raw: np.ndarray) -> np.ndarray:
        out = np.empty(sum(count for _, _, count in self.pieces), dtype=SOCKET_DTYPE)
        scalars = np.asarray(self.scalar_starts, dtype=np.intp) + _MSG_START
        at = taken = 0
        for start, step, count in self.pieces:
            if start < 0:
                out[at : at + count] = _gather_rows(raw, scalars[taken : taken + count])
                taken += count
            else:
                out[at : at + count] = np.ndarray(
                    (count,),
                    dtype=SOCKET_DTYPE,
                    buffer=self.buffer,
                    offset=start + _MSG_START,
                    strides=(step,),
                )
            at += count
        return out

    def result(self) -> DumpResult:
        self._flush()
        sockets = np.concatenate(self.sockets) if self.sockets else empty_sockets()
        info = None
        if self.want_info:
            info = np.concatenate(self.info) if self.info else empty_info(0)
        return DumpResult(sockets, info, self.interrupted)


def _find_attr(buf: bytearray, offset: int, length: int, wanted: int) -> tuple[int, int]:
    """(payload offset, payload length) of the first attribute of type `wanted`, or (0, 0)."""
    pos = offset + _ATTR_START
    end = offset + length
    while pos + abi.NLA_HDRLEN <= end:
        attr_len, attr_type = _ATTR.unpack_from(buf, pos)
        if attr_len < abi.NLA_HDRLEN or pos + attr_len > end:
            raise KernelInterfaceError("bad netlink attribute length in inet_diag message")
        if attr_type & abi.NLA_TYPE_MASK == wanted:
            return pos + abi.NLA_HDRLEN, attr_len - abi.NLA_HDRLEN
        pos += (attr_len + 3) & ~3
    return 0, 0


def _gather_rows(raw: np.ndarray, starts: np.ndarray) -> np.ndarray:
    rows = raw[starts[:, None] + _ROW_INDEX]
    return rows.view(SOCKET_DTYPE).reshape(len(starts))


def _gather_info(raw: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    info = empty_info(len(spans))
    if not spans:
        return info
    table = np.asarray(spans, dtype=np.intp)
    starts, lengths = table[:, 0], table[:, 1]
    for name, field_offset, kind in TCP_INFO_FIELDS:
        dtype = np.dtype(kind)
        present = lengths >= field_offset + dtype.itemsize
        if not present.any():
            continue
        index = (starts[present] + field_offset)[:, None] + np.arange(dtype.itemsize)
        values = raw[index].view(dtype).reshape(-1)
        info[name][present] = values.astype(np.int64)
    return info


def _drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(_MAX_DATAGRAM)
    except (BlockingIOError, OSError):
        pass
    finally:
        sock.setblocking(True)


def _grow_rcvbuf(sock: socket.socket) -> None:
    current = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    with contextlib.suppress(OSError):  # keep the buffer we have; the retry may still do
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, current * 4)


def _translate(err: OSError) -> Exception:
    if err.errno in (errno.EPERM, errno.EACCES):
        return PermissionDenied(f"sock_diag refused the dump: {err.strerror}")
    return KernelInterfaceError(f"sock_diag dump failed: {err.strerror or err}")


__all__ = ["INFO_DTYPE", "SOCKET_DTYPE", "DumpResult", "dump_tcp", "parse_dump"]
