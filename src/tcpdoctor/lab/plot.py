"""`lab run --plot out.png`: the timeline as a picture (matplotlib, the `plot` extra).

Top: requests per second that succeeded (green) and failed (red, by error). Bottom: the
sockets sampled per state that matter most (TIME_WAIT, ESTABLISHED) for each host. Events
(first failure, recovery, ...) are vertical lines on both.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcpdoctor.errors import ScenarioError, TcpDoctorError
from tcpdoctor.lab.model import ScenarioResult

STATES = ("TIME_WAIT", "ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT2")
_EVENT_KINDS = {"first_failure": "tab:red", "recovery": "tab:green", "pool_closed": "tab:gray"}


def require_matplotlib() -> None:
    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # sys.modules holds None for it: importing it is blocked
        found = False
    if not found:
        raise ScenarioError(
            "--plot needs matplotlib: install the plot extra (pip install 'tcpdoctor[plot]')"
        )


def plot_result(result: ScenarioResult, path: Path) -> Path:
    require_matplotlib()
    # Imported by name: matplotlib is an optional extra without type stubs here.
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    drawing = _scenario_drawing(result.scenario)
    if drawing is not None:
        return _save(drawing(result, plt), path, plt)

    timeline = result.timeline
    seconds = [b.t for b in timeline.buckets]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    top.bar(
        seconds,
        [b.successes for b in timeline.buckets],
        width=0.9,
        color="tab:green",
        label="succeeded",
        align="edge",
    )
    errors = sorted({name for b in timeline.buckets for name in b.failures})
    base = [b.successes for b in timeline.buckets]
    for name in errors:
        counts = [b.failures.get(name, 0) for b in timeline.buckets]
        top.bar(
            seconds,
            counts,
            bottom=base,
            width=0.9,
            color="tab:red",
            alpha=0.7,
            label=name,
            align="edge",
        )
        base = [x + y for x, y in zip(base, counts, strict=True)]
    top.set_ylabel("requests per second")
    top.legend(loc="upper right")
    _states(bottom, result)
    for axis in (top, bottom):
        _events(axis, result)
    bottom.set_xlabel("seconds since the load started")
    fig.suptitle(f"{result.scenario}: {'agree' if result.agree else 'DISAGREE'}", fontsize=11)
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig: Any, path: Path, plt: Any) -> Path:
    try:
        fig.savefig(path, dpi=100)
    except OSError as err:
        raise ScenarioError(f"cannot write {path}: {err.strerror}") from None
    finally:
        plt.close(fig)
    return path


def _scenario_drawing(name: str) -> Callable[[ScenarioResult, Any], Any] | None:
    """A scenario module may define draw(result, plt) -> Figure for a picture of its own
    (variants side by side, say); every other scenario gets the timeline picture above."""
    from tcpdoctor.lab import registry

    try:
        spec = registry.get(name)
    except TcpDoctorError:
        return None
    draw = getattr(sys.modules.get(spec.run.__module__), "draw", None)
    return draw if callable(draw) else None


def _states(axis: Any, result: ScenarioResult) -> None:
    buckets = result.timeline.buckets
    hosts = sorted({h for b in buckets for h in b.states})
    for host in hosts:
        for state in STATES:
            counts = [b.states.get(host, {}).get(state, 0) for b in buckets]
            if any(counts):
                axis.step([b.t for b in buckets], counts, where="post", label=f"{host} {state}")
    axis.set_ylabel("sockets")
    axis.set_ylim(bottom=0)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="upper right")


def _events(axis: Any, result: ScenarioResult) -> None:
    for event in result.timeline.events:
        colour = _EVENT_KINDS.get(event.kind)
        if colour:
            axis.axvline(event.t, color=colour, linestyle="--", linewidth=1)
