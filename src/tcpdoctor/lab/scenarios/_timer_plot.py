"""The picture of a timer scenario: when each timer-driven event happened, on a log axis,
against the kernel's schedule and its accepted window.

Built from the result's checks only: `step` checks (one wait each: prefix_1, prefix_2, ...)
add up to the event times, `final` checks are absolute times. Used by the scenarios'
draw(result, plt) hook, which `lab run --plot` calls (tcpdoctor.lab.plot).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from tcpdoctor.lab.model import Check, ScenarioResult


class Point(NamedTuple):
    label: str
    expected: float | None
    low: float | None
    high: float | None
    measured: float | None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def schedule_points(
    checks: Sequence[Check],
    step_prefix: str,
    step_label: str,
    finals: Sequence[str],
    *,
    first_label: str | None = None,
) -> list[Point]:
    """Cumulative event times from the step checks, then the final checks. Steps are
    labelled `step_label N`; `first_label` names the first one differently (counting
    starts after it)."""
    by_name = {c.name: c for c in checks}
    points: list[Point] = []
    expected = low = high = measured = 0.0
    known = True  # every wait so far was measured
    index = 1
    while (check := by_name.get(f"{step_prefix}_{index}")) is not None:
        exp, got = _number(check.expected), _number(check.measured)
        lo, hi = _number(check.low), _number(check.high)
        if exp is not None and lo is not None and hi is not None:
            expected, low, high = expected + exp, low + lo, high + hi
        known = known and got is not None
        measured = measured + (got or 0.0)
        number = index - 1 if first_label is not None else index
        points.append(
            Point(
                first_label if first_label is not None and index == 1 else f"{step_label} {number}",
                expected if exp is not None else None,
                low if exp is not None else None,
                high if exp is not None else None,
                measured if known else None,
            )
        )
        index += 1
    for name in finals:
        check = by_name.get(name)
        if check is not None:
            points.append(
                Point(
                    check.what,
                    _number(check.expected),
                    _number(check.low),
                    _number(check.high),
                    _number(check.measured),
                )
            )
    return points


def draw_schedule(
    result: ScenarioResult,
    plt: Any,
    points: Sequence[Point],
    *,
    origin: str,
    reference: tuple[float, str] | None = None,
) -> Any:
    """Event number across, seconds since `origin` up (log): the kernel's schedule as a
    line with its accepted window, what was measured as dots (red when outside)."""
    fig, axis = plt.subplots(figsize=(10, 5.5))
    xs = list(range(1, len(points) + 1))
    planned = [(x, p) for x, p in zip(xs, points, strict=True) if p.expected is not None]
    if planned:
        axis.plot(
            [x for x, _ in planned],
            [p.expected for _, p in planned],
            color="tab:gray",
            marker="s",
            linewidth=1,
            label="kernel schedule (kernel/timing)",
        )
        for x, p in planned:
            if p.low is not None and p.high is not None:
                axis.vlines(x, max(p.low, 1e-3), p.high, color="tab:gray", alpha=0.35, linewidth=8)
    for x, p in zip(xs, points, strict=True):
        if p.measured is None or p.measured <= 0:
            continue
        inside = p.low is not None and p.high is not None and p.low <= p.measured <= p.high
        axis.plot(x, p.measured, "o", color="tab:green" if inside else "tab:red", markersize=7)
        axis.annotate(
            f"{p.measured:.3f}".rstrip("0").rstrip("."),
            (x, p.measured),
            textcoords="offset points",
            xytext=(6, -10),
            fontsize=8,
        )
    if reference is not None:  # a number people expect, drawn to show it is not the answer
        axis.axhline(
            reference[0], color="tab:orange", linestyle="--", linewidth=1, label=reference[1]
        )
    axis.plot([], [], "o", color="tab:green", label="measured (inside the window)")
    axis.plot([], [], "o", color="tab:red", label="measured (outside)")
    axis.set_yscale("log")
    # The schedule's own times are the ticks: 1, 2, 3, 4, 5, 7, 11, 19 ... reads better than
    # powers of ten, whatever the range.
    ticker = importlib.import_module("matplotlib.ticker")  # optional extra, no stubs here
    expected = [p.expected for p in points if p.expected and p.expected > 0]
    marks = sorted({round(v, 3) for v in [*expected, *([reference[0]] if reference else [])]})
    if marks:
        axis.yaxis.set_major_locator(ticker.FixedLocator(marks))
        axis.yaxis.set_minor_locator(ticker.NullLocator())
    axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _pos: f"{value:g}"))
    axis.set_xticks(xs)
    axis.set_xticklabels([p.label for p in points], rotation=30, ha="right", fontsize=8)
    axis.set_ylabel(f"seconds since {origin} (log)")
    axis.grid(True, which="both", axis="y", alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{result.scenario}: {'agree' if result.agree else 'DISAGREE'}", fontsize=11)
    fig.tight_layout()
    return fig
