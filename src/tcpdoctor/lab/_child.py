"""What every lab child process does first: die with its parent, stop when stdin closes.

Children are started by the lab inside a namespace (`ip netns exec NS python -m ...`).
They must never outlive the run: PR_SET_PDEATHSIG kills them if the lab process dies
(even by SIGKILL), and end-of-file on stdin (the lab closed the pipe) stops them politely.
Only the standard library is used, so a child starts fast.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
from typing import Any

_PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL us when the parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl: the stdin watch below still stops us
    if os.getppid() != parent_pid:
        os._exit(3)


def stop_on_stdin_eof() -> threading.Event:
    """An event that is set once stdin reaches end-of-file (the lab is done with us)."""
    done = threading.Event()

    def watch() -> None:
        try:
            while os.read(sys.stdin.fileno(), 4096):
                pass
        except (OSError, ValueError):
            pass
        done.set()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()
    return done


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once (the lab reads them as they come)."""
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def ignore_interrupts() -> None:
    """The lab decides when we stop; a terminal's Ctrl-C is for the lab, not for us."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
