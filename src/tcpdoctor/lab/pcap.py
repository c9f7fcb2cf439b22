"""The pcap files lab captures write, read back as TCP segment records, and the small
helpers scenarios measure with (flows, retransmission trains, keepalive probes).

Format written: classic pcap with nanosecond timestamps (magic 0xa1b23c4d) and link type
LINUX_SLL2 (276), whose 20-byte pseudo header keeps the interface index, the ARPHRD type
and the packet direction, so tcpdump, tshark and Wireshark show all three. The reader also
accepts microsecond pcaps and the link types tcpdump itself writes on Linux (LINUX_SLL,
Ethernet, raw IP), so a capture taken by hand can be measured with the same helpers.

Direction rule: a packet socket sees a packet once per interface it crosses, with one
exception: on a loopback device the kernel shows every packet twice, as OUTGOING when it
is sent and as HOST when it comes back in. `Keep.ONCE` (the default) drops those incoming
loopback copies, so each packet appears once per interface; `Keep.ALL` keeps everything.

A pcap whose container is broken (bad magic, cut-off header or record, absurd lengths)
raises KernelInterfaceError with one line. A record that is well framed but holds no
parsable TCP segment (ARP, UDP, a mangled IP header) is skipped and counted instead:
that is traffic, not a broken file.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, IntFlag
from pathlib import Path
from typing import NamedTuple

from tcpdoctor.errors import KernelInterfaceError, ScenarioError

# --- format constants (pcap-linktype(7), linux/if_packet.h, linux/if_arp.h) -------------

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_MAGIC = 0x0A0D0D0A
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
MAX_RECORD = 262_144  # libpcap's MAXIMUM_SNAPLEN: larger records mean a corrupt file

GLOBAL_HEADER = struct.Struct("<IHHiIII")  # magic, major, minor, zone, sigfigs, snap, link
RECORD_HEADER = struct.Struct("<IIII")  # seconds, fraction, captured length, wire length
SLL2_HEADER = struct.Struct(">HHIHBB8s")  # protocol, reserved, ifindex, hatype, pkttype, ...
SLL_HEADER = struct.Struct(">HHH8sH")  # pkttype, hatype, halen, address, protocol

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ARPHRD_LOOPBACK = 772
PACKET_HOST = 0
PACKET_OUTGOING = 4
IPPROTO_TCP = 6

_ETHER_TYPES = {ETH_P_IP: socket.AF_INET, ETH_P_IPV6: socket.AF_INET6}
_SEQ_MOD = 1 << 32


class TcpFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80

    @property
    def text(self) -> str:
        """Flag names joined by commas in header bit order ("SYN,ACK"); empty if none."""
        return ",".join(f.name or "" for f in TcpFlags if f in self)


class Keep(Enum):
    """Which copies of a packet to keep (see the module docstring for the rule)."""

    ONCE = "once"  # each packet once per interface: incoming loopback copies dropped
    ALL = "all"  # every copy the packet socket saw
    OUTGOING = "outgoing"  # only packets this namespace sent
    INCOMING = "incoming"  # only packets this namespace received


@dataclass(frozen=True, slots=True)
class Segment:
    """One TCP segment as captured. `t` is CLOCK_REALTIME seconds (kernel timestamp);
    `window` is the raw header field (not scaled); tsval/tsecr are None without the
    timestamp option. ifindex is 0 and outgoing False when the link type has neither."""

    t: float
    ifindex: int
    outgoing: bool
    family: socket.AddressFamily
    src: str
    sport: int
    dst: str
    dport: int
    flags: TcpFlags
    seq: int
    ack: int
    payload_len: int
    window: int
    tsval: int | None = None
    tsecr: int | None = None

    @property
    def seq_space(self) -> int:
        """Sequence numbers this segment consumes: payload plus one each for SYN and FIN."""
        return self.payload_len + bool(self.flags & TcpFlags.SYN) + bool(self.flags & TcpFlags.FIN)

    @property
    def end_seq(self) -> int:
        return (self.seq + self.seq_space) % _SEQ_MOD


@dataclass(frozen=True, slots=True)
class PcapContents:
    """A parsed pcap: segments in time order plus what was left out and why."""

    linktype: int
    snaplen: int
    records: int  # every record in the file
    segments: tuple[Segment, ...]
    skipped: int  # records without a parsable TCP segment (other protocols, bad headers)
    dropped_copies: int  # records left out by the Keep choice
    truncated_tail: bool  # a cut-off final record was ignored (strict=False only)


# --- writing ------------------------------------------------------------------------------


def global_header(snaplen: int, linktype: int = LINKTYPE_LINUX_SLL2) -> bytes:
    """The 24-byte file header, nanosecond flavour, little-endian."""
    return GLOBAL_HEADER.pack(PCAP_MAGIC_NS, *PCAP_VERSION, 0, 0, snaplen, linktype)


def sll2_record(
    t_ns: int,
    *,
    protocol: int,
    ifindex: int,
    hatype: int,
    pkttype: int,
    address: bytes,
    packet: bytes,
    wire_len: int,
    snaplen: int,
) -> bytes:
    """One record: pcap record header, SLL2 pseudo header, then the network-layer packet
    cut to the snap length (snaplen counts the pseudo header, as libpcap's does)."""
    pseudo = SLL2_HEADER.pack(
        protocol, 0, ifindex, hatype, pkttype, min(len(address), 8), address[:8]
    )
    body = (pseudo + packet)[:snaplen]
    seconds, nanos = divmod(t_ns, 1_000_000_000)
    header = RECORD_HEADER.pack(seconds, nanos, len(body), SLL2_HEADER.size + wire_len)
    return header + body


# --- reading: the container ---------------------------------------------------------------


class _Record(NamedTuple):
    number: int
    t: float
    data: bytes
    wire_len: int


class _Header(NamedTuple):
    endian: str
    divisor: int  # fraction units per second
    snaplen: int
    linktype: int


_SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)


