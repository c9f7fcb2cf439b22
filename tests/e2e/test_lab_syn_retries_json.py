"""`tcpdoctor lab run syn-retries --quick --json` as a user runs it: one JSON object with
the documented keys, and the exit code that says whether measured agreed with expected.
Needs root and network namespaces (marked kernel too)."""

from __future__ import annotations

import json

import pytest

from support.netns import tcpdoctor

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]


def test_json_has_the_contract_keys() -> None:
    done = tcpdoctor("lab", "run", "syn-retries", "--quick", "--json", timeout=90)
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout)
    assert {"scenario", "params", "expected", "measured", "agree", "timeline"} <= set(result)
    assert result["scenario"] == "syn-retries"
    assert result["params"] == {"syn_retries": 2, "syncnt": None, "user_timeout": None}
    assert (done.returncode == 0) is result["agree"] is True, result["verdict"]
    assert result["expected"]["syns"] == result["measured"]["syns"]
    assert result["measured"]["error"] == "ETIMEDOUT"
    assert result["verdict"].startswith("measured vs expected: ")
    events = [e["kind"] for e in result["timeline"]["events"]]
    assert events[0] == "syn" and events[-1] == "gave_up"
    assert all(c["unit"] == "s" for c in result["checks"] if c["name"].startswith("gap_"))
