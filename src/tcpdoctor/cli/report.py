"""`tcpdoctor report -o report.html`: the doctor's findings and pictures as one HTML page.

The data is exactly the doctor's: the same collection, rules, audit and JSON document
(render/doctor_view.py), drawn by render/html_report.py. The output path is checked
before collecting (a --watch can be long) and the page is written atomically.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO

import click

from tcpdoctor.cli.doctor import doctor as _doctor
from tcpdoctor.cli.doctor import run_doctor
from tcpdoctor.errors import InputError

STDOUT = "-"
# The doctor's own options, so both verbs take exactly the same ones.
_SHARED = ("netns_name", "netns_pid", "watch", "interval", "idle_timeout", "top")


_OUTPUT = click.Option(
    ["-o", "--output"],
    required=True,
    metavar="PATH",
    help="Write the HTML page here ('-' for stdout); replaced atomically.",
)


def _params() -> list[click.Parameter]:
    shared = {p.name: p for p in _doctor.params}
    return [_OUTPUT, *(shared[name] for name in _SHARED)]


@click.command(params=_params())
def report(
    output: str,
    netns_name: str | None,
    netns_pid: int | None,
    watch: float,
    interval: float,
    idle_timeout: str | None,
    top: int,
) -> None:
    """Write the doctor's findings, with charts, as one self-contained HTML page."""
    from tcpdoctor.render import html_report

    with _Output(output) as out:
        run = run_doctor(netns_name, netns_pid, watch, interval, idle_timeout, top)
        out.write(html_report.render(run.document()))
    count = len(run.diagnosis.findings)
    noun = "finding" if count == 1 else "findings"
    where = "stdout" if output == STDOUT else output
    click.echo(f"report written: {where} ({count} {noun})", err=output == STDOUT)


class _Output:
    """A page destination: stdout, or a temporary file beside PATH renamed over it on
    success (readers never see half a page) and removed on failure."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tmp: Path | None = None
        self._file: IO[str] | None = None

    def __enter__(self) -> _Output:
        if self.path != STDOUT:
            self._tmp, self._file = _open_beside(Path(self.path))
        return self

    def write(self, text: str) -> None:
        if self._file is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        try:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as err:
            raise _cannot_write(self.path, err) from None

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if self._file is None or self._tmp is None:
            return
        self._file.close()
        try:
            if error is None:
                os.replace(self._tmp, self.path)
        except OSError as err:
            raise _cannot_write(self.path, err) from None
        finally:
            self._tmp.unlink(missing_ok=True)


def _cannot_write(path: object, err: OSError) -> InputError:
    return InputError(f"cannot write {path}: {err.strerror or err}")


def _open_beside(path: Path) -> tuple[Path, IO[str]]:
    """A new temporary file in PATH's directory, with the mode a new file would get."""
    parent = path.parent
    try:
        if not stat.S_ISDIR(parent.stat().st_mode):
            raise InputError(f"cannot write {path}: {parent} is not a directory")
        if path.is_dir():
            raise InputError(f"cannot write {path}: it is a directory")
    except FileNotFoundError:
        raise InputError(f"cannot write {path}: directory {parent} does not exist") from None
    except OSError as err:
        raise _cannot_write(path, err) from None
    try:
        fd, name = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _cannot_write(path, err) from None
    os.fchmod(fd, _new_file_mode(path))
    return Path(name), os.fdopen(fd, "w", encoding="utf-8")


def _new_file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777  # replacing a file keeps its mode
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
