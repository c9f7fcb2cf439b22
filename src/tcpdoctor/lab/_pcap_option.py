"""`lab run --pcap FILE`: hand the packet capture to tcpdoctor.lab.capture when it exists.

The capture module is looked up at run time, so the lab works (and says so clearly) on a
tree that does not have it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tcpdoctor.errors import ScenarioError
from tcpdoctor.lab.topology import Host, Topology

CAPTURE_MODULE = "tcpdoctor.lab.capture"
MAX_CAPTURE_S = 3600.0


class RunningCapture(Protocol):
    pcap: Path

    def start(self) -> None: ...

    def stop(self) -> Any: ...


def capture_available() -> bool:
    try:
        return importlib.util.find_spec(CAPTURE_MODULE) is not None
    except (ImportError, ValueError):
        return False


def unavailable_reason() -> str:
    return "--pcap: packet capture is not available yet in this version of tcpdoctor"


def start_capture(
    topology: Topology, host: Host, interfaces: Sequence[str], path: Path
) -> RunningCapture:
    if not capture_available():
        raise ScenarioError(unavailable_reason())
    module = importlib.import_module(CAPTURE_MODULE)
    capture: RunningCapture = module.Capture(
        host.netns, path, interfaces=list(interfaces), max_seconds=MAX_CAPTURE_S
    )
    topology.register(f"capture in {host.netns}", capture.stop)
    capture.start()
    return capture
