"""idle-timeout-middlebox: a conntrack box forgets an idle connection; keepalive saves it.

Topology: client --veth-- box --veth-- server. The box forwards, DNATs a virtual address
(VIP:8080) to the server like a load balancer, and filters like a stateful firewall
(established flows pass; a new flow must start with a SYN; invalid packets are dropped),
with counters for the two kinds of packets it refuses. Its
net.netfilter.nf_conntrack_tcp_timeout_established is set short (--ct-timeout) inside its
namespace only. The client opens two connections to the VIP, one plain and one with
TCP_KEEPIDLE/TCP_KEEPINTVL, makes a request on each, pauses for --idle seconds and makes
one more request on each at the same moment.

Measured: each request's outcome, the box's conntrack table sampled from
/proc/net/nf_conntrack (when the kernel has it), a capture in the box on both links (the
request's transmissions arriving and leaving, keepalive probes), and the filter's
counters. --open-forward drops the filter's SYN rule, to show what plain Linux conntrack
does with a forgotten flow.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpdoctor.errors import InputError, ScenarioError, TcpDoctorError
from tcpdoctor.kernel.constants import NF_CT_TCP_LOOSE_DEFAULT
from tcpdoctor.kernel.counters import parse_snmp
from tcpdoctor.kernel.sysctls import parse_int
from tcpdoctor.lab import _observer, _proc
from tcpdoctor.lab._lines import JsonLines
from tcpdoctor.lab.model import Param, ParamValues, RunContext, ScenarioResult, ScenarioSpec
from tcpdoctor.lab.pcap import Flow, Segment, keepalive_probes, read_pcap
from tcpdoctor.lab.scenarios import _daemons
from tcpdoctor.lab.scenarios._idle_timeout_model import (
    KEEPALIVE,
    PLAIN,
    Expectation,
    Observed,
    Plan,
    compare,
    expect,
)
from tcpdoctor.lab.scenarios._variant_model import verdict
from tcpdoctor.lab.sysctl_args import SysctlSetting
from tcpdoctor.lab.topology import Child, Host, Topology
from tcpdoctor.timeline import Timeline, TimelineRecorder

NAME = "idle-timeout-middlebox"
PORT = 8080
# The load balancer's virtual address: inside the lab's 198.18.0.0/15, on no link.
VIP = ipaddress.IPv4Address("198.19.255.1")
CLIENT_MODULE = "tcpdoctor.lab.scenarios._idle_client"
SERVER_MODULE = "tcpdoctor.lab._server"
CT_ESTABLISHED = "net.netfilter.nf_conntrack_tcp_timeout_established"
CT_LOOSE = "net.netfilter.nf_conntrack_tcp_loose"
CT_TABLE = "/proc/net/nf_conntrack"
CT_SAMPLE_S = 0.25
KEEPALIVE_CNT = 3
READY_TIMEOUT_S = 15.0
SETUP_S = 5.0
REQUEST_SLOP_S = 0.01
CLOSE_MARGIN_S = 0.5  # --idle this close to --ct-timeout is too close to call
COUNTERS = {"new": "midstream_new", "invalid": "midstream_invalid"}

PARAMS = (
    Param(
        "ct_timeout",
        int,
        10,
        3,
        "The box's nf_conntrack_tcp_timeout_established (s).",
        1,
        600,
    ),
    Param("idle", float, 15.0, 5.0, "Pause between the two requests (s).", 0.0, 900.0),
    Param("keepalive_idle", int, 4, 1, "TCP_KEEPIDLE of the keepalive connection (s).", 1, 600),
    Param("keepalive_intvl", int, 4, 1, "TCP_KEEPINTVL of that connection (s).", 1, 600),
    Param(
        "request_timeout",
        float,
        3.0,
        2.0,
        "How long the client waits for a reply (s).",
        0.5,
        60.0,
    ),
    Param(
        "open_forward",
        bool,
        False,
        False,
        "The box only counts, no longer drops, new flows without a SYN and invalid packets.",
    ),
)


def _plan(values: ParamValues) -> Plan:
    return Plan(
        ct_timeout=int(values["ct_timeout"] or 1),
        idle=float(values["idle"] or 0.0),
        keepalive_idle=int(values["keepalive_idle"] or 1),
        keepalive_intvl=int(values["keepalive_intvl"] or 1),
        request_timeout=float(values["request_timeout"] or 1.0),
        open_forward=bool(values.get("open_forward")),
    )


def _loose(user: Sequence[SysctlSetting]) -> int:
    for setting in user:
        if setting.name == CT_LOOSE:
            return int(setting.value)  # type: ignore[arg-type]
    return NF_CT_TCP_LOOSE_DEFAULT


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    plan = _plan(values)
    if abs(plan.idle - plan.ct_timeout) < CLOSE_MARGIN_S:
        raise InputError(
            f"--idle {plan.idle:g} is within {CLOSE_MARGIN_S} s of --ct-timeout "
            f"{plan.ct_timeout}: too close to call; move them apart"
        )
    if plan.open_forward and _loose(user) == 0:
        raise InputError(
            "--open-forward with nf_conntrack_tcp_loose=0 is not modelled (the untracked "
            "segment would not be NATed at all)"
        )
    if _expectation(plan, _loose(user), _worst_slack).keepalive.forgotten is None:
        raise InputError(
            f"keepalive every {max(plan.keepalive_idle, plan.keepalive_intvl)} s against a "
            f"{plan.ct_timeout} s conntrack timeout is too close to call with timer "
            "lateness; move them apart"
        )


def _worst_slack(nominal: float) -> float:
    from tcpdoctor.lab._hz import kernel_hz

    return kernel_hz().max_lateness(nominal)


def _expectation(plan: Plan, loose: int, lateness: Callable[[float], float]) -> Expectation:
    period = max(plan.keepalive_idle, plan.keepalive_intvl)
    return expect(plan, loose, lateness(plan.keepalive_idle), lateness(period))


def estimate(values: ParamValues, _user: tuple[SysctlSetting, ...]) -> float:
    plan = _plan(values)
    return plan.idle + plan.request_timeout + SETUP_S


# --- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Box:
    client: Host
    box: Host
    server: Host
    client_address: str
    server_address: str
    box_devices: tuple[str, str]
    filter_table: str


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    _proc.require_tool("nft")
    plan = _plan(values)
    topo = ctx.topology
    ctx.progress(0.0, "building the namespaces")
    net = _build(topo, plan, ctx.sysctls)
    read_back = _read_back(topo, net)
    loose = parse_int(read_back["box"].get(CT_LOOSE) or str(NF_CT_TCP_LOOSE_DEFAULT))
    exp = _expectation(plan, loose, ctx.hz.max_lateness)
    work = _daemons.work_dir(topo)
    budget = plan.idle + plan.request_timeout + READY_TIMEOUT_S + 30.0
    server_child = topo.spawn(
        net.server,
        SERVER_MODULE,
        ["--host", net.server_address, "--port", str(PORT), "--max-seconds", f"{budget:.0f}"],
    )
    _await(JsonLines(server_child.stdout), server_child, "ready", READY_TIMEOUT_S)
    got = _measure(ctx, topo, net, plan, work, budget)
    server_child.close_stdin()
    observed = _observe(got, net)
    checks = compare(exp, observed, CT_SAMPLE_S)
    return ScenarioResult(
        scenario=NAME,
        run_id=topo.run_id,
        params=dict(values),
        sysctls={
            h: {k: v for k, v in vals.items() if v is not None} for h, vals in read_back.items()
        },
        expected=exp.as_dict(),
        measured=observed.as_dict(),
        checks=checks,
        verdict=verdict(checks),
        timeline=_timeline(got, net, observed),
        duration_s=got.closed_at - got.started,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=tuple(_notes(exp, got)),
        pcap=str(ctx.pcap) if ctx.pcap is not None else None,
    )


def _build(topo: Topology, plan: Plan, user: Sequence[SysctlSetting]) -> _Box:
    client, box, server = (
        topo.add_host("client"),
        topo.add_middlebox("box"),
        topo.add_host("server"),
    )
    left, right = topo.link(client, box), topo.link(box, server)
    topo.route(client, "default", left.b.address)
    topo.route(server, "default", right.a.address)
    topo.load_balancer(box, VIP, PORT, [right.b.address])
    table = topo.nft_table(box, "fw", _filter(plan.open_forward), family="ip")
    # After the tables: the nat chain loads nf_conntrack, which creates the sysctl.
    topo.write_sysctl(box, CT_ESTABLISHED, str(plan.ct_timeout))
    for host in (client, box, server):
        topo.apply(host, user)
    return _Box(
        client,
        box,
        server,
        str(left.a.address),
        str(right.b.address),
        (left.b.device, right.a.device),
        table,
    )


def _filter(open_forward: bool) -> str:
    """A stateful forward filter with a counter per kind of packet it refuses. With
    open_forward the same packets are counted but let through."""
    verdict_ = "accept" if open_forward else "drop"
    return (
        f"  counter {COUNTERS['new']} {{}}\n"
        f"  counter {COUNTERS['invalid']} {{}}\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        "    ct state established,related accept\n"
        f'    ct state invalid counter name "{COUNTERS["invalid"]}" {verdict_}\n'
        "    ct state new tcp flags & (fin | syn | rst | ack) != syn "
        f'counter name "{COUNTERS["new"]}" {verdict_}\n'
        "  }"
    )


def _read_back(topo: Topology, net: _Box) -> dict[str, dict[str, str | None]]:
    return {
        "box": {name: topo.read_sysctl(net.box, name) for name in (CT_ESTABLISHED, CT_LOOSE)},
        "client": {
            name: topo.read_sysctl(net.client, name)
            for name in ("net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_retries2")
        },
    }


@dataclass(frozen=True)
class _Run:
    started: float  # monotonic, when the client connected
    offset: float  # realtime - monotonic
    ports: Mapping[str, int]
    requests: tuple[dict[str, Any], ...]
    idle_start: float
    idle_end: float
    closed_at: float
    ct_samples: tuple[tuple[float, Mapping[int, tuple[str, int]]], ...] | None
    states: tuple[_observer.StateSample, ...]
    counters: Mapping[str, int]
    icmp_unreachable: int | None  # ICMP destination unreachables the box sent meanwhile
    segments: tuple[Segment, ...]


def _measure(
    ctx: RunContext, topo: Topology, net: _Box, plan: Plan, work: Path, budget: float
) -> _Run:
    from tcpdoctor.lab._pcap_option import start_capture

    pcap = ctx.pcap if ctx.pcap is not None else work / "box.pcap"
    capture = start_capture(topo, net.box, list(net.box_devices), pcap)
    offset = time.time() - time.monotonic()
    icmp_before = _icmp_unreachables(topo, net.box)
    ct = _ConntrackSampler(net.box).start()
    states = _observer.StateSampler([net.client, net.server]).start()
    try:
        client = _run_client(ctx, topo, net, plan, budget)
    finally:
        ct_samples = ct.stop()
        socket_states = states.stop()
        capture.stop()
    child, lines, started, ports, requests, idle = client
    counters = _counters(topo, net)
    icmp_after = _icmp_unreachables(topo, net.box)
    child_closed = _close(child, lines)
    return _Run(
        started=started,
        offset=offset,
        ports=ports,
        requests=tuple(requests),
        idle_start=float(idle["start"]),
        idle_end=float(idle["end"]),
        closed_at=child_closed,
        ct_samples=ct_samples,
        states=tuple(socket_states),
        counters=counters,
        icmp_unreachable=None
        if icmp_before is None or icmp_after is None
        else icmp_after - icmp_before,
        segments=read_pcap(capture.pcap).segments,
    )


def _run_client(
    ctx: RunContext, topo: Topology, net: _Box, plan: Plan, budget: float
) -> tuple[Child, JsonLines, float, dict[str, int], list[dict[str, Any]], dict[str, Any]]:
    args = ["--host", str(VIP), "--port", str(PORT), "--idle", repr(plan.idle)]
    args += ["--timeout", repr(plan.request_timeout)]
    args += ["--keepalive-idle", str(plan.keepalive_idle)]
    args += ["--keepalive-intvl", str(plan.keepalive_intvl)]
    args += ["--keepalive-cnt", str(KEEPALIVE_CNT)]
    child = topo.spawn(net.client, CLIENT_MODULE, args)
    lines = JsonLines(child.stdout)
    connected = _await(lines, child, "connected", READY_TIMEOUT_S)
    started = time.monotonic()
    ports = {str(k): int(v) for k, v in connected["ports"].items()}
    requests: list[dict[str, Any]] = []
    idle: dict[str, Any] = {}
    deadline = time.monotonic() + budget
    while True:
        record = lines.get(min(deadline, time.monotonic() + 0.5))
        ctx.progress(time.monotonic() - started, "idle" if not idle else "requests after the pause")
        if record is None:
            if lines.ended or time.monotonic() >= deadline:
                raise ScenarioError(
                    f"the lab client stopped early: {child.stderr_tail() or 'no output'}"
                )
            continue
        kind = record.get("kind")
        if kind == "request":
            requests.append(record)
        elif kind == "idle":
            idle = record
        elif kind == "done":
            return child, lines, started, ports, requests, idle


def _close(child: Child, lines: JsonLines) -> float:
    stdin = child.popen.stdin
    if stdin is not None:
        try:
            stdin.write("close\n")
            stdin.flush()
        except (OSError, ValueError):
            pass
    closed = _await(lines, child, "closed", 10.0)
    child.close_stdin()
    return float(closed["t"])


def _await(lines: JsonLines, child: Child, kind: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record = lines.get(deadline)
        if record is None:
            detail = child.stderr_tail() or "no output"
            raise ScenarioError(f"a lab child stopped before '{kind}': {detail}")
        if record.get("kind") == kind:
            return record


def _counters(topo: Topology, net: _Box) -> dict[str, int]:
    """Packets each refusing rule of the box's filter counted, by midstream state label."""
    text = topo.exec(net.box, ["nft", "-j", "list", "counters", "table", "ip", net.filter_table])
    try:
        items = json.loads(text).get("nftables", [])
        by_name = {
            i["counter"]["name"]: int(i["counter"]["packets"]) for i in items if "counter" in i
        }
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ScenarioError(f"cannot read the middlebox's nft counters: {err}") from None
    return {label: by_name.get(name, 0) for label, name in COUNTERS.items()}


