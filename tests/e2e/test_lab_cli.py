"""`tcpdoctor lab` as a user meets it: listing, and every way to get the call wrong gives
one line on stderr and the documented exit code, never a traceback. None of these need
root: bad input is refused before anything touches the kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support.netns import tcpdoctor
from support.privilege import DROP_TO_NOBODY, run_unprivileged

pytestmark = pytest.mark.e2e


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("tcpdoctor: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_list_names_the_scenarios_and_their_flags() -> None:
    done = tcpdoctor("lab", "list", "--json")
    assert done.returncode == 0, done.stderr
    found = {s["name"]: s for s in json.loads(done.stdout)}
    flags = {p["flag"] for p in found["port-exhaustion"]["params"]}
    assert {"--ports", "--rate", "--tw-reuse", "--pool", "--server-closes-first"} <= flags
    text = tcpdoctor("lab", "list")
    assert text.returncode == 0 and "port-exhaustion" in text.stdout


def test_scenario_help_lists_its_flags() -> None:
    done = tcpdoctor("lab", "run", "port-exhaustion", "--help")
    assert done.returncode == 0
    for flag in ("--tw-reuse", "--sysctl", "--quick", "--json", "--plot", "--pcap"):
        assert flag in done.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
        (["run", "port-exhaustion", "--sysctl", "tcp_bogus=1"], "unknown sysctl 'tcp_bogus'"),
        (["run", "port-exhaustion", "--sysctl", "tcp_tw_reuse"], "NAME=VALUE"),
        (["run", "port-exhaustion", "--sysctl", "tcp_fin_timeout=soon"], "expected an integer"),
        (["run", "port-exhaustion", "--sysctl", "fs.file-max=10"], "host-wide"),
        (["run", "port-exhaustion", "--tw-reuse", "3"], "--tw-reuse must be one of 0, 1, 2"),
        (["run", "port-exhaustion", "--ports", "0"], "--ports must be at least 1"),
        (["run", "port-exhaustion", "--rate", "fast"], "'fast' is not a valid float"),
        (["run", "port-exhaustion", "--pool", "--server-closes-first"], "exclude each other"),
        (
            ["run", "port-exhaustion", "--sysctl", "ip_local_port_range=500 600"],
            "1024 or above",
        ),
        (["run", "port-exhaustion", "--no-such-flag"], "No such option"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str) -> None:
    done = tcpdoctor("lab", *argv)
    assert done.returncode == 2, done.stderr
    assert message in one_line_error(done.stderr)
    assert done.stdout == ""


def test_without_root_exit_3_with_one_line() -> None:
    done = run_unprivileged("lab", "run", "port-exhaustion", "--quick")
    assert done.returncode == 3, done.stderr
    assert "needs root" in one_line_error(done.stderr)


# The CLI with matplotlib made unimportable (a None entry in sys.modules), whether or not
# the plot extra is installed here.
_WITHOUT_MATPLOTLIB = (
    "import sys; sys.modules['matplotlib'] = None; "
    "from tcpdoctor.cli.main import main; main(sys.argv[1:])"
)


def test_plot_without_matplotlib_is_exit_4_before_anything_runs() -> None:
    argv = ["lab", "run", "port-exhaustion", "--quick", "--plot", "/tmp/x.png"]
    done = subprocess.run(
        [
            *(DROP_TO_NOBODY if os.geteuid() == 0 else []),
            sys.executable,
            "-c",
            _WITHOUT_MATPLOTLIB,
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 4, done.stderr
    assert "matplotlib" in one_line_error(done.stderr)
