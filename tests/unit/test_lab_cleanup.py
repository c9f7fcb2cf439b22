"""The pieces that keep the lab from leaving anything behind, tested without a kernel:
the undo stack, the signal handling, names and run ids, run locks, what `lab cleanup`
decides to remove."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tcpdoctor.errors import ScenarioError
from tcpdoctor.lab import _names, _runlock
from tcpdoctor.lab._hz import kernel_hz, parse_config_hz
from tcpdoctor.lab.cleanup import CleanupRegistry, Interrupted, stop_on_signals
from tcpdoctor.lab.leftovers import (
    FOREIGN_GRACE_S,
    Kind,
    Leftover,
    keep_reason,
    parse_links_json,
    parse_netns_json,
    parse_tables_json,
)

# --- the undo stack -----------------------------------------------------------------------


def test_undo_runs_newest_first_and_only_once() -> None:
    done: list[str] = []
    with CleanupRegistry() as reg:
        for name in ("netns", "link", "table"):
            reg.register(name, lambda name=name: done.append(name))
    assert done == ["table", "link", "netns"]
    reg.undo_all()
    assert done == ["table", "link", "netns"]


def test_a_failing_undo_does_not_stop_the_others(capsys: pytest.CaptureFixture[str]) -> None:
    done: list[str] = []

    def broken() -> None:
        raise ScenarioError("device busy")

    with pytest.raises(RuntimeError), CleanupRegistry() as reg:
        reg.register("first", lambda: done.append("first"))
        reg.register("broken", broken)
        reg.register("last", lambda: done.append("last"))
        raise RuntimeError("the scenario failed")
    assert done == ["last", "first"]
    assert [f.label for f in reg.failures] == ["broken"]
    assert "could not undo broken: device busy" in capsys.readouterr().err


def test_registering_while_closing_undoes_at_once() -> None:
    done: list[str] = []
    reg = CleanupRegistry()
    reg.register("late", lambda: reg.register("later", lambda: done.append("later")))
    reg.undo_all()
    assert done == ["later"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_become_interrupted_and_handlers_come_back(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    done: list[str] = []
    with pytest.raises(Interrupted, match=sig.name), stop_on_signals(), CleanupRegistry() as reg:
        reg.register("netns", lambda: done.append("netns"))
        signal.raise_signal(sig)
        time.sleep(1)  # not reached: the handler raises first
    assert done == ["netns"]
    assert signal.getsignal(sig) is before


def test_a_signal_during_undo_waits_until_the_undo_is_done() -> None:
    done: list[str] = []

    def slow_undo() -> None:
        signal.raise_signal(signal.SIGINT)  # a second Ctrl-C while tearing down
        done.append("netns")

    with pytest.raises(Interrupted), stop_on_signals(), CleanupRegistry() as reg:
        reg.register("netns", slow_undo)
        reg.register("link", lambda: done.append("link"))
    assert done == ["link", "netns"]  # both finished, then the signal was delivered


def test_sigterm_in_a_child_process_still_cleans_up(tmp_path: Path) -> None:
    marker = tmp_path / "undone"
    script = textwrap.dedent(
        f"""
        import sys, time
        from tcpdoctor.lab.cleanup import CleanupRegistry, stop_on_signals
        try:
            with stop_on_signals(), CleanupRegistry() as reg:
                reg.register("marker", lambda: open({str(marker)!r}, "w").write("x"))
                print("ready", flush=True)
                time.sleep(30)
        except Exception as err:
            print(type(err).__name__, err, flush=True)
            sys.exit(2)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert "Interrupted interrupted by SIGTERM" in out
    assert marker.read_text() == "x"


# --- names --------------------------------------------------------------------------------


def test_generated_names_carry_prefix_and_run_id() -> None:
    run = _names.new_run_id()
    made = [
        _names.netns_name("port-exhaustion", run, "client"),
        _names.link_name(run, 0, "a"),
        _names.table_name(run, "snat"),
    ]
    for name in made:
        assert name.startswith("tdlab-")
        assert _names.run_id_of(name) == run
    assert len(_names.link_name(run, 99, "b")) <= 15


@pytest.mark.parametrize(
    "name", ["tdlab-t-1a2b3c4d", "tdlab-bench-23323-b1e105", "tdlab-c", "tdlab-drop", "eth0"]
)
def test_foreign_names_have_no_run_id(name: str) -> None:
    assert _names.run_id_of(name) is None


