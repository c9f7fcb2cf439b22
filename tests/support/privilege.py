"""Running the CLI without root, as a user would on a shared host."""

from __future__ import annotations

import os
import subprocess

from support.netns import TCPDOCTOR

NOBODY = 65534
DROP_TO_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def run_unprivileged(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI without root: dropped to nobody when we are root, else as ourselves."""
    prefix = DROP_TO_NOBODY if os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, TCPDOCTOR, *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