def _icmp_unreachables(topo: Topology, box: Host) -> int | None:
    """Icmp.OutDestUnreachs of the box (/proc/net/snmp, per namespace)."""
    try:
        return parse_snmp(topo.exec(box, ["cat", "/proc/net/snmp"]))["Icmp.OutDestUnreachs"]
    except (TcpDoctorError, KeyError):
        return None


class _ConntrackSampler:
    """The box's conntrack table, read every CT_SAMPLE_S from /proc/net/nf_conntrack (a
    read also removes expired entries, so it shows the table as lookups see it)."""

    MAX_SAMPLES = 20_000

    def __init__(self, box: Host) -> None:
        self._box = box
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lab-conntrack", daemon=True)
        self.samples: list[tuple[float, Mapping[int, tuple[str, int]]]] = []
        self.available = True

    def start(self) -> _ConntrackSampler:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set() and len(self.samples) < self.MAX_SAMPLES:
            done = _proc.run(_proc.in_netns(self._box.netns, ["cat", CT_TABLE]), check=False)
            if done.returncode != 0:
                self.available = False  # CONFIG_NF_CONNTRACK_PROCFS off: no table to read
                return
            self.samples.append((time.monotonic(), parse_conntrack(done.stdout)))
            self._stop.wait(CT_SAMPLE_S)

    def stop(self) -> tuple[tuple[float, Mapping[int, tuple[str, int]]], ...] | None:
        self._stop.set()
        self._thread.join(timeout=CT_SAMPLE_S * 4 + 20)
        return tuple(self.samples) if self.available else None