_FRACTION_UNITS = {PCAP_MAGIC_US: 1_000_000, PCAP_MAGIC_NS: 1_000_000_000}


def _broken(where: str, why: str) -> KernelInterfaceError:
    return KernelInterfaceError(f"malformed pcap {where}: {why}")


def _read_header(data: bytes, where: str) -> _Header:
    if len(data) < GLOBAL_HEADER.size:
        raise _broken(where, f"file header needs 24 bytes, got {len(data)}")
    magic = int.from_bytes(data[:4], "little")
    if magic == PCAPNG_MAGIC:
        raise _broken(where, "pcapng is not supported; convert it with `editcap -F pcap`")
    little = _FRACTION_UNITS.get(magic)
    big = _FRACTION_UNITS.get(int.from_bytes(data[:4], "big"))
    if little is not None:
        endian, divisor = "<", little
    elif big is not None:
        endian, divisor = ">", big
    else:
        raise _broken(where, f"not a pcap file (magic 0x{magic:08x})")
    fmt = GLOBAL_HEADER.format.replace("<", endian)
    _, major, _minor, _, _, snaplen, linktype = struct.unpack_from(fmt, data)
    if major != PCAP_VERSION[0]:
        raise _broken(where, f"pcap version {major} is not 2")
    # The upper bits of the link-type field carry FCS and reserved flags (pcap spec).
    linktype &= 0x0FFF_FFFF
    if linktype not in _SUPPORTED_LINKTYPES:
        raise _broken(where, f"link type {linktype} is not supported (SLL2, SLL, Ethernet, IP are)")
    return _Header(endian, divisor, snaplen, linktype)


def _split(data: bytes, header: _Header, where: str, *, strict: bool) -> tuple[list[_Record], bool]:
    """All records, and whether a cut-off final record was ignored (strict=False only).

    The loop ends because every step consumes at least the 16-byte record header.
    """
    unpack = struct.Struct(RECORD_HEADER.format.replace("<", header.endian)).unpack_from
    records: list[_Record] = []
    offset = GLOBAL_HEADER.size
    while offset < len(data):
        place = f"{where} (record {len(records)} at byte {offset})"
        if offset + RECORD_HEADER.size > len(data):
            if strict:
                raise _broken(place, "record header cut off")
            return records, True
        seconds, fraction, captured, wire = unpack(data, offset)
        if captured > MAX_RECORD:
            raise _broken(place, f"record length {captured} exceeds {MAX_RECORD}")
        if captured > wire:
            raise _broken(place, f"captured {captured} bytes of a {wire}-byte packet")
        if fraction >= header.divisor:
            raise _broken(place, f"timestamp fraction {fraction} out of range")
        start = offset + RECORD_HEADER.size
        if start + captured > len(data):
            if strict:
                raise _broken(place, f"record data cut off ({len(data) - start} of {captured})")
            return records, True
        t = seconds + fraction / header.divisor
        records.append(_Record(len(records), t, data[start : start + captured], wire))
        offset = start + captured
    return records, False


