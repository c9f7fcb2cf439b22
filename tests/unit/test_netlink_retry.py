"""The dump loop's recovery paths, driven by a scripted stand-in for the netlink socket.

The real socket path is covered by the kernel tests; here the kernel's rare answers
(an interrupted dump, a lost datagram, an error) are produced on demand.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque

import pytest

from tcpdoctor.errors import KernelInterfaceError, PermissionDenied
from tcpdoctor.kernel import abi
from tcpdoctor.observe import _netlink
from tcpdoctor.observe._records import SOCKET_DTYPE

_HDR = struct.Struct("<IHHII")


def _diag(seq: int, sport: int, *, flags: int = abi.NLM_F_MULTI) -> bytes:
    body = bytes([socket.AF_INET, 1, 0, 0]) + struct.pack(">HH", sport, 80) + bytes(64)
    return _HDR.pack(abi.NLMSG_HDRLEN + len(body), abi.SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


def _done(seq: int) -> bytes:
    return _HDR.pack(20, abi.NLMSG_DONE, abi.NLM_F_MULTI, seq, 0) + bytes(4)


def _error(seq: int, code: int) -> bytes:
    return _HDR.pack(36, abi.NLMSG_ERROR, 0, seq, 0) + struct.pack("<i", -code) + bytes(16)


class ScriptedSocket:
    """Answers each request (send) with the next scripted reply: a list of datagrams,
    or an OSError raised from recv_into."""

    def __init__(self, replies: list[list[bytes] | OSError]) -> None:
        self.replies = deque(replies)
        self.pending: deque[bytes] = deque()
        self.failure: OSError | None = None
        self.requests: list[int] = []
        self.rcvbuf = 1 << 20

    def send(self, data: bytes) -> int:
        seq = _HDR.unpack_from(data)[3]
        self.requests.append(seq)
        reply = self.replies.popleft()
        if isinstance(reply, OSError):
            self.failure = reply
        else:
            self.pending.extend(_with_seq(reply, seq))
        return len(data)

    def recv_into(self, buffer: memoryview, nbytes: int, flags: int = 0) -> int:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        data = self.pending.popleft()
        buffer[: len(data)] = data
        return len(data)

    def recv(self, size: int) -> bytes:
        if not self.pending:
            raise BlockingIOError
        return self.pending.popleft()

    def setblocking(self, flag: bool) -> None:
        del flag

    def getsockopt(self, level: int, name: int) -> int:
        return self.rcvbuf

    def setsockopt(self, level: int, name: int, value: int) -> None:
        self.rcvbuf = value


def _with_seq(datagrams: list[bytes], seq: int) -> list[bytes]:
    """Scripts are written with seq 0; stamp the real request's sequence number in
    (messages scripted with another number stay as they are)."""
    out = []
    for datagram in datagrams:
        buf = bytearray(datagram)
        offset = 0
        while offset < len(buf):
            length, old = struct.unpack_from("<I4xI", buf, offset)
            if old == 0:
                struct.pack_into("<I", buf, offset + 8, seq)
            offset += (length + 3) & ~3
        out.append(bytes(buf))
    return out


def _run(sock: ScriptedSocket) -> _netlink.DumpResult:
    rows = _netlink._RowSink(SOCKET_DTYPE, 0)
    interrupted = _netlink._dump_family_retrying(
        sock,  # type: ignore[arg-type]
        socket.AF_INET,
        0xFFE,
        rows,
        None,
    )
    return _netlink.DumpResult(rows.result(), None, interrupted)


def test_interrupted_dump_is_asked_again_and_the_clean_answer_kept() -> None:
    sock = ScriptedSocket(
        [
            [_diag(0, 1, flags=abi.NLM_F_MULTI | abi.NLM_F_DUMP_INTR) + _done(0)],
            [_diag(0, 2) + _diag(0, 3), _done(0)],
        ]
    )
    result = _run(sock)
    assert len(sock.requests) == 2
    assert not result.interrupted
    assert result.sockets["sport"].tolist() == [2, 3]


def test_dump_interrupted_every_time_is_returned_flagged() -> None:
    intr = abi.NLM_F_MULTI | abi.NLM_F_DUMP_INTR
    sock = ScriptedSocket([[_diag(0, n, flags=intr) + _done(0)] for n in range(10)])
    result = _run(sock)
    assert len(sock.requests) == _netlink._MAX_ATTEMPTS
    assert result.interrupted
    assert len(result.sockets) == 1


def test_enobufs_grows_the_buffer_and_retries() -> None:
    sock = ScriptedSocket([OSError(errno.ENOBUFS, "No buffer space"), [_diag(0, 7) + _done(0)]])
    before = sock.rcvbuf
    result = _run(sock)
    assert sock.rcvbuf > before
    assert result.sockets["sport"].tolist() == [7]


def test_replies_to_an_abandoned_request_are_ignored() -> None:
    stale = _HDR.pack(88, abi.SOCK_DIAG_BY_FAMILY, abi.NLM_F_MULTI, 999_999, 0) + bytes(72)
    sock = ScriptedSocket([[stale + _diag(0, 5) + _done(0)]])
    result = _run(sock)
    assert result.sockets["sport"].tolist() == [5]


def test_missing_family_is_an_empty_answer() -> None:
    sock = ScriptedSocket([[_error(0, errno.ENOENT)]])
    assert len(_run(sock).sockets) == 0


def test_permission_error_from_the_kernel_is_translated() -> None:
    sock = ScriptedSocket([[_error(0, errno.EPERM)]])
    with pytest.raises(PermissionDenied):
        _run(sock)


def test_other_kernel_errors_become_interface_errors() -> None:
    sock = ScriptedSocket([[_error(0, errno.EINVAL)]])
    with pytest.raises(KernelInterfaceError):
        _run(sock)


def test_other_socket_errors_are_not_retried() -> None:
    sock = ScriptedSocket([OSError(errno.EIO, "I/O error"), [_done(0)]])
    with pytest.raises(KernelInterfaceError):
        _run(sock)
    assert len(sock.requests) == 1
