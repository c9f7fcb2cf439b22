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
import os
import socket
import struct
import sys
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from tcpdoctor.errors import KernelInterfaceError, PermissionDenied
from tcpdoctor.kernel import abi
from tcpdoctor.observe._records import (
    INFO_DTYPE,
    SOCKET_DTYPE,
    TCP_INFO_FIELDS,
    empty_info,
)

# One dump datagram is at most ~32 KiB (netlink_recvmsg caps max_recvmsg_len); a batch
# buffer several times larger keeps the per-batch numpy overhead small.
_BATCH_BYTES = 1 << 20
_MAX_DATAGRAM = 256 << 10
_RCVBUF = 4 << 20
_MAX_ATTEMPTS = 4  # retries on NLM_F_DUMP_INTR and ENOBUFS
_REQ = struct.Struct("<IHHIIBBBBI48x")
_ATTR = struct.Struct("<HH")
_ERRNO = struct.Struct("<i")
_MSG_START = abi.NLMSG_HDRLEN
_ATTR_START = abi.NLMSG_HDRLEN + abi.INET_DIAG_MSG_LEN
# Large, unlikely-looking sequence numbers: _chain() finds headers by theirs, and small
# ones (1, 2, ...) are common words inside tcp_info and other attributes.
_seq = itertools.count(0x5EED0000 + (os.getpid() << 4))
_SMALL_ATTR = abi.NLA_HDRLEN + 4  # one attribute with a 4-byte payload, like the mark
_MAX_TEMPLATES = 8  # attribute layouts tried before searching messages one by one
_MIN_RUN = 8  # shorter datagrams are cheaper to walk one by one than to check with numpy
_HDR_DTYPE = np.dtype([("len", "<u4"), ("type", "<u2"), ("flags", "<u2"), ("seq", "<u4")])


class DumpResult(NamedTuple):
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
    expected = _expected_sockets()
    sockets = _RowSink(SOCKET_DTYPE, expected)
    info = _RowSink(INFO_DTYPE, expected) if want_info else None
    sock = _open_socket()
    try:
        interrupted = [
            _dump_family_retrying(sock, fam, states_mask, sockets, info) for fam in families
        ]
    finally:
        sock.close()
    return DumpResult(
        sockets.result(), info.result() if info is not None else None, any(interrupted)
    )


def _expected_sockets() -> int:
    """How many rows to make room for: TCP sockets in use plus TIME_WAITs, from sockstat.

    Only a size hint (request sockets are not counted there, and the population moves),
    so the sink still grows when needed and a missing file is no error.
    """
    total = 0
    for name, keys in (("sockstat", ("inuse", "tw")), ("sockstat6", ("inuse",))):
        try:
            with open(f"/proc/thread-self/net/{name}", encoding="ascii") as handle:
                text = handle.read()
        except OSError:
            continue
        for line in text.splitlines():
            label, _, rest = line.partition(":")
            if label in ("TCP", "TCP6"):
                fields = rest.split()
                pairs = dict(zip(fields[::2], fields[1::2], strict=False))
                total += sum(int(pairs[k]) for k in keys if pairs.get(k, "").isdigit())
    return total + total // 16 + 256


class _RowSink:
    """One growing output array shared by every family's dump, so rows are copied once
    out of the receive buffer and never concatenated (which would double peak memory)."""

    def __init__(self, dtype: np.dtype, expected: int) -> None:
        self.array = np.empty(max(expected, 16), dtype=dtype)
        self.count = 0

    def _reserve(self, end: int) -> None:
        if end > len(self.array):
            grown = np.empty(max(end, len(self.array) * 2), dtype=self.array.dtype)
            grown[: self.count] = self.array[: self.count]
            self.array = grown

    def extend(self, rows: np.ndarray) -> None:
        """Append rows of this sink's dtype, or the same bytes as opaque items."""
        end = self.count + len(rows)
        self._reserve(end)
        items = _as_bytes(self.array.dtype)
        self.array.view(items)[self.count : end] = np.ascontiguousarray(rows).view(items)
        self.count = end

    def result(self) -> np.ndarray:
        rows = self.array[: self.count]
        # A view would pin the whole allocation; copy when much of it is unused.
        return rows.copy() if self.count < len(self.array) * 3 // 4 else rows


def _as_bytes(dtype: np.dtype) -> np.dtype:
    return np.dtype((np.void, dtype.itemsize))


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
    sock: socket.socket,
    family: int,
    states_mask: int,
    sockets: _RowSink,
    info: _RowSink | None,
) -> bool:
    """Dump one family into the sinks; True if every attempt was flagged inconsistent."""
    marks = (sockets.count, info.count if info is not None else 0)
    interrupted = True
    for _ in range(_MAX_ATTEMPTS):
        # A retry replaces what the previous attempt of this family appended.
        sockets.count = marks[0]
        if info is not None:
            info.count = marks[1]
        try:
            interrupted = _dump_family(sock, family, states_mask, sockets, info)
        except OSError as err:
            if err.errno != errno.ENOBUFS:
                raise _translate(err) from err
            # The socket dropped part of the dump: empty it, enlarge it, ask again. Late
            # replies to the abandoned request are skipped by their sequence number.
            _drain(sock)
            _grow_rcvbuf(sock)
            continue
        if not interrupted:
            return False
    return interrupted


