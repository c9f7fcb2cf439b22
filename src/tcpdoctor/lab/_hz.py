"""CONFIG_HZ of the running kernel, for the timer-wheel slack of long timers.

Read from /proc/config.gz or /boot/config-<release> when the kernel exposes its build
configuration. When neither is there, the lab allows the slack of the coarsest common HZ
choice, so an unknown kernel is judged leniently rather than wrongly.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from tcpdoctor.kernel.constants import CONFIG_HZ_CHOICES
from tcpdoctor.kernel.timing import timer_slack

_CONFIG_GZ = Path("/proc/config.gz")
_HZ_LINE = re.compile(r"^CONFIG_HZ=(\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class KernelHz:
    hz: int | None  # None: not known, slack is the worst over CONFIG_HZ_CHOICES
    source: str

    def max_lateness(self, nominal_s: float) -> float:
        """How late a timer armed `nominal_s` ahead may fire (timer_slack in kernel/)."""
        choices = (self.hz,) if self.hz else CONFIG_HZ_CHOICES
        return max(timer_slack(nominal_s, hz).max_lateness for hz in choices)


def parse_config_hz(text: str) -> int | None:
    match = _HZ_LINE.search(text)
    return int(match.group(1)) if match else None


def kernel_hz(
    config_gz: Path = _CONFIG_GZ, boot_dir: Path = Path("/boot"), release: str | None = None
) -> KernelHz:
    release = release or os.uname().release
    try:
        hz = parse_config_hz(gzip.decompress(config_gz.read_bytes()).decode(errors="replace"))
        if hz:
            return KernelHz(hz, str(config_gz))
    except (OSError, EOFError, zlib.error):
        pass
    plain = boot_dir / f"config-{release}"
    try:
        hz = parse_config_hz(plain.read_text(errors="replace"))
        if hz:
            return KernelHz(hz, str(plain))
    except OSError:
        pass
    choices = "/".join(str(h) for h in CONFIG_HZ_CHOICES)
    return KernelHz(None, f"unknown (no kernel config found; allowing the worst of HZ={choices})")
