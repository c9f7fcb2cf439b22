"""Pictures for the closing-state scenarios (`lab run NAME --plot out.png`).

Each draw_*() takes a finished ScenarioResult and matplotlib's pyplot (imported by
tcpdoctor.lab.plot, which saves the figure) and draws from the result's timeline only:
its per-second state counts and its events. So a saved `--json` result could be drawn the
same way later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tcpdoctor.lab.model import ScenarioResult
from tcpdoctor.timeline import Event

_COLOURS = {
    "TIME_WAIT": "tab:blue",
    "FIN_WAIT2": "tab:orange",
    "CLOSE_WAIT": "tab:red",
    "LAST_ACK": "tab:purple",
    "ESTABLISHED": "tab:green",
    "FIN_WAIT1": "tab:brown",
}
_STYLES = {"client": "-", "server": "--"}


def _title(fig: Any, result: ScenarioResult) -> None:
    fig.suptitle(f"{result.scenario}: {'agree' if result.agree else 'DISAGREE'}", fontsize=11)


def _events(result: ScenarioResult, kind: str) -> list[Event]:
    return [e for e in result.timeline.events if e.kind == kind]


def _by_port(result: ScenarioResult, kind: str) -> dict[str, float]:
    """Events whose detail starts with "port P": P -> time (the first of each)."""
    found: dict[str, float] = {}
    for event in _events(result, kind):
        words = event.detail.split()
        if len(words) >= 2 and words[0] == "port":
            found.setdefault(words[1], event.t)
    return found


def _number(result: ScenarioResult, key: str, default: float = 0.0) -> float:
    value = result.expected.get(key)
    return float(value) if isinstance(value, int | float) else default


def states_axis(axis: Any, result: ScenarioResult, states: Sequence[str]) -> None:
    """Sockets per state and host, one step line each, from the per-second buckets."""
    buckets = result.timeline.buckets
    hosts = sorted({h for b in buckets for h in b.states})
    for host in hosts:
        for state in states:
            counts = [b.states.get(host, {}).get(state, 0) for b in buckets]
            if any(counts):
                axis.step(
                    [b.t for b in buckets],
                    counts,
                    where="post",
                    color=_COLOURS.get(state),
                    linestyle=_STYLES.get(host, "-"),
                    label=f"{host} {state}",
                )
    axis.set_ylabel("sockets")
    axis.set_ylim(bottom=0)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="upper right", fontsize=8)


def draw_time_wait_duration(result: ScenarioResult, plt: Any) -> Any:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5))
    closes, ends = _by_port(result, "close"), _by_port(result, "time_wait_end")
    nominal = _by_port(result, "nominal_expiry")
    length, slack = _number(result, "time_wait_s", 60.0), _number(result, "timer_slack_s")
    resolution = result.measured.get("resolution_s")
    step = float(resolution) if isinstance(resolution, int | float) else 0.0
    top.axvspan(length, length + slack, color="tab:gray", alpha=0.15, label="timer-wheel slack")
    top.axvline(length, color="black", linewidth=1)
    for row, port in enumerate(closes):
        if port in nominal:
            armed = nominal[port] - closes[port]
            top.plot([armed], [row], marker="|", color="black", markersize=16)
        if port in ends:
            lived = ends[port] - closes[port]
            top.errorbar([lived], [row], xerr=[[step], [0.0]], fmt="o", color="tab:blue", capsize=3)
            top.annotate(f"{lived:.2f} s", (lived, row), xytext=(6, 6), textcoords="offset points")
    top.set_xlim(length - 1.0, length + slack + 1.0)
    top.set_ylim(-0.7, len(closes) - 0.3)
    top.set_yticks(range(len(closes)), [f"port {p}" for p in closes])
    top.set_xlabel("seconds after close()")
    top.set_title(
        "| = the timer's nominal expiry (expires_ms), o = first sample without the socket "
        "(bar: sampling resolution)",
        fontsize=9,
    )
    top.legend(loc="lower right", fontsize=8)
    states_axis(bottom, result, ("TIME_WAIT", "LAST_ACK", "FIN_WAIT2"))
    bottom.set_xlabel("seconds since the first close")
    _title(fig, result)
    fig.tight_layout()
    return fig


def _fin_times(result: ScenarioResult) -> list[float]:
    return [e.t for e in _events(result, "fin")]


def _remaining_line(axis: Any, armed: float, start: float, stop: float, length: float) -> None:
    """The timer's seconds left from `start` to `stop` for a timer armed at `armed`."""
    axis.plot([start, stop], [length - (start - armed), length - (stop - armed)], color="tab:blue")


