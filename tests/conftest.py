"""Suite-wide rules: kernel tests need root and network namespaces.

Under CI=true a kernel test that cannot get them FAILS; elsewhere it is skipped with the
reason, so a laptop run without root still runs the unit tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest


def _netns_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2 ('ip')"
    name = f"tdlab-probe-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], check=False, capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
    return None


_PROBLEM: list[str | None] = []


def netns_problem() -> str | None:
    if not _PROBLEM:
        _PROBLEM.append(_netns_problem())
    return _PROBLEM[0]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def _kernel_gate(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("kernel") is None:
        return
    problem = netns_problem()
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"kernel test cannot run under CI=true: {problem}")
    pytest.skip(problem)
