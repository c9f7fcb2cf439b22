"""time-wait-restart: a FIN the peer retransmits re-arms TIME_WAIT to a full 60 s.

Topology: client --veth-- server (198.18.0.1 -> 198.18.0.2:8080), one connection. Just
before the client closes, an nftables rule in the client's namespace starts dropping the
client's pure ACKs on their way out. The client's FIN goes out, the server answers with
its own FIN and waits in LAST_ACK for an ACK that never reaches it, so it retransmits the
FIN on its retransmission timer until tcp_orphan_retries (set small on the server) makes
it give up. Every retransmitted FIN reaches the client's TIME_WAIT minisock. A capture on
the client's interface gives the FIN arrival times; socket samples every 10 ms give the
TIME_WAIT's expires_ms, from which the moment its timer was (re-)armed follows:
sample time + expires_ms - 60 s.

Expected, from kernel/: time_wait_action() (tcp_timewait_state_process()) says a
retransmitted FIN, an out-of-window segment carrying ACK, re-arms the timer to
TCP_TIMEWAIT_LEN; so the armed moment jumps to each FIN's arrival, and the TIME_WAIT ends
60 s (plus timer_slack) after the LAST FIN, not after the first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tcpdoctor.kernel.constants import TCP_TIMEWAIT_LEN
from tcpdoctor.kernel.timing import TimeWaitAction, orphan_give_up, time_wait_action
from tcpdoctor.lab.model import (
    Check,
    Measure,
    Param,
    ParamValues,
    RunContext,
    ScenarioResult,
    ScenarioSpec,
    Window,
    at_least,
    exact,
    tolerance,
    within,
)
from tcpdoctor.lab.pcap import Segment, TcpFlags
from tcpdoctor.lab.scenarios import _lifecycle as lc
from tcpdoctor.lab.scenarios._lifecycle_model import (
    MS,
    Mark,
    SocketSample,
    build_timeline,
    follow,
    last_at,
    lifetime_window,
    max_gap,
    max_read,
    of_host,
    r6,
    verdict,
)
from tcpdoctor.lab.sysctl_args import SysctlSetting

NAME = "time-wait-restart"
TIME_WAIT = "TIME_WAIT"
LAST_ACK = "LAST_ACK"
ORPHAN_RETRIES = "net.ipv4.tcp_orphan_retries"
FAST_PERIOD_S = 0.01  # while FINs arrive: well below the 200 ms RTO floor
SERVER_EVERY = 10  # meanwhile the server (only watched for its LAST_ACK's end) every 100 ms
SETTLE_S = 0.15  # before the drop rule: the last data ACKs are out, baseline samples taken
AFTER_FIN_S = 0.001  # a sample this long after a FIN's capture time has seen it processed
GIVE_UP_FACTOR = 4.0  # the peer's LAST_ACK lasts longer than orphan_give_up() says (notes)
WAIT_MARGIN_S = 5.0
PURE_ACK = "tcp flags & (fin | syn | rst | ack) == ack"

PARAMS = (
    Param(
        "orphan_retries",
        int,
        3,
        2,
        "net.ipv4.tcp_orphan_retries on the server: how long its LAST_ACK retransmits the "
        "FIN (a --sysctl value wins).",
        1,
        8,
    ),
    Param(
        "period",
        float,
        0.1,
        0.1,
        "Seconds between socket samples once the FINs have stopped.",
        0.01,
        1.0,
    ),
)


@dataclass(frozen=True)
class Expectation:
    time_wait: float
    slack: float
    hz: int | None
    orphan_retries: int

    @property
    def jiffy(self) -> float:
        return 1.0 / (self.hz or 100)

    def as_dict(self) -> dict[str, Measure]:
        return {
            "time_wait_s": self.time_wait,
            "timer_slack_s": self.slack,
            "rearm_offset_s": 0.0,
            "ends_after_last_fin_s": self.time_wait,
            "acks_on_wire": 0,
        }


def expect(orphan_retries: int, slack: float, hz: int | None) -> Expectation:
    return Expectation(TCP_TIMEWAIT_LEN, slack, hz, orphan_retries)


# --- measurement --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fin:
    at: float  # capture time at the client (unix)
    flags: TcpFlags
    armed: float | None  # the TIME_WAIT's armed moment in the first sample after it
    before: float | None  # seconds left on the timer in the last sample before it
    after: float | None  # and in the first sample after it
    before_at: float | None  # when those two samples were taken
    after_at: float | None

    @property
    def action(self) -> TimeWaitAction:
        """What the kernel does with it (an old duplicate FIN: out of window)."""
        rst, ack = bool(self.flags & TcpFlags.RST), bool(self.flags & TcpFlags.ACK)
        return time_wait_action(rst=rst, ack=ack, in_window=False)


@dataclass(frozen=True)
class Measured:
    close: float
    fins: tuple[Fin, ...]
    acks_on_wire: int  # pure ACKs the client got out after its close (the rule drops them)
    gone_at: float | None
    last_ack_gone: float | None  # the server's LAST_ACK disappeared
    resolution: float  # for gone_at
    read_latency: float  # longest socket read
    fin_sampling_gap: float  # longest gap between client samples while FINs arrived

    @property
    def after_last_fin(self) -> float | None:
        if self.gone_at is None or not self.fins:
            return None
        return self.gone_at - self.fins[-1].at

    def offsets(self) -> list[float | None]:
        return [None if f.armed is None else f.armed - f.at for f in self.fins]

    def as_dict(self) -> dict[str, Measure]:
        first = self.fins[0].at if self.fins else None
        found: dict[str, Measure] = {
            "fins": len(self.fins),
            "fin_retransmissions": max(0, len(self.fins) - 1),
            "acks_on_wire": self.acks_on_wire,
            "last_fin_after_first_s": None if first is None else r6(self.fins[-1].at - first),
            "ends_after_last_fin_s": r6(self.after_last_fin),
            "time_wait_total_s": r6(
                None if first is None or self.gone_at is None else self.gone_at - first
            ),
            "peer_last_ack_lasted_s": r6(
                None if first is None or self.last_ack_gone is None else self.last_ack_gone - first
            ),
            "resolution_s": r6(self.resolution),
            "sampling_gap_during_fins_s": r6(self.fin_sampling_gap),
        }
        for k, (fin, offset) in enumerate(zip(self.fins, self.offsets(), strict=True)):
            found[f"fin_{k}_at_s"] = None if first is None else r6(fin.at - first)
            found[f"rearm_{k}_offset_s"] = r6(offset)
            found[f"remaining_before_fin_{k}_s"] = r6(fin.before)
            found[f"remaining_after_fin_{k}_s"] = r6(fin.after)
        return found


def fin_arrivals(segments: Sequence[Segment], server: str, port: int) -> list[Segment]:
    """The server's FIN and its retransmissions, as the client's interface received them."""
    return [
        s
        for s in segments
        if s.src == server and s.sport == lc.SERVER_PORT and s.dport == port
        and s.flags & TcpFlags.FIN and not s.outgoing
    ]  # fmt: skip


def acks_sent(segments: Sequence[Segment], port: int, after: float) -> int:
    """Pure ACKs from the client's port seen on the wire after `after`."""
    bare = TcpFlags.FIN | TcpFlags.SYN | TcpFlags.RST
    return sum(
        1
        for s in segments
        if s.sport == port and s.outgoing and s.t > after and s.flags & TcpFlags.ACK
        and not s.flags & bare
    )  # fmt: skip


