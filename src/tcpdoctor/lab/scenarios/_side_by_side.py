"""Two ways of talking to one real server, measured one after the other (redis-pool,
nginx-keepalive): the plumbing both scenarios share.

Topology: one client host per variant, each with its own veth link to one server host, so
a variant's sockets are told apart by namespace on the client side and by the server's
local address on the server side. One capture in the server host sees every variant's
packets once. A sampler snapshots socket states of every client and of the server (split
by address) at a fixed period; each variant's child reports when its requests are done,
the lab snapshots what the child still holds open, tells it to close, and snapshots
again. Times: monotonic for the lab and children, CLOCK_REALTIME for the capture and
snapshots' taken_at; `clock_offset()` links the two.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpdoctor.errors import ScenarioError
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.lab import _observer
from tcpdoctor.lab._lines import JsonLines
from tcpdoctor.lab.model import RunContext, ScenarioResult
from tcpdoctor.lab.pcap import Segment, TcpFlags
from tcpdoctor.lab.scenarios._closes import Connection, connections, to_server
from tcpdoctor.lab.scenarios._variant_model import StateCount, VariantFacts
from tcpdoctor.lab.topology import Child, Host, Link, Topology
from tcpdoctor.observe import snapshot
from tcpdoctor.timeline import Timeline, TimelineRecorder

SAMPLE_PERIOD_S = 0.5
SETTLE_S = 0.3  # after a close: let FINs and their ACKs cross before counting
READY_TIMEOUT_S = 15.0  # python start-up inside a namespace on a busy 2-core machine
CLOSE_TIMEOUT_S = 10.0
TIME_WAIT = TcpState.TIME_WAIT.label
ESTABLISHED = TcpState.ESTABLISHED.label
Counts = Mapping[str, int]


@dataclass(frozen=True)
class Variant:
    key: str  # one word: the client host's role and the prefix of its timeline hosts
    label: str  # for people
    client: Host
    link: Link

    @property
    def server_address(self) -> str:
        return str(self.link.b.address)

    @property
    def client_address(self) -> str:
        return str(self.link.a.address)

    @property
    def client_key(self) -> str:
        return f"{self.key} client"

    @property
    def server_key(self) -> str:
        return f"{self.key} server"


def build(topo: Topology, variants: Sequence[tuple[str, str]]) -> tuple[Host, tuple[Variant, ...]]:
    """A server host and one linked client host per (key, label)."""
    server = topo.add_host("server")
    built = []
    for key, label in variants:
        client = topo.add_host(key)
        built.append(Variant(key, label, client, topo.link(client, server)))
    return server, tuple(built)


def clock_offset() -> float:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC, now (drift over a run is negligible)."""
    return time.time() - time.monotonic()


# --- socket states ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic
    taken_at: float  # realtime, from the snapshot
    key: str  # "<variant> client" or "<variant> server"
    counts: Counts


def sample_variant(server: Host, variant: Variant) -> tuple[Sample, Sample]:
    """The variant's client namespace, and the server's sockets on the variant's address."""
    at = time.monotonic()
    mine = snapshot.take(variant.client.target)
    client = {s.label: n for s, n in mine.count_by_state().items()}
    theirs = snapshot.take(server.target)
    on_address: dict[str, int] = {}
    for row in theirs.rows():
        if row.local_address == variant.server_address:
            on_address[row.state.label] = on_address.get(row.state.label, 0) + 1
    return (
        Sample(at, mine.meta.taken_at, variant.client_key, client),
        Sample(at, theirs.meta.taken_at, variant.server_key, on_address),
    )


class Sampler(_observer.Periodic[Sample]):
    """Samples every variant every `period` seconds until stop(); bounded in count."""

    def __init__(
        self, server: Host, variants: Sequence[Variant], period: float = SAMPLE_PERIOD_S
    ) -> None:
        chosen = tuple(variants)
        super().__init__(
            lambda: [s for variant in chosen for s in sample_variant(server, variant)], period
        )