def _restart_zoom(axis: Any, result: ScenarioResult, length: float) -> None:
    fins = _fin_times(result)
    armed = [e.t for e in _events(result, "rearm")]
    right = (fins[-1] if fins else 0.0) + 0.4
    for k, at in enumerate(armed):
        stop = armed[k + 1] if k + 1 < len(armed) else right
        _remaining_line(axis, at, at, stop, length)
    for kind, marker, label in (
        ("remaining_before", "x", "sample just before a FIN"),
        ("remaining_after", "o", "first sample after it"),
    ):
        points = [(e.t, float(e.detail)) for e in _events(result, kind)]
        if points:
            axis.scatter(*zip(*points, strict=True), marker=marker, color="black", label=label)
    for at in fins:
        axis.axvline(at, color="tab:red", linestyle=":", linewidth=1)
    axis.set_xlim(-0.1, right)
    axis.set_xlabel("seconds since the server's first FIN (red: FIN arrivals)")
    axis.set_ylabel("TIME_WAIT timer: seconds left")
    axis.legend(loc="lower left", fontsize=8)


def _restart_full(axis: Any, result: ScenarioResult, length: float, slack: float) -> None:
    armed = [e.t for e in _events(result, "rearm")]
    ends = _events(result, "time_wait_end")
    if armed:
        due = armed[-1] + length
        _remaining_line(axis, armed[-1], armed[-1], due, length)
        axis.axvspan(due, due + slack, color="tab:gray", alpha=0.15, label="timer-wheel slack")
        axis.axvline(armed[0] + length, color="black", linestyle="--", linewidth=1,
                     label="60 s after the first FIN")  # fmt: skip
    if ends:
        axis.axvline(ends[0].t, color="tab:blue", linewidth=2, label="TIME_WAIT gone")
    axis.set_xlabel("seconds since the server's first FIN")
    axis.legend(loc="lower left", fontsize=8)


def draw_time_wait_restart(result: ScenarioResult, plt: Any) -> Any:
    fig = plt.figure(figsize=(11, 7))
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 2))
    length, slack = _number(result, "time_wait_s", 60.0), _number(result, "timer_slack_s")
    zoom, full = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    _restart_zoom(zoom, result, length)
    zoom.set_title("each FIN puts the timer back to 60 s", fontsize=9)
    _restart_full(full, result, length, slack)
    full.set_title("so it ends 60 s after the LAST FIN", fontsize=9)
    states = fig.add_subplot(grid[1, :])
    states_axis(states, result, ("TIME_WAIT", "LAST_ACK", "FIN_WAIT2"))
    states.set_xlabel("seconds since the server's first FIN (per-second state counts)")
    _title(fig, result)
    fig.tight_layout()
    return fig


def _counter_steps(result: ScenarioResult) -> list[dict[str, int]]:
    """The "counters" events ("tw=3 overflow=1"), one per close, as numbers."""
    steps = []
    for event in _events(result, "counters"):
        pairs = (word.split("=", 1) for word in event.detail.split())
        steps.append({k: int(v) for k, v in pairs if v.lstrip("-").isdigit()})
    return steps