def _armed(sample: SocketSample, port: int, length: float) -> tuple[float, float] | None:
    """(armed moment, seconds left) from one sample, while the timer is not yet due."""
    row = sample.find(port, TIME_WAIT)
    if row is None or row.expires_ms <= 0:
        return None
    left = row.expires_ms * MS
    return sample.at + left - length, left


def read_fins(
    fins: Sequence[Segment], samples: Sequence[SocketSample], port: int, length: float
) -> tuple[Fin, ...]:
    client = of_host(samples, "client")
    found = []
    for k, fin in enumerate(fins):
        following = fins[k + 1].t if k + 1 < len(fins) else float("inf")
        before = [(s.at, a) for s in client if s.at < fin.t and (a := _armed(s, port, length))]
        after = [
            (s.at, a)
            for s in client
            if fin.t + AFTER_FIN_S < s.at < following and (a := _armed(s, port, length))
        ]
        found.append(
            Fin(
                at=fin.t,
                flags=fin.flags,
                armed=after[0][1][0] if after else None,
                before=before[-1][1][1] if before else None,
                after=after[0][1][1] if after else None,
                before_at=before[-1][0] if before else None,
                after_at=after[0][0] if after else None,
            )
        )
    return tuple(found)


def measure(
    samples: Sequence[SocketSample], segments: Sequence[Segment], closed: lc.Closed, server: str
) -> Measured:
    fins = read_fins(
        fin_arrivals(segments, server, closed.port), samples, closed.port, TCP_TIMEWAIT_LEN
    )
    track = follow(samples, "client", closed.port, TIME_WAIT)
    peer = follow(samples, "server", lc.SERVER_PORT, LAST_ACK)
    late = [s for s in samples if fins and s.at > fins[-1].at]
    return Measured(
        close=closed.t,
        fins=fins,
        acks_on_wire=acks_sent(segments, closed.port, closed.t_call),
        gone_at=track.gone_at,
        last_ack_gone=peer.gone_at,
        resolution=max_gap(late, "client") + max_read(late),
        read_latency=max_read(samples),
        fin_sampling_gap=max_gap([s for s in samples if fins and s.at <= fins[-1].at], "client"),
    )


