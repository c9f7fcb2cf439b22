"""Lab child: replace ourselves with another program that must not outlive the lab.

    python -m tcpdoctor.lab._exec --parent PID -- PROGRAM [ARGS...]

Used for real servers the lab runs in a namespace (redis-server, nginx). The parent-death
signal set here survives execve() of an ordinary binary (prctl(2): it is cleared only for
set-user-ID, set-group-ID or file-capability binaries), so the server is killed when the
lab process dies, even by SIGKILL. Standard library only.
"""

from __future__ import annotations

import os
import sys

from tcpdoctor.lab._child import die_with_parent

EXIT_USAGE = 2
EXIT_CANNOT_EXEC = 127  # what a shell returns for a command it cannot run


def parse(argv: list[str]) -> tuple[int, list[str]]:
    """(parent pid, program argv) from `--parent PID -- PROGRAM ARGS...`."""
    if len(argv) < 4 or argv[0] != "--parent" or argv[2] != "--" or not argv[1].isdigit():
        raise ValueError("usage: python -m tcpdoctor.lab._exec --parent PID -- PROGRAM [ARGS...]")
    return int(argv[1]), argv[3:]


def main(argv: list[str] | None = None) -> None:
    try:
        parent, program = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        sys.stderr.write(f"{err}\n")
        sys.exit(EXIT_USAGE)
    die_with_parent(parent)
    try:
        os.execvp(program[0], program)
    except OSError as err:
        sys.stderr.write(f"cannot run {program[0]}: {err.strerror}\n")
        os._exit(EXIT_CANNOT_EXEC)


if __name__ == "__main__":
    main()