def parse_conntrack(text: str) -> dict[int, tuple[str, int]]:
    """TCP entries of /proc/net/nf_conntrack by original source port: (state, seconds left).
    Line: "ipv4 2 tcp 6 <left> <STATE> src=.. dst=.. sport=P dport=.. src=.. ..." """
    entries: dict[int, tuple[str, int]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or fields[2] != "tcp" or not fields[4].isdigit():
            continue
        sport = next((f[6:] for f in fields if f.startswith("sport=")), "")
        if sport.isdigit():
            entries.setdefault(int(sport), (fields[5], int(fields[4])))
    return entries


# --- from raw records to the model's Observed -------------------------------------------


def _observe(got: _Run, net: _Box) -> Observed:
    plain, keep = got.ports[PLAIN], got.ports[KEEPALIVE]
    request_rt = got.idle_end + got.offset
    sent = _client_data(got.segments, net, plain, request_rt)
    first_probe, probes = _probes(got.segments, net, keep, got.idle_start + got.offset, request_rt)
    return Observed(
        outcomes={
            str(r["conn"]): "ok" if r.get("ok") else str(r.get("error"))
            for r in got.requests
            if r.get("phase") == "after"
        },
        ct_listing=got.ct_samples is not None,
        ct_gone_after=_gone_after(got, plain, _last_packet(got.segments, plain, request_rt)),
        keepalive_entry_kept=_kept(got, keep),
        first_probe_after=first_probe,
        probes_before_request=probes,
        arrived_after_pause=sum(1 for s in sent if s.dst == str(VIP)),
        forwarded_after_pause=sum(1 for s in sent if s.dst == net.server_address),
        counters=got.counters,
        icmp_unreachable=got.icmp_unreachable,
    )


def _client_data(
    segments: Sequence[Segment], net: _Box, port: int, since_rt: float
) -> list[Segment]:
    """Segments with data the client sent on one connection from `since_rt` on, reaching
    the box (to the VIP) and leaving it (to the server). A few ms of slop: the child reads
    its clock just before it sends."""
    return [
        s
        for s in segments
        if s.sport == port and s.src == net.client_address and s.payload_len
        if s.t >= since_rt - REQUEST_SLOP_S
    ]


def _last_packet(segments: Sequence[Segment], port: int, before_rt: float) -> float | None:
    """The connection's last segment, either way, before `before_rt`: when conntrack
    refreshed its entry for the last time."""
    times = [s.t for s in segments if port in (s.sport, s.dport)]
    return max((t for t in times if t < before_rt), default=None)


def _client_link(segments: Sequence[Segment]) -> list[Segment]:
    """What crossed the box's client-side link: the addresses there are client <-> VIP."""
    return [s for s in segments if str(VIP) in (s.src, s.dst)]


def _probes(
    segments: Sequence[Segment], net: _Box, port: int, idle_start_rt: float, request_rt: float
) -> tuple[float | None, int]:
    """(first probe, after the last segment the client received; probes before the
    request), on the box's client-side link."""
    link0 = _client_link(segments)
    flow = Flow(net.client_address, port, str(VIP), PORT)
    probes = [p for p in keepalive_probes(link0, flow) if idle_start_rt <= p.t < request_rt]
    if not probes:
        return None, 0
    to_client = [s.t for s in link0 if s.dst == net.client_address and s.dport == port]
    last_rx = max((t for t in to_client if t < probes[0].t), default=None)
    return (None if last_rx is None else probes[0].t - last_rx), len(probes)


def _gone_after(got: _Run, port: int, last_packet_rt: float | None) -> float | None:
    """Seconds from the flow's last packet to the first table sample without its entry."""
    if got.ct_samples is None or last_packet_rt is None:
        return None
    seen = False
    for at, entries in got.ct_samples:
        if port in entries:
            seen = True
        elif seen and at + got.offset > last_packet_rt:
            return at + got.offset - last_packet_rt
    return None


def _kept(got: _Run, port: int) -> bool | None:
    if got.ct_samples is None:
        return None
    during = [e for at, e in got.ct_samples if got.started <= at <= got.idle_end]
    return bool(during) and all(port in entries for entries in during)


# --- timeline and picture -----------------------------------------------------------------


def _timeline(got: _Run, net: _Box, observed: Observed) -> Timeline:
    t0 = got.started
    recorder = TimelineRecorder(got.closed_at - t0)
    for r in got.requests:
        outcome = "ok" if r.get("ok") else str(r.get("error"))
        recorder.attempt(float(r["ended"]) - t0, None if r.get("ok") else outcome)
        recorder.event(float(r["sent"]) - t0, f"request_{r['phase']}", f"{r['conn']}: {outcome}")
    recorder.event(got.idle_start - t0, "idle_start", f"{got.idle_end - got.idle_start:.3f} s")
    for sample in got.states:
        recorder.states(sample.at - t0, sample.host, sample.counts)
    if got.ct_samples is not None:
        _conntrack_states(recorder, got, t0)
    to_lab = got.offset + t0  # capture time (realtime) -> seconds since t0
    flow = Flow(net.client_address, got.ports[KEEPALIVE], str(VIP), PORT)
    for probe in keepalive_probes(_client_link(got.segments), flow):
        recorder.event(probe.t - to_lab, "keepalive_probe", KEEPALIVE)
    request_rt = got.idle_end + got.offset
    for s in _client_data(got.segments, net, got.ports[PLAIN], request_rt):
        if s.dst == str(VIP):
            recorder.event(s.t - to_lab, "request_at_box", PLAIN)
    last = _last_packet(got.segments, got.ports[PLAIN], request_rt)
    if observed.ct_gone_after is not None and last is not None:
        recorder.event(last + observed.ct_gone_after - to_lab, "ct_forgotten", PLAIN)
    return recorder.freeze()


def _conntrack_states(recorder: TimelineRecorder, got: _Run, t0: float) -> None:
    """Per connection, the box's entry state as a one-socket count (absent: nothing)."""
    names = {port: name for name, port in got.ports.items()}
    assert got.ct_samples is not None
    for at, entries in got.ct_samples:
        for port, name in names.items():
            entry = entries.get(port)
            recorder.states(at - t0, f"box conntrack {name}", {entry[0]: 1} if entry else {})


def _notes(exp: Expectation, got: _Run) -> list[str]:
    notes = [
        f"nf_conntrack_tcp_loose={exp.tcp_loose}: a segment without SYN for a forgotten flow "
        f"is ct state {exp.midstream.label}",
        "the capture (--pcap) is taken in the box on both links: the client side shows "
        "the VIP, the server side the server's address",
    ]
    if got.ct_samples is None:
        notes.append(f"{CT_TABLE} is not available (CONFIG_NF_CONNTRACK_PROCFS): no table samples")
    return notes


def draw(result: ScenarioResult, plt: Any) -> Any:
    """One lane per connection: the box's conntrack entry, probes, the request after the
    pause (and its retransmissions reaching the box), on one time axis."""
    timeline = result.timeline
    fig, axis = plt.subplots(figsize=(10, 4))
    lanes = {PLAIN: 1.0, KEEPALIVE: 0.0}
    labels = {PLAIN: "no keepalive", KEEPALIVE: _keepalive_label(result.params)}
    for name, y in lanes.items():
        present = [b.t for b in timeline.buckets if b.states.get(f"box conntrack {name}")]
        for t in present:
            axis.barh(y, 1.0, left=t, height=0.35, color="tab:blue", alpha=0.25)
        axis.text(-0.2, y, labels[name], ha="right", va="center", fontsize=9)
    marks = {
        "keepalive_probe": ("|", "tab:green", "keepalive probe"),
        "request_at_box": ("x", "tab:red", "request reaching the box"),
        "ct_forgotten": ("v", "black", "conntrack entry gone"),
    }
    for kind, (marker, colour, label) in marks.items():
        points = [(e.t, lanes.get(e.detail, 0.5)) for e in timeline.events if e.kind == kind]
        if points:
            xs, ys = zip(*points, strict=True)
            axis.scatter(xs, ys, marker=marker, color=colour, s=80, label=label, zorder=3)
    for event in timeline.events:
        if event.kind == "request_after":
            name, _, outcome = event.detail.partition(": ")
            colour = "tab:green" if outcome == "ok" else "tab:red"
            axis.annotate(outcome, (event.t, lanes.get(name, 0.5) + 0.25), color=colour, fontsize=9)
        if event.kind == "idle_start":
            axis.axvline(event.t, color="tab:gray", linestyle="--", linewidth=1)
    axis.set_yticks([])
    axis.set_ylim(-0.6, 1.6)
    axis.set_xlabel("seconds since the connections opened (shaded: the box has the flow)")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8)
    verdict_ = "agree" if result.agree else "DISAGREE"
    fig.suptitle(f"{result.scenario}: measured vs expected {verdict_}", fontsize=11)
    fig.tight_layout()
    return fig


def _keepalive_label(params: Mapping[str, Any]) -> str:
    return f"keepalive {params.get('keepalive_idle')}/{params.get('keepalive_intvl')} s"


def _teaches() -> str:
    return (
        "A conntrack middlebox forgets a connection that stays silent longer than its "
        "established timeout; both ends still show ESTABLISHED, and the next request is "
        "dropped as a new flow without SYN, so it times out instead of failing fast. "
        "Keepalive probes more frequent than the box's timeout keep the entry alive."
    )


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="a conntrack middlebox forgets an idle connection (the next request times out); "
    "keepalive shorter than its timeout keeps it",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=_teaches(),
)

__all__ = ["NAME", "SCENARIO", "draw", "parse_conntrack"]
