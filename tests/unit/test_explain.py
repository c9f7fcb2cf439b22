"""`tcpdoctor explain`: topics render, aliases resolve, references exist, numbers come from
tcpdoctor.kernel, errors are one line, and the generated docs are current."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.scripts import load_script
from tcpdoctor.cli.main import main
from tcpdoctor.explain import (
    TOPIC_IDS,
    Topic,
    all_topics,
    build_topic,
    get_topic,
    normalize,
    resolve,
    suggest,
)
from tcpdoctor.explain._fmt import num
from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import (
    DEFAULT_PORT_RANGE,
    MAX_PORT,
    SOMAXCONN_DEFAULT,
    TCP_FIN_TIMEOUT_MAX,
    TCP_KEEPALIVE_INTVL,
    TCP_KEEPALIVE_PROBES,
    TCP_KEEPALIVE_TIME,
    TCP_RETR2,
    TCP_RTO_MAX,
    TCP_TIMEWAIT_LEN,
    TW_SOCK_BYTES,
)
from tcpdoctor.kernel.counters import COUNTERS
from tcpdoctor.kernel.sysctls import SYSCTLS

ROOT = Path(__file__).resolve().parents[2]
EXPLAIN_SRC = ROOT / "src" / "tcpdoctor" / "explain"
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")

# The ids other engineers reference; changing one is a breaking change.
FIXED_IDS = (
    "time-wait",
    "close-wait",
    "fin-wait2",
    "tw-reuse",
    "tw-recycle",
    "timestamps",
    "keepalive",
    "linger",
    "rto",
    "retries",
    "syn-retries",
    "ports",
    "listen-queue",
    "orphans",
    "max-tw-buckets",
    "user-timeout",
    "idle-timeout",
    "fd-limits",
)
TOPIC_KEYS = {
    "id",
    "title",
    "aliases",
    "summary",
    "body",
    "key_numbers",
    "sysctls",
    "counters",
    "see_also",
    "calc",
}
KEY_NUMBER_UNITS = {"", "s", "bytes", "MiB", "ports", "conn/s", "× RTO"}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 1), out, err


def text_of(topic: Topic) -> str:
    return " ".join((topic.title, topic.summary, *topic.body))


# --- the topic set --------------------------------------------------------------------------


def test_topic_ids_are_the_fixed_ones() -> None:
    assert TOPIC_IDS == FIXED_IDS
    assert tuple(t.id for t in all_topics()) == FIXED_IDS


@pytest.mark.parametrize("topic_id", FIXED_IDS)
def test_topic_is_well_formed(topic_id: str) -> None:
    topic = build_topic(topic_id)
    assert topic.id == topic_id
    for line in (topic.title, topic.summary):
        assert line.strip() and "\n" not in line
    assert len(topic.body) >= 2
    assert all(p.strip() and "\n" not in p for p in topic.body)
    assert topic.key_numbers
    for number in topic.key_numbers:
        assert number.unit in KEY_NUMBER_UNITS, number
        assert number.label and number.source
        assert isinstance(number.value, int | float) and not isinstance(number.value, bool)


@pytest.mark.parametrize("topic_id", FIXED_IDS)
def test_references_exist(topic_id: str) -> None:
    topic = build_topic(topic_id)
    assert set(topic.sysctls) <= set(SYSCTLS), set(topic.sysctls) - set(SYSCTLS)
    assert set(topic.counters) <= set(COUNTERS), set(topic.counters) - set(COUNTERS)
    assert set(topic.see_also) <= set(FIXED_IDS)
    assert topic_id not in topic.see_also
    for items in (topic.sysctls, topic.counters, topic.see_also, topic.aliases, topic.calc):
        assert len(items) == len(set(items)), items


@pytest.mark.parametrize("topic_id", FIXED_IDS)
def test_calc_commands_run(capsys: pytest.CaptureFixture[str], topic_id: str) -> None:
    for command in build_topic(topic_id).calc:
        argv = shlex.split(command)
        assert argv[:2] == ["tcpdoctor", "calc"], command
        code, out, err = run(capsys, *argv[1:], "--json")
        assert code == 0, f"{command}: {err}"
        json.loads(out)


# --- lookup ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "topic_id"),
    [
        ("TIME_WAIT", "time-wait"),
        ("timewait", "time-wait"),
        ("Time-Wait", "time-wait"),
        ("time wait", "time-wait"),
        ("SO_LINGER", "linger"),
        ("so-linger", "linger"),
        ("tcp_tw_reuse", "tw-reuse"),
        ("TCP-TW-REUSE", "tw-reuse"),
        ("net.ipv4.tcp_tw_reuse", "tw-reuse"),
        ("CLOSE_WAIT", "close-wait"),
        ("FIN_WAIT2", "fin-wait2"),
        ("tcp_fin_timeout", "fin-wait2"),
        ("tcp_tw_recycle", "tw-recycle"),
        ("SO_KEEPALIVE", "keepalive"),
        ("TCP_USER_TIMEOUT", "user-timeout"),
        ("somaxconn", "listen-queue"),
        ("net.core.somaxconn", "listen-queue"),
        ("ip_local_port_range", "ports"),
        ("tcp_max_tw_buckets", "max-tw-buckets"),
        ("fs.file-max", "fd-limits"),
        ("  rto  ", "rto"),
    ],
)
def test_spellings_resolve(spelling: str, topic_id: str) -> None:
    assert resolve(spelling) == topic_id
    assert get_topic(spelling).id == topic_id


def test_every_alias_resolves_to_its_topic() -> None:
    for topic in all_topics():
        for alias in topic.aliases:
            assert resolve(alias) == topic.id, alias


def test_aliases_are_unambiguous() -> None:
    owner: dict[str, str] = {}
    for topic in all_topics():
        for name in (topic.id, *topic.aliases):
            key = normalize(name)
            assert owner.setdefault(key, topic.id) == topic.id, (name, owner[key], topic.id)


def test_suggestions_prefer_close_names() -> None:
    assert suggest("timewaitt")[0] == "time-wait"
    assert "keepalive" in suggest("keepalvie")
    assert suggest("zzzz") == list(FIXED_IDS)


# --- numbers come from tcpdoctor.kernel -------------------------------------------------------


def _expected_numbers() -> Iterator[tuple[str, str]]:
    tw = num(TCP_TIMEWAIT_LEN)
    ports = timing.port_capacity()
    rate = timing.max_connection_rate(ports)
    yield "time-wait", f"{tw} s"
    yield "time-wait", str(ports.capacity)
    yield "time-wait", num(rate.max_rate, 1)
    yield "time-wait", str(TW_SOCK_BYTES)
    yield "retries", num(timing.established_give_up().budget)
    yield "retries", str(TCP_RETR2)
    yield "retries", f"{num(TCP_RTO_MAX)} s"
    yield "keepalive", num(timing.keepalive_detection().detected_at)
    yield "keepalive", num(TCP_KEEPALIVE_TIME)
    yield "keepalive", num(TCP_KEEPALIVE_INTVL)
    yield "keepalive", str(TCP_KEEPALIVE_PROBES)
    yield "syn-retries", num(timing.syn_give_up().schedule.gives_up_at)
    yield "syn-retries", num(timing.synack_give_up().schedule.gives_up_at)
    yield "ports", str(ports.capacity)
    yield "ports", num(rate.max_rate, 1)
    yield "ports", f"{DEFAULT_PORT_RANGE[0]}-{DEFAULT_PORT_RANGE[1]}"
    yield "fin-wait2", num(timing.fin_wait2_lifetime().lifetime or 0.0)
    yield "fin-wait2", num(timing.fin_wait2_lifetime(90).lifetime or 0.0)
    yield "fin-wait2", num(TCP_FIN_TIMEOUT_MAX)
    yield "orphans", num(timing.orphan_give_up().budget)
    yield "linger", num(timing.orphan_give_up().budget)
    yield "listen-queue", str(SOMAXCONN_DEFAULT)
    yield "fd-limits", f"{MAX_PORT:,}"
    yield "tw-recycle", str(SYSCTLS["net.ipv4.tcp_tw_recycle"].removed)
    yield "tw-reuse", str(SYSCTLS["net.ipv4.tcp_tw_reuse_delay"].added)
    yield "user-timeout", num(timing.established_give_up().budget)
    yield "idle-timeout", num(TCP_KEEPALIVE_TIME)


@pytest.mark.parametrize(("topic_id", "number"), list(_expected_numbers()))
def test_text_carries_the_kernel_number(topic_id: str, number: str) -> None:
    assert number in text_of(build_topic(topic_id))


def test_key_numbers_match_the_formulas() -> None:
    by_topic = {t.id: {n.source: n.value for n in t.key_numbers} for t in all_topics()}
    assert by_topic["time-wait"]["TCP_TIMEWAIT_LEN (include/net/tcp.h)"] == TCP_TIMEWAIT_LEN
    assert by_topic["retries"]["tcp_model_timeout(), established"] == pytest.approx(
        timing.established_give_up().budget
    )
    assert by_topic["keepalive"]["keepalive_detection()"] == pytest.approx(
        timing.keepalive_detection().detected_at
    )


# Digits a string literal in explain/ may still contain once the patterns below are removed:
# none. Kernel numbers must come from tcpdoctor.kernel through f-string fields.
_ALLOWED_DIGITS = re.compile(
    r"""
      RFC\ \d+                               # RFC numbers
    | 4\ ×\ rttvar                           # RFC 6298's K in the RTO formula
    | 127\.0\.0\.0/8 | ::1                   # loopback addresses
    | \b4-tuple\b
    | \b2msl\b | \butf-8\b
    | [A-Za-z_][A-Za-z0-9_]*\d[A-Za-z0-9_]*  # identifiers: tcp_retries2, IPv4, retries2
    | (?<![\w.])[012](?!\w|\.\d)             # switch values: 0 off, 1 on, 2 loopback
    """,
    re.VERBOSE | re.IGNORECASE,
)


def _docstring_ids(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
            skip.update(id(sub) for sub in ast.walk(node.format_spec))
    return skip


def _string_literals(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstring_ids(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


@pytest.mark.parametrize(
    "path",
    [*sorted(EXPLAIN_SRC.glob("*.py")), ROOT / "scripts" / "gen_explain_docs.py"],
    ids=lambda p: p.name,
)
def test_no_kernel_number_is_typed_into_prose(path: Path) -> None:
    offenders = [
        f"{path.name}:{line}: {text!r}"
        for line, text in _string_literals(path)
        if re.search(r"\d", _ALLOWED_DIGITS.sub("", text))
    ]
    assert not offenders, "compute these from tcpdoctor.kernel:\n" + "\n".join(offenders)


# --- the command ------------------------------------------------------------------------------


@pytest.mark.parametrize("topic_id", FIXED_IDS)
def test_topic_renders_as_text(capsys: pytest.CaptureFixture[str], topic_id: str) -> None:
    code, out, err = run(capsys, "explain", topic_id)
    assert code == 0, err
    assert err == ""
    topic = build_topic(topic_id)
    assert topic.title in out
    for section in ("Key numbers", "See also"):
        assert section in out
    for name in topic.sysctls:
        assert name in out
    for key in topic.counters:
        assert key in out


@pytest.mark.parametrize("topic_id", FIXED_IDS)
def test_topic_renders_as_json(capsys: pytest.CaptureFixture[str], topic_id: str) -> None:
    code, out, err = run(capsys, "explain", topic_id, "--json")
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    assert set(data) == TOPIC_KEYS
    assert all(SNAKE.match(key) for key in data)
    assert data["id"] == topic_id
    assert data["body"] == list(build_topic(topic_id).body)
    for number in data["key_numbers"]:
        assert set(number) == {"label", "value", "unit", "source"}
        assert isinstance(number["value"], int | float)


def test_alias_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "SO_LINGER", "--json")
    assert code == 0
    assert json.loads(out)["id"] == "linger"


def test_list_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain")
    assert code == 0, err
    for topic_id in FIXED_IDS:
        assert topic_id in out


def test_list_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [entry["id"] for entry in data] == list(FIXED_IDS)
    for entry in data:
        assert set(entry) == {"id", "title", "summary", "aliases"}
        assert entry["summary"] == build_topic(entry["id"]).summary


def test_unknown_topic_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", "timewaitt")
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        "tcpdoctor: error: unknown topic 'timewaitt'; try one of: time-wait"
    ]


def test_unknown_topic_lists_all_when_nothing_is_close(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "explain", "zzzz", "--json")
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tcpdoctor: error: unknown topic 'zzzz'; try one of: ")
    assert lines[0].endswith(", ".join(FIXED_IDS))


def test_unknown_topic_in_a_real_process_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tcpdoctor", "explain", "so-lingerr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tcpdoctor: error: unknown topic 'so-lingerr'; try one of: linger")


# --- generated docs ---------------------------------------------------------------------------


def test_explain_docs_are_current() -> None:
    actual = (ROOT / "docs" / "explain.md").read_text(encoding="utf-8")
    expected = load_script("gen_explain_docs").render_explain()
    assert actual == expected, "docs/explain.md is stale: run scripts/gen_explain_docs.py"


def test_concepts_timer_table_is_current() -> None:
    actual = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    expected = load_script("gen_explain_docs").render_concepts(actual)
    assert actual == expected, "docs/concepts.md is stale: run scripts/gen_explain_docs.py"


def test_docs_link_only_to_existing_topics() -> None:
    explain_md = (ROOT / "docs" / "explain.md").read_text(encoding="utf-8")
    concepts_md = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    for topic_id in FIXED_IDS:
        assert f"\n## {topic_id}\n" in explain_md
    from_concepts = set(re.findall(r"explain\.md#([a-z0-9-]+)", concepts_md))
    within_explain = set(re.findall(r"\]\(#([a-z0-9-]+)\)", explain_md))
    assert from_concepts == set(FIXED_IDS), set(FIXED_IDS) ^ from_concepts
    assert within_explain <= set(FIXED_IDS), within_explain - set(FIXED_IDS)


def test_docs_check_mode_passes() -> None:
    assert load_script("gen_explain_docs").main(["--check"]) == 0