def _dump_family(
    sock: socket.socket,
    family: int,
    states_mask: int,
    sockets: _RowSink,
    info: _RowSink | None,
) -> bool:
    seq = next(_seq) & 0xFFFFFFFF
    ext = 1 << (abi.INET_DIAG_INFO - 1) if info is not None else 0
    sock.send(_request(family, states_mask, ext, seq))
    reader = _BatchReader(sockets, info)
    while not reader.done:
        reader.receive(sock, seq)
    reader.finish()
    return reader.interrupted


def parse_dump(data: bytes, seq: int, *, want_info: bool = False) -> DumpResult:
    """Parse the bytes of a whole dump reply (several datagrams, back to back).

    The socket path feeds datagrams one by one; this entry point exists for tests and
    fuzzing. Malformed input raises KernelInterfaceError, never anything else.
    """
    sockets = _RowSink(SOCKET_DTYPE, 0)
    info = _RowSink(INFO_DTYPE, 0) if want_info else None
    reader = _BatchReader(sockets, info)
    for chunk in _datagrams(data, _MAX_DATAGRAM // 2):
        if reader.done:
            break
        reader.feed(chunk, seq)
    if not reader.done:
        raise KernelInterfaceError("sock_diag dump ended without NLMSG_DONE")
    reader.finish()
    return DumpResult(
        sockets.result(), info.result() if info is not None else None, reader.interrupted
    )


def _datagrams(data: bytes, limit: int) -> Iterator[bytes]:
    """Cut a reply into pieces of whole messages, at most `limit` bytes where possible,
    as the kernel cuts a dump into datagrams. A bad length ends the cutting; the rest
    goes out as one piece for the reader to reject."""
    start = offset = 0
    while offset + 4 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], sys.byteorder)
        step = (length + 3) & ~3
        if length < abi.NLMSG_HDRLEN or offset + step > len(data) + 3:
            break
        if offset + step - start > limit and offset > start:
            yield data[start:offset]
            start = offset
        offset += step
    if start < len(data):
        yield data[start:]


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
    """Receives dump datagrams into one buffer and parses them a batch at a time.

    Message starts are found with numpy (see _chain; a datagram that defeats it is walked
    one message at a time); types, sequence numbers and flags are checked for a whole
    batch with numpy, and the rows are copied out of the buffer through a strided view
    that has a record at every word.
    """

    def __init__(self, sockets: _RowSink, info: _RowSink | None) -> None:
        self.sink = sockets
        self.info_sink = info  # aligned with sockets: rows without tcp_info read -1
        self.want_info = info is not None
        self.buffer = bytearray(_BATCH_BYTES)
        self.view = memoryview(self.buffer)
        self.words = self.view.cast("I")  # netlink headers are in host byte order
        words = len(self.buffer) // 4
        self.headers = np.ndarray((words - 3,), dtype=_HDR_DTYPE, buffer=self.buffer, strides=(4,))
        # The type field of an attribute starting at any word (nla_type follows nla_len).
        self.attr_types = np.ndarray(
            (words - 1,), dtype="<u2", buffer=self.buffer, offset=2, strides=(4,)
        )
        self.attr_lens = np.ndarray((words,), dtype="<u2", buffer=self.buffer, strides=(4,))
        # Rows as opaque 72-byte items: numpy copies those with memcpy, while a structured
        # dtype is copied field by field (several times slower).
        self.rows = np.ndarray(
            ((len(self.buffer) - _ATTR_START) // 4 + 1,),
            dtype=_as_bytes(SOCKET_DTYPE),
            buffer=self.buffer,
            offset=_MSG_START,
            strides=(4,),
        )
        self.used = 0
        self.starts: list[np.ndarray] = []  # word indexes of accepted messages in the batch
        self.info_spans: list[np.ndarray] = []  # (payload offset, length) rows, 0 = none
        self.pending: list[np.ndarray] = []  # word indexes of messages not classified yet
        self.pending_seq = 0
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
        self._take(size, seq)

    def feed(self, data: bytes, seq: int) -> None:
        """Take bytes that arrived some other way (tests); same checks as receive()."""
        if len(self.buffer) - self.used < max(len(data), _MAX_DATAGRAM):
            self._flush()
        self.buffer[self.used : self.used + len(data)] = data
        self._take(len(data), seq)

    def _take(self, size: int, seq: int) -> None:
        self._walk(self.used, self.used + size, seq)
        # Keep every datagram word-aligned so the word views stay valid.
        self.used = (self.used + size + 3) & ~3

    def _walk(self, start: int, end: int, seq: int) -> None:
        index = self._chain(start, end, seq)
        if index is None:
            index = self._walk_one_by_one(start, end)
        if not len(index):
            return
        if self.pending and seq != self.pending_seq:
            self._settle()
        # Messages are classified a batch at a time (numpy's cost is per call), except that
        # a control message (the DONE ending the dump, an error) is acted on at once.
        self.pending.append(index)
        self.pending_seq = seq
        if (self.headers["type"][index] != abi.SOCK_DIAG_BY_FAMILY).any():
            self._settle()

    def _settle(self) -> None:
        if self.pending:
            index = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
            self.pending.clear()
            self._classify(index, self.pending_seq)

    def _chain(self, start: int, end: int, seq: int) -> np.ndarray | None:
        """Word indexes of a datagram's messages, found without a Python step per message.

        Every header of our reply carries our sequence number, so each word holding it is
        a candidate start. The candidates are the messages exactly when each one's length
        leads to the next and the last one ends the datagram: a false candidate (payload
        that happens to hold the number) breaks that chain, and then None sends the
        datagram to the one-by-one walk, as does a stale reply from an earlier attempt.
        """
        if end - start < abi.NLMSG_HDRLEN * _MIN_RUN:
            return None
        first, last = start >> 2, (end - abi.NLMSG_HDRLEN) >> 2
        found = np.flatnonzero(self.headers["seq"][first : last + 1] == seq)
        if not len(found) or found[0] != 0:
            return None
        found += first
        lengths = self.headers["len"][found].astype(np.intp)
        following = found + ((lengths + 3) >> 2)
        if (
            following[-1] != (end + 3) >> 2
            or found[-1] * 4 + lengths[-1] > end
            or (lengths < abi.NLMSG_HDRLEN).any()
            or not np.array_equal(following[:-1], found[1:])
        ):
            return None
        return found

    def _walk_one_by_one(self, start: int, end: int) -> np.ndarray:
        words = self.words
        offset = start
        found: list[int] = []
        while offset < end:
            length = words[offset >> 2] if end - offset >= abi.NLMSG_HDRLEN else 0
            if length < abi.NLMSG_HDRLEN or offset + length > end:
                raise KernelInterfaceError(f"bad netlink message at byte {offset} of the dump")
            found.append(offset >> 2)
            offset += (length + 3) & ~3
        return np.asarray(found, dtype=np.intp)

    def _classify(self, index: np.ndarray, seq: int) -> None:
        headers = self.headers[index]
        fresh = headers["seq"] == seq  # others are stale replies from an abandoned attempt
        if (headers["flags"][fresh] & abi.NLM_F_DUMP_INTR).any():
            self.interrupted = True
        data = fresh & (headers["type"] == abi.SOCK_DIAG_BY_FAMILY)
        if not data.all():
            data = self._control(index, headers, fresh, data)
        if (headers["len"][data] < _ATTR_START).any():
            raise KernelInterfaceError("short inet_diag message in dump")
        accepted = index[data]
        self.starts.append(accepted)
        if self.want_info:
            # Minisocks (TIME_WAIT, FIN_WAIT2) and request sockets carry at most a mark
            # attribute: a message with no attribute, or with a single mark, holds no
            # tcp_info and is not searched; that is most of a busy host's messages.
            lengths = headers["len"][data]
            # (clipped: a message without attributes may end at the end of the buffer)
            first_attr = np.minimum(accepted + _ATTR_START // 4, len(self.attr_types) - 1)
            lone_type = self.attr_types[first_attr]
            searched = (lengths > _ATTR_START + _SMALL_ATTR) | (
                (lengths > _ATTR_START) & (lone_type & abi.NLA_TYPE_MASK != abi.INET_DIAG_MARK)
            )
            spans = np.zeros((len(accepted), 2), dtype=np.intp)
            at = np.flatnonzero(searched)
            spans[at] = self._info_spans(accepted[at] * 4, lengths[at].astype(np.intp))
            self.info_spans.append(spans)

    def _info_spans(self, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(payload offset, length) of the tcp_info attribute of each message, (0, 0) if none.

        Sockets of one kind carry the same attributes in the same order, so the attribute
        list of one message is a template: every message whose attributes before tcp_info
        have the template's lengths has its tcp_info at the template's place (each length
        fixes where the next attribute starts). A few templates cover a whole dump; what
        none covers is searched one message at a time.
        """
        spans = np.zeros((len(starts), 2), dtype=np.intp)
        left = np.arange(len(starts))
        for _ in range(_MAX_TEMPLATES):
            if not len(left):
                return spans
            head = int(left[0])
            chain = _attr_chain(self.buffer, int(starts[head]), int(lengths[head]))
            if chain[-1][1] != abi.INET_DIAG_INFO:
                left = left[1:]  # no tcp_info in this one (spans stay 0)
                continue
            fits = self._matching(starts[left], lengths[left], chain)
            place, _, size = chain[-1]
            hits = left[fits]
            spans[hits, 0] = starts[hits] + place + abi.NLA_HDRLEN
            spans[hits, 1] = size - abi.NLA_HDRLEN
            left = left[~fits]
        for row in left.tolist():
            spans[row] = _find_attr(
                self.buffer, int(starts[row]), int(lengths[row]), abi.INET_DIAG_INFO
            )
        return spans

    def _matching(
        self, starts: np.ndarray, lengths: np.ndarray, chain: list[tuple[int, int, int]]
    ) -> np.ndarray:
        place, kind, size = chain[-1]
        fits = lengths >= place + size
        last = len(self.attr_types) - 1  # (a message that does not fit may end the buffer)
        for offset, _, length in chain:
            fits &= self.attr_lens[np.minimum((starts + offset) >> 2, last)] == length
        kinds = self.attr_types[np.minimum((starts + place) >> 2, last)]
        matched: np.ndarray = fits & (kinds & abi.NLA_TYPE_MASK == kind)
        return matched

    def _control(
        self, index: np.ndarray, headers: np.ndarray, fresh: np.ndarray, data: np.ndarray
    ) -> np.ndarray:
        """Act on DONE / ERROR; data messages after them are not part of this dump."""
        for position in np.flatnonzero(fresh & ~data).tolist():
            kind = int(headers["type"][position])
            if kind == abi.NLMSG_DONE:
                self.done = True
            elif kind == abi.NLMSG_ERROR:
                self._error(int(index[position]), int(headers["len"][position]))
            else:
                continue  # NLMSG_NOOP and friends carry nothing
            keep = data.copy()
            keep[position:] = False
            return keep
        return data

    def _error(self, word: int, length: int) -> None:
        if length < abi.NLMSG_HDRLEN + 4:
            raise KernelInterfaceError("truncated netlink error message")
        code = -_ERRNO.unpack_from(self.buffer, word * 4 + abi.NLMSG_HDRLEN)[0]
        if code in (0, errno.ENOENT, errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
            # 0 is an ACK; ENOENT / EAFNOSUPPORT mean the family is not there (no IPv6).
            self.done = True
            return
        raise _translate(OSError(code, errno.errorcode.get(code, "error")))

    def _flush(self) -> None:
        self._settle()
        if self.starts:
            self.sink.extend(self.rows[np.concatenate(self.starts)])
            if self.info_sink is not None:
                raw = np.frombuffer(self.buffer, dtype=np.uint8, count=self.used)
                self.info_sink.extend(_gather_info(raw, np.concatenate(self.info_spans)))
        self.starts.clear()
        self.info_spans.clear()
        self.used = 0

    def finish(self) -> None:
        """Move what is still in the receive buffer into the sinks."""
        self._flush()


def _attr_chain(buf: bytearray, offset: int, length: int) -> list[tuple[int, int, int]]:
    """(offset in the message, type, length) of its attributes up to the first tcp_info."""
    chain: list[tuple[int, int, int]] = []
    pos = _ATTR_START
    while pos + abi.NLA_HDRLEN <= length:
        attr_len, attr_type = _ATTR.unpack_from(buf, offset + pos)
        if attr_len < abi.NLA_HDRLEN or pos + attr_len > length:
            raise KernelInterfaceError("bad netlink attribute length in inet_diag message")
        chain.append((pos, attr_type & abi.NLA_TYPE_MASK, attr_len))
        if chain[-1][1] == abi.INET_DIAG_INFO:
            break
        pos += (attr_len + 3) & ~3
    return chain or [(0, 0, 0)]


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


def _gather_info(raw: np.ndarray, spans: np.ndarray) -> np.ndarray:
    info = empty_info(len(spans))
    if not len(spans):
        return info
    starts, lengths = spans[:, 0], spans[:, 1]
    for name, field_offset, kind in TCP_INFO_FIELDS:
        dtype = np.dtype(kind)
        present = lengths >= field_offset + dtype.itemsize
        if not present.any():
            continue
        index = (starts[present] + field_offset)[:, None] + np.arange(dtype.itemsize)
        values = raw[index].view(dtype).reshape(-1)
        target = info.dtype[name]
        # Beyond the signed range there is no real value, only "unset" (~0U) or a corrupt
        # message: clamp rather than wrap to a negative that would read as "absent".
        values = np.minimum(values, np.array(np.iinfo(target).max).astype(dtype))
        info[name][present] = values.astype(target)
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
