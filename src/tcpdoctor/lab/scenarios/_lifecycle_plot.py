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
