"""The pcap parser and the measuring helpers, on pcap bytes built here by hand with struct
(not with the module's own writer, so a shared misunderstanding cannot cancel out)."""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpdoctor.errors import KernelInterfaceError, ScenarioError
from tcpdoctor.lab.pcap import (
    Flow,
    Keep,
    Segment,
    TcpFlags,
    carries_tcp,
    flows,
    global_header,
    in_flow,
    intervals,
    keepalive_probes,
    parse_pcap,
    read_pcap,
    retransmission_times,
    sll2_record,
    transmissions,
)

F = TcpFlags
CLIENT4, SERVER4 = "198.18.0.1", "198.18.0.2"
CLIENT6, SERVER6 = "fc00::1", "fc00::2"
T0 = 1_700_000_000
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
HOST, OUTGOING = 0, 4

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- building packets by hand ---------------------------------------------------------


def tcp_header(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int = 502,
    options: bytes = b"",
) -> bytes:
    assert len(options) % 4 == 0
    offset = (20 + len(options)) // 4
    return struct.pack(">HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0, 0) + (
        options
    )


def ts_option(tsval: int, tsecr: int) -> bytes:
    return b"\x01\x01" + struct.pack(">BBII", 8, 10, tsval, tsecr)


def ipv4(src: str, dst: str, tcp: bytes, payload: bytes = b"", *, proto: int = 6) -> bytes:
    total = 20 + len(tcp) + len(payload)
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        total,
        1,
        0x4000,  # DF, fragment offset 0
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header + tcp + payload


def ipv6(src: str, dst: str, tcp: bytes, payload: bytes = b"", *, nxt: int = 6) -> bytes:
    header = struct.pack(
        ">IHBB16s16s",
        6 << 28,
        len(tcp) + len(payload),
        nxt,
        64,
        socket.inet_pton(socket.AF_INET6, src),
        socket.inet_pton(socket.AF_INET6, dst),
    )
    return header + tcp + payload


def sll2(packet: bytes, *, proto: int = 0x0800, ifindex: int = 2, hatype: int = 1, pkt: int = 0):
    return struct.pack(">HHIHBB8s", proto, 0, ifindex, hatype, pkt, 6, b"\x02" * 6) + packet


def record(t: float, data: bytes, *, wire: int | None = None, ns: bool = True) -> bytes:
    seconds = int(t)
    fraction = round((t - seconds) * (1e9 if ns else 1e6))
    return struct.pack("<IIII", seconds, fraction, len(data), len(data) if wire is None else wire)


def pcap(*records: tuple[float, bytes], linktype: int = 276, ns: bool = True) -> bytes:
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    out = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)
    for t, data in records:
        out += record(t, data, ns=ns) + data
    return out


def seg(t: float, src: str, sport: int, dst: str, dport: int, flags: TcpFlags, **kw: object):
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    fields: dict[str, object] = {
        "ifindex": 2,
        "outgoing": False,
        "seq": 0,
        "ack": 0,
        "payload_len": 0,
        "window": 502,
        "tsval": None,
        "tsecr": None,
    }
    fields.update(kw)
    return Segment(
        t, family=family, src=src, sport=sport, dst=dst, dport=dport, flags=flags, **fields
    )  # type: ignore[arg-type]


# --- a connection over IPv4 and IPv6 ----------------------------------------------------

C, S = 40000, 8080
ISS, IRS = 1000, 5000


def conversation_v4() -> bytes:
    out = OUTGOING
    return pcap(
        (T0 + 0.0, sll2(ipv4(CLIENT4, SERVER4, tcp_header(C, S, ISS, 0, 0x02, 64240)), pkt=out)),
        (
            T0 + 0.000250,
            sll2(ipv4(SERVER4, CLIENT4, tcp_header(S, C, IRS, ISS + 1, 0x12, 65160))),
        ),
        (
            T0 + 0.0003,
            sll2(ipv4(CLIENT4, SERVER4, tcp_header(C, S, ISS + 1, IRS + 1, 0x10)), pkt=out),
        ),
        (
            T0 + 0.001,
            sll2(
                ipv4(CLIENT4, SERVER4, tcp_header(C, S, ISS + 1, IRS + 1, 0x18), b"hello"),
                pkt=out,
            ),
        ),
        (
            T0 + 0.002,
            sll2(ipv4(CLIENT4, SERVER4, tcp_header(C, S, ISS + 6, IRS + 1, 0x11)), pkt=out),
        ),
    )


