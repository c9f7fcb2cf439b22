"""The counter catalogue (/proc/net/netstat, /proc/net/snmp, /proc/net/sockstat) and parsers.

Names are the column headers the kernel prints (snmp4_net_list and snmp4_tcp_list in
net/ipv4/proc.c); symbols are the MIB enums of include/uapi/linux/snmp.h. A counter's key is
"Section.Name", e.g. "TcpExt.TW" or "Tcp.CurrEstab"; sockstat fields are keyed the same way
("TCP.tw", "sockets.used").

netstat and snmp are per network namespace. sockstat mixes scopes; see each field's spec
(sockstat_seq_show() in net/ipv4/proc.c, confirmed by measurement in a child netns on 6.18).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from enum import Enum
from types import MappingProxyType
from typing import NamedTuple

from tcpdoctor.errors import KernelInterfaceError
from tcpdoctor.kernel.sysctls import KernelVersion, Scope


class CounterKind(Enum):
    COUNTER = "counter"  # only grows (until the namespace goes away); compare two readings
    GAUGE = "gauge"  # a current level; one reading means something


class CounterSource(NamedTuple):
    """File under /proc/net and the section label that starts its lines."""

    file: str
    section: str

    def __str__(self) -> str:
        return f"/proc/net/{self.file} {self.section}:"


NETSTAT_TCPEXT = CounterSource("netstat", "TcpExt")
SNMP_TCP = CounterSource("snmp", "Tcp")
SOCKSTAT_SOCKETS = CounterSource("sockstat", "sockets")
SOCKSTAT_TCP = CounterSource("sockstat", "TCP")


class CounterSpec(NamedTuple):
    """One counter or gauge. `added` None: present in every 5.x/6.x kernel."""

    name: str
    source: CounterSource
    kind: CounterKind
    meaning: str
    kernel_symbol: str
    scope: Scope = Scope.PER_NETNS
    added: KernelVersion | None = None
    removed: KernelVersion | None = None

    @property
    def key(self) -> str:
        return f"{self.source.section}.{self.name}"

    def exists_in(self, version: KernelVersion) -> bool:
        """Whether a kernel of this release prints the counter."""
        if self.added is not None and version < self.added:
            return False
        return self.removed is None or version < self.removed


_V = KernelVersion
_C = CounterKind.COUNTER
_G = CounterKind.GAUGE


def _ext(
    name: str,
    symbol: str,
    meaning: str,
    added: KernelVersion | None = None,
    removed: KernelVersion | None = None,
) -> CounterSpec:
    return CounterSpec(name, NETSTAT_TCPEXT, _C, meaning, symbol, added=added, removed=removed)


def _tcp(name: str, symbol: str, meaning: str, kind: CounterKind = _C) -> CounterSpec:
    return CounterSpec(name, SNMP_TCP, kind, meaning, symbol)


ALL_COUNTERS: tuple[CounterSpec, ...] = (
    # --- TIME_WAIT --------------------------------------------------------------------
    _ext(
        "TW",
        "LINUX_MIB_TIMEWAITED",
        "Minisockets scheduled with a timeout over 4 s: counted when TIME_WAIT (or an "
        "orphaned FIN_WAIT2 minisock) starts, not when it ends.",
    ),
    _ext(
        "TWKilled",
        "LINUX_MIB_TIMEWAITKILLED",
        "Like TW, for minisockets scheduled with 4 s or less; in practice FIN_WAIT2 "
        "minisockets under a short tcp_fin_timeout.",
    ),
    _ext(
        "TWRecycled",
        "LINUX_MIB_TIMEWAITRECYCLED",
        "connect() took over the 4-tuple of a TIME_WAIT (tcp_tw_reuse, or a bound port).",
    ),
    _ext(
        "TCPTimeWaitOverflow",
        "LINUX_MIB_TCPTIMEWAITOVERFLOW",
        "A closing socket found tcp_max_tw_buckets reached (or no memory for a minisock) and "
        "was destroyed without TIME_WAIT or FIN_WAIT2; nothing is logged.",
    ),
    _ext(
        "TCPACKSkippedTimeWait",
        "LINUX_MIB_TCPACKSKIPPEDTIMEWAIT",
        "A TIME_WAIT minisock held back a reply ACK because of the out-of-window rate limit.",
    ),
    _ext(
        "TCPACKSkippedFinWait2",
        "LINUX_MIB_TCPACKSKIPPEDFINWAIT2",
        "The same rate limit, for FIN_WAIT2 minisockets.",
    ),
    # --- PAWS -------------------------------------------------------------------------
    _ext(
        "PAWSActive",
        "LINUX_MIB_PAWSACTIVEREJECTED",
        "A SYN-ACK in SYN_SENT rejected because its timestamp failed PAWS.",
    ),
    _ext(
        "PAWSEstab",
        "LINUX_MIB_PAWSESTABREJECTED",
        "A segment on a full socket rejected by PAWS; before 6.15 also TIME_WAIT rejects.",
    ),
    _ext(
        "PAWSTimewait",
        "LINUX_MIB_PAWS_TW_REJECTED",
        "A segment reaching a TIME_WAIT minisock rejected by PAWS.",
        added=_V(6, 15),
    ),
    _ext(
        "PAWSPassive",
        "LINUX_MIB_PAWSPASSIVEREJECTED",
        "SYNs dropped by tcp_tw_recycle's per-host timestamp check; went with tw_recycle.",
        removed=_V(4, 12),
    ),
    # --- Aborts -----------------------------------------------------------------------
    _ext(
        "TCPAbortOnData",
        "LINUX_MIB_TCPABORTONDATA",
        "RST instead of a normal close: SO_LINGER with a zero timeout, or data arriving "
        "after close() in FIN_WAIT1/2.",
    ),
    _ext(
        "TCPAbortOnClose",
        "LINUX_MIB_TCPABORTONCLOSE",
        "close() with unread data in the receive queue; an RST is sent.",
    ),
    _ext(
        "TCPAbortOnLinger",
        "LINUX_MIB_TCPABORTONLINGER",
        "An orphan in FIN_WAIT2 with TCP_LINGER2 < 0 reset at close().",
    ),
    _ext(
        "TCPAbortOnMemory",
        "LINUX_MIB_TCPABORTONMEMORY",
        "An orphan killed because of tcp_max_orphans or TCP memory pressure.",
    ),
    _ext(
        "TCPAbortOnTimeout",
        "LINUX_MIB_TCPABORTONTIMEOUT",
        "A connection given up by a timer: retransmission, SYN, keepalive or zero-window "
        "probes, or orphan retries.",
    ),
    _ext(
        "TCPAbortFailed",
        "LINUX_MIB_TCPABORTFAILED",
        "An RST the kernel wanted to send could not be allocated.",
    ),
    # --- Timers -----------------------------------------------------------------------
    _ext("TCPKeepAlive", "LINUX_MIB_TCPKEEPALIVE", "Keepalive probes sent."),
    _ext(
        "TCPTimeouts",
        "LINUX_MIB_TCPTIMEOUTS",
        "Retransmission timer expiries, SYN and SYN-ACK timeouts included.",
    ),
    _ext("TCPSynRetrans", "LINUX_MIB_TCPSYNRETRANS", "SYNs and SYN-ACKs retransmitted."),
    _ext("TCPLossProbes", "LINUX_MIB_TCPLOSSPROBES", "Tail loss probes sent."),
    # --- Listeners --------------------------------------------------------------------
    _ext(
        "ListenOverflows",
        "LINUX_MIB_LISTENOVERFLOWS",
        "A SYN, or the handshake's last ACK, dropped because the accept queue was full.",
    ),
    _ext(
        "ListenDrops",
        "LINUX_MIB_LISTENDROPS",
        "Every drop at a listener, overflows included, so it is at least ListenOverflows.",
    ),
    _ext(
        "TCPReqQFullDrop",
        "LINUX_MIB_TCPREQQFULLDROP",
        "SYN dropped because the SYN queue was full and syncookies were off.",
    ),
    _ext(
        "TCPReqQFullDoCookies",
        "LINUX_MIB_TCPREQQFULLDOCOOKIES",
        "SYN answered with a syncookie because the SYN queue was full.",
    ),
    _ext("SyncookiesSent", "LINUX_MIB_SYNCOOKIESSENT", "SYN-ACKs sent carrying a syncookie."),
    _ext("SyncookiesRecv", "LINUX_MIB_SYNCOOKIESRECV", "ACKs that validated a syncookie."),
    _ext(
        "SyncookiesFailed",
        "LINUX_MIB_SYNCOOKIESFAILED",
        "ACKs that looked like a syncookie answer but failed validation.",
    ),
    _ext(
        "EmbryonicRsts",
        "LINUX_MIB_EMBRYONICRSTS",
        "A half-open (SYN_RECV) connection reset: RST or SYN received, or an invalid "
        "segment answered with RST.",
    ),
    # --- RFC 1213 TCP group (/proc/net/snmp) ------------------------------------------
    _tcp("ActiveOpens", "TCP_MIB_ACTIVEOPENS", "SYNs sent by connect()."),
    _tcp("PassiveOpens", "TCP_MIB_PASSIVEOPENS", "Connections created from a listener."),
    _tcp(
        "AttemptFails",
        "TCP_MIB_ATTEMPTFAILS",
        "Connections that went to CLOSE from SYN_SENT or SYN_RECV.",
    ),
    _tcp(
        "EstabResets",
        "TCP_MIB_ESTABRESETS",
        "Connections that went to CLOSE from ESTABLISHED or CLOSE_WAIT: resets and timeouts.",
    ),
    _tcp(
        "CurrEstab",
        "TCP_MIB_CURRESTAB",
        "Connections now in ESTABLISHED or CLOSE_WAIT.",
        kind=_G,
    ),
    _tcp("InSegs", "TCP_MIB_INSEGS", "Segments received, errors included."),
    _tcp("OutSegs", "TCP_MIB_OUTSEGS", "Segments sent, retransmissions excluded."),
    _tcp("RetransSegs", "TCP_MIB_RETRANSSEGS", "Segments retransmitted."),
    _tcp("InErrs", "TCP_MIB_INERRS", "Segments received with errors (bad checksum etc.)."),
    _tcp("OutRsts", "TCP_MIB_OUTRSTS", "Segments sent with the RST flag."),
    # --- sockstat: levels, with mixed scope -------------------------------------------
    CounterSpec(
        "used",
        SOCKSTAT_SOCKETS,
        _G,
        "Sockets of every family open in this namespace.",
        "sock_inuse_get() via socket_seq_show() in net/socket.c",
    ),
    CounterSpec(
        "inuse",
        SOCKSTAT_TCP,
        _G,
        "IPv4 TCP sockets in this namespace, listeners and orphans included; not "
        "minisockets, not IPv6 (see TCP6 inuse in sockstat6).",
        "sock_prot_inuse_get(net, &tcp_prot)",
    ),
    CounterSpec(
        "orphan",
        SOCKSTAT_TCP,
        _G,
        "Orphaned TCP sockets on the whole host; compare with tcp_max_orphans.",
        "tcp_orphan_count_sum()",
        scope=Scope.GLOBAL,
    ),
    CounterSpec(
        "tw",
        SOCKSTAT_TCP,
        _G,
        "TIME_WAIT and FIN_WAIT2 minisockets in this namespace, IPv4 and IPv6; compare with "
        "tcp_max_tw_buckets.",
        "refcount of net->ipv4.tcp_death_row.tw_refcount, minus 1",
    ),
    CounterSpec(
        "alloc",
        SOCKSTAT_TCP,
        _G,
        "TCP sockets allocated on the whole host, IPv4 and IPv6.",
        "proto_sockets_allocated_sum_positive(&tcp_prot)",
        scope=Scope.GLOBAL,
    ),
    CounterSpec(
        "mem",
        SOCKSTAT_TCP,
        _G,
        "Pages charged to TCP buffers on the whole host; compare with tcp_mem.",
        "proto_memory_allocated(&tcp_prot)",
        scope=Scope.GLOBAL,
    ),
)

COUNTERS: Mapping[str, CounterSpec] = MappingProxyType({c.key: c for c in ALL_COUNTERS})


# --- Parsed files ------------------------------------------------------------------------


class Counters(Mapping[str, int]):
    """Read-only "Section.Name" -> value map parsed from netstat- or snmp-format text."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, int]) -> None:
        self._values: Mapping[str, int] = MappingProxyType(dict(values))

    def __getitem__(self, key: str) -> int:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Counters({len(self)} values)"

    def sections(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(key.split(".", 1)[0] for key in self._values))

    def section(self, name: str) -> Mapping[str, int]:
        """{counter: value} of one section, e.g. section("TcpExt")["TW"]."""
        prefix = name + "."
        return MappingProxyType(
            {k[len(prefix) :]: v for k, v in self._values.items() if k.startswith(prefix)}
        )

    def merged(self, other: Mapping[str, int]) -> Counters:
        """Both maps in one; a key present in both is a caller bug and raises."""
        clash = self._values.keys() & other.keys()
        if clash:
            raise ValueError(f"counter keys in both maps: {sorted(clash)[:3]}")
        return Counters({**self._values, **other})


