"""`tcpdoctor scan` given bad input or too few privileges: one line, the documented code.

Contract (docs/design.md): a user error is exactly one line on stderr starting with
`tcpdoctor: error:`, never a traceback; exit 2 for usage / bad input, 3 for permission.
The privilege cases run the CLI as `nobody` (setpriv when we are root, or directly when
the suite itself runs unprivileged).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

import support.netns as support_netns
from support.netns import netns, tcpdoctor
from support.privilege import run_unprivileged
from tcpdoctor.errors import ExitCode

pytestmark = pytest.mark.e2e


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: ExitCode, fragment: str
) -> None:
    lines = result.stderr.splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tcpdoctor: error: "), lines[0]
    assert "Traceback" not in result.stderr
    assert fragment in lines[0], lines[0]
    assert result.stdout == ""


def missing_pid() -> int:
    """The pid of a process that has just exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait(timeout=10)
    assert not os.path.exists(f"/proc/{child.pid}"), "pid reused at once; rerun"
    return child.pid


# --- bad input: exit 2 ----------------------------------------------------------------

BAD_INPUT = [
    (["--netns", f"tdlab-missing-{uuid.uuid4().hex[:8]}"], "no network namespace"),
    (["--netns", "/etc/passwd"], "is not a network namespace"),
    (["--netns", ""], "invalid network namespace name"),
    (["--pid", "0"], "invalid pid 0"),
    (["--pid", "abc"], "'--pid'"),
    (["--netns", "tdlab-x", "--pid", "1"], "either --netns or --pid"),
    (["--state", "bogus"], "unknown state 'bogus'"),
    (["--state", "close-wait,listening,nope"], "unknown state 'nope'"),
    (["--dport", "70000"], "port range '70000'"),
    (["--sport", "5-3"], "port range '5-3'"),
    (["--dport", "http"], "invalid port or port range 'http'"),
    (["--src", "999.1.1.1"], "invalid address or network '999.1.1.1'"),
    (["--dst", "::1/200"], "invalid address or network '::1/200'"),
    (["-4", "-6"], "-4 and -6 exclude each other"),
    (["--bogus"], "No such option '--bogus'"),
    (["--source", "carrier-pigeon"], "'--source'"),
    (["--top", "0"], "'--top'"),
]


@pytest.mark.parametrize(
    ("args", "fragment"), BAD_INPUT, ids=[" ".join(a) or "empty" for a, _ in BAD_INPUT]
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    assert_one_line_error(tcpdoctor("scan", *args), ExitCode.USAGE, fragment)


def test_pid_of_a_missing_process_is_exit_2() -> None:
    pid = missing_pid()
    assert_one_line_error(
        tcpdoctor("scan", "--pid", str(pid)), ExitCode.USAGE, f"no process with pid {pid}"
    )


def test_unknown_netns_is_exit_2_for_unprivileged_users_too() -> None:
    name = f"tdlab-missing-{uuid.uuid4().hex[:8]}"
    result = run_unprivileged("scan", "--netns", name)
    assert_one_line_error(result, ExitCode.USAGE, f"no network namespace '{name}'")


# --- not allowed: exit 3 --------------------------------------------------------------


def _owned_by_root(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == 0
    except OSError:
        return False


def test_pid_1_as_non_root_is_exit_3() -> None:
    if not _owned_by_root(1):
        pytest.skip("pid 1 is not a root-owned process here")
    result = run_unprivileged("scan", "--pid", "1")
    assert_one_line_error(result, ExitCode.PERMISSION, "not allowed")


@pytest.fixture
def root_process() -> Iterator[int]:
    if os.geteuid() != 0:
        pytest.skip("needs root to start a root-owned process")
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_root_process_namespace_as_nobody_is_exit_3(root_process: int) -> None:
    result = run_unprivileged("scan", "--pid", str(root_process))
    assert_one_line_error(result, ExitCode.PERMISSION, f"/proc/{root_process}/ns/net")


@pytest.fixture
def scratch_netns() -> Iterator[support_netns.TestNetns]:
    with netns() as ns:
        yield ns


@pytest.mark.kernel
def test_named_netns_as_nobody_is_exit_3(scratch_netns: support_netns.TestNetns) -> None:
    # /run/netns/NAME is world-readable, so the open works; setns() then needs
    # CAP_SYS_ADMIN and fails with EPERM.
    result = run_unprivileged("scan", "--netns", scratch_netns.name, "--json")
    assert_one_line_error(result, ExitCode.PERMISSION, "CAP_SYS_ADMIN")


# --- unprivileged scanning of our own namespace works ---------------------------------


@pytest.fixture
def loopback_listener() -> Iterator[socket.socket]:
    """A LISTEN socket of ours on 127.0.0.1 in the namespace the CLI will scan."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock
    finally:
        sock.close()


@pytest.mark.parametrize("source", ["netlink", "proc"])
def test_unprivileged_scan_of_own_namespace_works(
    loopback_listener: socket.socket, source: str
) -> None:
    port = loopback_listener.getsockname()[1]
    inode = os.fstat(loopback_listener.fileno()).st_ino
    result = run_unprivileged(
        "scan", "--json", "--source", source, "--state", "listen", "--sport", str(port), "-p"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document["meta"]["source"] == source
    assert document["meta"]["privileged"] is False
    [row] = document["sockets"]
    assert (row["state"], row["local_address"], row["local_port"]) == ("LISTEN", "127.0.0.1", port)
    assert row["inode"] == inode
    assert row["uid"] == os.geteuid()
    if os.geteuid() == 0:
        # nobody cannot read our fd table: the owner stays unknown, and that is said.
        assert row["pid"] is None
        assert document["meta"]["owner_scan"]["unreadable_pids"] > 0
    else:
        assert row["pid"] == os.getpid()


def test_unprivileged_summary_json_parses() -> None:
    result = run_unprivileged("scan", "--json", "--summary")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    summary = document["summary"]
    assert sum(summary["by_state"].values()) == summary["total"]
    assert summary["total"] == document["meta"]["socket_count"]


@pytest.mark.kernel
def test_a_reader_that_leaves_early_is_exit_0_and_silent() -> None:
    """`tcpdoctor scan | head -1` on a namespace whose listing is far larger than a pipe."""
    from support.population import populated_netns

    with populated_netns() as pop:
        proc = subprocess.Popen(
            [support_netns.TCPDOCTOR, "scan", "--netns", pop.netns, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 0
        assert stderr == b""