# --- comparison ---------------------------------------------------------------------------


def compare(exp: Expectation, got: Measured) -> tuple[Check, ...]:
    checks = [
        exact(
            "acks_on_wire",
            "client ACKs that got past the drop rule",
            0,
            got.acks_on_wire,
            basis="the experiment's nftables rule (the peer must not see our ACK)",
        ),
        at_least(
            "fin_retransmissions",
            "FINs the server retransmitted",
            1,
            max(0, len(got.fins) - 1),
            basis="LAST_ACK retransmits its FIN until tcp_orphan_retries gives up",
        ),
    ]
    rearm = tolerance(0.0, resolution=exp.jiffy, early=exp.jiffy + got.read_latency)
    offsets = got.offsets()
    for k, fin in enumerate(got.fins):
        checks.append(_rearm_check(k, fin, offsets[k], rearm))
    checks.append(
        within(
            "ends_after_last_fin_s",
            "TIME_WAIT ended after the last FIN",
            lifetime_window(exp.time_wait, exp.slack, got.resolution),
            got.after_last_fin,
            basis="TCP_TIMEWAIT_LEN from the last re-arm, + timer_slack(60 s)",
        )
    )
    return tuple(checks)


def _rearm_check(k: int, fin: Fin, offset: float | None, window: Window) -> Check:
    if k == 0:
        what, basis = "timer armed at the first FIN (armed - arrival)", "tcp_time_wait(): 60 s"
    else:
        what = f"timer re-armed at retransmitted FIN {k} (armed - arrival)"
        basis = f"time_wait_action(): {fin.action.label} (FIN with ACK, out of window)"
    if k > 0 and fin.action is not TimeWaitAction.REARM:
        return exact(f"rearm_{k}_offset_s", what, None, offset, basis=basis)
    return within(f"rearm_{k}_offset_s", what, window, offset, basis=basis)


# --- the run ------------------------------------------------------------------------------


def run(ctx: RunContext, values: ParamValues) -> ScenarioResult:
    started = time.monotonic()
    retries = lc.chosen(ctx.sysctls, ORPHAN_RETRIES, str(values["orphan_retries"]))
    server_settings = lc.with_setting(ctx.sysctls, ORPHAN_RETRIES, retries)
    pair = lc.build_pair(ctx, client=ctx.sysctls, server=server_settings, show=(ORPHAN_RETRIES,))
    exp = expect(int(retries), ctx.hz.max_lateness(TCP_TIMEWAIT_LEN), ctx.hz.hz)
    table = ctx.topology.nft_table(
        pair.client,
        "ackdrop",
        "  chain output {\n    type filter hook output priority filter; policy accept;\n  }",
    )
    lc.LabServer.start(ctx.topology, pair.server, pair.server_address, on_eof="close")
    client = lc.LabClient.start(ctx.topology, pair.client, pair.server_address, 1)
    packets = lc.Packets(ctx, pair.client, [pair.link.a.device])
    every = {"server": SERVER_EVERY}
    sampler = lc.SocketSampler([pair.client, pair.server], FAST_PERIOD_S, every).start()
    try:
        closed = _close_with_acks_dropped(ctx, pair, table, client)
        _wait_out(ctx, sampler, exp, closed, float(values["period"] or 0.1), started)
    finally:
        samples = sampler.stop()
        segments = packets.stop()
    got = measure(samples, segments, closed, pair.server_address)
    checks = compare(exp, got)
    t0 = got.fins[0].at if got.fins else closed.t
    return ScenarioResult(
        scenario=NAME,
        run_id=ctx.topology.run_id,
        params=dict(values),
        sysctls=pair.sysctls,
        expected=exp.as_dict(),
        measured=got.as_dict(),
        checks=checks,
        verdict=verdict(checks),
        timeline=build_timeline(samples, t0, last_at(samples), _marks(closed, got)),
        duration_s=time.monotonic() - started,
        kernel_release=os.uname().release,
        hz=ctx.hz.hz,
        hz_source=ctx.hz.source,
        notes=_notes(exp, got),
        pcap=packets.pcap,
    )