class Sockstat(NamedTuple):
    """/proc/net/sockstat. Named fields for the TCP line; `fields` has every line's values."""

    sockets_used: int
    tcp_inuse: int
    tcp_orphan: int
    tcp_tw: int
    tcp_alloc: int
    tcp_mem_pages: int
    fields: Mapping[str, int]


_INT = re.compile(r"-?[0-9]+")
_SHOW_LIMIT = 40


def _fail(what: str, problem: str, line_no: int | None = None) -> KernelInterfaceError:
    where = f" line {line_no}" if line_no is not None else ""
    return KernelInterfaceError(f"{what}{where}: {problem}")


def _show(text: str) -> str:
    return repr(text[:_SHOW_LIMIT]) + ("..." if len(text) > _SHOW_LIMIT else "")


def _value(token: str, what: str, line_no: int) -> int:
    # int() would also accept '1_0', '+1' and non-ASCII digits; the kernel prints none.
    if _INT.fullmatch(token) is None:
        raise _fail(what, f"expected an integer, got {_show(token)}", line_no)
    return int(token)


def _label(token: str, what: str, line_no: int) -> str:
    if len(token) < 2 or not token.endswith(":"):
        raise _fail(what, f"expected 'Section:' at line start, got {_show(token)}", line_no)
    return token[:-1]