# --- reading: link layer ------------------------------------------------------------------


class _Frame(NamedTuple):
    """A record's network-layer packet and what the link layer said about it."""

    ethertype: int  # 0 when the link type does not say (raw IP: decided by version)
    ifindex: int
    hatype: int
    pkttype: int
    packet: bytes
    wire_len: int  # network-layer bytes on the wire


def _frame(record: _Record, linktype: int, where: str) -> _Frame:
    data, wire = record.data, record.wire_len
    if linktype == LINKTYPE_LINUX_SLL2:
        _need(data, SLL2_HEADER.size, where, record, "SLL2")
        proto, _, ifindex, hatype, pkttype, _, _ = SLL2_HEADER.unpack_from(data)
        return _Frame(proto, ifindex, hatype, pkttype, data[20:], wire - 20)
    if linktype == LINKTYPE_LINUX_SLL:
        _need(data, SLL_HEADER.size, where, record, "SLL")
        pkttype, hatype, _, _, proto = SLL_HEADER.unpack_from(data)
        return _Frame(proto, 0, hatype, pkttype, data[16:], wire - 16)
    if linktype == LINKTYPE_ETHERNET:
        return _ethernet(record, where)
    return _Frame(0, 0, 0, PACKET_HOST, data, wire)  # raw IP, IPv4 or IPv6 link types


def _ethernet(record: _Record, where: str) -> _Frame:
    data, offset = record.data, 12
    _need(data, 14, where, record, "Ethernet")
    ethertype = int.from_bytes(data[12:14], "big")
    for _ in range(2):  # at most an 802.1ad outer tag and an 802.1Q inner tag
        if ethertype not in (ETH_P_8021Q, ETH_P_8021AD) or len(data) < offset + 8:
            break
        offset += 4
        ethertype = int.from_bytes(data[offset : offset + 2], "big")
    start = offset + 2
    return _Frame(ethertype, 0, 0, PACKET_HOST, data[start:], record.wire_len - start)


def _need(data: bytes, size: int, where: str, record: _Record, what: str) -> None:
    if len(data) < size:
        raise _broken(
            f"{where} (record {record.number})",
            f"{what} header needs {size} bytes, record has {len(data)}",
        )


# --- reading: IP and TCP ------------------------------------------------------------------


class _Transport(NamedTuple):
    family: socket.AddressFamily
    src: str
    dst: str
    tcp: bytes  # captured TCP bytes
    tcp_len: int  # TCP header + payload length according to the IP header


_IPV6_EXT_8 = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44
_IPV6_AUTH = 51
_MAX_IPV6_EXT = 8


def _ipv4(pkt: bytes, wire_len: int) -> _Transport | None:
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    total = int.from_bytes(pkt[2:4], "big") or wire_len  # 0 = BIG TCP / GSO: trust the wire
    fragment_offset = int.from_bytes(pkt[6:8], "big") & 0x1FFF
    if ihl < 20 or len(pkt) < ihl or total < ihl or pkt[9] != IPPROTO_TCP or fragment_offset:
        return None
    src, dst = (socket.inet_ntop(socket.AF_INET, pkt[i : i + 4]) for i in (12, 16))
    return _Transport(socket.AF_INET, src, dst, pkt[ihl:], total - ihl)


