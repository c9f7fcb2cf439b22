"""Socket filters: states (applied by the kernel), addresses and ports (applied in bulk)."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

import numpy as np

from tcpdoctor.errors import InputError
from tcpdoctor.kernel.constants import MAX_PORT
from tcpdoctor.kernel.states import (
    ALL_STATES_MASK,
    CLOSING_STATES,
    CONNECTED_STATES,
    REPORTED_STATES,
    TcpState,
    state_mask,
)
from tcpdoctor.observe.addresses import IPNetwork, match_network

# Named groups a user can pass to --state, besides single kernel state names.
STATE_GROUPS: dict[str, frozenset[TcpState]] = {
    "all": frozenset(REPORTED_STATES),
    "connected": CONNECTED_STATES,
    "closing": CLOSING_STATES,
}


class PortRange(NamedTuple):
    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        low_text, sep, high_text = text.strip().partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if sep else low
        except ValueError:
            raise InputError(f"invalid port or port range {text!r}") from None
        if not 0 <= low <= high <= MAX_PORT:
            raise InputError(f"port range {text!r} must be within 0-{MAX_PORT}, low <= high")
        return cls(low, high)

    def mask(self, ports: np.ndarray) -> np.ndarray:
        return (ports >= self.low) & (ports <= self.high)


def parse_states(texts: list[str] | tuple[str, ...]) -> frozenset[TcpState] | None:
    """--state values (comma lists allowed, groups like 'connected'); None when not given."""
    chosen: set[TcpState] = set()
    if texts and not any(p.strip() for text in texts for p in text.split(",")):
        raise InputError("--state needs at least one state name")
    for text in texts:
        for part in filter(None, (p.strip() for p in text.split(","))):
            group = STATE_GROUPS.get(part.lower())
            if group is not None:
                chosen |= group
                continue
            try:
                chosen.add(TcpState.parse(part))
            except ValueError:
                names = ", ".join(s.name for s in REPORTED_STATES)
                raise InputError(
                    f"unknown state {part!r}; use one of {names} or {', '.join(STATE_GROUPS)}"
                ) from None
    return frozenset(chosen) if chosen else None


def parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InputError(f"invalid address or network {text!r}") from None


class SocketFilter(NamedTuple):
    states: frozenset[TcpState] | None = None
    local_network: IPNetwork | None = None
    remote_network: IPNetwork | None = None
    local_ports: PortRange | None = None
    remote_ports: PortRange | None = None

    @property
    def states_mask(self) -> int:
        if self.states is None:
            return ALL_STATES_MASK
        return state_mask(self.states)

    @property
    def needs_rows(self) -> bool:
        """True when something beyond the state mask must be checked row by row."""
        return any(
            f is not None
            for f in (self.local_network, self.remote_network, self.local_ports, self.remote_ports)
        )

    def mask(self, sockets: np.ndarray) -> np.ndarray:
        keep = np.ones(len(sockets), dtype=bool)
        if self.local_network is not None:
            keep &= match_network(sockets["family"], sockets["src"], self.local_network)
        if self.remote_network is not None:
            keep &= match_network(sockets["family"], sockets["dst"], self.remote_network)
        if self.local_ports is not None:
            keep &= self.local_ports.mask(sockets["sport"])
        if self.remote_ports is not None:
            keep &= self.remote_ports.mask(sockets["dport"])
        return keep
