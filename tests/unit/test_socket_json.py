"""The fast per-socket JSON rows equal a plain rendering of the same sockets, whatever
mix of constant and varying columns they have (constant columns take a shortcut)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from support.synthetic import Sock, snapshot
from tcpdoctor.kernel.states import TcpState, TimerCode
from tcpdoctor.observe.owners import Owner
from tcpdoctor.render.sockets import FAMILY_NAMES, json_chunks


def _expected(snap: object) -> list[dict[str, object]]:
    return [
        {
            "state": r.state.label,
            "family": FAMILY_NAMES[r.family],
            "local_address": r.local_address,
            "local_port": r.local_port,
            "remote_address": r.remote_address,
            "remote_port": r.remote_port,
            "timer": r.timer,
            "expires_ms": r.expires_ms,
            "retrans": r.retrans,
            "rqueue": r.rqueue,
            "wqueue": r.wqueue,
            "uid": r.uid,
            "inode": r.inode,
        }
        for r in snap.rows()  # type: ignore[attr-defined]
    ]


TW = Sock(TcpState.TIME_WAIT, timer=TimerCode.TIMEWAIT, expires_ms=1000)
CASES = {
    "empty": [],
    "one": [TW],
    "identical": [TW] * 5,
    "mixed": [
        TW,
        Sock(TcpState.ESTABLISHED, lport=40001, inode=77, uid=1000, rqueue=5),
        Sock(TcpState.LISTEN, local="::", lport=80, remote="::", rport=0, inode=12),
        Sock(TcpState.CLOSE_WAIT, local="::1", remote="::1", rport=70000 % 65536, rqueue=1),
        Sock(TcpState.SYN_SENT, expires_ms=7_200_000, retrans=3, timer=TimerCode.RETRANSMIT),
    ],
}


@pytest.mark.parametrize("name", list(CASES))
def test_rows_match_a_plain_rendering(name: str) -> None:
    snap = dataclasses.replace(snapshot(CASES[name]), info=None)  # no "info" key
    # chunk=2: rows span several chunks, which the caller joins like rows.
    got = json.loads("[" + ",".join(json_chunks(snap, chunk=2, separator=",")) + "]")
    assert got == _expected(snap)


def test_owners_and_info_are_added_per_row() -> None:
    snap = snapshot(
        [
            Sock(TcpState.ESTABLISHED, inode=5, info={"rtt_us": 120}),
            Sock(TcpState.TIME_WAIT, timer=TimerCode.TIMEWAIT),
        ]
    )
    owners = {5: (Owner(42, 'we"ird', 3),)}
    rows = json.loads("[" + "".join(json_chunks(snap, owners, separator=",")) + "]")
    assert rows[0]["pid"] == 42 and rows[0]["process"] == 'we"ird'
    assert rows[0]["owners"] == [{"pid": 42, "process": 'we"ird', "fd": 3}]
    assert rows[1]["pid"] is None and rows[1]["owners"] == []
    assert rows[0]["info"]["rtt_us"] == 120 and rows[0]["info"]["lost"] is None
    assert rows[1]["info"] is None
