"""`tcpdoctor report -o PATH` as a user runs it: where the page goes, how it is written,
and one-line errors for output paths it cannot use."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from support.netns import tcpdoctor
from support.privilege import run_unprivileged
from tcpdoctor.errors import ExitCode

pytestmark = pytest.mark.e2e

WRITTEN = re.compile(r"^report written: (.+) \((\d+) findings?\)$")


def assert_one_line_error(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    lines = done.stderr.splitlines()
    assert done.returncode == ExitCode.USAGE, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("tcpdoctor: error: "), done.stderr
    assert fragment in lines[0], lines[0]
    assert done.stdout == ""


def test_writes_the_page_and_says_so(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    done = tcpdoctor("report", "-o", str(target))
    assert done.returncode == 0, done.stderr
    found = WRITTEN.match(done.stdout.strip())
    assert found is not None, done.stdout
    assert found.group(1) == str(target)
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count('<article class="finding') == int(found.group(2))
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary left


def test_replaces_an_existing_file_keeping_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    target.chmod(0o640)
    done = tcpdoctor("report", "-o", str(target))
    assert done.returncode == 0, done.stderr
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_dash_writes_to_stdout_and_reports_on_stderr() -> None:
    done = tcpdoctor("report", "-o", "-")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("<!DOCTYPE html>")
    assert WRITTEN.match(done.stderr.strip()), done.stderr


def test_missing_directory_is_one_line_exit_2(tmp_path: Path) -> None:
    done = tcpdoctor("report", "-o", str(tmp_path / "nope" / "report.html"))
    assert_one_line_error(done, "does not exist")


def test_directory_as_output_is_one_line_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(tcpdoctor("report", "-o", str(tmp_path)), "is a directory")


def test_unwritable_directory_is_one_line_exit_2(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)  # root's: nobody (or we, unprivileged) may not write here
    done = run_unprivileged("report", "-o", str(locked / "report.html"))
    assert_one_line_error(done, "Permission denied")
    assert list(locked.iterdir()) == []


def test_bad_path_fails_before_a_watch_starts(tmp_path: Path) -> None:
    done = tcpdoctor("report", "-o", str(tmp_path / "nope" / "r.html"), "--watch", "30", timeout=10)
    assert_one_line_error(done, "does not exist")


def test_output_is_required() -> None:
    done = tcpdoctor("report")
    assert done.returncode == ExitCode.USAGE
    assert "--output" in done.stderr