def _lines(text: str) -> list[tuple[int, list[str]]]:
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def parse_netstat(text: str, *, what: str = "/proc/net/netstat") -> Counters:
    """Parse the header-line/value-line pairs of /proc/net/netstat and /proc/net/snmp.

    Each section is printed as "Sec: Name1 Name2 ..." followed by "Sec: v1 v2 ...". A
    section may repeat (IcmpMsg does, 16 types per pair); a name may not.
    """
    lines = _lines(text)
    if not lines:
        raise _fail(what, "empty")
    if len(lines) % 2:
        raise _fail(what, "header line without a value line (truncated?)", lines[-1][0])
    values: dict[str, int] = {}
    for (head_no, head), (value_no, row) in zip(lines[::2], lines[1::2], strict=True):
        section = _label(head[0], what, head_no)
        if _label(row[0], what, value_no) != section:
            raise _fail(what, f"values do not follow the {section} header", value_no)
        if len(head) != len(row):
            raise _fail(
                what, f"{section} has {len(head) - 1} names but {len(row) - 1} values", value_no
            )
        for name, token in zip(head[1:], row[1:], strict=True):
            key = f"{section}.{name}"
            if key in values:
                raise _fail(what, f"{key} appears twice", head_no)
            values[key] = _value(token, what, value_no)
    return Counters(values)


