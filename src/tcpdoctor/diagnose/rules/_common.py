"""Helpers shared by rules."""

from __future__ import annotations

import numpy as np

from tcpdoctor.diagnose.context import Context
from tcpdoctor.kernel.states import TcpState


def in_state(ctx: Context, *states: TcpState) -> np.ndarray:
    """Boolean mask of the newest snapshot's sockets in any of `states`."""
    wanted = np.array([int(s) for s in states], dtype=np.uint8)
    return np.isin(ctx.sockets["state"], wanted)


def sysctl_line(name: str, value: object) -> str:
    """The command a user runs (inside the namespace that needs it)."""
    return f"sysctl -w {name}={value}"
