"""The HTML report page (render/html_report.py) drawn from doctor documents built the way
the doctor builds them: synthetic snapshots, hand-made findings, doctor_view.document().

What must hold whatever the data: the page parses, loads nothing from the network, escapes
every string that came from the system, and shows the findings and the charts.
"""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser
from typing import Any

import pytest

from support.synthetic import Sock, context, snapshot
from tcpdoctor.diagnose.context import Context, DoctorOptions
from tcpdoctor.diagnose.engine import Diagnosis, SkippedRule
from tcpdoctor.diagnose.model import Evidence, Finding, Fix, FixKind, Severity
from tcpdoctor.diagnose.overview import ProcessCount, sysctl_audit
from tcpdoctor.diagnose.watch import WatchPoint
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.render import doctor_view, html_report

HOSTILE = "<script>alert(1)</script>"
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}
SVG_VOID = {"line", "rect", "circle", "stop", "path"}  # written self-closing ("<line .../>")


class Page(HTMLParser):
    """Collects tags, attributes and text; checks that elements nest properly."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str, str]] = []  # (tag, name, value)
        self.ids: Counter[str] = Counter()
        self.text: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.in_title = False
        self.title = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        for name, value in attrs:
            self.attrs.append((tag, name, value or ""))
            if name == "id":
                self.ids[value or ""] += 1
        if tag not in VOID:
            self.stack.append(tag)
        self.in_title = tag == "title" and self.stack[:2] == ["html", "head"]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        for name, value in attrs:
            self.attrs.append((tag, name, value or ""))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        self.in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.in_title:
            self.title += data


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, f"unclosed: {parser.stack}"
    return parser


def assert_self_contained(page: str, parsed: Page) -> None:
    assert "http://" not in page and "https://" not in page
    assert "//" not in re.sub(r"<style>.*?</style>|<pre[^>]*>.*?</pre>", "", page, flags=re.S)
    for tag, name, value in parsed.attrs:
        assert name not in {"src", "srcset", "action", "formaction", "poster", "data"}, tag
        if name in {"href", "xlink:href"}:
            assert value.startswith("#"), (tag, value)
        assert not re.search(r"url\((?!#)", value), (tag, name, value)
    assert parsed.tags["script"] == 0
    assert parsed.tags["link"] == 0 and parsed.tags["iframe"] == 0 and parsed.tags["img"] == 0
    assert "@import" not in page and "@font-face" not in page
    assert "Content-Security-Policy" in page


# --- documents ---------------------------------------------------------------------------


def finding(
    title: str,
    severity: Severity = Severity.WARNING,
    *,
    rule: str = "ephemeral-port-exhaustion",
    subject: str = "10.0.0.1 -> 10.0.0.2:80",
) -> Finding:
    return Finding(
        rule=rule,
        severity=severity,
        title=title,
        subject=subject,
        evidence=(
            Evidence("in_use", "ports in use", 27_000, "ports"),
            Evidence("share", "share of the range", 95.6, "%"),
            Evidence("rate", "new connections", 450.25, "conn/s"),
            Evidence("reuse", "tcp_tw_reuse", False),
        ),
        explanation="Each connect() to the same destination needs its own local port.\n\n"
        "TIME_WAIT keeps a port for 60 s after close.",
        fixes=(
            Fix(FixKind.APPLICATION, "Reuse connections (keep-alive, a pool)", "Fewer opens."),
            Fix(
                FixKind.SYSCTL,
                "Widen the ephemeral range",
                example="sysctl -w net.ipv4.ip_local_port_range='10240 65535'\n# and persist it",
                sysctl="net.ipv4.ip_local_port_range",
            ),
            Fix(FixKind.INFRASTRUCTURE, "Add destination addresses"),
        ),
        topics=("time-wait", "ephemeral-ports"),
    )


def diagnosis(*findings: Finding) -> Diagnosis:
    return Diagnosis(
        findings=tuple(sorted(findings, key=lambda f: -f.severity)),
        skipped=(SkippedRule("idle-timeout", "needs --idle-timeout"),),
        limitations=("socket owners: 2 processes could not be inspected",),
        rules_run=("ephemeral-port-exhaustion", "close-wait-leak", "idle-timeout"),
    )


def client_sockets(count: int, *, remote: str = "10.0.0.2", local: str = "10.0.0.1") -> list[Sock]:
    states = (TcpState.TIME_WAIT, TcpState.ESTABLISHED)
    return [
        Sock(states[i % 3 == 0], local=local, lport=32768 + i, remote=remote, rport=443)
        for i in range(count)
    ]


def busy_context(*, watch_points: int = 0, ipv6: bool = True) -> Context:
    socks = [Sock(TcpState.LISTEN, lport=8080, remote="0.0.0.0", rport=0)]
    socks += client_sockets(300)
    socks += client_sockets(40, remote="10.0.0.3")
    if ipv6:
        socks += client_sockets(25, local="2001:db8::1", remote="2001:db8:ffff::42")
    socks += [
        Sock(TcpState.CLOSE_WAIT, lport=8080, remote="10.9.0.1", rport=50000 + i) for i in range(12)
    ]
    first = snapshot(socks[:50], taken_at=1_000_000.0)
    last = snapshot(
        socks,
        taken_at=1_000_000.0 + max(watch_points - 1, 0) * 5.0,
        sysctls={"tcp_fin_timeout": 30, "ip_local_port_range": (32768, 60999)},
    )
    samples = (first, last) if watch_points > 1 else (last,)
    ctx = context(*samples, options=DoctorOptions(idle_timeout=350.0, idle_timeout_source="aws"))
    ctx.timeline = tuple(watch_point(i) for i in range(watch_points))
    return ctx


def watch_point(index: int) -> WatchPoint:
    return WatchPoint(
        offset_s=index * 5.0,
        by_state={
            TcpState.ESTABLISHED: 100 + 3 * index,
            TcpState.TIME_WAIT: 200 * index,
            TcpState.CLOSE_WAIT: index // 2,
            TcpState.LISTEN: 1,
        },
        counters={
            "Tcp.ActiveOpens": 1000 + 40 * index * index,
            "Tcp.PassiveOpens": 10,
            "TcpExt.TW": 500 + 35 * index,
            "TcpExt.ListenDrops": 0,
        },
        busiest_destination="10.0.0.2:443",
        busiest_in_use=1500 * index,
        port_capacity=28232,
    )


def document(
    ctx: Context,
    diag: Diagnosis,
    close_wait: tuple[ProcessCount, ...] = (),
) -> dict[str, Any]:
    return doctor_view.document(ctx, diag, sysctl_audit(ctx, diag), close_wait)


def rich_document(watch_points: int = 13) -> dict[str, Any]:
    ctx = busy_context(watch_points=watch_points)
    diag = diagnosis(
        finding("Ephemeral ports to 10.0.0.2:443 are 96% used", Severity.CRITICAL),
        finding(
            "12 sockets in CLOSE_WAIT held by python3",
            rule="close-wait-leak",
            subject="pid 4242 python3",
        ),
        finding("Connections idle longer than the NLB timeout", Severity.INFO, rule="idle"),
    )
    owners = (
        ProcessCount(4242, "python3", 12, (("10.9.0.1", 12),)),
        ProcessCount(None, "?", 3, (("2001:db8::9", 2), ("10.9.0.2", 1))),
    )
    return document(ctx, diag, owners)


# --- tests -------------------------------------------------------------------------------


def test_empty_findings_page_says_so() -> None:
    doc = document(context(snapshot([Sock(TcpState.LISTEN, lport=22)])), diagnosis())
    page = html_report.render(doc)
    parsed = parse(page)
    assert_self_contained(page, parsed)
    assert parsed.title.startswith("tcpdoctor report")
    assert "No lifecycle problems found" in page
    assert parsed.tags["article"] == 0
    assert parsed.tags["svg"] == 1  # the state bars; nothing else to draw
    for ident in ("findings", "states", "ports", "timeline", "close-wait", "sysctls", "notes"):
        assert parsed.ids[ident] == 1, ident


def test_no_sockets_at_all() -> None:
    page = html_report.render(document(context(snapshot([])), diagnosis()))
    parsed = parse(page)
    assert_self_contained(page, parsed)
    assert "No TCP sockets." in page
    assert parsed.tags["svg"] == 0


def test_many_findings_grouped_by_severity_with_fixes_and_charts() -> None:
    doc = rich_document()
    page = html_report.render(doc)
    parsed = parse(page)
    assert_self_contained(page, parsed)
    for item in doc["findings"]:
        assert html_report.esc(item["title"]) in page
    assert parsed.tags["article"] == 3
    assert [m for m in re.findall(r'class="sev-group">(\w+)', page)] == [
        "critical",
        "warning",
        "info",
    ]
    assert "1 critical, 1 warning, 1 info" in page
    assert "27,000 ports" in page and "95.6%" in page and "no" in page  # Evidence.text()
    assert parsed.tags["pre"] == 3  # one example per finding
    assert "tcpdoctor explain time-wait" in page
    assert 'href="#sysctl-net-ipv4-ip_local_port_range"' in page
    assert parsed.ids["sysctl-net-ipv4-ip_local_port_range"] == 1
    assert all(count == 1 for count in parsed.ids.values()), parsed.ids.most_common(3)


def test_state_bars_and_port_capacity_chart() -> None:
    page = html_report.render(rich_document(watch_points=1))
    parsed = parse(page)
    assert 'aria-label="TCP sockets by state"' in page
    assert 'aria-label="Ephemeral ports in use per destination vs capacity"' in page
    assert "st-TIME_WAIT" in page and "st-CLOSE_WAIT" in page
    assert "capacity-line" in page and "tw-hatch-" in page
    assert "of 28,232" in page  # capacity printed next to each destination
    text = "".join(parsed.text)
    assert "[2001:db8:ffff::42]:443" in text  # IPv6 destinations bracketed
    assert "from 2001:db8::1" in text
    assert "--watch 60" in text  # one sample: the page says how to get timelines


def test_watch_timeline_charts() -> None:
    doc = rich_document(watch_points=13)
    assert len(doc["timeline"]) == 13
    page = html_report.render(doc)
    parsed = parse(page)
    assert_self_contained(page, parsed)
    assert 'aria-label="Sockets by state over time"' in page
    assert html_report.esc("Busiest destination's ephemeral ports vs capacity") in page
    assert "Tcp.ActiveOpens/s" in page and "TcpExt.TW/s" in page
    assert "Did not move: TcpExt.ListenDrops" in page
    lines = re.findall(r'<polyline points="[^"]+" class="series ([^" ]+)', page)
    assert {"st-TIME_WAIT", "st-ESTABLISHED", "st-CLOSE_WAIT", "c-use", "c-capacity"} <= set(lines)
    assert "st-LISTEN" not in lines  # constant LISTEN count is left out of the picture
    assert "13 samples over 60 s" in page


def test_timeline_accepts_state_names_or_numbers_as_keys() -> None:
    doc = rich_document(watch_points=3)
    named = html_report.render(doc)
    for point in doc["timeline"]:
        point["by_state"] = {
            str(int(TcpState.parse(k)) if not k.isdigit() else k): v
            for k, v in point["by_state"].items()
        }
    assert all(k.isdigit() for k in doc["timeline"][0]["by_state"])
    numbered = html_report.render(doc)
    strip = re.compile(r"tw-hatch-\d+")
    assert strip.sub("", named) == strip.sub("", numbered)


def test_hostile_strings_are_escaped() -> None:
    ctx = busy_context(watch_points=3)
    diag = diagnosis(
        finding(
            f"title {HOSTILE}",
            Severity.CRITICAL,
            rule=f"rule{HOSTILE}",
            subject=f"<img src=x onerror=alert(2)> {HOSTILE}",
        ),
    )
    owners = (ProcessCount(6666, HOSTILE, 4, (('"><svg onload=alert(3)>', 4),)),)
    doc = document(ctx, diag, owners)
    doc["meta"]["hostname"] = f"host{HOSTILE}"
    doc["meta"]["netns"]["name"] = '"onmouseover="alert(4)'
    doc["limitations"].append(HOSTILE)
    doc["timeline"][-1]["busiest_destination"] = HOSTILE
    page = html_report.render(doc)
    parsed = parse(page)
    assert_self_contained(page, parsed)
    assert HOSTILE not in page
    assert "<img" not in page and "onerror" not in {n for _, n, _ in parsed.attrs}
    assert not [n for _, n, _ in parsed.attrs if n.startswith("on")]
    assert parsed.tags["img"] == 0 and parsed.tags["script"] == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    text = "".join(parsed.text)
    assert text.count(HOSTILE) >= 5  # shown as text: title, glance, process, host, notes
    assert parsed.title == f"tcpdoctor report — host{HOSTILE}"


def test_sysctl_audit_lists_flagged_and_changed_first() -> None:
    page = html_report.render(rich_document(watch_points=1))
    rows = re.findall(r'<tr class="(\w[\w-]*)" id="sysctl-([^"]+)"', page)
    ranks = [{"flagged": 0, "changed": 1, "absent": 2, "at-default": 3}[c] for c, _ in rows]
    assert ranks == sorted(ranks)
    assert rows[0] == ("flagged", "net-ipv4-ip_local_port_range")
    assert ("changed", "net-ipv4-tcp_fin_timeout") in rows
    assert "30 s" in page  # seconds get their unit from the sysctl catalogue


@pytest.mark.parametrize("broken", ["timeline", "summary", "findings", "sysctl_audit", "meta"])
def test_missing_or_odd_parts_do_not_break_the_page(broken: str) -> None:
    doc = rich_document(watch_points=3)
    doc[broken] = None
    parse(html_report.render(doc))
    del doc[broken]
    parse(html_report.render(doc))


def test_close_wait_owners_table() -> None:
    page = html_report.render(rich_document(watch_points=1))
    parsed = parse(page)
    text = "".join(parsed.text)
    assert "python3" in text and "10.9.0.1 (12)" in text
    assert "2001:db8::9 (2), 10.9.0.2 (1)" in text


def test_busiest_destination_far_below_capacity_is_drawn_to_its_own_scale() -> None:
    doc = rich_document(watch_points=4)
    for point in doc["timeline"]:
        point["busiest_in_use"] = 30
    page = html_report.render(doc)
    lines = re.findall(r'<polyline points="[^"]+" class="series ([^" ]+)', page)
    assert "c-use" in lines and "c-capacity" not in lines
    assert "capacity 28,232: far above, left off the scale" in page