def draw_tw_bucket_overflow(result: ScenarioResult, plt: Any) -> Any:
    fig, axis = plt.subplots(1, 1, figsize=(10, 4.5))
    fates = [e.detail.split()[-1] for e in _events(result, "close")]
    steps = _counter_steps(result)
    numbers = list(range(1, len(fates) + 1))
    colours = ["tab:blue" if f == "time_wait" else "tab:red" for f in fates]
    axis.bar(numbers, [0.4] * len(numbers), color=colours, alpha=0.3, width=0.8)
    for key, colour, label in (
        ("tw", "tab:blue", "TIME_WAITs alive (sockstat TCP tw)"),
        ("overflow", "tab:red", "TCPTimeWaitOverflow rise"),
    ):
        axis.plot(numbers, [s.get(key, 0) for s in steps], marker="o", color=colour, label=label)
    limit = _number(result, "max_tw_buckets")
    axis.axhline(limit, color="black", linestyle="--", linewidth=1, label="tcp_max_tw_buckets")
    rsts = result.measured.get("out_rsts")
    axis.set_title(f"read after each close; RSTs sent by the client: {rsts}", fontsize=9)
    axis.set_xlabel("close number (bar: blue = got its TIME_WAIT, red = destroyed at once)")
    axis.set_ylabel("sockets / count")
    axis.set_xticks(numbers)
    axis.set_ylim(bottom=0)
    axis.legend(loc="upper left", fontsize=8)
    _title(fig, result)
    fig.tight_layout()
    return fig


def _port_details(result: ScenarioResult, kind: str) -> dict[str, tuple[float, str]]:
    """Events with detail "port P WHAT": P -> (time, WHAT)."""
    found: dict[str, tuple[float, str]] = {}
    for event in _events(result, kind):
        words = event.detail.split()
        if len(words) >= 3 and words[0] == "port":
            found.setdefault(words[1], (event.t, " ".join(words[2:])))
    return found


def draw_linger_reset(result: ScenarioResult, plt: Any) -> Any:
    closes = _port_details(result, "close")
    wire, reads = _port_details(result, "wire"), _port_details(result, "peer_read")
    waits = _by_port(result, "time_wait")
    fig, axis = plt.subplots(1, 1, figsize=(10, 1.2 + 0.45 * len(closes)))
    right = max((t for t, _ in [*closes.values(), *reads.values()]), default=1.0) + 0.6
    for row, (port, (at, _mode)) in enumerate(closes.items()):
        axis.plot([at], [row], marker="|", color="black", markersize=14)
        if port in wire:
            sent_at, flag = wire[port]
            colour = "tab:red" if "RST" in flag else "tab:blue"
            axis.plot([sent_at], [row], marker="X" if "RST" in flag else "^", color=colour)
            axis.annotate(flag, (sent_at, row), xytext=(6, 4), textcoords="offset points",
                          color=colour, fontsize=8)  # fmt: skip
        if port in reads:
            read_at, how = reads[port]
            colour = "tab:red" if how != "EOF" else "tab:green"
            axis.annotate(f"server read: {how}", (read_at, row), xytext=(40, -3),
                          textcoords="offset points", color=colour, fontsize=8)  # fmt: skip
        left = "TIME_WAIT" if port in waits else "nothing left"
        axis.text(right, row, left, va="center", fontsize=8,
                  color="tab:blue" if port in waits else "tab:gray")  # fmt: skip
    axis.set_yticks(range(len(closes)), [f"{mode} ({port})" for port, (_, mode) in closes.items()])
    axis.set_ylim(-0.7, len(closes) - 0.3)
    axis.set_xlim(right=right + 0.5)
    axis.invert_yaxis()
    axis.set_xlabel("seconds since the first close (| = close() called)")
    _title(fig, result)
    fig.tight_layout()
    return fig


def draw_close_wait_leak(result: ScenarioResult, plt: Any) -> Any:
    fig, axis = plt.subplots(1, 1, figsize=(10, 4.5))
    states_axis(axis, result, ("CLOSE_WAIT", "FIN_WAIT2", "TIME_WAIT", "LAST_ACK"))
    closes = [e.t for e in _events(result, "close")]
    life, slack = _number(result, "fin_wait2_lifetime_s"), _number(result, "timer_slack_s")
    if closes:
        due = closes[-1] + life
        axis.axvline(closes[0], color="black", linewidth=1)
        axis.axvspan(due, due + slack, color="tab:gray", alpha=0.2,
                     label="FIN_WAIT2 due: tcp_fin_timeout (+ wheel slack)")  # fmt: skip
    for event in _events(result, "doctor"):
        axis.axvline(event.t, color="tab:red", linestyle=":", linewidth=1.5,
                     label=f"tcpdoctor doctor: {event.detail}")  # fmt: skip
    axis.legend(loc="center right", fontsize=8)
    axis.set_xlabel("seconds since the client closed (per-second state counts)")
    _title(fig, result)
    fig.tight_layout()
    return fig
