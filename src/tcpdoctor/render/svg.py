"""Inline SVG charts for the HTML report, drawn in Python: no JavaScript, no external files.

Every chart is a plain `<svg>` element meant to sit inside an HTML5 page (so it needs no
namespace declaration). Colours come from CSS classes that the page defines, which keeps
light, dark and print styles in one stylesheet. Every text that reaches a chart is escaped
here; callers pass plain strings.
"""

from __future__ import annotations

import html
import itertools
import math
import re
from collections.abc import Sequence
from typing import NamedTuple

CHAR_W = 7.0  # average width of a 12px system-ui character, for label columns
MAX_LABEL_CHARS = 46
_ids = itertools.count(1)
_CLASS_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def css_class(text: str) -> str:
    """A class-name fragment made only of safe characters (state names, kinds)."""
    return _CLASS_SAFE.sub("_", text) or "other"


def number(value: float) -> str:
    """Thousands separators; at most one decimal, none for whole numbers."""
    if not math.isfinite(value):
        return "-"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}".rstrip("0").rstrip(".")


def percent(share: float) -> str:
    if share <= 0:
        return "0%"
    if share < 0.001:
        return "<0.1%"
    return f"{share:.1%}"


def nice_step(span: float, ticks: int = 5) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `ticks` intervals."""
    raw = max(span, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return float(10 * power)


def nice_ticks(top: float, ticks: int = 5) -> list[float]:
    """0, step, 2*step ... up to the first multiple >= top."""
    step = nice_step(top if top > 0 else 1, ticks)
    count = max(1, math.ceil((top if top > 0 else 1) / step - 1e-9))
    return [step * i for i in range(count + 1)]


def truncate(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _open(width: float, height: float, label: str, css: str) -> str:
    return (
        f'<svg class="chart {css}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" aria-label="{esc(label)}" '
        f'preserveAspectRatio="xMinYMin meet"><title>{esc(label)}</title>'
    )


def _text(x: float, y: float, text: str, css: str = "", anchor: str = "start") -> str:
    klass = f' class="{css}"' if css else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{esc(text)}</text>'


def _rect(x: float, y: float, w: float, h: float, css: str, tip: str = "") -> str:
    title = f"<title>{esc(tip)}</title>" if tip else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" '
        f'class="{css}">{title}</rect>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, css: str) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="{css}"/>'


def _label_width(labels: Sequence[str], floor: float = 90, ceiling: float = 330) -> float:
    longest = max((len(truncate(t)) for t in labels), default=0)
    return min(ceiling, max(floor, longest * CHAR_W + 16))


# --- horizontal bars ---------------------------------------------------------------------


class Bar(NamedTuple):
    label: str
    value: float
    css: str  # colour class of the bar
    note: str = ""  # text right of the bar; the number when empty


def hbar_chart(bars: Sequence[Bar], *, label: str, width: float = 1000) -> str:
    """One labelled bar per row, on a shared linear scale from zero."""
    row, pad_top, axis = 26.0, 8.0, 22.0
    left = _label_width([b.label for b in bars])
    notes = [b.note or number(b.value) for b in bars]
    right = min(220.0, max(60.0, max((len(n) for n in notes), default=0) * CHAR_W + 16))
    plot = width - left - right
    ticks = nice_ticks(max((b.value for b in bars), default=0))
    scale = plot / ticks[-1]
    height = pad_top + row * len(bars) + axis
    parts = [_open(width, height, label, "hbar")]
    bottom = pad_top + row * len(bars)
    for tick in ticks:
        x = left + tick * scale
        parts.append(_line(x, pad_top - 4, x, bottom, "grid"))
        parts.append(_text(x, bottom + 15, number(tick), "tick", "middle"))
    for index, (bar, note) in enumerate(zip(bars, notes, strict=True)):
        y = pad_top + index * row
        w = bar.value * scale
        if bar.value > 0:
            w = max(w, 2.0)  # a non-zero count stays visible next to a million
        parts.append(_text(left - 8, y + 16, truncate(bar.label), "label", "end"))
        parts.append(_rect(left, y + 4, w, row - 8, bar.css, f"{bar.label}: {note}"))
        parts.append(_text(left + w + 6, y + 16, note, "value"))
    parts.append("</svg>")
    return "".join(parts)


# --- port use against capacity -----------------------------------------------------------


class CapacityBar(NamedTuple):
    label: str  # the destination
    sublabel: str  # e.g. the local address
    in_use: int
    time_wait: int  # part of in_use
    capacity: int

    @property
    def share(self) -> float:
        return self.in_use / self.capacity if self.capacity > 0 else 1.0


def share_class(share: float) -> str:
    return "crit" if share >= 0.8 else "warn" if share >= 0.5 else "ok"


def capacity_chart(rows: Sequence[CapacityBar], *, label: str, width: float = 1000) -> str:
    """Each destination's track is its own capacity (100%); the fill is the ports in use,
    its TIME_WAIT part hatched, the capacity a solid line at the end of the track."""
    row, pad_top, axis = 40.0, 22.0, 20.0
    left = _label_width([r.label for r in rows] + [r.sublabel for r in rows], ceiling=300)
    right = 200.0
    plot = width - left - right
    height = pad_top + row * len(rows) + axis
    hatch = f"tw-hatch-{next(_ids)}"
    parts = [
        _open(width, height, label, "capacity"),
        f'<defs><pattern id="{hatch}" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" class="tw-bg"/>'
        '<line x1="0" y1="0" x2="0" y2="6" class="tw-line"/></pattern></defs>',
    ]
    bottom = pad_top + row * len(rows)
    for fraction in (0.25, 0.5, 0.75):
        x = left + plot * fraction
        parts.append(_line(x, pad_top - 6, x, bottom, "grid"))
        parts.append(_text(x, bottom + 14, f"{fraction:.0%}", "tick", "middle"))
    parts.append(_line(left + plot, pad_top - 10, left + plot, bottom, "capacity-line"))
    parts.append(_text(left + plot, pad_top - 12, "capacity", "tick cap-label", "middle"))
    parts.append(_text(left, bottom + 14, "0", "tick", "middle"))
    for index, item in enumerate(rows):
        parts.extend(_capacity_row(item, pad_top + index * row, left, plot, hatch))
    parts.append("</svg>")
    return "".join(parts)


def _capacity_row(item: CapacityBar, y: float, left: float, plot: float, hatch: str) -> list[str]:
    share = min(item.share, 1.0)
    used = plot * share
    if item.in_use > 0:
        used = max(used, 2.0)
    waiting = used * (item.time_wait / item.in_use) if item.in_use else 0.0
    tip = (
        f"{item.label} from {item.sublabel}: {item.in_use:,} ports in use "
        f"({item.time_wait:,} TIME_WAIT) of {item.capacity:,} ({percent(item.share)})"
    )
    klass = share_class(item.share)
    bar_y, bar_h = y + 6, 20.0
    parts = [
        _text(left - 8, y + 14, truncate(item.label), "label", "end"),
        _text(left - 8, y + 28, truncate(item.sublabel), "sublabel", "end"),
        _rect(left, bar_y, plot, bar_h, "track", tip),
        _rect(left, bar_y, used - waiting, bar_h, f"use {klass}", tip),
    ]
    if waiting > 0:
        parts.append(
            f'<rect x="{left + used - waiting:.1f}" y="{bar_y:.1f}" width="{waiting:.1f}" '
            f'height="{bar_h:.1f}" fill="url(#{hatch})" class="tw-part">'
            f"<title>{esc(tip)}</title></rect>"
        )
    parts.append(_text(left + plot + 8, y + 15, percent(item.share), f"value share-{klass}"))
    parts.append(
        _text(left + plot + 8, y + 29, f"{item.in_use:,} of {item.capacity:,}", "sublabel")
    )
    return parts


# --- lines over time ---------------------------------------------------------------------


class Series(NamedTuple):
    name: str
    values: Sequence[float | None]  # None: no value at that time (a gap)
    css: str  # colour class of the line
    dashed: bool = False


class Frame(NamedTuple):
    """Where a plot sits in its SVG, and its scales."""

    left: float
    top: float
    width: float
    height: float
    x_max: float
    y_max: float

    def x(self, value: float) -> float:
        return self.left + self.width * (value / self.x_max if self.x_max > 0 else 0.0)

    def y(self, value: float) -> float:
        return self.top + self.height * (1 - (value / self.y_max if self.y_max > 0 else 0.0))


def line_chart(
    xs: Sequence[float],
    series: Sequence[Series],
    *,
    label: str,
    width: float = 1000,
    height: float = 240,
    compact: bool = False,
) -> str:
    """Lines over a shared x axis in seconds; y from zero to a round number."""
    peak = max((v for s in series for v in s.values if v is not None), default=0.0)
    y_ticks = nice_ticks(peak * 1.05, 3 if compact else 5)  # a flat line stays off the top
    x_end = max(xs, default=0.0)
    x_ticks = [x for x in nice_ticks(x_end, 4 if compact else 8) if x <= x_end + 1e-9]
    gutter = max(len(number(t)) for t in y_ticks) * CHAR_W + 14
    frame = Frame(
        left=gutter,
        top=10.0,
        width=width - gutter - 12,
        height=height - 10 - 24,
        x_max=x_end,
        y_max=y_ticks[-1],
    )
    parts = [_open(width, height, label, "lines compact" if compact else "lines")]
    parts.extend(_axes(frame, x_ticks, y_ticks))
    for item in series:
        parts.extend(_polyline(frame, xs, item, dots=len(xs) <= 40 and not compact))
    parts.append("</svg>")
    return "".join(parts)


def _axes(frame: Frame, x_ticks: list[float], y_ticks: list[float]) -> list[str]:
    bottom, right = frame.top + frame.height, frame.left + frame.width
    parts = []
    for tick in y_ticks:
        y = frame.y(tick)
        parts.append(_line(frame.left, y, right, y, "grid"))
        parts.append(_text(frame.left - 6, y + 4, number(tick), "tick", "end"))
    for tick in x_ticks:
        x = frame.x(tick)
        parts.append(_line(x, bottom, x, bottom + 4, "axis"))
        parts.append(_text(x, bottom + 16, f"{number(tick)} s", "tick", "middle"))
    parts.append(_line(frame.left, bottom, right, bottom, "axis"))
    return parts


def _polyline(frame: Frame, xs: Sequence[float], item: Series, *, dots: bool) -> list[str]:
    """One <polyline> per unbroken run of values; a None breaks the line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, value in zip(xs, item.values, strict=True):
        if value is None:
            runs.append([])
        else:
            runs[-1].append((frame.x(x), frame.y(value)))
    dash = " dashed" if item.dashed else ""
    parts = []
    for run in runs:
        if not run:
            continue
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
        parts.append(
            f'<polyline points="{points}" class="series {item.css}{dash}">'
            f"<title>{esc(item.name)}</title></polyline>"
        )
        if (dots and not item.dashed) or len(run) == 1:
            parts.extend(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" class="dot {item.css}"/>'
                for x, y in run
            )
    return parts
