"""Running the lab's helper commands (ip, nft, sysctl) with a timeout, errors translated.

Every command gets a timeout. OSError and failed commands become tcpdoctor errors here:
a missing binary or a kernel refusal is an environment problem (ScenarioError, exit 4),
"Operation not permitted" is a permission problem (PermissionDenied, exit 3).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from tcpdoctor.errors import PermissionDenied, ScenarioError

DEFAULT_TIMEOUT = 15.0
_PACKAGES = {"ip": "iproute2", "nft": "nftables", "sysctl": "procps"}
_DENIED = ("Operation not permitted", "Permission denied")


def require_tool(name: str) -> str:
    """Path of `name`, or a ScenarioError naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        package = _PACKAGES.get(name, name)
        raise ScenarioError(f"the lab needs the `{name}` command (Debian package {package})")
    return path


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """argv run inside a named namespace by a child process (`ip netns exec`)."""
    return ["ip", "netns", "exec", netns, *argv]


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    stdin: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; raise a tcpdoctor error when it fails and check is set."""
    command = list(argv)
    try:
        done = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        require_tool(command[0])
        raise ScenarioError(f"cannot run {command[0]}") from None
    except subprocess.TimeoutExpired:
        raise ScenarioError(f"`{_show(command)}` did not finish within {timeout:g} s") from None
    except OSError as err:
        raise ScenarioError(f"cannot run `{_show(command)}`: {err.strerror}") from None
    if check and done.returncode != 0:
        raise command_error(command, done.stderr)
    return done


def command_error(argv: Sequence[str], stderr: str) -> ScenarioError | PermissionDenied:
    detail = _first_line(stderr) or "no message"
    if any(marker in stderr for marker in _DENIED):
        return PermissionDenied(f"`{_show(argv)}` was refused: {detail} (the lab needs root)")
    return ScenarioError(f"`{_show(argv)}` failed: {detail}")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _show(argv: Sequence[str]) -> str:
    text = " ".join(argv)
    return text if len(text) <= 120 else text[:117] + "..."
