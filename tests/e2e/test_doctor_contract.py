"""`tcpdoctor doctor --json` against its documented contract (docs/doctor.schema.json),
on this machine and on a namespace with a known population, plus exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from support.netns import tcpdoctor
from support.population import populated_netns
from support.privilege import run_unprivileged

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "doctor.schema.json").read_text()
)


def _doctor_json(*argv: str) -> dict[str, Any]:
    done = tcpdoctor("doctor", "--json", *argv)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.e2e
def test_doctor_json_on_this_machine_matches_the_contract() -> None:
    document = _doctor_json()
    jsonschema.validate(document, SCHEMA)
    assert document["meta"]["socket_count"] == document["summary"]["total"]


@pytest.mark.e2e
@pytest.mark.kernel
def test_doctor_json_on_a_population_matches_the_contract_and_the_counts() -> None:
    with populated_netns() as pop:
        document = _doctor_json("--netns", pop.netns, "--watch", "1", "--interval", "0.5")
        by_state = document["summary"]["by_state"]
        for state, count in pop.spec.expected_states().items():
            assert by_state[state] == count, state
        closers = {row["pid"]: row["count"] for row in document["close_wait_by_process"]}
        assert closers == {pop.holder_pid: pop.spec.close_wait}
    jsonschema.validate(document, SCHEMA)
    assert len(document["timeline"]) >= 2
    assert document["meta"]["watch"]["duration_s"] > 0
    assert set(document["meta"]["rules_run"]) >= {f["rule"] for f in document["findings"]}


@pytest.mark.e2e
@pytest.mark.kernel
def test_fail_on_sets_the_exit_code_only_for_findings_at_or_above() -> None:
    """On a population with a CLOSE_WAIT leak, so that some level must exit 1."""
    with populated_netns() as pop:
        document = _doctor_json("--netns", pop.netns)
        worst = max(
            (["info", "warning", "critical"].index(f["severity"]) for f in document["findings"]),
            default=-1,
        )
        assert worst >= 0, "the population should give at least one finding"
        for level, name in enumerate(["info", "warning", "critical"]):
            done = tcpdoctor("doctor", "--netns", pop.netns, "--fail-on", name)
            assert done.returncode == (1 if worst >= level else 0), (name, done.stderr)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "argv",
    [
        ["doctor", "--fail-on", "fatal"],
        ["doctor", "--watch", "-1"],
        ["doctor", "--netns", "tdlab-no-such-namespace"],
        ["doctor", "--idle-timeout", "soon"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str]) -> None:
    done = tcpdoctor(*argv)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpdoctor: error:"), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
def test_doctor_without_root_runs_and_says_what_it_could_not_see() -> None:
    done = run_unprivileged("doctor", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    jsonschema.validate(document, SCHEMA)
    if document["meta"]["privileged"]:
        pytest.fail("expected to run unprivileged (setpriv to nobody)")
    assert any("root" in note for note in document["limitations"]), document["limitations"]
