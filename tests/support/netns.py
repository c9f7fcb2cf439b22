"""A throwaway network namespace for tests: created with a tdlab- name, always deleted."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TCPDOCTOR = str(Path(PYTHON).with_name("tcpdoctor"))


class TestNetns:
    """`ip netns` wrapper; processes started with popen() are killed on close()."""

    def __init__(self, prefix: str = "tdlab-t") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen[str]] = []
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run("ip", "link", "set", "lo", "up")

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def sysctl(self, **values: str | int) -> None:
        for key, value in values.items():
            name = key if "." in key else f"net.ipv4.{key}"
            self.run("sysctl", "-qw", f"{name}={value}")

    def python(self, code: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run(PYTHON, "-c", code, timeout=timeout)

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.name, *argv],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "delete", self.name], check=False, capture_output=True)


@contextmanager
def netns(prefix: str = "tdlab-t") -> Iterator[TestNetns]:
    ns = TestNetns(prefix)
    try:
        yield ns
    finally:
        ns.close()


def tcpdoctor(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI as a user would."""
    return subprocess.run(
        [TCPDOCTOR, *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