def test_ipv4_connection_gives_exact_records() -> None:
    contents = parse_pcap(conversation_v4())
    assert contents.linktype == 276
    assert contents.records == 5
    assert contents.skipped == contents.dropped_copies == 0
    assert contents.segments == (
        seg(T0, CLIENT4, C, SERVER4, S, F.SYN, outgoing=True, seq=ISS, window=64240),
        seg(
            T0 + 0.00025, SERVER4, S, CLIENT4, C, F.SYN | F.ACK, seq=IRS, ack=ISS + 1, window=65160
        ),
        seg(T0 + 0.0003, CLIENT4, C, SERVER4, S, F.ACK, outgoing=True, seq=ISS + 1, ack=IRS + 1),
        seg(
            T0 + 0.001,
            CLIENT4,
            C,
            SERVER4,
            S,
            F.PSH | F.ACK,
            outgoing=True,
            seq=ISS + 1,
            ack=IRS + 1,
            payload_len=5,
        ),
        seg(
            T0 + 0.002,
            CLIENT4,
            C,
            SERVER4,
            S,
            F.FIN | F.ACK,
            outgoing=True,
            seq=ISS + 6,
            ack=IRS + 1,
        ),
    )


def test_ipv6_with_timestamps_and_payload_cut_by_snaplen() -> None:
    syn = tcp_header(C, S, 7, 0, 0x02, 64800, ts_option(111, 0))
    data = ipv6(
        CLIENT6, SERVER6, tcp_header(C, S, 8, 9, 0x18, 500, ts_option(112, 222)), b"x" * 300
    )
    cut = sll2(data, proto=0x86DD, ifindex=5, pkt=OUTGOING)[:128]  # snaplen 128: payload cut
    raw = pcap((T0 + 1.5, sll2(ipv6(CLIENT6, SERVER6, syn), proto=0x86DD, ifindex=5)))
    raw += record(T0 + 2.25, cut, wire=20 + len(data)) + cut
    first, second = parse_pcap(raw).segments
    assert first == seg(
        T0 + 1.5, CLIENT6, C, SERVER6, S, F.SYN, ifindex=5, seq=7, window=64800, tsval=111, tsecr=0
    )
    assert second.family == socket.AF_INET6
    assert (second.payload_len, second.tsval, second.tsecr, second.outgoing) == (
        300,
        112,
        222,
        True,
    )
    assert second.t == pytest.approx(T0 + 2.25, abs=1e-6)


def test_ipv6_extension_headers_are_walked() -> None:
    tcp = tcp_header(C, S, 1, 0, 0x02)
    hop_by_hop = bytes([6, 0]) + b"\x01\x04\x00\x00\x00\x00"  # next=TCP, 8 bytes of PadN
    packet = ipv6(CLIENT6, SERVER6, hop_by_hop + tcp, nxt=0)
    (segment,) = parse_pcap(pcap((T0, sll2(packet, proto=0x86DD)))).segments
    assert (segment.flags, segment.payload_len) == (F.SYN, 0)


# --- direction rule -------------------------------------------------------------------


def loopback_pair(t: float, hatype: int) -> list[tuple[float, bytes]]:
    packet = ipv4("127.0.0.1", "127.0.0.1", tcp_header(C, S, 1, 0, 0x02))
    return [
        (t, sll2(packet, ifindex=1, hatype=hatype, pkt=OUTGOING)),
        (t + 1e-5, sll2(packet, ifindex=1, hatype=hatype, pkt=HOST)),
    ]


def test_loopback_copies_are_kept_once_by_default() -> None:
    raw = pcap(*loopback_pair(T0, ARPHRD_LOOPBACK))
    once = parse_pcap(raw)
    assert [s.outgoing for s in once.segments] == [True]
    assert once.dropped_copies == 1
    assert [s.outgoing for s in parse_pcap(raw, keep=Keep.ALL).segments] == [True, False]
    assert [s.outgoing for s in parse_pcap(raw, keep=Keep.INCOMING).segments] == [False]
    assert [s.outgoing for s in parse_pcap(raw, keep=Keep.OUTGOING).segments] == [True]


