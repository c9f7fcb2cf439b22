"""`tcpdoctor calc` as a user drives it: numbers in JSON and text, one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from tcpdoctor.cli.main import main

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `tcpdoctor calc ARGS`; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main(["calc", *args])
    out, err = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 1), out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def all_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in [k, *all_keys(v)]]
    if isinstance(value, list):
        return [k for item in value for k in all_keys(item)]
    return []


# --- JSON numbers -------------------------------------------------------------------------


def test_retries2_json(capsys: pytest.CaptureFixture[str]) -> None:
    # Budget 924.6 s from the first retransmission at 0.2 s: the 16th retransmission at
    # 924.6 s is 924.4 s in, 1044.6 s gives up (worked out in test_timing.py); late timers
    # at the default HZ=250 can use up the 0.2 s left at 924.6 s.
    data = run_json(capsys, "retries2", "15")
    assert data["budget"] == pytest.approx(924.6)
    assert data["budget_from"] == pytest.approx(0.2)
    assert data["schedule"]["gives_up_at"] == pytest.approx(1044.6)
    assert data["schedule"]["retransmissions"] == 16
    assert data["schedule"]["reason"] == "time_budget"
    assert data["headroom"] == pytest.approx(0.2)
    assert data["sooner_give_up_at"] == pytest.approx(924.6)
    assert data["loss_probe_at"] is None


def test_retries2_rto_max_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "retries2", "15", "--rto-max-ms", "10000")
    assert data["budget"] == pytest.approx(112.6)
    assert data["rto_max"] == pytest.approx(10.0)
    # 112.6 s from 0.2 s: the expiry at 112.6 s is 112.4 s in, 122.6 s gives up.
    assert data["schedule"]["gives_up_at"] == pytest.approx(122.6)


def test_retries2_user_timeout_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "retries2", "--user-timeout-ms", "5000")
    assert data["user_timeout"] == pytest.approx(5.0)
    # 5 s counted from the first retransmission at 0.2 s.
    assert data["schedule"]["gives_up_at"] == pytest.approx(5.2)
    assert data["schedule"]["reason"] == "user_timeout"


def test_syn_retries_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "syn-retries", "6")
    assert data["schedule"]["retransmit_times"] == pytest.approx([1, 2, 3, 4, 5, 7, 11, 19, 35, 67])
    assert data["schedule"]["gives_up_at"] == pytest.approx(131.0)


def test_syn_retries_pre_6_5_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "syn-retries", "6", "--linear-timeouts", "0")
    assert data["schedule"]["retransmit_times"] == pytest.approx([1, 3, 7, 15, 31, 63])
    assert data["schedule"]["gives_up_at"] == pytest.approx(127.0)


def test_synack_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "synack-retries", "5")
    assert data["schedule"]["retransmit_times"] == pytest.approx([1, 3, 7, 15, 31])
    assert data["schedule"]["gives_up_at"] == pytest.approx(63.0)


def test_orphan_json(capsys: pytest.CaptureFixture[str]) -> None:
    # Budget 102.2 s from the first retransmission at 0.2 s: 102.2 s is 102.0 s in and
    # retransmits (the 9th), 204.6 s ends it (worked out in test_timing.py); late timers at
    # the default HZ=250 can use up the 0.2 s left at 102.2 s.
    data = run_json(capsys, "orphan-retries", "0")
    assert data["effective_retries"] == 8
    assert data["budget"] == pytest.approx(102.2)
    assert data["budget_from"] == pytest.approx(0.2)
    assert data["schedule"]["retransmissions"] == 9
    assert data["schedule"]["gives_up_at"] == pytest.approx(204.6)
    assert data["headroom"] == pytest.approx(0.2)
    assert data["sooner_give_up_at"] == pytest.approx(102.2)
    assert data["loss_probe_at"] is None


def test_text_orphan_counts_the_budget_from_the_first_retransmission(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # tcp_orphan_retries=3, RTO 204 ms: budget 3.0 s from 0.204 s; 0.612 (0.408 s in),
    # 1.428 (1.224), 3.06 (2.856 < 3.0) retransmit, 6.324 (6.12 s in) ends it. Lateness at
    # HZ=250 of the 0.408, 0.816, 1.632 s timers: 3 x 32 ms < the 0.144 s left: no line.
    code, out, _ = run(capsys, "orphan-retries", "3", "--initial-rto-ms", "204")
    assert code == 0
    assert "budget from      0.204 s: the first RTO retransmission" in out
    assert "gives up at      6.324 s" in out
    assert "late timers" not in out
    assert "FIN retransmitted, budget starts" in out


def test_text_orphan_default_names_the_expiry_late_timers_may_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "orphan-retries")
    assert code == 0
    assert "gives up at      204.6 s" in out
    assert "may end it at 102.2 s (1 min 42.2 s): 0.2 s short of the budget there" in out


def test_keepalive_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "keepalive", "--time", "7200", "--intvl", "75", "--probes", "9")
    assert data["detected_at"] == pytest.approx(7875.0)
    assert len(data["probe_times"]) == 9


def test_keepalive_user_timeout_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(
        capsys,
        "keepalive",
        "--time",
        "2",
        "--intvl",
        "1",
        "--probes",
        "9",
        "--user-timeout-ms",
        "1500",
    )
    assert data["detected_at"] == pytest.approx(3.0)
    assert data["reason"] == "user_timeout"


@pytest.mark.parametrize(
    ("args", "lifetime"),
    [
        (["--fin-timeout", "90"], 60.0),
        (["--fin-timeout", "100"], 80.0),
        (["--fin-timeout", "60", "--linger2", "200"], 120.0),
        (["--fin-timeout", "0"], 0.7),
        (["--not-orphaned"], None),
    ],
)
def test_fin_wait2_json(
    capsys: pytest.CaptureFixture[str], args: list[str], lifetime: float | None
) -> None:
    data = run_json(capsys, "fin-wait2", *args)
    assert data["lifetime"] == (None if lifetime is None else pytest.approx(lifetime))


def test_ports_json_default(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "ports", "--range", "32768", "60999")
    assert data["ports"]["capacity"] == 28232
    assert data["max_rate"] == pytest.approx(470.53, abs=0.01)
    assert data["tw_reuse_applies"] is False
    assert data["assumptions"]


def test_ports_json_reserved_and_reuse(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "ports", "--reserved", "40000-40100,50000", "--tw-reuse", "1")
    assert data["ports"]["capacity"] == 28232 - 102
    assert data["tw_reuse_applies"] is True
    assert data["max_rate"] == pytest.approx(28130.0)


def test_ports_loopback_only_with_tw_reuse_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_json(capsys, "ports", "--loopback")["tw_reuse_applies"] is True
    assert run_json(capsys, "ports", "--loopback", "--no-timestamps")["max_rate"] == (
        pytest.approx(470.53, abs=0.01)
    )


def test_rto_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_json(capsys, "rto", "--rtt", "0.1")["rto"] == pytest.approx(0.3)
    data = run_json(capsys, "rto", "--rtt", "0.00005", "--hz", "250")
    assert data["rto"] == pytest.approx(0.204)


def test_time_wait_memory_json(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "time-wait-memory", "131072")
    assert data["total_bytes"] == 33_554_432
    assert data["total_mib"] == pytest.approx(32.0)


def test_timer_slack_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_json(capsys, "timer-slack", "60")["max_lateness"] == pytest.approx(2.048)
    assert run_json(capsys, "timer-slack", "60", "--hz", "1000")["max_lateness"] == (
        pytest.approx(4.096)
    )


@pytest.mark.parametrize(
    "args",
    [
        ["retries2"],
        ["syn-retries"],
        ["synack-retries"],
        ["orphan-retries"],
        ["keepalive"],
        ["fin-wait2"],
        ["ports"],
        ["rto", "--rtt", "0.1"],
        ["time-wait-memory", "10"],
        ["timer-slack", "60"],
    ],
)
def test_json_keys_are_snake_case(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    keys = all_keys(run_json(capsys, *args))
    assert keys
    assert [k for k in keys if not SNAKE.match(k)] == []


# --- text output --------------------------------------------------------------------------


def test_text_shows_result_and_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "syn-retries", "6")
    assert code == 0
    assert "131 s" in out
    assert "ETIMEDOUT" in out
    for at in ("1", "2", "3", "4", "5", "7", "11", "19", "35", "67"):
        assert re.search(rf"\b{at}\b", out), at


def test_text_retries2_counts_the_budget_from_the_first_retransmission(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Budget 3.0 s from 0.2 s: 3.0 s is 2.8 s in, 6.2 s gives up. Worst-case lateness of
    # the 0.4, 0.8, 1.6 s timers at HZ=250 is 3 x 32 ms < the 0.2 s left: no late-timer line.
    code, out, _ = run(capsys, "retries2", "3")
    assert code == 0
    assert "budget from      0.2 s: the first RTO retransmission" in out
    assert "ETIMEDOUT at     6.2 s" in out
    assert "late timers" not in out
    assert "RTO retransmission, budget starts" in out


def test_text_retries2_names_the_expiry_late_timers_may_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # retries2=5: 12.6 s is 12.4 s in (0.2 s left), 25.4 s gives up. Lateness at HZ=250:
    # 3 x 32 ms + 2 x 256 ms (the 3.2 and 6.4 s timers) = 0.608 s >= 0.2 s.
    code, out, _ = run(capsys, "retries2", "5")
    assert code == 0
    assert "ETIMEDOUT at     25.4 s" in out
    assert "may end it at 12.6 s: 0.2 s short of the budget there" in out


def test_text_fin_wait2_explains_the_double_wait(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "fin-wait2", "--fin-timeout", "90")
    assert code == 0
    assert "60 s" in out
    assert "2 x (fin time - 60)" in out


def test_text_ports_shows_rate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ports")
    assert code == 0
    assert "28232" in out
    assert "470.5" in out


def test_text_keepalive_elides_long_probe_lists(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keepalive", "--time", "1", "--intvl", "1", "--probes", "100")
    assert code == 0
    assert "..." in out
    assert "101" in out  # abort at idle 1 + 100 x 1


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["retries2", "-1"],
        ["retries2", "256"],
        ["retries2", "abc"],
        ["retries2", "--rto-max-ms", "500"],
        ["syn-retries", "0"],
        ["syn-retries", "--linear-timeouts", "128"],
        ["synack-retries", "-3"],
        ["orphan-retries", "999"],
        ["keepalive", "--probes", "128"],
        ["keepalive", "--time", "-5"],
        ["keepalive", "--intvl", "0"],
        ["keepalive", "--user-timeout-ms", "-1"],
        ["fin-wait2", "--fin-timeout", "-1"],
        ["ports", "--range", "60999", "32768"],
        ["ports", "--range", "1024", "70000"],
        ["ports", "--reserved", "50000-40000"],
        ["ports", "--tw-reuse", "3"],
        ["ports", "--tw-reuse-delay-ms", "60001"],
        ["rto", "--rtt", "-0.1"],
        ["rto"],
        ["time-wait-memory", "-5"],
        ["timer-slack", "-1"],
    ],
)
def test_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tcpdoctor: error: ")
    assert "Traceback" not in err


def test_bad_input_in_a_real_process_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tcpdoctor", "calc", "keepalive", "--probes", "128"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "tcpdoctor: error: keepalive probes must be between 1 and 127, got 128"
    ]
