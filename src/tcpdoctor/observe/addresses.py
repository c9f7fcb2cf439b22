"""Address columns: formatting many rows fast, and matching them against networks.

Hosts have many sockets but few distinct addresses, so each distinct (family, address)
is formatted once and the strings are mapped back onto the rows.
"""

from __future__ import annotations

import ipaddress
import socket

import numpy as np

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4_MAPPED_PREFIX = (0, 0, 0xFFFF)


def format_column(families: np.ndarray, words: np.ndarray, template: str = "%s") -> np.ndarray:
    """Text of each row's address (object array of str); `words` is the (n, 4) >u4 column.

    `template` wraps each distinct address once (e.g. into a JSON field), not each row."""
    out = np.empty(len(families), dtype=object)
    for family in sorted(set(families.tolist())):  # np.unique would import numpy.ma
        rows = np.flatnonzero(families == family)
        if family == socket.AF_INET:
            # One word per address: sorting plain integers is much cheaper than bytes.
            unique, inverse = np.unique(words[rows, 0], return_inverse=True)
            raw = [int(u).to_bytes(4, "big") for u in unique]
        else:
            keys = np.ascontiguousarray(words[rows]).astype(">u4")
            flat = keys.view(np.dtype((np.void, 16))).reshape(-1)
            unique, inverse = np.unique(flat, return_inverse=True)
            raw = [bytes(u) for u in unique]
        texts = np.array([template % _text(int(family), r) for r in raw], dtype=object)
        out[rows] = texts[inverse.reshape(-1)]
    return out


def _text(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return "?"


def match_network(families: np.ndarray, words: np.ndarray, network: IPNetwork) -> np.ndarray:
    """Boolean mask: rows whose address lies in `network` (IPv4 also matches v4-mapped v6)."""
    words = words.astype(np.uint64)
    if network.version == 4:
        net, mask = int(network.network_address), int(network.netmask)
        in_v4 = (families == socket.AF_INET) & ((words[:, 0] & mask) == net)
        mapped = (families == socket.AF_INET6) & np.all(
            words[:, :3] == np.array(_V4_MAPPED_PREFIX, dtype=np.uint64), axis=1
        )
        return np.asarray(in_v4 | (mapped & ((words[:, 3] & mask) == net)), dtype=np.bool_)
    net_words = _split128(int(network.network_address))
    mask_words = _split128(int(network.netmask))
    hit = np.asarray(families == socket.AF_INET6, dtype=np.bool_)
    for i in range(4):
        hit &= (words[:, i] & mask_words[i]) == net_words[i]
    return hit


def _split128(value: int) -> list[int]:
    return [(value >> (96 - 32 * i)) & 0xFFFFFFFF for i in range(4)]


def is_loopback(families: np.ndarray, words: np.ndarray) -> np.ndarray:
    """127/8, ::1 and v4-mapped 127/8 (the loopback test of tcp_twsk_unique())."""
    v4_lo = match_network(families, words, ipaddress.IPv4Network("127.0.0.0/8"))
    v6_lo = match_network(families, words, ipaddress.IPv6Network("::1/128"))
    return np.asarray(v4_lo | v6_lo, dtype=np.bool_)
