"""`--sysctl NAME=VALUE`: kernel settings for the lab's hosts, named as users know them.

The `net.ipv4.` prefix is optional (`tcp_tw_reuse=1` works), `/` may stand for `.`, and the
name must be in the sysctl catalogue (kernel/sysctls.py). Only per-namespace knobs are
accepted: the lab sets them inside its own namespaces and never touches the host's.
A port range may be written "40000 40063", "40000-40063" or "40000,40063".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tcpdoctor.errors import InputError, KernelInterfaceError
from tcpdoctor.kernel.sysctls import Scope, SysctlSpec, SysctlValue, Unit, lookup_sysctl

_RANGE_SEPARATORS = re.compile(r"\s*[-,:]\s*|\s+")


@dataclass(frozen=True)
class SysctlSetting:
    spec: SysctlSpec
    value: SysctlValue
    text: str  # what gets written (the kernel's own format)

    @property
    def name(self) -> str:
        return self.spec.name


def normalise_name(name: str) -> str:
    """'tcp_tw_reuse', 'net.ipv4.tcp_tw_reuse', 'net/ipv4/tcp_tw_reuse' -> the full name."""
    key = name.strip().replace("/", ".")
    if not key:
        raise InputError("--sysctl needs a name before '='")
    try:
        return lookup_sysctl(key).name
    except InputError:
        raise InputError(f"unknown sysctl {name.strip()!r} (see docs/sysctls.md)") from None


def parse_setting(text: str) -> SysctlSetting:
    """One `--sysctl` argument, validated against the catalogue."""
    name, sep, raw = text.partition("=")
    if not sep:
        raise InputError(f"--sysctl wants NAME=VALUE, got {text!r}")
    spec = lookup_sysctl(normalise_name(name))
    if spec.scope is not Scope.PER_NETNS or not spec.visible_in_child_netns:
        raise InputError(
            f"{spec.name} is host-wide, not per network namespace; the lab never changes "
            "the host's own settings"
        )
    value_text = raw.strip()
    if spec.unit is Unit.PORT_RANGE:
        value_text = " ".join(p for p in _RANGE_SEPARATORS.split(value_text) if p)
    try:
        value = spec.parse(value_text)
    except KernelInterfaceError as err:
        raise InputError(f"--sysctl {text.strip()}: {err}") from None
    return SysctlSetting(spec, value, spec.format(value))


def parse_settings(texts: Iterable[str]) -> tuple[SysctlSetting, ...]:
    """All `--sysctl` arguments; a later value for the same knob replaces an earlier one."""
    chosen: dict[str, SysctlSetting] = {}
    for text in texts:
        setting = parse_setting(text)
        chosen.pop(setting.name, None)
        chosen[setting.name] = setting
    return tuple(chosen.values())
