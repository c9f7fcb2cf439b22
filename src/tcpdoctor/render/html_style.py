"""The HTML report's one stylesheet: light by default, dark when the reader prefers it,
always light on paper. Chart colours are CSS custom properties so SVG follows the theme."""

from __future__ import annotations

from tcpdoctor.kernel.states import TcpState

STATE_COLOURS = {
    TcpState.ESTABLISHED: "#2e9d5b",
    TcpState.SYN_SENT: "#8e5bd6",
    TcpState.SYN_RECV: "#c07ee8",
    TcpState.FIN_WAIT1: "#e07b39",
    TcpState.FIN_WAIT2: "#b85a22",
    TcpState.TIME_WAIT: "#d99a00",
    TcpState.CLOSE: "#8a93a3",
    TcpState.CLOSE_WAIT: "#d64545",
    TcpState.LAST_ACK: "#9c4f8a",
    TcpState.LISTEN: "#3b7dd8",
    TcpState.CLOSING: "#d9825b",
}

_LIGHT = """
  --bg: #f4f6f9; --card: #ffffff; --fg: #1b2230; --muted: #5b6475; --border: #dce1e8;
  --grid: #e7eaf0; --axis: #a3acba; --code: #eef1f5; --track: #e9edf2; --use: #4a78c2;
  --crit: #c62828; --crit-bg: #fdecec; --warn: #a86400; --warn-bg: #fff4e0;
  --info: #1f63c7; --info-bg: #e8f0fc; --ok: #2e7d32; --ok-bg: #e8f5e9; --rate: #4a78c2;
"""

_DARK = """
  --bg: #0e1116; --card: #161b22; --fg: #e3e8ef; --muted: #97a1b0; --border: #2b333e;
  --grid: #222a35; --axis: #566170; --code: #1e252f; --track: #232b36; --use: #6f9be0;
  --crit: #ff6b6b; --crit-bg: #3a1717; --warn: #f0b44c; --warn-bg: #37290f;
  --info: #6aa7ff; --info-bg: #14243d; --ok: #62c370; --ok-bg: #14301a; --rate: #6f9be0;
"""

