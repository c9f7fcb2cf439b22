"""What `tcpdoctor scan` prints: the socket table, the summary, and the JSON document."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any, TextIO

from tcpdoctor.kernel.states import REPORTED_STATES, TcpState
from tcpdoctor.observe.filters import SocketFilter
from tcpdoctor.observe.snapshot import Snapshot
from tcpdoctor.render import sockets as socket_text
from tcpdoctor.render.json import to_jsonable

if TYPE_CHECKING:
    from rich.table import Table

    from tcpdoctor.observe.owners import OwnerScan
    from tcpdoctor.observe.summary import Summary


def write_table(out: TextIO, snap: Snapshot, owner_scan: OwnerScan | None) -> None:
    owners = owner_scan.owners if owner_scan is not None else None
    socket_text.write_text(out, snap, owners)


def meta_json(snap: Snapshot, socket_filter: SocketFilter | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = to_jsonable(snap.meta)
    meta["socket_count"] = len(snap)
    if socket_filter is not None:
        meta["filter"] = to_jsonable(socket_filter)
    return meta


def by_state_json(counts: dict[TcpState, int]) -> dict[str, int]:
    """Every reported state, zeros included, so consumers need no defaults."""
    return {state.label: counts.get(state, 0) for state in REPORTED_STATES}


def process_counts(snap: Snapshot, owner_scan: OwnerScan) -> list[dict[str, Any]]:
    """Sockets per owning process, by state (a socket shared by two processes counts twice)."""
    per_pid: dict[tuple[int, str], Counter[TcpState]] = {}
    inodes = snap.sockets["inode"].tolist()
    states = snap.sockets["state"].tolist()
    for inode, state in zip(inodes, states, strict=True):
        for owner in owner_scan.owners.get(inode, ()):
            per_pid.setdefault((owner.pid, owner.comm), Counter())[TcpState(state)] += 1
    ranked = sorted(per_pid.items(), key=lambda item: -sum(item[1].values()))
    return [
        {
            "pid": pid,
            "process": comm,
            "total": sum(counts.values()),
            "by_state": {s.label: n for s, n in sorted(counts.items())},
        }
        for (pid, comm), counts in ranked
    ]


def summary_json(sums: Summary) -> dict[str, Any]:
    return {
        "total": sums.total,
        "by_state": by_state_json(sums.by_state),
        "top_peers": [
            {
                "peer_address": p.peer_address,
                "service_port": p.service_port,
                "direction": p.direction.label,
                "total": p.total,
                "by_state": {s.label: n for s, n in sorted(p.by_state.items())},
            }
            for p in sums.top_peers
        ],
        "port_use": {
            "port_range": list(sums.port_range),
            "destinations": [{**to_jsonable(p), "share": round(p.share, 6)} for p in sums.port_use],
        },
    }


def write_json(
    out: TextIO,
    snap: Snapshot,
    sums: Summary | None,
    owner_scan: OwnerScan | None,
    socket_filter: SocketFilter,
    *,
    with_sockets: bool,
) -> None:
    head: dict[str, Any] = {"meta": meta_json(snap, socket_filter)}
    if owner_scan is not None:
        head["meta"]["owner_scan"] = {"unreadable_pids": owner_scan.unreadable_pids}
    if sums is not None:
        head["summary"] = summary_json(sums)
        if owner_scan is not None:
            head["summary"]["by_process"] = process_counts(snap, owner_scan)
    text = json.dumps(head, indent=2, ensure_ascii=False)
    if not with_sockets:
        out.write(text + "\n")
        return
    # Stream the (possibly huge) socket list after the small head, one object per line.
    out.write(text[:-2] + ',\n  "sockets": [\n')
    owners = owner_scan.owners if owner_scan is not None else None
    separator = ",\n    "
    for index, chunk in enumerate(socket_text.json_chunks(snap, owners, separator=separator)):
        out.write("    " if index == 0 else separator)
        out.write(chunk)
    out.write("\n  ]\n}\n")


def print_summary(snap: Snapshot, sums: Summary, owner_scan: OwnerScan | None) -> None:
    from rich.console import Console  # rich costs ~50 ms to import; only tables need it
    from rich.table import Table

    console = Console()
    where = f"netns [bold]{snap.meta.netns.label}[/]"
    console.print(
        f"[bold]{sums.total}[/] TCP sockets in {where} "
        f"(kernel {snap.meta.kernel_release}, read in {snap.meta.elapsed_s * 1000:.0f} ms "
        f"via {snap.meta.source.value})"
    )
    states = Table(title="By state", title_justify="left")
    states.add_column("State")
    states.add_column("Count", justify="right")
    for state, count in sorted(sums.by_state.items(), key=lambda kv: -kv[1]):
        states.add_row(state.label, str(count))
    console.print(states)
    if sums.top_peers:
        console.print(_peer_table(sums))
    if sums.port_use:
        console.print(_port_table(sums))
    if owner_scan is not None:
        console.print(_process_table(process_counts(snap, owner_scan)))


def _peer_table(sums: Summary) -> Table:
    from rich.table import Table

    from tcpdoctor.observe.summary import Direction

    table = Table(title="Top peers", title_justify="left")
    for name in ("Peer", "Connections", "Total", "By state"):
        table.add_column(name, justify="right" if name == "Total" else "left")
    for p in sums.top_peers:
        states = ", ".join(f"{s.label} {n}" for s, n in sorted(p.by_state.items()))
        flow = (
            f"to its port {p.service_port}"
            if p.direction is Direction.OUTBOUND
            else f"into our port {p.service_port}"
        )
        table.add_row(p.peer_address, flow, str(p.total), states)
    return table


def _port_table(sums: Summary) -> Table:
    from rich.table import Table

    lo, hi = sums.port_range
    table = Table(title=f"Ephemeral ports per destination (range {lo}-{hi})", title_justify="left")
    for name in ("Local", "Destination", "In use", "TIME_WAIT", "Capacity", "Share"):
        table.add_column(name, justify="left" if name in ("Local", "Destination") else "right")
    for p in sums.port_use:
        table.add_row(
            p.local_address,
            f"{p.remote_address}:{p.remote_port}",
            str(p.in_use),
            str(p.time_wait),
            str(p.capacity),
            f"{p.share:.1%}",
        )
    return table


def _process_table(rows: list[dict[str, Any]]) -> Table:
    from rich.markup import escape  # process names may contain "["
    from rich.table import Table

    table = Table(title="Sockets by process", title_justify="left")
    for name in ("PID", "Process", "Total", "By state"):
        table.add_column(name, justify="right" if name in ("PID", "Total") else "left")
    for row in rows[:20]:
        states = ", ".join(f"{s} {n}" for s, n in row["by_state"].items())
        table.add_row(str(row["pid"]), escape(row["process"]), str(row["total"]), states)
    return table