def test_on_other_links_each_direction_is_its_own_packet() -> None:
    raw = pcap(*loopback_pair(T0, ARPHRD_ETHER))
    assert len(parse_pcap(raw).segments) == 2


# --- other link types and encodings ---------------------------------------------------


def test_microsecond_big_endian_sll_ethernet_and_raw() -> None:
    packet = ipv4(CLIENT4, SERVER4, tcp_header(C, S, 1, 0, 0x02))
    want = (CLIENT4, C, SERVER4, S, F.SYN)

    def key(s: Segment) -> tuple[object, ...]:
        return (s.src, s.sport, s.dst, s.dport, s.flags)

    big = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    big += struct.pack(">IIII", T0, 500_000, len(packet), len(packet)) + packet
    (raw_seg,) = parse_pcap(big).segments
    assert key(raw_seg) == want and raw_seg.t == T0 + 0.5 and raw_seg.ifindex == 0

    sll = struct.pack(">HHH8sH", OUTGOING, 1, 6, b"\x02" * 8, 0x0800) + packet
    (sll_seg,) = parse_pcap(pcap((T0, sll), linktype=113, ns=False)).segments
    assert key(sll_seg) == want and sll_seg.outgoing

    vlan = b"\x02" * 12 + b"\x81\x00\x00\x07" + b"\x08\x00" + packet
    (eth_seg,) = parse_pcap(pcap((T0, vlan), linktype=1)).segments
    assert key(eth_seg) == want and not eth_seg.outgoing


def test_big_tcp_zero_length_uses_wire_length() -> None:
    packet = bytearray(ipv4(CLIENT4, SERVER4, tcp_header(C, S, 1, 0, 0x10), b"z" * 40))
    packet[2:4] = b"\x00\x00"
    data = sll2(bytes(packet))[:100]
    wire_ip = 70_000
    raw = pcap() + record(T0, data, wire=20 + wire_ip) + data
    (segment,) = parse_pcap(raw).segments
    assert segment.payload_len == wire_ip - 40


def test_non_tcp_records_are_skipped_and_counted() -> None:
    udp = ipv4(CLIENT4, SERVER4, b"\x00" * 8, proto=17)
    arp = sll2(b"\x00\x01" * 14, proto=0x0806)
    bad_ihl = bytearray(ipv4(CLIENT4, SERVER4, tcp_header(C, S, 1, 0, 0x02)))
    bad_ihl[0] = 0x43
    fragment = bytearray(ipv4(CLIENT4, SERVER4, tcp_header(C, S, 1, 0, 0x02)))
    fragment[6:8] = b"\x00\x10"
    contents = parse_pcap(
        pcap(
            (T0, sll2(udp)),
            (T0, arp),
            (T0, sll2(bytes(bad_ihl))),
            (T0, sll2(bytes(fragment))),
            (T0 + 1, sll2(ipv4(CLIENT4, SERVER4, tcp_header(C, S, 1, 0, 0x02)))),
        )
    )
    assert (contents.records, contents.skipped, len(contents.segments)) == (5, 4, 1)


def test_segments_come_back_in_time_order() -> None:
    late = sll2(ipv4(CLIENT4, SERVER4, tcp_header(C, S, 2, 0, 0x10)))
    early = sll2(ipv4(CLIENT4, SERVER4, tcp_header(C, S, 1, 0, 0x02)))
    assert [s.seq for s in parse_pcap(pcap((T0 + 1, late), (T0, early))).segments] == [1, 2]


def test_writer_round_trips_through_the_parser() -> None:
    packet = ipv4(CLIENT4, SERVER4, tcp_header(C, S, 9, 3, 0x18, options=ts_option(5, 6)), b"ab")
    data = global_header(128) + sll2_record(
        T0 * 10**9 + 123_456_789,
        protocol=0x0800,
        ifindex=7,
        hatype=1,
        pkttype=OUTGOING,
        address=b"\x02" * 6,
        packet=packet,
        wire_len=len(packet),
        snaplen=128,
    )
    (segment,) = parse_pcap(data).segments
    assert segment == seg(
        T0 + 0.123456789,
        CLIENT4,
        C,
        SERVER4,
        S,
        F.PSH | F.ACK,
        ifindex=7,
        outgoing=True,
        seq=9,
        ack=3,
        payload_len=2,
        tsval=5,
        tsecr=6,
    )
    assert carries_tcp(0x0800, packet)
    assert not carries_tcp(0x0806, packet)


