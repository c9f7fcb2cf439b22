"""Suite-wide rules: tests marked `kernel` need root and network namespaces.

Under CI=true a kernel test that cannot get them FAILS; elsewhere it is skipped with the
reason, so a laptop run without root still runs the unit tests.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import pytest

# Runs in a child process so the test process itself never changes namespace.
_UNSHARE_PROBE = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET\n"
    "    sys.exit(os.strerror(ctypes.get_errno()))\n"
)


@functools.cache
def netns_unavailable_reason() -> str | None:
    """Why kernel tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` command"
    probe = subprocess.run(
        [sys.executable, "-c", _UNSHARE_PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip() or probe.returncode}"
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_netns() -> None:
    """Fail under CI=true, skip otherwise, when network namespaces are unavailable."""
    reason = netns_unavailable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"kernel test cannot run under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None:
        require_netns()
