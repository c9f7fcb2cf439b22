"""Entry point: the click group and the one place where errors become exit codes."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import NoReturn

import click

from tcpdoctor import __version__
from tcpdoctor.errors import ExitCode, TcpDoctorError

# The CLI never calls BLAS, yet importing numpy starts one OpenBLAS thread per core unless
# told otherwise: tens of milliseconds of CPU taken from the work on a small machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# verb -> "module:attribute"; a verb's module (and numpy, rich) loads only when it runs.
VERBS = {
    "doctor": "tcpdoctor.cli.doctor:doctor",
    "scan": "tcpdoctor.cli.scan:scan",
    "calc": "tcpdoctor.cli.calc:calc",
    "explain": "tcpdoctor.cli.explain:explain",
    "report": "tcpdoctor.cli.report:report",
    "lab": "tcpdoctor.cli.lab:lab",
}


class _ReaderLeft(Exception):
    """stdout's reader went away (`tcpdoctor scan | head`). Not an OSError, so click's own
    broken-pipe handling (which exits 1) does not take it."""


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as err:
            raise _ReaderLeft from err

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = VERBS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=LazyGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="tcpdoctor")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Find, explain, reproduce and predict Linux TCP connection-lifecycle failures.

    Without a command, runs `tcpdoctor doctor`.
    """
    if ctx.invoked_subcommand is None:
        doctor = cli.get_command(ctx, "doctor")
        assert doctor is not None
        ctx.invoke(doctor)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every deliberate error is one line on stderr and a documented exit code."""
    try:
        # Without standalone mode, click (8.2+) returns an Exit's code instead of raising it.
        code = cli.main(args=argv, prog_name="tcpdoctor", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        _fail("interrupted", ExitCode.USAGE)
    except click.UsageError as err:
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx else ""
        _fail(f"{err.format_message()}{hint}", ExitCode.USAGE)
    except click.ClickException as err:
        _fail(err.format_message(), ExitCode.USAGE)
    except TcpDoctorError as err:
        _fail(str(err), err.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", ExitCode.USAGE)
    except (BrokenPipeError, _ReaderLeft):
        # `tcpdoctor scan | head`: the reader left; nothing more to say. Python would try
        # the dead pipe again when it flushes stdout at exit: point stdout at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.exit(ExitCode.OK)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)


def run() -> NoReturn:
    """The console script: main(), then leave without the interpreter's teardown.

    Unwinding numpy, rich, click and a large snapshot at exit costs 15-30 ms, a tenth of a
    whole doctor run on a busy host, and nothing of ours needs finalising once the output
    is flushed. In-process callers (tests) use main(), which exits the normal way.
    """
    try:
        main()
        code: object = ExitCode.OK
    except SystemExit as done:
        code = done.code
    for stream in (sys.stdout, sys.stderr):
        # (a reader that left, or a stream already closed: nothing more can be said)
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _fail(message: str, code: ExitCode) -> None:
    click.echo(f"tcpdoctor: error: {message}", err=True)
    sys.exit(int(code))