def _ipv6(pkt: bytes, wire_len: int) -> _Transport | None:
    if len(pkt) < 40 or pkt[0] >> 4 != 6:
        return None
    length = int.from_bytes(pkt[4:6], "big") or wire_len - 40  # 0 = BIG TCP
    nxt, offset = pkt[6], 40
    for _ in range(_MAX_IPV6_EXT):
        if nxt == IPPROTO_TCP or len(pkt) < offset + 8:
            break
        if nxt in _IPV6_EXT_8:
            size = (pkt[offset + 1] + 1) * 8
        elif nxt == _IPV6_AUTH:
            size = (pkt[offset + 1] + 2) * 4
        elif nxt == _IPV6_FRAGMENT and int.from_bytes(pkt[offset + 2 : offset + 4], "big") >> 3:
            return None  # a later fragment: no TCP header in it
        elif nxt == _IPV6_FRAGMENT:
            size = 8
        else:
            return None
        nxt, offset = pkt[offset], offset + size
    if nxt != IPPROTO_TCP or len(pkt) < offset or length < offset - 40:
        return None
    src, dst = (socket.inet_ntop(socket.AF_INET6, pkt[i : i + 16]) for i in (8, 24))
    return _Transport(socket.AF_INET6, src, dst, pkt[offset:], length - (offset - 40))


def _transport(frame: _Frame) -> _Transport | None:
    if frame.ethertype == ETH_P_IP:
        return _ipv4(frame.packet, frame.wire_len)
    if frame.ethertype == ETH_P_IPV6:
        return _ipv6(frame.packet, frame.wire_len)
    if frame.ethertype == 0 and frame.packet:
        version = frame.packet[0] >> 4
        if version == 4:
            return _ipv4(frame.packet, frame.wire_len)
        if version == 6:
            return _ipv6(frame.packet, frame.wire_len)
    return None


_TCP_OPT_EOL, _TCP_OPT_NOP, _TCP_OPT_TIMESTAMP = 0, 1, 8


def carries_tcp(ethertype: int, packet: bytes) -> bool:
    """Whether a network-layer packet (ethertype as the link layer gave it) holds a TCP
    header over IPv4 or IPv6: the capture worker's filter. It runs once per packet, so the
    common shapes take a cheap path; the parser still has the last word on each record."""
    if ethertype == ETH_P_IP and len(packet) >= 40 and packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        unfragmented = not (packet[6] & 0x1F or packet[7])
        return packet[9] == IPPROTO_TCP and unfragmented and ihl >= 20 and len(packet) >= ihl + 20
    if ethertype == ETH_P_IPV6 and len(packet) >= 60 and packet[6] == IPPROTO_TCP:
        return packet[0] >> 4 == 6
    frame = _Frame(ethertype, 0, 0, PACKET_HOST, packet, len(packet))
    ip = _transport(frame)
    return ip is not None and len(ip.tcp) >= 20


def _timestamps(options: bytes) -> tuple[int, int] | None:
    """tsval/tsecr from the options; a malformed option list just ends the search, as
    it would for the kernel's tcp_parse_options()."""
    offset = 0
    while offset < len(options):  # each step advances by at least one byte
        kind = options[offset]
        if kind == _TCP_OPT_EOL:
            return None
        if kind == _TCP_OPT_NOP:
            offset += 1
            continue
        if offset + 1 >= len(options) or options[offset + 1] < 2:
            return None
        size = options[offset + 1]
        if kind == _TCP_OPT_TIMESTAMP and size == 10 and offset + 10 <= len(options):
            tsval, tsecr = struct.unpack_from(">II", options, offset + 2)
            return tsval, tsecr
        offset += size
    return None


def _segment(t: float, frame: _Frame, ip: _Transport) -> Segment | None:
    tcp = ip.tcp
    if len(tcp) < 20:
        return None
    sport, dport, seq, ack, offset_byte, flags, window = struct.unpack_from(">HHIIBBH", tcp)
    header_len = (offset_byte >> 4) * 4
    if header_len < 20 or len(tcp) < header_len or ip.tcp_len < header_len:
        return None
    stamps = _timestamps(tcp[20:header_len])
    return Segment(
        t=t,
        ifindex=frame.ifindex,
        outgoing=frame.pkttype == PACKET_OUTGOING,
        family=ip.family,
        src=ip.src,
        sport=sport,
        dst=ip.dst,
        dport=dport,
        flags=TcpFlags(flags),
        seq=seq,
        ack=ack,
        payload_len=ip.tcp_len - header_len,
        window=window,
        tsval=None if stamps is None else stamps[0],
        tsecr=None if stamps is None else stamps[1],
    )


