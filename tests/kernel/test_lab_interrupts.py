"""A running `tcpdoctor lab run` stopped by SIGINT or SIGTERM removes everything it made;
stopped by SIGKILL it cannot, and `tcpdoctor lab cleanup` removes the leftovers (only
those), twice in a row without complaint."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.netns import TCPDOCTOR, tcpdoctor

pytestmark = pytest.mark.kernel

SCENARIO_PREFIX = "tdlab-port-exhaustion-"
WAIT_S = 40.0


def tdlab_objects() -> set[str]:
    """Every tdlab- name in `ip netns list`, host `ip link` and host `nft list tables`."""
    netns = json.loads(_out(["ip", "-j", "netns", "list"]) or "[]")
    links = json.loads(_out(["ip", "-j", "link", "show"]) or "[]")
    tables = json.loads(_out(["nft", "-j", "list", "tables"]) or "{}").get("nftables", [])
    names = {e["name"] for e in netns} | {e["ifname"] for e in links}
    names |= {t["table"]["name"] for t in tables if "table" in t}
    return {n for n in names if n.startswith("tdlab-")}


def _out(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=15, check=True).stdout


def children_of(pid: int) -> list[int]:
    """Lab child processes started by `pid` (they carry --parent PID on their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"-m" in argv
            and b"--parent" in argv
            and argv[argv.index(b"--parent") + 1] == str(pid).encode()
        ):
            found.append(int(entry.name))
    return found


def alive(pids: list[int], within: float = 5.0) -> list[int]:
    """The pids still running (zombies waiting to be reaped do not count) after `within`."""
    deadline = time.monotonic() + within
    while True:
        running = [p for p in pids if _state(p) not in (None, "Z")]
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.1)


def _state(pid: int) -> str | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("State:")), "State: ?")
    return line.split()[1]


def start_run() -> tuple[subprocess.Popen[str], set[str]]:
    """Start a 66 s run and return once its load generator is running. The run gets its
    own process group, like a command started from a shell."""
    proc = subprocess.Popen(
        [TCPDOCTOR, "lab", "run", "port-exhaustion", "--quick", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.communicate()[1]}")
        if len(children_of(proc.pid)) >= 2:  # server and client are up: the load runs
            mine = {n for n in tdlab_objects() if n.startswith(SCENARIO_PREFIX)}
            time.sleep(1.0)
            return proc, mine
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the load generator never started")


@pytest.mark.parametrize(
    ("sig", "whole_group"),
    [
        (signal.SIGINT, False),
        (signal.SIGTERM, False),
        (signal.SIGINT, True),  # Ctrl-C in a terminal: the whole foreground group gets it
    ],
)
def test_interrupt_removes_everything(sig: signal.Signals, whole_group: bool) -> None:
    proc, made = start_run()
    assert len(made) == 2  # client and server namespaces exist mid-run
    kids = children_of(proc.pid)
    if whole_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip() == f"tcpdoctor: error: interrupted by {sig.name}"  # one line
    assert out == ""
    assert not made & tdlab_objects()
    assert kids and not alive(kids)


def test_sigkill_leaves_leftovers_that_cleanup_removes() -> None:
    foreign_busy = f"tdlab-t-{secrets.token_hex(4)}"  # a test's namespace, in use
    not_ours = f"tdlabx-{secrets.token_hex(4)}"  # does not have the prefix
    for name in (foreign_busy, not_ours):
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=15)
    holder = subprocess.Popen(["ip", "netns", "exec", foreign_busy, "sleep", "120"])
    try:
        proc, made = start_run()
        kids = children_of(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        assert made <= tdlab_objects()  # SIGKILL: nothing could be undone...
        assert kids and not alive(kids)  # ...but its children died with it (PDEATHSIG)

        first = tcpdoctor("lab", "cleanup")
        assert first.returncode == 0, first.stderr
        for name in made:
            assert f"removed netns {name}" in first.stdout
        assert f"kept netns {foreign_busy}: not from a lab run and still in use" in first.stdout
        assert not made & tdlab_objects()
        assert foreign_busy in tdlab_objects()
        assert not_ours in _out(["ip", "netns", "list"])

        again = tcpdoctor("lab", "cleanup", "--json")
        assert again.returncode == 0, again.stderr
        removed = [o for o in json.loads(again.stdout)["objects"] if o["removed"]]
        assert not [o for o in removed if o["name"] in made]
    finally:
        holder.kill()
        holder.wait(timeout=10)
        for name in (foreign_busy, not_ours):
            subprocess.run(["ip", "netns", "delete", name], check=False, timeout=15)


def test_cleanup_needs_root() -> None:
    from support.privilege import run_unprivileged

    done = run_unprivileged("lab", "cleanup")
    assert done.returncode == 3
    assert done.stderr.strip().startswith("tcpdoctor: error:")
    assert len(done.stderr.strip().splitlines()) == 1
    assert os.geteuid() != 0 or "root" in done.stderr


def test_interrupt_while_the_topology_is_being_built() -> None:
    before = tdlab_objects()
    proc = subprocess.Popen(
        [TCPDOCTOR, "lab", "run", "port-exhaustion", "--quick", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if any(n.startswith(SCENARIO_PREFIX) for n in tdlab_objects() - before):
            break  # the first namespace exists: the build is under way
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert err.strip() == "tcpdoctor: error: interrupted by SIGINT"
    assert not {n for n in tdlab_objects() - before if n.startswith(SCENARIO_PREFIX)}
