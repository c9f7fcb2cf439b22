"""Socket lists as text (ss-like aligned columns) and as JSON lines, fast at 1M rows.

Rich tables cost milliseconds per row, so the per-socket list is formatted with plain
string templates; rich is kept for the short summary tables.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat
from typing import TYPE_CHECKING, TextIO

import numpy as np

from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.observe.addresses import format_column
from tcpdoctor.observe.snapshot import Snapshot, SocketRow

if TYPE_CHECKING:
    from tcpdoctor.observe.owners import Owner

FAMILY_NAMES = {int(socket.AF_INET): "inet", int(socket.AF_INET6): "inet6"}
STATE_LABELS = {int(state): state.label for state in TcpState}
TIMER_LABELS = {int(code): code.label for code in TimerCode}
_TEXT_HEADER = (
    "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port", "Timer"
)  # fmt: skip
_ALIGN = "<>><<<<"  # per column: numbers right, text left


def _endpoint(address: str, port: int | str, family: int) -> str:
    return f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"


def _timer_text(row: SocketRow) -> str:
    if row.timer == "off":
        return ""
    return f"{row.timer}({row.expires_ms / 1000:.1f}s,{row.retrans})"


def _owner_text(owners: tuple[Owner, ...]) -> str:
    return ",".join(f'("{o.comm}",pid={o.pid},fd={o.fd})' for o in owners)


def write_text(
    out: TextIO,
    snapshot: Snapshot,
    owners: Mapping[int, tuple[Owner, ...]] | None = None,
) -> None:
    table = [list(_TEXT_HEADER) + (["Process"] if owners is not None else [])]
    for row in snapshot.rows():
        cells = [
            row.state.label,
            str(row.rqueue),
            str(row.wqueue),
            _endpoint(row.local_address, row.local_port, row.family),
            _endpoint(row.remote_address, row.remote_port or "*", row.family),
            _timer_text(row),
        ]
        if owners is not None:
            cells.append(_owner_text(owners.get(row.inode, ())))
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for cells in table:
        text = " ".join(f"{cell:{_ALIGN[i]}{widths[i]}}" for i, cell in enumerate(cells))
        out.write(text.rstrip() + "\n")


# Each JSON field of a row is one piece, key included (',"rqueue":0'), taken from a table
# of the distinct values: hosts have millions of sockets but few distinct states, ports,
# queue sizes or addresses. A field with one value in every row is a plain string, and
# neighbouring plain strings are merged, so a column of TIME_WAITs is a handful of
# pieces. zip() and str.join then glue the pieces in C.
Piece = str | list[str]  # the same text in every row, or one text per row


def _constant(column: np.ndarray) -> bool:
    return len(column) > 0 and bool((column == column[0]).all())


def _enum_field(key: str, labels: Mapping[int, str], column: np.ndarray, lead: str = ",") -> Piece:
    if _constant(column):
        return f'{lead}"{key}":"{labels.get(int(column[0]), str(int(column[0])))}"'
    table = np.array([f'{lead}"{key}":"{labels.get(i, str(i))}"' for i in range(256)], dtype=object)
    return list(table[column].tolist())


def _number_field(key: str, column: np.ndarray) -> Piece:
    values = column.astype(np.int64)
    prefix = f',"{key}":'
    if _constant(values):
        return prefix + str(int(values[0]))
    if len(values) and values.min() >= 0 and values.max() <= 0xFFFF:
        present = np.flatnonzero(np.bincount(values, minlength=1))
        table = np.empty(int(present[-1]) + 1, dtype=object)
        table[present] = [prefix + str(v) for v in present.tolist()]
        return list(table[values].tolist())
    distinct, inverse = np.unique(values, return_inverse=True)
    texts = np.array([prefix + str(v) for v in distinct.tolist()], dtype=object)
    return list(texts[inverse.reshape(-1)].tolist())


def _address_field(key: str, families: np.ndarray, words: np.ndarray) -> Piece:
    texts = format_column(families, words, template=f',"{key}":"%s"')
    return str(texts[0]) if _constant(texts) else list(texts.tolist())


def _json_columns(
    sockets: np.ndarray,
    info: np.ndarray | None,
    owners: Mapping[int, tuple[Owner, ...]] | None,
) -> list[Iterable[str]]:
    """Every row's JSON text as columns of pieces (docs/json.md for the keys)."""
    s = sockets
    pieces: list[Piece] = [
        _enum_field("state", STATE_LABELS, s["state"], lead="{"),
        _enum_field("family", FAMILY_NAMES, s["family"]),
        _address_field("local_address", s["family"], s["src"]),
        _number_field("local_port", s["sport"]),
        _address_field("remote_address", s["family"], s["dst"]),
        _number_field("remote_port", s["dport"]),
        _enum_field("timer", TIMER_LABELS, s["timer"]),
        *(_number_field(key, s[key]) for key in _NUMBER_KEYS),
    ]
    if owners is not None:
        pieces.append([_owner_json(owners.get(i, ())) for i in s["inode"].tolist()])
    if info is not None:
        pieces += [',"info":', _info_dicts(info)]
    pieces.append("}")
    return _merge_constants(pieces, len(s))


def _merge_constants(pieces: list[Piece], rows: int) -> list[Iterable[str]]:
    """Adjacent constant pieces become one endless repeat(); the per-row lists set the
    length of the zip, and when every piece is constant one list does."""
    if all(isinstance(piece, str) for piece in pieces):
        return [["".join(p for p in pieces if isinstance(p, str))] * rows]
    columns: list[Iterable[str]] = []
    pending = ""
    for piece in pieces:
        if isinstance(piece, str):
            pending += piece
            continue
        if pending:
            columns.append(repeat(pending))
            pending = ""
        columns.append(piece)
    if pending:
        columns.append(repeat(pending))
    return columns


_NUMBER_KEYS = ("expires_ms", "retrans", "rqueue", "wqueue", "uid", "inode")


def json_chunks(
    snapshot: Snapshot,
    owners: Mapping[int, tuple[Owner, ...]] | None = None,
    chunk: int = 65536,
    separator: str = ",\n",
) -> Iterator[str]:
    """Compact JSON objects, one per socket (docs/json.md), joined by `separator` into
    one string per `chunk` sockets; memory stays bounded by the chunk, not the total."""
    for start in range(0, len(snapshot.sockets), chunk):
        stop = start + chunk
        info = snapshot.info[start:stop] if snapshot.info is not None else None
        columns = _json_columns(snapshot.sockets[start:stop], info, owners)
        # strict=False: the repeat() columns are endless; the value lists set the length.
        yield separator.join(map("".join, zip(*columns, strict=False)))


def _owner_json(owners: tuple[Owner, ...]) -> str:
    if not owners:
        return ',"pid":null,"process":null,"owners":[]'
    first = owners[0]
    listed = ",".join(
        f'{{"pid":{o.pid},"process":{json.dumps(o.comm)},"fd":{o.fd}}}' for o in owners
    )
    return f',"pid":{first.pid},"process":{json.dumps(first.comm)},"owners":[{listed}]'


def _info_dicts(info: np.ndarray) -> list[str]:
    names = info.dtype.names or ()
    columns = [info[name].tolist() for name in names]
    out = []
    for values in zip(*columns, strict=True):
        if values and all(v == -1 for v in values):
            out.append("null")  # TIME_WAIT and request sockets carry no tcp_info
            continue
        fields = ",".join(
            f'"{n}":{"null" if v == -1 else v}' for n, v in zip(names, values, strict=True)
        )
        out.append("{" + fields + "}")
    return out
