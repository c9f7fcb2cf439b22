"""The ephemeral-port policy of a namespace: range, reserved ports, usable capacity."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, TypeGuard

from tcpdoctor.kernel.constants import DEFAULT_PORT_RANGE
from tcpdoctor.kernel.sysctls import PortRange, PortRanges, lookup_sysctl
from tcpdoctor.kernel.timing import PortCapacity, port_capacity
from tcpdoctor.observe import netns
from tcpdoctor.observe.netns import NetnsTarget
from tcpdoctor.observe.sysctls import SysctlValues, read_sysctls

_RANGE = "net.ipv4.ip_local_port_range"
_RESERVED = "net.ipv4.ip_local_reserved_ports"


class PortPolicy(NamedTuple):
    port_range: PortRange
    reserved: PortRanges

    def capacity(self, bound: Iterable[int] = ()) -> PortCapacity:
        """Usable ports per destination, minus reserved ones and ports bound by listeners."""
        reserved = (p for lo, hi in self.reserved for p in range(lo, hi + 1))
        return port_capacity(*self.port_range, reserved=reserved, bound=bound)


def read_port_policy(target: NetnsTarget | None) -> PortPolicy:
    specs = [lookup_sysctl(_RANGE), lookup_sysctl(_RESERVED)]
    return policy_from(netns.run_in(target, lambda: read_sysctls(specs, netns.PROC_SYS)))


def policy_from(values: SysctlValues) -> PortPolicy:
    """The policy from sysctls already read; compiled-in defaults for what is missing."""
    port_range = values.value(_RANGE)
    reserved = values.value(_RESERVED)
    return PortPolicy(
        port_range=port_range if _is_range(port_range) else DEFAULT_PORT_RANGE,
        reserved=reserved if _is_ranges(reserved) else (),
    )


def _is_range(value: object) -> TypeGuard[PortRange]:
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)


def _is_ranges(value: object) -> TypeGuard[PortRanges]:
    return isinstance(value, tuple) and all(_is_range(v) for v in value)
