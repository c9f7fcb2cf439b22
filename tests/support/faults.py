"""Making one file read fail, to test how readers translate OSError."""

from __future__ import annotations

from pathlib import Path

import pytest


def fail_reads_of(monkeypatch: pytest.MonkeyPatch, target: Path, error: OSError) -> None:
    """Path.read_bytes() of `target` raises `error`; every other path reads normally."""
    original = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == target:
            raise error
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