_BASE = """
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas,
  "DejaVu Sans Mono", monospace; font-size: 12.5px; }
a { color: var(--info); }
.wrap { max-width: 1120px; margin: 0 auto; padding: 0 20px 40px; }
header.top { background: var(--card); border-bottom: 1px solid var(--border); }
header.top .wrap { padding-top: 18px; padding-bottom: 16px; }
h1 { font-size: 22px; margin: 0 0 6px; font-weight: 650; }
h1 .host { color: var(--muted); font-weight: 500; }
h2 { font-size: 18px; margin: 0 0 4px; }
h3 { font-size: 16px; margin: 0; }
h4 { font-size: 13px; margin: 14px 0 6px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); }
.lead { color: var(--muted); margin: 0 0 12px; }
dl.meta { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 8px 0 0; }
dl.meta div { display: flex; gap: 6px; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; font-weight: 550; }
.verdict { margin-top: 14px; padding: 10px 14px; border-radius: 8px; font-weight: 600;
  border: 1px solid var(--border); }
.verdict.sev-critical { background: var(--crit-bg); color: var(--crit); border-color: var(--crit); }
.verdict.sev-warning { background: var(--warn-bg); color: var(--warn); border-color: var(--warn); }
.verdict.sev-info { background: var(--info-bg); color: var(--info); border-color: var(--info); }
.verdict.sev-none { background: var(--ok-bg); color: var(--ok); border-color: var(--ok); }
ol.glance { margin: 8px 0 0; padding-left: 22px; }
ol.glance li { margin: 2px 0; }
nav.toc { position: sticky; top: 0; z-index: 2; background: var(--bg);
  border-bottom: 1px solid var(--border); }
nav.toc .wrap { padding-top: 8px; padding-bottom: 8px; display: flex; flex-wrap: wrap;
  gap: 4px 18px; }
nav.toc a { text-decoration: none; color: var(--muted); font-weight: 550; }
nav.toc a:hover { color: var(--fg); }
section.card { background: var(--card); border: 1px solid var(--border); border-radius: 10px;
  padding: 16px 20px; margin: 18px 0; }
.muted { color: var(--muted); }
.empty { color: var(--muted); font-style: italic; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 11.5px;
  font-weight: 700; text-transform: uppercase; letter-spacing: .04em; white-space: nowrap; }
.badge.sev-critical { background: var(--crit); color: #fff; }
.badge.sev-warning { background: var(--warn); color: #fff; }
.badge.sev-info { background: var(--info); color: #fff; }
.kind { display: inline-block; padding: 0 7px; border-radius: 4px; font-size: 11.5px;
  font-weight: 650; border: 1px solid var(--border); background: var(--code);
  white-space: nowrap; }
.kind-sysctl { color: var(--warn); border-color: var(--warn); }
.kind-application { color: var(--ok); border-color: var(--ok); }
.kind-socket_option { color: var(--info); border-color: var(--info); }
.kind-infrastructure { color: #8e5bd6; border-color: #8e5bd6; }
.kind-investigate { color: var(--muted); }
h3.sev-group { margin: 18px 0 8px; color: var(--muted); font-size: 14px;
  text-transform: uppercase; letter-spacing: .05em; }
article.finding { border: 1px solid var(--border); border-left: 5px solid var(--info);
  border-radius: 8px; padding: 12px 16px; margin: 10px 0 14px; }
article.finding.sev-critical { border-left-color: var(--crit); }
article.finding.sev-warning { border-left-color: var(--warn); }
article.finding > header { display: flex; align-items: baseline; gap: 10px; }
article.finding > header h3 { flex: 1 1 auto; }
article.finding .rule { color: var(--muted); font-size: 12px; float: right; margin-left: 12px; }
.subject { margin: 4px 0 0; color: var(--muted); }
.subject strong { color: var(--fg); font-weight: 600; overflow-wrap: anywhere; }
.cols { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1.3fr); gap: 6px 24px; }
@media (max-width: 760px) { .cols { grid-template-columns: 1fr; } }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--border);
  vertical-align: top; overflow-wrap: break-word; }
td.nowrap { white-space: nowrap; }
td .rule-text { color: var(--muted); font-size: 12px; }
th { color: var(--muted); font-weight: 600; font-size: 12.5px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.evidence td:first-child { color: var(--muted); width: 58%; }
table.evidence td.num { font-weight: 600; white-space: normal; }
ol.fixes { margin: 0; padding-left: 22px; }
ol.fixes li { margin: 0 0 10px; }
ol.fixes p { margin: 3px 0; }
pre { background: var(--code); border: 1px solid var(--border); border-radius: 6px;
  padding: 8px 10px; margin: 6px 0; overflow-x: auto; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.topics code, .knob code { background: var(--code); padding: 1px 5px; border-radius: 4px; }
svg.chart { display: block; max-width: 100%; height: auto; margin: 6px 0;
  font: 12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
svg text { fill: var(--fg); }
svg .tick, svg .sublabel { fill: var(--muted); font-size: 11px; }
svg .grid { stroke: var(--grid); stroke-width: 1; }
svg .axis { stroke: var(--axis); stroke-width: 1; }
svg rect.bar { fill: var(--c, var(--use)); }
svg .track { fill: var(--track); }
svg .use { fill: var(--use); }
svg .tw-bg { fill: var(--track); }
svg .tw-line { stroke: var(--c-tw); stroke-width: 3.5; }
svg .capacity-line { stroke: var(--fg); stroke-width: 2.5; }
svg .cap-label { font-weight: 600; }
svg .share-ok { fill: var(--ok); font-weight: 600; }
svg .share-warn { fill: var(--warn); font-weight: 700; }
svg .share-crit { fill: var(--crit); font-weight: 700; }
svg polyline.series { fill: none; stroke: var(--c, var(--use)); stroke-width: 2.2;
  stroke-linejoin: round; stroke-linecap: round; }
svg polyline.dashed { stroke-dasharray: 6 4; stroke-width: 1.8; }
svg .dot { fill: var(--c, var(--use)); }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 12.5px; margin: 2px 0 6px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 14px; height: 10px; border-radius: 2px;
  background: var(--c, var(--use)); }
.swatch.line { height: 3px; }
.swatch.hatch { background: repeating-linear-gradient(45deg, var(--c-tw) 0 3px,
  var(--track) 3px 6px); }
.swatch.cap { width: 3px; height: 14px; background: var(--fg); }
.swatch.dashed { background: repeating-linear-gradient(90deg, var(--fg) 0 6px,
  transparent 6px 10px); height: 2px; }
.c-use { --c: var(--use); }
.c-capacity { --c: var(--fg); }
.c-rate { --c: var(--rate); }
.grid2 { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr));
  gap: 12px 20px; }
figure { margin: 0; }
figure.spark { display: flex; flex-direction: column; justify-content: space-between; }
figure.spark figcaption { font-size: 12.5px; }
figure.spark figcaption .meaning { display: block; color: var(--muted); font-size: 12px; }
.cell-bar { height: 6px; background: var(--c-cw); border-radius: 3px; margin-top: 3px; }
tr.at-default td { color: var(--muted); }
tr.flagged td:first-child { border-left: 3px solid var(--warn); }
tr.changed td:first-child { border-left: 3px solid var(--info); }
.pill { font-size: 11px; padding: 0 6px; border-radius: 999px; border: 1px solid var(--border);
  color: var(--muted); white-space: nowrap; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 24px; }
@media print {
  body { background: #fff; font-size: 12px; }
  nav.toc { display: none; }
  section.card { border: none; padding: 0; margin: 14px 0; break-inside: auto; }
  article.finding, figure, svg.chart, tr { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


def _state_vars() -> str:
    lines = [f"  --st-{state.name}: {colour};" for state, colour in STATE_COLOURS.items()]
    lines.append("  --c-tw: var(--st-TIME_WAIT); --c-cw: var(--st-CLOSE_WAIT);")
    return "\n".join(lines)


def _state_classes() -> str:
    return "\n".join(
        f".st-{state.name} {{ --c: var(--st-{state.name}); }}" for state in STATE_COLOURS
    )


def stylesheet() -> str:
    return (
        f":root {{ color-scheme: light dark;{_LIGHT}{_state_vars()}\n}}\n"
        f"@media screen and (prefers-color-scheme: dark) {{ :root {{{_DARK}}} }}\n"
        f"{_BASE}{_state_classes()}\n"
    )