def _kept(frame: _Frame, keep: Keep) -> bool:
    outgoing = frame.pkttype == PACKET_OUTGOING
    if keep is Keep.ONCE:
        return outgoing or frame.hatype != ARPHRD_LOOPBACK
    if keep is Keep.OUTGOING:
        return outgoing
    if keep is Keep.INCOMING:
        return not outgoing
    return True


# --- reading: public ----------------------------------------------------------------------


def parse_pcap(
    data: bytes, *, keep: Keep = Keep.ONCE, strict: bool = True, name: str = "data"
) -> PcapContents:
    """Parse pcap bytes into TCP segments, sorted by time (stable for equal times).

    strict=False tolerates a cut-off final record, which is what a capture killed in the
    middle of a write leaves behind; every other defect raises KernelInterfaceError.
    """
    header = _read_header(data, name)
    records, truncated = _split(data, header, name, strict=strict)
    segments: list[Segment] = []
    skipped = dropped = 0
    for record in records:
        frame = _frame(record, header.linktype, name)
        ip = _transport(frame)
        segment = None if ip is None else _segment(record.t, frame, ip)
        if segment is None:
            skipped += 1
        elif not _kept(frame, keep):
            dropped += 1
        else:
            segments.append(segment)
    segments.sort(key=lambda s: s.t)
    return PcapContents(
        linktype=header.linktype,
        snaplen=header.snaplen,
        records=len(records),
        segments=tuple(segments),
        skipped=skipped,
        dropped_copies=dropped,
        truncated_tail=truncated,
    )


def read_pcap(path: Path, *, keep: Keep = Keep.ONCE, strict: bool = True) -> PcapContents:
    """parse_pcap() on a file; an unreadable file is a ScenarioError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"cannot read pcap {path}: {exc.strerror or exc}") from None
    return parse_pcap(data, keep=keep, strict=strict, name=str(path))


def read_segments(path: Path, *, keep: Keep = Keep.ONCE) -> tuple[Segment, ...]:
    return read_pcap(path, keep=keep).segments


# --- flows --------------------------------------------------------------------------------


def normalize_address(address: str) -> str:
    """The textual form the parser produces (inet_ntop), so flows compare as strings."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, address))
        except OSError:
            continue
    raise ScenarioError(f"not an IP address: {address!r}")


class Flow(NamedTuple):
    """One direction of a connection: segments sent from (src, sport) to (dst, dport)."""

    src: str
    sport: int
    dst: str
    dport: int

    @classmethod
    def of(cls, segment: Segment) -> Flow:
        return cls(segment.src, segment.sport, segment.dst, segment.dport)

    @classmethod
    def between(cls, local: tuple[str, int], peer: tuple[str, int]) -> Flow:
        """From getsockname()/getpeername()-style pairs (extra tuple items ignored)."""
        return cls(normalize_address(local[0]), local[1], normalize_address(peer[0]), peer[1])

    def reverse(self) -> Flow:
        return Flow(self.dst, self.dport, self.src, self.sport)


def in_flow(segments: Iterable[Segment], flow: Flow, *, both: bool = True) -> list[Segment]:
    """Segments of `flow`; with both=True also those of the reverse direction."""
    wanted = {flow, flow.reverse()} if both else {flow}
    return [s for s in segments if Flow.of(s) in wanted]


def flows(segments: Iterable[Segment]) -> list[Flow]:
    """Connections in order of first appearance, each oriented from the side that sent
    the first SYN without ACK (the client), or from its first sender if no SYN was seen."""
    oriented: dict[frozenset[Flow], Flow] = {}
    by_syn: set[frozenset[Flow]] = set()
    for segment in segments:
        flow = Flow.of(segment)
        key = frozenset((flow, flow.reverse()))
        if key not in oriented:
            oriented[key] = flow
        if key not in by_syn and segment.flags & (TcpFlags.SYN | TcpFlags.ACK) == TcpFlags.SYN:
            oriented[key] = flow
            by_syn.add(key)
    return list(oriented.values())


# --- retransmissions and probes -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmissions:
    """Every transmission of one sequence number by one sender: the original first."""

    seq: int
    flags: TcpFlags  # of the original: SYN, FIN, data (PSH/ACK) ...
    times: tuple[float, ...]

    @property
    def retransmissions(self) -> int:
        return len(self.times) - 1


