"""`tcpdoctor report`: the doctor's JSON document (render/doctor_view.py) as one
self-contained HTML page.

The page loads nothing: styles are inline, charts are SVG drawn here, there is no script,
and a Content-Security-Policy forbids any fetch. Every string taken from the document is
escaped, since addresses, process names and texts come from the observed system.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tcpdoctor import __version__
from tcpdoctor.diagnose.model import Evidence
from tcpdoctor.kernel.states import REPORTED_STATES, TcpState
from tcpdoctor.render import svg
from tcpdoctor.render.html_style import stylesheet
from tcpdoctor.render.svg import esc

Doc = Mapping[str, Any]

CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
SEVERITIES = ("critical", "warning", "info")  # most severe first
# Always drawn over time, whatever their counts: the lifecycle's three usual suspects.
KEY_STATES = ("TIME_WAIT", "ESTABLISHED", "CLOSE_WAIT")
QUIET_STATES = {"LISTEN", "CLOSE"}  # drawn over time only if they change
ALWAYS_RATES = ("Tcp.ActiveOpens", "Tcp.PassiveOpens")
CAPACITY_IN_VIEW = 0.2  # draw the capacity line when the peak reaches this share of it
SECTIONS = (
    ("findings", "Findings"),
    ("states", "Sockets by state"),
    ("ports", "Port use"),
    ("timeline", "Over time"),
    ("close-wait", "CLOSE_WAIT owners"),
    ("sysctls", "Sysctl audit"),
    ("notes", "Notes"),
)


def render(document: Doc) -> str:
    """The whole page for one doctor document."""
    meta = _map(document.get("meta"))
    host = str(meta.get("hostname") or "unknown host")
    body = [
        _header(document),
        _nav(),
        '<main class="wrap">',
        _findings_section(document),
        _states_section(_map(document.get("summary"))),
        _ports_section(_map(document.get("summary"))),
        _timeline_section(_list(document.get("timeline"))),
        _close_wait_section(_list(document.get("close_wait_by_process"))),
        _sysctl_section(_list(document.get("sysctl_audit"))),
        _notes_section(document),
        _footer(meta),
        "</main>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="color-scheme" content="light dark">\n'
        f'<meta name="generator" content="tcpdoctor {esc(__version__)}">\n'
        f"<title>tcpdoctor report — {esc(host)}</title>\n"
        f"<style>{stylesheet()}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# --- small helpers -----------------------------------------------------------------------


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _section(ident: str, title: str, lead: str, *content: str) -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return (
        f'<section class="card" id="{ident}"><h2>{esc(title)}</h2>{lead_html}'
        + "".join(content)
        + "</section>"
    )


def _paragraphs(text: str, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return "".join(f"<p{klass}>{esc(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def _table(head: Sequence[tuple[str, bool]], rows: Sequence[str], css: str = "") -> str:
    """head: (column title, numeric); rows: ready <tr> elements."""
    cells = "".join(
        f'<th class="num">{esc(t)}</th>' if num else f"<th>{esc(t)}</th>" for t, num in head
    )
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _td(value: object, *, num: bool = False, raw: bool = False, css: str = "") -> str:
    """A cell; `raw` when value is already HTML."""
    text = str(value) if raw else esc(value)
    klass = " ".join(c for c in ("num" if num else "", css) if c)
    return f'<td class="{klass}">{text}</td>' if klass else f"<td>{text}</td>"


def _state_name(key: str) -> str:
    """Kernel state name for a by_state key, whether a name ("TIME_WAIT") or a number ("6")."""
    if key.isdigit():
        try:
            return TcpState(int(key)).label
        except ValueError:
            return key
    return key


def _states(counts: Any) -> dict[str, int]:
    result: dict[str, int] = {}
    for key, value in _map(counts).items():
        name = _state_name(str(key))
        result[name] = result.get(name, 0) + _int(value)
    return result


def _state_class(name: str) -> str:
    return f"st-{svg.css_class(name)}"


def _legend(items: Sequence[tuple[str, str]]) -> str:
    """(swatch classes, text) pairs; no classes: text alone."""
    spans = "".join(
        f'<span><i class="swatch {css}"></i>{esc(text)}</span>' if css
        else f'<span class="muted">{esc(text)}</span>'
        for css, text in items
    )  # fmt: skip
    return f'<div class="legend">{spans}</div>'


def _when(taken_at: Any) -> str:
    if not isinstance(taken_at, int | float):
        return "unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(taken_at))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


# --- header ------------------------------------------------------------------------------


def _netns(meta: Doc) -> str:
    ns = _map(meta.get("netns"))
    if ns.get("name"):
        return str(ns["name"])
    if ns.get("pid"):
        return f"of pid {ns['pid']}"
    if ns.get("is_host"):
        return "host"
    return f"inode {ns.get('inode', '?')}"


def _meta_items(document: Doc) -> list[tuple[str, str]]:
    meta = _map(document.get("meta"))
    watch = _map(meta.get("watch"))
    seconds = watch.get("duration_s")
    items = [
        ("host", str(meta.get("hostname", "?"))),
        ("netns", _netns(meta)),
        ("kernel", str(meta.get("kernel_release", "?"))),
        ("taken", _when(meta.get("taken_at"))),
        ("sockets", f"{_int(meta.get('socket_count')):,}"),
        (
            "watch",
            f"{_duration(float(seconds))}, {_int(watch.get('samples'))} samples"
            if isinstance(seconds, int | float) and seconds > 0
            else "single snapshot",
        ),
    ]
    idle = _map(meta.get("idle_timeout"))
    if idle.get("seconds") is not None:
        items.append(("idle timeout", f"{idle['seconds']} s ({idle.get('source') or 'given'})"))
    if meta.get("privileged") is False:
        items.append(("privileges", "not root: socket owners and some fields hidden"))
    return items


def _header(document: Doc) -> str:
    meta = _map(document.get("meta"))
    items = "".join(
        f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in _meta_items(document)
    )
    return (
        '<header class="top"><div class="wrap">'
        f'<h1>tcpdoctor report <span class="host">· {esc(meta.get("hostname", "?"))}</span></h1>'
        f'<dl class="meta">{items}</dl>{_verdict(document)}</div></header>'
    )


def _verdict(document: Doc) -> str:
    findings = [_map(f) for f in _list(document.get("findings"))]
    if not findings:
        rules = len(_list(_map(document.get("meta")).get("rules_run")))
        return (
            '<div class="verdict sev-none">No lifecycle problems found '
            f"({rules} rule{'s' if rules != 1 else ''} ran).</div>"
        )
    counts = Counter(str(f.get("severity", "info")) for f in findings)
    worst = next((s for s in SEVERITIES if counts[s]), "info")
    text = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES if counts[s])
    glance = "".join(
        f'<li><span class="badge sev-{svg.css_class(str(f.get("severity")))}">'
        f'{esc(f.get("severity", ""))}</span> <a href="#finding-{i}">{esc(f.get("title", ""))}</a>'
        "</li>"
        for i, f in enumerate(findings, start=1)
    )
    noun = "finding" if len(findings) == 1 else "findings"
    return (
        f'<div class="verdict sev-{worst}">{len(findings)} {noun}: {esc(text)}</div>'
        f'<ol class="glance">{glance}</ol>'
    )


def _nav() -> str:
    links = "".join(f'<a href="#{ident}">{esc(title)}</a>' for ident, title in SECTIONS)
    return f'<nav class="toc"><div class="wrap">{links}</div></nav>'


# --- findings ----------------------------------------------------------------------------


def _findings_section(document: Doc) -> str:
    findings = [_map(f) for f in _list(document.get("findings"))]
    if not findings:
        return _section(
            "findings",
            "Findings",
            "",
            '<p class="empty">No rule found a lifecycle problem in this snapshot.</p>',
        )
    parts: list[str] = []
    numbered = list(enumerate(findings, start=1))
    for severity in SEVERITIES:
        group = [(i, f) for i, f in numbered if f.get("severity") == severity]
        if group:
            parts.append(f'<h3 class="sev-group">{esc(severity)} ({len(group)})</h3>')
            parts.extend(_finding(i, f) for i, f in group)
    others = [(i, f) for i, f in numbered if f.get("severity") not in SEVERITIES]
    parts.extend(_finding(i, f) for i, f in others)
    return _section(
        "findings", "Findings", "Most severe first; fixes in the order to try them.", *parts
    )


def _finding(index: int, finding: Doc) -> str:
    severity = svg.css_class(str(finding.get("severity", "info")))
    return (
        f'<article class="finding sev-{severity}" id="finding-{index}"><header>'
        f'<span class="badge sev-{severity}">{esc(finding.get("severity", ""))}</span>'
        f"<h3>{esc(finding.get('title', ''))}</h3></header>"
        f'<p class="subject">about <strong>{esc(finding.get("subject", ""))}</strong>'
        f'<span class="rule">rule <code>{esc(finding.get("rule", ""))}</code></span></p>'
        f'<div class="cols"><div><h4>Evidence</h4>{_evidence(finding)}</div>'
        f"<div><h4>Why</h4>{_paragraphs(str(finding.get('explanation', '')))}</div></div>"
        f"{_fixes(finding)}{_topics(finding)}</article>"
    )


def _evidence_text(item: Doc) -> str:
    value = item.get("value")
    if not isinstance(value, int | float | str | bool | type(None)):
        value = str(value)
    return Evidence(
        key=str(item.get("key", "")),
        label=str(item.get("label", "")),
        value=value,
        unit=str(item.get("unit", "")),
    ).text()


def _evidence(finding: Doc) -> str:
    items = [_map(e) for e in _list(finding.get("evidence"))]
    if not items:
        return '<p class="empty">none recorded</p>'
    rows = "".join(
        f'<tr title="{esc(item.get("key", ""))}">{_td(item.get("label", ""))}'
        f"{_td(_evidence_text(item), num=True)}</tr>"
        for item in items
    )
    return f'<table class="evidence"><tbody>{rows}</tbody></table>'


def _fixes(finding: Doc) -> str:
    fixes = [_map(f) for f in _list(finding.get("fixes"))]
    if not fixes:
        return ""
    return f'<h4>Fixes</h4><ol class="fixes">{"".join(_fix(f) for f in fixes)}</ol>'


def _fix(fix: Doc) -> str:
    kind = str(fix.get("kind", ""))
    parts = [
        f'<li><span class="kind kind-{svg.css_class(kind)}">{esc(kind.replace("_", " "))}</span> '
        f"<strong>{esc(fix.get('summary', ''))}</strong>"
    ]
    if fix.get("detail"):
        parts.append(_paragraphs(str(fix["detail"])))
    if fix.get("example"):
        parts.append(f'<pre class="example">{esc(fix["example"])}</pre>')
    if fix.get("sysctl"):
        name = str(fix["sysctl"])
        parts.append(
            f'<p class="knob muted">changes <a href="#{_sysctl_id(name)}"><code>{esc(name)}'
            "</code></a> (see the sysctl audit)</p>"
        )
    parts.append("</li>")
    return "".join(parts)


def _topics(finding: Doc) -> str:
    topics = [str(t) for t in _list(finding.get("topics"))]
    if not topics:
        return ""
    codes = " ".join(f"<code>tcpdoctor explain {esc(t)}</code>" for t in topics)
    return f'<p class="topics muted">More: {codes}</p>'


# --- sockets by state --------------------------------------------------------------------


def _states_section(summary: Doc) -> str:
    counts = _states(summary.get("by_state"))
    shown = sorted(((n, c) for n, c in counts.items() if c > 0), key=lambda nc: -nc[1])
    total = _int(summary.get("total")) or sum(counts.values())
    if not shown:
        return _section("states", "Sockets by state", "", '<p class="empty">No TCP sockets.</p>')
    bars = [
        svg.Bar(name, count, f"bar {_state_class(name)}", f"{count:,} ({count / total:.0%})")
        for name, count in shown
    ]
    zero = [n for n, c in counts.items() if c == 0]
    rest = f'<p class="muted">None in {esc(", ".join(zero))}.</p>' if zero else ""
    chart = svg.hbar_chart(bars, label="TCP sockets by state")
    return _section(
        "states", "Sockets by state", f"{total:,} TCP sockets.", chart, rest, _peers(summary)
    )


def _peers(summary: Doc) -> str:
    peers = [_map(p) for p in _list(summary.get("top_peers"))]
    if not peers:
        return ""
    rows = [
        "<tr>"
        + _td(_endpoint(str(p.get("peer_address", "")), p.get("service_port")))
        + _td(p.get("direction", ""))
        + _td(f"{_int(p.get('total')):,}", num=True)
        + _td(_state_mix(p.get("by_state")), raw=True)
        + "</tr>"
        for p in peers
    ]
    head = [
        ("Peer : service port", False),
        ("Direction", False),
        ("Sockets", True),
        ("States", False),
    ]
    return "<h4>Busiest peers</h4>" + _table(head, rows)


def _state_mix(counts: Any) -> str:
    items = sorted(_states(counts).items(), key=lambda nc: -nc[1])
    return " ".join(
        f'<span class="pill {_state_class(n)}"><i class="swatch"></i> {esc(n)} {c:,}</span>'
        for n, c in items
        if c
    )


def _endpoint(address: str, port: Any) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}" if port is not None else host


# --- ephemeral ports ---------------------------------------------------------------------


def _ports_section(summary: Doc) -> str:
    ports = _map(summary.get("port_use"))
    span = _list(ports.get("port_range"))
    where = f"ip_local_port_range {span[0]}–{span[1]}" if len(span) == 2 else "the ephemeral range"
    rows = [_capacity_bar(_map(d)) for d in _list(ports.get("destinations"))]
    lead = (
        f"Ports of {esc(where)} held per destination (local address, remote address and port): "
        "connect() fails with EADDRNOTAVAIL when one reaches its capacity."
    )
    if not rows:
        return _section(
            "ports", "Ephemeral port use", lead,
            '<p class="empty">No outgoing connection holds an ephemeral port.</p>',
        )  # fmt: skip
    legend = _legend(
        [("c-use", "in use"), ("hatch", "of which TIME_WAIT"), ("cap", "capacity (100%)")]
    )
    chart = svg.capacity_chart(rows, label="Ephemeral ports in use per destination vs capacity")
    return _section("ports", "Ephemeral port use", lead, legend, chart)


def _capacity_bar(dest: Doc) -> svg.CapacityBar:
    return svg.CapacityBar(
        label=_endpoint(str(dest.get("remote_address", "?")), dest.get("remote_port")),
        sublabel=f"from {dest.get('local_address', '?')}",
        in_use=_int(dest.get("in_use")),
        time_wait=_int(dest.get("time_wait")),
        capacity=_int(dest.get("capacity")),
    )


# --- over time ---------------------------------------------------------------------------


def _timeline_section(timeline: list[Any]) -> str:
    points = [_map(p) for p in timeline]
    if len(points) < 2:
        return _section(
            "timeline", "Over time", "",
            '<p class="empty">A single snapshot: run <code>tcpdoctor report --watch 60</code> '
            "to see states, port use and counter rates over time.</p>",
        )  # fmt: skip
    xs = [float(p.get("offset_s") or 0.0) for p in points]
    lead = f"{len(points)} samples over {_duration(xs[-1])}."
    return _section(
        "timeline", "Over time", lead,
        _states_over_time(xs, points), _busiest_over_time(xs, points), _rates(xs, points),
    )  # fmt: skip


def _states_over_time(xs: list[float], points: list[Doc]) -> str:
    per_point = [_states(p.get("by_state")) for p in points]
    names = [s.label for s in REPORTED_STATES]
    series = []
    for name in names:
        values = [counts.get(name, 0) for counts in per_point]
        keep = name in KEY_STATES or (
            any(values) and (name not in QUIET_STATES or len(set(values)) > 1)
        )
        if keep:
            series.append(svg.Series(name, [float(v) for v in values], _state_class(name)))
    legend = _legend(
        [(f"line {s.css}", f"{s.name} (now {int(s.values[-1] or 0):,})") for s in series]
    )
    chart = svg.line_chart(xs, series, label="Sockets by state over time")
    return f"<h4>Sockets by state</h4>{legend}{chart}"


def _busiest_over_time(xs: list[float], points: list[Doc]) -> str:
    names = Counter(str(p["busiest_destination"]) for p in points if p.get("busiest_destination"))
    if not names:
        return (
            "<h4>Busiest destination</h4>"
            '<p class="empty">No destination held an ephemeral port during the watch.</p>'
        )
    in_use = [float(_int(p.get("busiest_in_use"))) for p in points]
    capacity = [float(_int(p.get("port_capacity"))) for p in points]
    peak, cap = max(in_use), capacity[-1] or 1.0
    series = [svg.Series("ports in use", in_use, "c-use")]
    legend = [("line c-use", f"ports in use (peak {peak:,.0f}, {svg.percent(peak / cap)})")]
    if peak >= CAPACITY_IN_VIEW * cap:
        series.append(svg.Series("capacity", capacity, "c-capacity", dashed=True))
        legend.append(("dashed", f"capacity ({cap:,.0f})"))
    else:  # drawn to scale, the capacity would flatten the line it is compared with
        legend.append(("", f"capacity {cap:,.0f}: far above, left off the scale"))
    who = ", ".join(name for name, _ in names.most_common(3))
    changed = " (it changed during the watch)" if len(names) > 1 else ""
    chart = svg.line_chart(xs, series, label="Busiest destination's ephemeral ports vs capacity")
    return f"<h4>Busiest destination: {esc(who)}{esc(changed)}</h4>{_legend(legend)}{chart}"


def _rate_series(xs: list[float], points: list[Doc], key: str) -> list[float | None]:
    rates: list[float | None] = []
    for before, after, t0, t1 in zip(points, points[1:], xs, xs[1:], strict=False):
        a = _map(before.get("counters")).get(key)
        b = _map(after.get("counters")).get(key)
        if not isinstance(a, int) or not isinstance(b, int) or t1 <= t0 or b < a:
            rates.append(None)  # missing, or reset (the namespace was recreated)
        else:
            rates.append((b - a) / (t1 - t0))
    return rates


def _rates(xs: list[float], points: list[Doc]) -> str:
    keys = list(dict.fromkeys(k for p in points for k in _map(p.get("counters"))))
    cards = []
    quiet = []
    for key in keys:
        rates = _rate_series(xs, points, key)
        if key in ALWAYS_RATES or any(r for r in rates):
            cards.append(_rate_card(key, xs[1:], rates))
        else:
            quiet.append(key)
    rest = f'<p class="muted">Did not move: {esc(", ".join(quiet))}.</p>' if quiet else ""
    if not cards:
        return f"<h4>Counter rates</h4>{rest or '<p class=empty>No counters recorded.</p>'}"
    return f'<h4>Counter rates (per second)</h4><div class="grid2">{"".join(cards)}</div>{rest}'


def _rate_card(key: str, xs: list[float], rates: list[float | None]) -> str:
    known = [r for r in rates if r is not None]
    now = next((r for r in reversed(rates) if r is not None), 0.0)
    stats = (
        f"now {svg.number(now)}/s · peak {svg.number(max(known, default=0.0))}/s · "
        f"mean {svg.number(sum(known) / len(known) if known else 0.0)}/s"
    )
    chart = svg.line_chart(
        xs, [svg.Series(key, rates, "c-rate")], label=f"{key} per second",
        width=380, height=110, compact=True,
    )  # fmt: skip
    return (
        f'<figure class="spark"><figcaption><code>{esc(key)}/s</code> '
        f'<span class="muted">{esc(stats)}</span>{_counter_meaning(key)}</figcaption>'
        f"{chart}</figure>"
    )


def _counter_meaning(key: str) -> str:
    from tcpdoctor.kernel.counters import COUNTERS

    spec = COUNTERS.get(key)
    return f'<span class="meaning">{esc(spec.meaning)}</span>' if spec is not None else ""


# --- CLOSE_WAIT owners -------------------------------------------------------------------


def _close_wait_section(rows: list[Any]) -> str:
    owners = [_map(r) for r in rows]
    lead = (
        "A socket stays in CLOSE_WAIT until its process calls close(): the peer is done, "
        "the application is not."
    )
    if not owners:
        return _section(
            "close-wait", "CLOSE_WAIT by process", lead,
            '<p class="empty">No sockets in CLOSE_WAIT.</p>',
        )  # fmt: skip
    most = max(_int(o.get("count")) for o in owners) or 1
    body = [_close_wait_row(o, most) for o in owners]
    head = [("PID", True), ("Process", False), ("CLOSE_WAIT", True), ("Top peers", False)]
    return _section("close-wait", "CLOSE_WAIT by process", lead, _table(head, body))


def _close_wait_row(owner: Doc, most: int) -> str:
    count = _int(owner.get("count"))
    pid = owner.get("pid")
    peers = ", ".join(
        f"{peer[0]} ({_int(peer[1]):,})" if isinstance(peer, list | tuple) and len(peer) == 2
        else str(peer)
        for peer in _list(owner.get("top_peers"))
    )  # fmt: skip
    bar = f'<div class="cell-bar" style="width:{max(2.0, 100 * count / most):.0f}%"></div>'
    return (
        "<tr>"
        + _td(pid if pid is not None else "?", num=True)
        + _td(f"<span class='mono'>{esc(owner.get('process', '?'))}</span>", raw=True)
        + _td(f"{count:,}{bar}", num=True, raw=True)
        + _td(peers)
        + "</tr>"
    )


# --- sysctl audit ------------------------------------------------------------------------


def _sysctl_id(name: str) -> str:
    return "sysctl-" + svg.css_class(name.replace(".", "-"))


def _audit_rank(line: Doc) -> int:
    if _list(line.get("findings")):
        return 0
    if line.get("changed"):
        return 1
    if line.get("status") not in (None, "present"):
        return 2
    return 3


def _sysctl_value(name: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        if not value:
            return "(empty)"
        if all(isinstance(v, list) for v in value):
            return ",".join(f"{v[0]}" if v[0] == v[-1] else f"{v[0]}-{v[-1]}" for v in value)
        return " ".join(str(v) for v in value)
    return f"{value}{_unit_suffix(name)}"


def _unit_suffix(name: str) -> str:
    from tcpdoctor.errors import InputError
    from tcpdoctor.kernel.sysctls import Unit, lookup_sysctl

    try:
        unit = lookup_sysctl(name).unit
    except InputError:
        return ""
    return f" {unit.value}" if unit in (Unit.SECONDS, Unit.MILLISECONDS, Unit.MICROSECONDS) else ""


def _sysctl_section(audit: list[Any]) -> str:
    lines = sorted((_map(a) for a in audit), key=_audit_rank)
    if not lines:
        return _section(
            "sysctls", "Sysctl audit", "", '<p class="empty">Sysctls were not readable.</p>'
        )
    flagged = len([a for a in lines if _audit_rank(a) == 0])
    changed = len([a for a in lines if a.get("changed")])
    lead = (
        f"{len(lines)} lifecycle knobs: {flagged} named by a fix, {changed} changed from the "
        "kernel default; the rest are dimmed."
    )
    head = [("Sysctl", False), ("Value", False), ("Default", False), ("Scope", False),
            ("Verdict", False)]  # fmt: skip
    return _section("sysctls", "Sysctl audit", lead, _table(head, [_audit_row(a) for a in lines]))


def _audit_row(line: Doc) -> str:
    name = str(line.get("name", "?"))
    css = ("flagged", "changed", "absent", "at-default")[_audit_rank(line)]
    present = line.get("status") in (None, "present")
    value = _sysctl_value(name, line.get("value")) if present else str(line.get("status"))
    if line.get("default") is not None:
        default = esc(_sysctl_value(name, line.get("default")))
    else:
        default = f'<span class="rule-text">{esc(line.get("default_rule") or "—")}</span>'
    verdict = str(line.get("verdict") or ("changed" if line.get("changed") else ""))
    rules = " ".join(
        f'<span class="pill mono">{esc(r)}</span>' for r in _list(line.get("findings"))
    )
    return (
        f'<tr class="{css}" id="{_sysctl_id(name)}">'
        + _td(f"<code>{esc(name)}</code>", raw=True, css="nowrap")
        + _td(value, css="nowrap")
        + _td(default, raw=True)
        + _td(line.get("scope", ""), css="nowrap")
        + _td(f"{esc(verdict)} {rules}".strip(), raw=True)
        + "</tr>"
    )


# --- notes and footer --------------------------------------------------------------------


def _notes_section(document: Doc) -> str:
    limits = [str(x) for x in _list(document.get("limitations"))]
    skipped = [_map(s) for s in _list(document.get("skipped_rules"))]
    rules = [str(r) for r in _list(_map(document.get("meta")).get("rules_run"))]
    parts = [
        _bullets("Could not see", limits, esc),
        _bullets(
            "Rules skipped",
            skipped,
            lambda s: f"<code>{esc(s.get('rule', '?'))}</code>: {esc(s.get('reason', ''))}",
        ),
    ]
    ran = ", ".join(f"<code>{esc(r)}</code>" for r in rules) or "none"
    parts.append(f'<p class="muted">Rules run: {ran}.</p>')
    return _section("notes", "Limitations and skipped rules", "", *parts)


def _bullets(title: str, items: Sequence[Any], show: Callable[[Any], str]) -> str:
    if not items:
        return f'<h4>{esc(title)}</h4><p class="empty">nothing</p>'
    return f"<h4>{esc(title)}</h4><ul>{''.join(f'<li>{show(i)}</li>' for i in items)}</ul>"


def _footer(meta: Doc) -> str:
    return (
        f"<footer>Made by tcpdoctor {esc(__version__)} from the data of "
        "<code>tcpdoctor doctor --json</code> (taken "
        f"{esc(_when(meta.get('taken_at')))}). This page is self-contained: it loads nothing "
        "and runs no script.</footer>"
    )