# --- one variant's client -------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One variant's run: its requests, and the states before and after it closed."""

    variant: str
    started: float  # monotonic
    ended: float
    times: tuple[float, ...]  # completion of each successful request (monotonic)
    errors: Mapping[str, tuple[float, ...]]
    extra: Mapping[str, Any]
    held: tuple[Sample, Sample]  # (client, server) once done, before the close
    closed_at: float
    after: tuple[Sample, Sample]  # after the close and SETTLE_S

    @property
    def requests(self) -> int:
        return len(self.times) + sum(len(t) for t in self.errors.values())

    @property
    def failures(self) -> int:
        return sum(len(t) for t in self.errors.values())

    @property
    def rate(self) -> float | None:
        """Successful requests per second over the phase."""
        span = self.ended - self.started
        return len(self.times) / span if span > 0 and self.times else None


def run_variant(
    topo: Topology,
    server: Host,
    variant: Variant,
    module: str,
    args: Sequence[str],
    budget_s: float,
) -> Phase:
    """Run one variant's child to the end and return what it and the sockets showed."""
    child = topo.spawn(variant.client, module, args)
    lines = JsonLines(child.stdout)
    start = _expect(lines, child, "start", time.monotonic() + READY_TIMEOUT_S)
    done = _expect(lines, child, "done", time.monotonic() + budget_s)
    held = sample_variant(server, variant)
    _send(child, "close")
    closed = _expect(lines, child, "closed", time.monotonic() + CLOSE_TIMEOUT_S)
    time.sleep(SETTLE_S)
    after = sample_variant(server, variant)
    child.close_stdin()
    try:
        return Phase(
            variant=variant.key,
            started=float(start["t0"]),
            ended=float(done["ended"]),
            times=tuple(float(t) for t in done["times"]),
            errors={str(k): tuple(float(t) for t in v) for k, v in done["errors"].items()},
            extra={k: v for k, v in done.items() if k not in _DONE_KEYS},
            held=held,
            closed_at=float(closed["t"]),
            after=after,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ScenarioError(f"the lab client reported a malformed record: {done}") from None


_DONE_KEYS = frozenset({"kind", "times", "errors", "ended"})


def _send(child: Child, line: str) -> None:
    stdin = child.popen.stdin
    if stdin is None:
        return
    with contextlib.suppress(OSError, ValueError):
        stdin.write(line + "\n")
        stdin.flush()


def _expect(lines: JsonLines, child: Child, kind: str, deadline: float) -> dict[str, Any]:
    while True:
        record = lines.get(deadline)
        if record is None:
            detail = child.stderr_tail() or "no output"
            raise ScenarioError(f"the lab client stopped before '{kind}': {detail}")
        if record.get("kind") == kind:
            return record


# --- capture ----------------------------------------------------------------------------------


def capture_path(ctx: RunContext, work: Path) -> Path:
    """--pcap's file when given, else one in the run's work directory: these scenarios
    always capture, because who closed first and the handshakes are read from packets."""
    return ctx.pcap if ctx.pcap is not None else work / "server.pcap"


def syn_times(segments: Sequence[Segment], address: str) -> list[float]:
    """First transmissions of SYNs to `address` (realtime), retransmissions left out."""
    seen: set[tuple[str, int]] = set()
    times = []
    for s in segments:
        syn = s.flags & (TcpFlags.SYN | TcpFlags.ACK) == TcpFlags.SYN
        if syn and s.dst == address and (s.src, s.sport) not in seen:
            seen.add((s.src, s.sport))
            times.append(s.t)
    return times


# --- timeline -----------------------------------------------------------------------------


def timeline(
    variants: Sequence[Variant],
    phases: Sequence[Phase],
    samples: Sequence[Sample],
    conns: Mapping[str, Sequence[Connection]],
    offset: float,
) -> Timeline:
    """Requests per second, states per variant host, and events; t = 0 at the first start.
    Capture times (realtime) are moved onto the monotonic axis with `offset`."""
    t0 = min(p.started for p in phases)
    end = max(p.closed_at for p in phases) - t0
    recorder = TimelineRecorder(end)
    labels = {v.key: v.label for v in variants}
    for phase in phases:
        label = labels[phase.variant]
        recorder.event(phase.started - t0, "variant_start", phase.variant)
        for t in phase.times:
            recorder.attempt(t - t0)
        for name, times in phase.errors.items():
            for t in times:
                recorder.attempt(t - t0, name)
        recorder.event(phase.ended - t0, "variant_done", f"{label}: {len(phase.times)} ok")
        recorder.event(phase.closed_at - t0, "variant_closed", phase.variant)
    # In time order: within a second the recorder keeps the last sample it was given.
    every = [*samples, *(s for p in phases for s in (*p.held, *p.after))]
    for sample in sorted(every, key=lambda s: s.at):
        recorder.states(sample.at - t0, sample.key, sample.counts)
    for key, found in conns.items():
        per_second: dict[int, int] = {}
        for conn in found:
            second = max(0, int(conn.syn_at - offset - t0))
            per_second[second] = per_second.get(second, 0) + 1
        for second, count in sorted(per_second.items()):
            recorder.event(float(second), HANDSHAKES, f"{key}:{count}")
    return recorder.freeze()


HANDSHAKES = "handshakes"  # event: SYNs one variant sent within one second, "<key>:<count>"


def handshakes_per_second(timeline: Timeline, key: str) -> dict[int, int]:
    """The HANDSHAKES events of one variant, second -> count."""
    counts: dict[int, int] = {}
    for event in timeline.events:
        name, _, number = event.detail.partition(":")
        if event.kind == HANDSHAKES and name == key and number.isdigit():
            counts[int(event.t)] = counts.get(int(event.t), 0) + int(number)
    return counts


# --- the picture ----------------------------------------------------------------------------


def draw(result: ScenarioResult, plt: Any, variants: Sequence[tuple[str, str]], what: str) -> Any:
    """Variants side by side, on one scale per row: TIME_WAIT on each side over time (top),
    requests done and handshakes made (bottom), each on the variant's own time axis."""
    timeline = result.timeline
    starts = {e.detail: e.t for e in timeline.events if e.kind == "variant_start"}
    columns = len(variants)
    fig, axes = plt.subplots(2, columns, figsize=(5.5 * columns, 6), squeeze=False, sharey="row")
    windows = _windows(variants, starts, len(timeline.buckets))
    span = float(max(stop - start for start, stop in windows.values()))  # one time scale
    for column, (key, label) in enumerate(variants):
        start = windows[key][0]
        _draw_states(axes[0][column], timeline, key, start, span)
        _draw_counts(axes[1][column], timeline, key, start, span, what)
        axes[0][column].set_title(label, fontsize=10)
        for axis in (axes[0][column], axes[1][column]):
            axis.set_xlim(0, span)
    verdict = "agree" if result.agree else "DISAGREE"
    fig.suptitle(f"{result.scenario}: measured vs expected {verdict}", fontsize=11)
    fig.tight_layout()
    return fig


def _windows(
    variants: Sequence[tuple[str, str]], starts: Mapping[str, float], buckets: int
) -> dict[str, tuple[int, int]]:
    """Each variant's whole seconds: from its start to the next variant's start (variants
    start in a fresh bucket); the last one to the end of the timeline."""
    firsts = sorted(int(t) for t in starts.values())
    windows = {}
    for key, _label in variants:
        start = int(starts.get(key, 0.0))
        later = [t for t in firsts if t > start]
        stop = later[0] if later else buckets
        windows[key] = (start, max(start + 1, stop))
    return windows


def _draw_states(axis: Any, timeline: Timeline, key: str, start: int, span: float) -> None:
    for side, colour in (("client", "tab:blue"), ("server", "tab:orange")):
        host = f"{key} {side}"
        points = [
            (b.t - start, b.states[host].get(TIME_WAIT, 0))
            for b in timeline.buckets
            if host in b.states and start <= b.t < start + span
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        axis.step(
            [*xs, xs[-1] + 1],
            [*ys, ys[-1]],
            where="post",
            color=colour,
            label=f"{side} TIME_WAIT (last {ys[-1]})",
        )
    axis.set_ylabel("sockets in TIME_WAIT (sampled)")
    axis.set_ylim(bottom=0)
    axis.legend(loc="upper left", fontsize=8)


def _draw_counts(
    axis: Any, timeline: Timeline, key: str, start: int, span: float, what: str
) -> None:
    shakes = handshakes_per_second(timeline, key)
    done = {b.t - start: b.successes for b in timeline.buckets if start <= b.t < start + span}
    for counts, colour, label in (
        ({t - start: n for t, n in shakes.items()}, "tab:red", "handshakes"),
        (done, "tab:green", f"{what} done"),
    ):
        xs, ys, total = [0.0], [0], 0
        for t in sorted(counts):
            total += counts[t]
            xs.append(t + 1.0)
            ys.append(total)
        axis.plot(xs, ys, color=colour, marker="o", markersize=3, label=f"{label} ({total})")
    axis.set_xlabel("seconds since this variant started")
    axis.set_ylabel("cumulative count")
    axis.set_ylim(bottom=0)
    axis.legend(loc="upper left", fontsize=8)


def check_capture(drops: int | None, notes: list[str]) -> None:
    """A capture that lost packets undercounts handshakes: say so next to the result."""
    if drops:
        notes.append(f"the capture lost {drops} packets: handshake counts may be low")


Draw = Callable[[ScenarioResult, Any], Any]

__all__ = [
    "ESTABLISHED",
    "HANDSHAKES",
    "TIME_WAIT",
    "JsonLines",
    "Phase",
    "Sample",
    "Sampler",
    "Variant",
    "build",
    "capture_path",
    "clock_offset",
    "draw",
    "facts",
    "handshakes_per_second",
    "measure",
    "run_variant",
    "sample_variant",
    "syn_times",
    "timeline",
]


def facts(
    variant: Variant, phase: Phase, conns: Sequence[Connection], samples: Sequence[Sample]
) -> VariantFacts:
    """The measured record of one variant, for the pure model."""
    held_at = phase.held[0].at
    before_close = [
        s.counts.get(TIME_WAIT, 0)
        for s in (*samples, phase.held[0])
        if s.key == variant.client_key and phase.started - 1 <= s.at <= held_at
    ]
    return VariantFacts(
        key=variant.key,
        label=variant.label,
        requests=phase.requests,
        successes=len(phase.times),
        failures={k: len(v) for k, v in phase.errors.items()},
        rate=phase.rate,
        conns=tuple(conns),
        held=(_count(phase.held[0]), _count(phase.held[1])),
        after=(_count(phase.after[0]), _count(phase.after[1])),
        client_tw_before_close=max(before_close, default=0),
    )


def _count(sample: Sample) -> StateCount:
    return StateCount(sample.taken_at, sample.counts)


@dataclass(frozen=True)
class Measurement:
    """Everything one run of the variants produced."""

    phases: tuple[Phase, ...]
    samples: tuple[Sample, ...]
    conns: Mapping[str, tuple[Connection, ...]]  # variant key -> its connections
    offset: float  # realtime - monotonic
    pcap: Path
    capture_drops: int | None

    def facts(self, variants: Sequence[Variant]) -> tuple[VariantFacts, ...]:
        by_key = {p.variant: p for p in self.phases}
        return tuple(facts(v, by_key[v.key], self.conns[v.key], self.samples) for v in variants)


Launch = Callable[[Variant], tuple[str, list[str]]]  # variant -> (child module, its args)


def measure(
    ctx: RunContext,
    server: Host,
    variants: Sequence[Variant],
    launch: Launch,
    pcap: Path,
    budget_s: float,
) -> Measurement:
    """Capture in the server host, sample states, run each variant in turn."""
    from tcpdoctor.lab._pcap_option import start_capture
    from tcpdoctor.lab.pcap import read_pcap

    topo = ctx.topology
    capture = start_capture(topo, server, [v.link.b.device for v in variants], pcap)
    offset = clock_offset()
    sampler = Sampler(server, variants).start()
    phases: list[Phase] = []
    try:
        for variant in variants:
            if phases:
                _next_second(phases[0].started)
            module, args = launch(variant)
            ctx.progress(_elapsed(phases), f"{variant.label}: running")
            phases.append(run_variant(topo, server, variant, module, args, budget_s))
    finally:
        samples = sampler.stop()
        stats = capture.stop()
    conns = connections(read_pcap(capture.pcap).segments)
    return Measurement(
        phases=tuple(phases),
        samples=tuple(samples),
        conns={v.key: tuple(to_server(conns, v.server_address)) for v in variants},
        offset=offset,
        pcap=capture.pcap,
        capture_drops=getattr(stats, "kernel_drops", None),
    )


def _elapsed(phases: Sequence[Phase]) -> float:
    return time.monotonic() - phases[0].started if phases else 0.0


def _next_second(t0: float) -> None:
    """Start the next variant in a fresh one-second bucket of the timeline, so no bucket
    mixes two variants' requests (waits under a second)."""
    elapsed = time.monotonic() - t0
    time.sleep(max(0.0, (int(elapsed) + 1) - elapsed))