def _one_interface(sent: list[Segment], ifindex: int | None) -> list[Segment]:
    # A namespace that forwards sees each packet on two interfaces; counting both copies
    # would double every transmission, so one interface is measured.
    if not sent:
        return sent
    chosen = sent[0].ifindex if ifindex is None else ifindex
    return [s for s in sent if s.ifindex == chosen]


def transmissions(
    segments: Iterable[Segment], flow: Flow, *, ifindex: int | None = None
) -> list[Transmissions]:
    """Sequence-consuming segments (SYN, FIN or payload) that `flow.src` sent, grouped by
    starting seq, in order of first transmission. A group with more than one time is a
    retransmission train. RSTs, pure ACKs and zero-byte probes are not counted.
    ifindex picks the interface to count on (default: the first one the flow was seen on).
    """
    sent = _one_interface([s for s in segments if Flow.of(s) == flow], ifindex)
    groups: dict[int, tuple[TcpFlags, list[float]]] = {}
    for segment in sent:
        if segment.seq_space == 0 or segment.flags & TcpFlags.RST:
            continue
        groups.setdefault(segment.seq, (segment.flags, []))[1].append(segment.t)
    return [Transmissions(seq, flags, tuple(times)) for seq, (flags, times) in groups.items()]


def retransmission_times(
    segments: Iterable[Segment],
    flow: Flow,
    *,
    seq: int | None = None,
    ifindex: int | None = None,
) -> tuple[float, ...]:
    """Times of the original transmission and each retransmission of one seq sent by
    `flow.src`: the given seq, or else the one sent most often (earliest on a tie), which
    is the SYN of a failing connect() or the stuck segment of a data or FIN RTO run.
    Empty when the flow sent nothing that consumes sequence space."""
    trains = transmissions(segments, flow, ifindex=ifindex)
    if seq is not None:
        trains = [t for t in trains if t.seq == seq]
    if not trains:
        return ()
    return max(trains, key=lambda t: len(t.times)).times  # max() keeps the first on ties


def intervals(times: Sequence[float]) -> tuple[float, ...]:
    """Gaps between consecutive times: the waits a retransmission timer made."""
    return tuple(later - earlier for earlier, later in itertools.pairwise(times))


def _seq_after(a: int, b: int) -> bool:
    """RFC 1982 serial comparison, as the kernel's after(): a is later than b."""
    return 0 < (a - b) % _SEQ_MOD < _SEQ_MOD // 2


def keepalive_probes(
    segments: Iterable[Segment], flow: Flow, *, ifindex: int | None = None
) -> list[Segment]:
    """Keepalive probes `flow.src` sent: ACKs carrying zero or one byte at seq =
    snd_nxt - 1 (tcp_xmit_probe_skb()). A zero-window probe looks the same on the wire,
    so a probe sent while the peer's last advertised window was 0 is left out."""
    relevant = _one_interface(in_flow(segments, flow), ifindex)
    snd_nxt: int | None = None
    peer_window_zero = False
    probes: list[Segment] = []
    for segment in relevant:
        if Flow.of(segment) != flow:
            peer_window_zero = segment.window == 0 and not segment.flags & TcpFlags.RST
            continue
        if snd_nxt is not None and _is_probe(segment, snd_nxt) and not peer_window_zero:
            probes.append(segment)
        if snd_nxt is None or _seq_after(segment.end_seq, snd_nxt):
            snd_nxt = segment.end_seq
    return probes


def _is_probe(segment: Segment, snd_nxt: int) -> bool:
    plain_ack = segment.flags & (TcpFlags.SYN | TcpFlags.FIN | TcpFlags.RST) == 0
    return (
        plain_ack
        and bool(segment.flags & TcpFlags.ACK)
        and segment.payload_len <= 1
        and (segment.seq + 1) % _SEQ_MOD == snd_nxt
    )


__all__ = [
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "Flow",
    "Keep",
    "PcapContents",
    "Segment",
    "TcpFlags",
    "Transmissions",
    "carries_tcp",
    "flows",
    "global_header",
    "in_flow",
    "intervals",
    "keepalive_probes",
    "normalize_address",
    "parse_pcap",
    "read_pcap",
    "read_segments",
    "retransmission_times",
    "sll2_record",
    "transmissions",
]