def parse_snmp(text: str, *, what: str = "/proc/net/snmp") -> Counters:
    """/proc/net/snmp has the same layout as /proc/net/netstat."""
    return parse_netstat(text, what=what)


def parse_sockstat_fields(text: str, *, what: str = "/proc/net/sockstat") -> Counters:
    """Lines of "LABEL: key value key value ..." (sockstat, sockstat6) -> "LABEL.key" map."""
    lines = _lines(text)
    if not lines:
        raise _fail(what, "empty")
    values: dict[str, int] = {}
    for line_no, tokens in lines:
        label = _label(tokens[0], what, line_no)
        pairs = tokens[1:]
        if len(pairs) % 2:
            raise _fail(what, f"{label} line has a key without a value", line_no)
        for key_token, token in zip(pairs[::2], pairs[1::2], strict=True):
            key = f"{label}.{key_token}"
            if key in values:
                raise _fail(what, f"{key} appears twice", line_no)
            values[key] = _value(token, what, line_no)
    return Counters(values)


_SOCKSTAT_REQUIRED = ("sockets.used", "TCP.inuse", "TCP.orphan", "TCP.tw", "TCP.alloc", "TCP.mem")


def parse_sockstat(text: str, *, what: str = "/proc/net/sockstat") -> Sockstat:
    """Parse /proc/net/sockstat; extra fields (newer kernels add some) are kept in `fields`."""
    fields = parse_sockstat_fields(text, what=what)
    missing = [key for key in _SOCKSTAT_REQUIRED if key not in fields]
    if missing:
        raise _fail(what, f"missing {', '.join(missing)}")
    return Sockstat(
        sockets_used=fields["sockets.used"],
        tcp_inuse=fields["TCP.inuse"],
        tcp_orphan=fields["TCP.orphan"],
        tcp_tw=fields["TCP.tw"],
        tcp_alloc=fields["TCP.alloc"],
        tcp_mem_pages=fields["TCP.mem"],
        fields=fields,
    )