def test_worker_filter_keeps_only_tcp_over_ip() -> None:
    syn = tcp_header(C, S, 1, 0, 0x02)
    fragment = bytearray(ipv4(CLIENT4, SERVER4, syn))
    fragment[6:8] = b"\x00\x10"
    hop_by_hop = ipv6(CLIENT6, SERVER6, bytes([6, 0]) + b"\x01\x04" + b"\x00" * 4 + syn, nxt=0)
    assert carries_tcp(0x86DD, ipv6(CLIENT6, SERVER6, syn))
    assert carries_tcp(0x86DD, hop_by_hop)
    assert carries_tcp(0, ipv4(CLIENT4, SERVER4, syn))  # raw IP: the version decides
    assert not carries_tcp(0x0800, bytes(fragment))
    assert not carries_tcp(0x0800, ipv4(CLIENT4, SERVER4, b"\x00" * 20, proto=17))
    assert not carries_tcp(0x0800, ipv4(CLIENT4, SERVER4, syn)[:30])


@FUZZ
@given(st.sampled_from([0, 0x0800, 0x86DD, 0x0806]), st.binary(max_size=120))
def test_worker_filter_never_raises(ethertype: int, packet: bytes) -> None:
    assert carries_tcp(ethertype, packet) in (True, False)


# --- broken files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "file header needs 24 bytes"),
        (b"\x0a\x0d\x0d\x0a" + b"\x00" * 40, "pcapng"),
        (b"GIF89a" + b"\x00" * 30, "not a pcap file"),
        (struct.pack("<IHHiIII", 0xA1B23C4D, 3, 0, 0, 0, 128, 276), "version 3"),
        (struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 128, 147), "link type 147"),
        (pcap() + struct.pack("<IIII", 0, 0, 300_000, 300_000), "exceeds"),
        (pcap() + struct.pack("<IIII", 0, 0, 20, 10) + b"\x00" * 20, "captured 20 bytes of a 10"),
        (pcap() + struct.pack("<IIII", 0, 2 * 10**9, 0, 0), "fraction"),
        (pcap((T0, b"\x00" * 10)), "SLL2 header needs 20 bytes"),
        (pcap() + b"\x00" * 7, "record header cut off"),
    ],
)
def test_broken_files_raise_one_clear_line(data: bytes, words: str) -> None:
    with pytest.raises(KernelInterfaceError, match=words) as info:
        parse_pcap(data, name="x.pcap")
    assert "\n" not in str(info.value)
    assert "x.pcap" in str(info.value)


def test_cut_off_last_record_is_an_error_unless_tolerated() -> None:
    whole = conversation_v4()
    cut = whole[:-10]
    with pytest.raises(KernelInterfaceError, match="record data cut off"):
        parse_pcap(cut)
    lenient = parse_pcap(cut, strict=False)
    assert lenient.truncated_tail and lenient.records == 4
    assert not parse_pcap(whole, strict=False).truncated_tail


def test_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read pcap"):
        read_pcap(tmp_path / "nope.pcap")


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_never_escape_the_error_family(data: bytes) -> None:
    with contextlib.suppress(KernelInterfaceError):
        parse_pcap(data)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([276, 113, 1, 101, 228, 229]))
def test_random_records_after_a_valid_header(body: bytes, linktype: int) -> None:
    try:
        contents = parse_pcap(pcap(linktype=linktype) + body, strict=False)
    except KernelInterfaceError:
        return
    assert contents.records >= len(contents.segments)


@FUZZ
@given(st.data())
def test_every_truncation_is_clean(data: st.DataObject) -> None:
    whole = conversation_v4()
    cut = data.draw(st.integers(0, len(whole)))
    try:
        contents = parse_pcap(whole[:cut])
    except KernelInterfaceError:
        return
    assert contents.records <= 5


