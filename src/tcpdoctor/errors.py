"""One root for every error tcpdoctor raises on purpose.

Each family carries the process exit code the CLI uses (see docs/cli.md). OSError is
translated into one of these where it happens (observe/, lab/), so logic and the CLI
never look at errno.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FINDINGS = 1  # findings at or above --fail-on
    USAGE = 2  # usage or bad input
    PERMISSION = 3
    ENVIRONMENT = 4  # no netns support, kernel interface missing


class TcpDoctorError(Exception):
    """Root of every deliberate tcpdoctor error. The message is one line for a human."""

    exit_code: ExitCode = ExitCode.ENVIRONMENT


class InputError(TcpDoctorError):
    """The user asked for something malformed or impossible (bad filter, unknown value)."""

    exit_code = ExitCode.USAGE


class PermissionDenied(TcpDoctorError):
    """The kernel refused because we lack a privilege (CAP_SYS_ADMIN, ptrace, ...)."""

    exit_code = ExitCode.PERMISSION


class NamespaceError(TcpDoctorError):
    """A network namespace could not be found or entered."""

    exit_code = ExitCode.USAGE


class KernelInterfaceError(TcpDoctorError):
    """A kernel interface is missing or answered something we cannot parse."""

    exit_code = ExitCode.ENVIRONMENT


class ScenarioError(TcpDoctorError):
    """A lab scenario could not be set up or run."""

    exit_code = ExitCode.ENVIRONMENT