@pytest.mark.parametrize(
    ("name", "lab"), [("tdlab-x", True), ("tdlab-", False), ("tdlabx-y", False)]
)
def test_lab_prefix(name: str, lab: bool) -> None:
    assert _names.is_lab_name(name) is lab


def test_bad_roles_are_refused() -> None:
    with pytest.raises(ScenarioError):
        _names.netns_name("port-exhaustion", "abcdef", "Client")
    with pytest.raises(ScenarioError):
        _names.netns_name("port-exhaustion", "abcdef", "two-words")


# --- run locks ----------------------------------------------------------------------------


def test_a_held_lock_is_alive_and_a_dead_one_is_not(tmp_path: Path) -> None:
    with _runlock.hold("aaaaaa", tmp_path):
        found = _runlock.runs(tmp_path)
        assert found["aaaaaa"].alive and found["aaaaaa"].pid == os.getpid()
    assert "aaaaaa" not in _runlock.runs(tmp_path)  # removed on a normal exit
    # A run killed with SIGKILL leaves its file behind, unlocked.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from tcpdoctor.lab import _runlock\n"
            f"with _runlock.hold('bbbbbb', Path({str(tmp_path)!r})):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    assert _runlock.runs(tmp_path)["bbbbbb"].alive
    holder.kill()
    holder.wait(timeout=10)
    dead = _runlock.runs(tmp_path)["bbbbbb"]
    assert not dead.alive
    _runlock.forget(dead)
    assert _runlock.runs(tmp_path) == {}


# --- what `lab cleanup` removes -----------------------------------------------------------

RUN = "abcdef"
LIVE = {RUN: _runlock.RunRecord(RUN, True, 4242, Path("/x"))}
DEAD = {RUN: _runlock.RunRecord(RUN, False, 4242, Path("/x"))}
OURS = Leftover(Kind.NETNS, f"tdlab-port-exhaustion-{RUN}-client")
FOREIGN = Leftover(Kind.NETNS, "tdlab-t-1a2b3c4d")


def test_a_live_run_is_never_touched() -> None:
    assert "running lab (pid 4242)" in str(keep_reason(OURS, LIVE, (), 9999.0, force=True))
    link = Leftover(Kind.LINK, f"tdlab-{RUN}0a")
    assert keep_reason(link, LIVE, (), None) is not None


def test_a_dead_run_is_removed_even_with_processes_left() -> None:
    assert keep_reason(OURS, DEAD, (123,), 1.0) is None


def test_foreign_namespaces_are_kept_while_they_look_in_use() -> None:
    assert "pids 7" in str(keep_reason(FOREIGN, {}, (7,), 9999.0))
    assert "only 5 s old" in str(keep_reason(FOREIGN, {}, (), 5.0))
    assert keep_reason(FOREIGN, {}, (), FOREIGN_GRACE_S + 1) is None
    assert keep_reason(FOREIGN, {}, (7,), 5.0, force=True) is None


def test_command_output_parsing() -> None:
    assert parse_netns_json('[{"name":"tdlab-a","id":0},{"name":"other"}]') == ["tdlab-a", "other"]
    assert parse_netns_json("") == []
    assert parse_links_json('[{"ifindex":1,"ifname":"lo"},{"ifname":"tdlab-x"}]') == [
        "lo",
        "tdlab-x",
    ]
    tables = (
        '{"nftables": [{"metainfo": {"version": "1.0.6"}},'
        ' {"table": {"family": "inet", "name": "tdlab-t", "handle": 3}}]}'
    )
    assert parse_tables_json(tables) == [("inet", "tdlab-t")]


# --- CONFIG_HZ ----------------------------------------------------------------------------


def test_config_hz_parsing_and_fallback(tmp_path: Path) -> None:
    assert parse_config_hz("CONFIG_HZ_250=y\nCONFIG_HZ=250\n") == 250
    assert parse_config_hz("# CONFIG_HZ is not set\n") is None
    (tmp_path / "config-6.1.0").write_text("CONFIG_HZ=1000\n")
    found = kernel_hz(tmp_path / "missing.gz", tmp_path, "6.1.0")
    assert found.hz == 1000 and found.max_lateness(60.0) == pytest.approx(4.096)
    unknown = kernel_hz(tmp_path / "missing.gz", tmp_path, "0.0")
    assert unknown.hz is None
    assert unknown.max_lateness(60.0) == pytest.approx(5.12)  # HZ=100: 512 jiffies