def _close_with_acks_dropped(
    ctx: RunContext, pair: lc.Pair, table: str, client: lc.LabClient
) -> lc.Closed:
    time.sleep(SETTLE_S)
    rule = (
        f"add rule inet {table} output ip daddr {pair.server_address} "
        f"tcp dport {lc.SERVER_PORT} {PURE_ACK} counter drop"
    )
    ctx.topology.exec(pair.client, ["nft", rule])
    return client.close(0, "close")


def _wait_out(
    ctx: RunContext,
    sampler: lc.SocketSampler,
    exp: Expectation,
    closed: lc.Closed,
    period: float,
    started: float,
) -> None:
    """Fast samples until the server's LAST_ACK gave up, then slow ones until the
    TIME_WAIT is gone."""
    give_up = (
        orphan_give_up(exp.orphan_retries).schedule.gives_up_at * GIVE_UP_FACTOR + WAIT_MARGIN_S
    )
    peer_done = lc.gone_from("server", [lc.SERVER_PORT], LAST_ACK)
    lc.wait_reporting(
        sampler, peer_done, closed.t + give_up, ctx.progress, started, "FINs arriving"
    )
    time.sleep(SETTLE_S)
    sampler.period, sampler.every = period, {}
    deadline = time.time() + exp.time_wait + exp.slack + WAIT_MARGIN_S
    done = lc.gone_from("client", [closed.port], TIME_WAIT)
    lc.wait_reporting(sampler, done, deadline, ctx.progress, started, "TIME_WAIT running")


def _marks(closed: lc.Closed, got: Measured) -> list[Mark]:
    marks = [Mark(closed.t, "close", f"port {closed.port}")]
    for k, fin in enumerate(got.fins):
        marks.append(Mark(fin.at, "fin", f"FIN {k}"))
        if fin.armed is not None:
            marks.append(Mark(fin.armed, "rearm", f"FIN {k}"))
        if fin.before is not None and fin.before_at is not None:
            marks.append(Mark(fin.before_at, "remaining_before", f"{fin.before:.3f}"))
        if fin.after is not None and fin.after_at is not None:
            marks.append(Mark(fin.after_at, "remaining_after", f"{fin.after:.3f}"))
    if got.last_ack_gone is not None:
        marks.append(Mark(got.last_ack_gone, "last_ack_end", "the server's orphan gave up"))
    if got.gone_at is not None:
        marks.append(Mark(got.gone_at, "time_wait_end", f"port {closed.port}"))
    return marks


def _notes(exp: Expectation, got: Measured) -> tuple[str, ...]:
    model = orphan_give_up(exp.orphan_retries)
    notes = [
        "armed moment = sample time + expires_ms - 60 s; it moves only when a FIN arrives",
        f"the server's LAST_ACK sent {len(got.fins)} FINs; orphan_give_up("
        f"{exp.orphan_retries}) models {model.schedule.retransmissions} retransmissions by "
        f"{model.schedule.gives_up_at:g} s (the tail loss probe that comes first is not in that "
        "model; the FIN timing is the retransmission scenarios' subject, not this one's)",
    ]
    if len(got.fins) > 1:
        extra = got.fins[-1].at - got.fins[0].at
        notes.append(f"the restarts made this TIME_WAIT last {extra:.3f} s longer than one 60 s")
    return tuple(notes)


def validate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> None:
    return None


def estimate(values: ParamValues, user: tuple[SysctlSetting, ...]) -> float:
    retries = int(lc.chosen(user, ORPHAN_RETRIES, str(values["orphan_retries"])))
    tail = orphan_give_up(retries).schedule.retransmit_times[-1:] or (0.0,)
    return TCP_TIMEWAIT_LEN + 2.0 * tail[0] + 2.5


def draw(result: ScenarioResult, plt: Any) -> Any:
    """`--plot`: the timer's remaining time jumping back to 60 s at each FIN."""
    from tcpdoctor.lab.scenarios._lifecycle_plot import draw_time_wait_restart

    return draw_time_wait_restart(result, plt)


SCENARIO = ScenarioSpec(
    name=NAME,
    summary="A FIN the peer retransmits re-arms TIME_WAIT to a full 60 s",
    params=PARAMS,
    run=run,
    validate=validate,
    estimate=estimate,
    teaches=(
        "TIME_WAIT exists to answer a peer whose last ACK got lost: every FIN the peer "
        "retransmits (any non-RST segment with ACK) restarts the 60 s timer, so the "
        "TIME_WAIT ends 60 s after the last of them, not 60 s after the close."
    ),
)
