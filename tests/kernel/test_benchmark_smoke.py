"""The benchmark still runs end to end: `benchmarks/run.py --quick` on a small population.

Not a performance test (those numbers live in benchmarks/README.md); it fails when the
benchmark breaks: a tool missing, a wrong socket count, a nonsense timing, a leftover
namespace.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "benchmarks" / "run.py"
TIMEOUT_S = 600.0
TOOLS = {
    "snapshot",
    "scan_json",
    "doctor",
    "ss_tan",
    "ss_tanp",
    "owners",
    "traced",
    "psutil",
    "pyroute2",
}
MAY_HIT_CAP = {"psutil", "pyroute2"}  # anchors: over the quick cap is a result, not a break


def _run_quick(out: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(RUN), "--quick", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # run.py deletes its namespace on SIGTERM
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        pytest.fail(f"benchmarks/run.py --quick took over {TIMEOUT_S} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "result.json"
    done = _run_quick(out)
    assert done.returncode == 0, f"run.py failed:\n{done.stderr[-3000:]}"
    return json.loads(out.read_text(encoding="utf-8")), done.stdout


def test_every_tool_measured_on_the_whole_population(quick: tuple[dict[str, Any], str]) -> None:
    result, _ = quick
    (size_report,) = result["sizes"]
    size = size_report["size"]
    cap = result["config"]["cap_s"]
    assert set(size_report["tools"]) == TOOLS
    for key, entry in size_report["tools"].items():
        if entry["timed_out"]:
            assert key in MAY_HIT_CAP, f"{key} hit the {cap} s cap at {size} sockets"
            continue
        assert entry["valid_samples"] >= 1, f"{key}: {entry['note']}"
        assert entry["count"] >= 0.95 * size, f"{key} saw {entry['count']} of {size}"
        assert entry["count"] <= size * 1.01, f"{key} saw {entry['count']} of {size}"
        assert 0 < entry["wall_s"] < cap, f"{key} wall {entry['wall_s']}"
        assert entry["maxrss_mib"] > 0, f"{key} peak RSS {entry['maxrss_mib']}"
    for key in ("snapshot", "owners", "psutil", "pyroute2"):
        entry = size_report["tools"][key]
        if not entry["timed_out"]:
            assert 0 < entry["call_s"] <= entry["wall_s"], f"{key}: {entry}"


def test_population_was_intact_for_each_timed_sample(quick: tuple[dict[str, Any], str]) -> None:
    result, _ = quick
    (size_report,) = result["sizes"]
    size = size_report["size"]
    for sample in size_report["samples"]:
        if sample["timed_out"]:
            continue
        assert sample["valid"], sample
        assert sample["population_before"] >= 0.95 * size, sample
        assert sample["error"] is None, sample
    for build in size_report["builds"]:
        assert build["count_after_build"] >= 0.99 * size, build
        assert build["build_s"] > 0


def test_closewait_owners_and_memory_reported(quick: tuple[dict[str, Any], str]) -> None:
    result, _ = quick
    (size_report,) = result["sizes"]
    memory = size_report["memory"]
    closewait = result["config"]["closewait"]
    assert memory["closewait_seen"] == closewait
    assert memory["closewait_owned"] == closewait  # all held by the population's holder
    assert 0 < memory["bytes_per_socket"] < 1000
    assert memory["tracemalloc_peak_per_socket"] > 0


def test_targets_and_table_printed(quick: tuple[dict[str, Any], str]) -> None:
    result, stdout = quick
    statuses = {check["target"]: check["status"] for check in result["targets"]}
    assert len(statuses) == 5  # snapshot, scan --json, doctor, owners, memory
    assert set(statuses.values()) <= {"PASS", "FAIL"}  # every check had numbers to compare
    columns = (
        "snapshot call",
        "scan --json",
        "doctor",
        "ss -tan",
        "ss -tanp",
        "psutil",
        "pyroute2",
    )
    for column in columns:
        assert column in stdout
    for key in ("cpu", "cores", "ram_gib", "kernel", "python", "numpy", "ss"):
        assert result["machine"].get(key), key


def test_namespaces_deleted(quick: tuple[dict[str, Any], str]) -> None:
    result, _ = quick
    names = {build["netns"] for report in result["sizes"] for build in report["builds"]}
    assert names and all(name.startswith("tdlab-bench-") for name in names)
    listed = subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    present = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert not names & present, f"left behind: {names & present}"