@FUZZ
@given(st.data())
def test_flipped_bytes_are_clean(data: st.DataObject) -> None:
    whole = bytearray(conversation_v4())
    for _ in range(data.draw(st.integers(1, 8))):
        whole[data.draw(st.integers(0, len(whole) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(KernelInterfaceError):
        parse_pcap(bytes(whole), keep=data.draw(st.sampled_from(list(Keep))))


# --- helpers the scenarios use ----------------------------------------------------------

FWD = Flow(CLIENT4, C, SERVER4, S)


def test_flags_text_and_flow_orientation() -> None:
    assert (F.SYN | F.ACK).text == "SYN,ACK"
    assert F(0).text == ""
    segments = parse_pcap(conversation_v4()).segments
    assert flows(segments) == [FWD]
    assert flows(segments[1:2] + segments[:1]) == [FWD]  # the SYN sender wins
    assert in_flow(segments, FWD.reverse(), both=False) == [segments[1]]
    assert len(in_flow(segments, FWD)) == 5
    assert Flow.between(("fc00:0::1", C, 0, 0), ("fc00::2", S)) == Flow(CLIENT6, C, SERVER6, S)


def test_syn_retransmission_times_and_intervals() -> None:
    times = [0.0, 1.004, 2.012, 3.02, 4.028, 5.036]
    segments = [seg(T0 + t, CLIENT4, C, SERVER4, S, F.SYN, seq=ISS) for t in times]
    segments.append(seg(T0 + 0.5, SERVER4, S, CLIENT4, C, F.RST | F.ACK, seq=0))
    measured = retransmission_times(segments, FWD)
    assert measured == tuple(T0 + t for t in times)
    assert intervals(measured) == pytest.approx([1.004, 1.008, 1.008, 1.008, 1.008])
    assert retransmission_times(segments, FWD.reverse()) == ()


def test_data_and_fin_retransmissions_pick_the_longest_train() -> None:
    data = [seg(T0 + t, CLIENT4, C, SERVER4, S, F.ACK, seq=10, payload_len=100) for t in (0, 0.2)]
    fin = [seg(T0 + t, CLIENT4, C, SERVER4, S, F.FIN | F.ACK, seq=110) for t in (1, 1.4, 2.2)]
    acks = [seg(T0 + 0.1, CLIENT4, C, SERVER4, S, F.ACK, seq=110)]
    segments = data + acks + fin
    trains = transmissions(segments, FWD)
    assert [(t.seq, t.retransmissions) for t in trains] == [(10, 1), (110, 2)]
    assert retransmission_times(segments, FWD) == (T0 + 1, T0 + 1.4, T0 + 2.2)
    assert retransmission_times(segments, FWD, seq=10) == (T0, T0 + 0.2)
    assert retransmission_times(segments, FWD, seq=99) == ()


def test_a_forwarded_packet_is_counted_on_one_interface() -> None:
    segments = [
        seg(T0 + t, CLIENT4, C, SERVER4, S, F.SYN, seq=ISS, ifindex=i)
        for t in (0, 1)
        for i in (2, 3)
    ]
    assert retransmission_times(segments, FWD) == (T0, T0 + 1)
    assert retransmission_times(segments, FWD, ifindex=3) == (T0, T0 + 1)


def test_keepalive_probes_are_found_and_window_probes_are_not() -> None:
    top = 2**32 - 1  # snd_nxt wraps to 0 after the payload
    segments = [
        seg(T0, CLIENT4, C, SERVER4, S, F.PSH | F.ACK, seq=top - 4, payload_len=5),
        seg(T0 + 0.1, SERVER4, S, CLIENT4, C, F.ACK, seq=1, ack=0),
        seg(T0 + 2, CLIENT4, C, SERVER4, S, F.ACK, seq=top),
        seg(T0 + 3, CLIENT4, C, SERVER4, S, F.ACK, seq=top),
        seg(T0 + 3.1, CLIENT4, C, SERVER4, S, F.ACK, seq=0),  # a plain ACK, not a probe
        seg(T0 + 4, SERVER4, S, CLIENT4, C, F.ACK, seq=1, ack=0, window=0),
        seg(T0 + 5, CLIENT4, C, SERVER4, S, F.ACK, seq=top),  # zero-window probe
    ]
    assert [p.t for p in keepalive_probes(segments, FWD)] == [T0 + 2, T0 + 3]
