"""`tcpdoctor scan`: the ss-like view of a namespace's TCP sockets."""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING

import click

from tcpdoctor.cli._options import json_option, namespace_options, resolve_target
from tcpdoctor.observe import snapshot as snapshot_mod
from tcpdoctor.observe.filters import PortRange, SocketFilter, parse_network, parse_states
from tcpdoctor.observe.netns import NetnsTarget
from tcpdoctor.observe.snapshot import Snapshot, Source

if TYPE_CHECKING:
    from tcpdoctor.observe.owners import OwnerScan
    from tcpdoctor.observe.summary import Summary
from tcpdoctor.render import scan_view


@click.command()
@namespace_options
@click.option(
    "--state",
    "-s",
    "states",
    multiple=True,
    metavar="STATE",
    help="Only these states (kernel names, comma lists, or all/connected/closing).",
)
@click.option("--src", "src", metavar="ADDR[/LEN]", help="Local address or network.")
@click.option("--dst", "dst", metavar="ADDR[/LEN]", help="Remote address or network.")
@click.option("--sport", metavar="PORT[-PORT]", help="Local port or range.")
@click.option("--dport", metavar="PORT[-PORT]", help="Remote port or range.")
@click.option("-4", "only_v4", is_flag=True, help="IPv4 only.")
@click.option("-6", "only_v6", is_flag=True, help="IPv6 only.")
@click.option("--summary", is_flag=True, help="Counts by state, top endpoints, port use.")
@click.option("--processes", "-p", is_flag=True, help="Name the processes owning sockets.")
@click.option("--info", "-i", is_flag=True, help="Add tcp_info (rtt, rto, retransmits, ...).")
@click.option(
    "--top",
    default=10,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Rows in each top list of the summary.",
)
@click.option(
    "--source",
    type=click.Choice([s.value for s in Source]),
    default=Source.AUTO.value,
    show_default=True,
    help="Socket reader: netlink (fast), /proc (fallback), or auto.",
)
@json_option
def scan(
    netns_name: str | None,
    netns_pid: int | None,
    states: tuple[str, ...],
    src: str | None,
    dst: str | None,
    sport: str | None,
    dport: str | None,
    only_v4: bool,
    only_v6: bool,
    summary: bool,
    processes: bool,
    info: bool,
    top: int,
    source: str,
    as_json: bool,
) -> None:
    """List TCP sockets like `ss -tan`, faster, with grouping and JSON."""
    if only_v4 and only_v6:
        raise click.UsageError("-4 and -6 exclude each other")
    socket_filter = SocketFilter(
        states=parse_states(states),
        local_network=parse_network(src) if src else None,
        remote_network=parse_network(dst) if dst else None,
        local_ports=PortRange.parse(sport) if sport else None,
        remote_ports=PortRange.parse(dport) if dport else None,
    )
    families = (
        (socket.AF_INET,)
        if only_v4
        else (socket.AF_INET6,)
        if only_v6
        else snapshot_mod.DEFAULT_FAMILIES
    )
    target = resolve_target(netns_name, netns_pid)
    snap = snapshot_mod.take(
        target, socket_filter=socket_filter, families=families, info=info, source=Source(source)
    )
    owner_scan = _owners(snap) if processes else None
    sums = _summary(snap, target, top) if summary else None
    out = sys.stdout
    if as_json:
        scan_view.write_json(out, snap, sums, owner_scan, socket_filter, with_sockets=not summary)
    elif summary:
        assert sums is not None
        scan_view.print_summary(snap, sums, owner_scan)
    else:
        scan_view.write_table(out, snap, owner_scan)


def _owners(snap: Snapshot) -> OwnerScan:
    from tcpdoctor.observe.owners import find_owners

    return find_owners(snap.sockets["inode"][snap.sockets["inode"] != 0].tolist())


def _summary(snap: Snapshot, target: NetnsTarget | None, top: int) -> Summary:
    from tcpdoctor.observe.portrange import read_port_policy
    from tcpdoctor.observe.summary import listening_ports, summarize

    policy = read_port_policy(target)
    capacity = policy.capacity(bound=listening_ports(snap).tolist()).capacity
    return summarize(snap, port_range=policy.port_range, capacity=capacity, top=top)
