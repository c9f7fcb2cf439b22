"""Idle timeouts of the boxes between two TCP endpoints, and the --idle-timeout parser.

A load balancer, NAT gateway or stateful firewall keeps a table entry per flow and drops it
after a period with no packets. The endpoints are not told, so both sockets stay
ESTABLISHED: the next packet either gets an RST from the middlebox or disappears. The
keepalive rule compares the sockets it sees with one such timeout.

Vendor values below are DOCUMENTED DEFAULTS as of 2025 (when they were last checked
against the vendor pages cited in each record). Vendors change defaults and most of these
are configurable per listener, rule or gateway: check your own configuration. The
conntrack value is the kernel's compiled-in default; the rule reads the namespace's own
value when nf_conntrack is loaded.
"""

from __future__ import annotations

import math
import re
from typing import Final, NamedTuple

from tcpdoctor.errors import InputError
from tcpdoctor.kernel.constants import NF_CT_TCP_TIMEOUT_ESTABLISHED

CHECKED: Final = "2025"  # when the vendor defaults below were last compared with the docs
VENDOR_CAVEAT: Final = (
    f"documented default as of {CHECKED}; vendors change defaults and most are "
    "configurable: check your configuration"
)
USER_SOURCE: Final = "--idle-timeout"  # DoctorOptions.idle_timeout_source for plain numbers
CONNTRACK_SYSCTL: Final = "net.netfilter.nf_conntrack_tcp_timeout_established"


class IdleTimeoutPreset(NamedTuple):
    """One middlebox's idle timeout for established TCP flows."""

    name: str  # what --idle-timeout accepts, e.g. "aws-nlb"
    seconds: float
    what: str  # the product and the setting, for people
    keepalive_resets: bool  # an empty TCP keepalive probe counts as traffic (L4 devices)
    source: str  # where the number comes from (a vendor page, or the kernel symbol)
    notes: str  # range, behaviour on expiry, caveats
    vendor: bool = True  # False for a kernel default (no "check your vendor" caveat)

    @property
    def caveat(self) -> str:
        if self.vendor:
            return VENDOR_CAVEAT
        return "kernel default; the namespace's own sysctl value is used when readable"


PRESETS: Final[tuple[IdleTimeoutPreset, ...]] = (
    # https://docs.aws.amazon.com/elasticloadbalancing/latest/network/update-idle-timeout.html
    # ("The default idle timeout value for TCP flows is 350 seconds"; 60-6000 s; TLS fixed).
    IdleTimeoutPreset(
        name="aws-nlb",
        seconds=350,
        what="AWS Network Load Balancer, TCP listener idle timeout",
        keepalive_resets=True,
        source="https://docs.aws.amazon.com/elasticloadbalancing/latest/network/update-idle-timeout.html",
        notes=(
            "configurable 60-6000 s on TCP listeners since 2024, fixed 350 s on TLS "
            "listeners; the flow is forgotten silently and the next packet from either side "
            "gets an RST; TCP keepalive probes count as traffic"
        ),
    ),
    # https://docs.aws.amazon.com/elasticloadbalancing/latest/application/edit-load-balancer-attributes.html
    # ("By default, ELB sets the idle timeout value for your load balancer to 60 seconds").
    IdleTimeoutPreset(
        name="aws-alb",
        seconds=60,
        what="AWS Application Load Balancer, connection idle timeout",
        keepalive_resets=False,
        source="https://docs.aws.amazon.com/elasticloadbalancing/latest/application/edit-load-balancer-attributes.html",
        notes=(
            "configurable 1-4000 s; the ALB is a proxy that ends TCP on both sides, so only "
            "data resets the timer: TCP keepalive probes and HTTP/2 PING frames do not; keep "
            "the backend's HTTP keep-alive timeout longer than this"
        ),
    ),
    # https://docs.aws.amazon.com/elasticloadbalancing/latest/classic/config-idle-timeout.html
    # ("TCP keep-alive probes do not prevent the load balancer from terminating the connection").
    IdleTimeoutPreset(
        name="aws-clb",
        seconds=60,
        what="AWS Classic Load Balancer, idle connection timeout",
        keepalive_resets=False,
        source="https://docs.aws.amazon.com/elasticloadbalancing/latest/classic/config-idle-timeout.html",
        notes="configurable 1-3600 s; a proxy: keepalive probes carry no data and do not count",
    ),
    # https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateway-troubleshooting.html
    # (idle connections time out after 350 s) and the AWS networking blog "Implementing
    # long-running TCP connections within VPC networking" (NAT gateway, interface VPC
    # endpoints and NLB share the 350 s idle timeout).
    IdleTimeoutPreset(
        name="aws-nat",
        seconds=350,
        what="AWS NAT gateway (also interface VPC endpoints), idle connection timeout",
        keepalive_resets=True,
        source="https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateway-troubleshooting.html",
        notes=(
            "not configurable when last checked; an expired flow gets an RST on its next "
            "packet (CloudWatch IdleTimeoutCount counts them)"
        ),
    ),
    # Compute API, RouterNat.tcpEstablishedIdleTimeoutSec: "Defaults to 1200s if not set."
    # https://cloud.google.com/compute/docs/reference/rest/v1/routers
    IdleTimeoutPreset(
        name="gcp-nat",
        seconds=1200,
        what="Google Cloud NAT, TCP established connection idle timeout",
        keepalive_resets=True,
        source="https://cloud.google.com/compute/docs/reference/rest/v1/routers",
        notes=(
            "tcpEstablishedIdleTimeoutSec, configurable (gcloud compute routers nats update "
            "--tcp-established-idle-timeout); transitory (half-open) TCP flows: 30 s"
        ),
    ),
    # Compute API, BackendServiceConnectionTrackingPolicy.idleTimeoutSec: for internal
    # passthrough Network Load Balancers "the minimum (default) is 10 minutes".
    # https://cloud.google.com/compute/docs/reference/rest/v1/backendServices
    IdleTimeoutPreset(
        name="gcp-ilb",
        seconds=600,
        what="Google Cloud internal passthrough Network Load Balancer, connection tracking",
        keepalive_resets=True,
        source="https://cloud.google.com/compute/docs/reference/rest/v1/backendServices",
        notes=(
            "connectionTrackingPolicy.idleTimeoutSec, 10 min to 16 h, settable only with "
            "session affinity below 5-tuple; a passthrough device, so keepalive probes count"
        ),
    ),
    # https://cloud.google.com/load-balancing/docs/https/request-distribution
    # (client HTTP keepalive timeout 610 s, backend keepalive timeout fixed at 600 s).
    IdleTimeoutPreset(
        name="gcp-alb",
        seconds=610,
        what="Google Cloud global external Application Load Balancer, client HTTP keepalive",
        keepalive_resets=False,
        source="https://cloud.google.com/load-balancing/docs/https/request-distribution",
        notes=(
            "httpKeepAliveTimeoutSec on the target proxy, 5-1200 s; a proxy, so only HTTP "
            "traffic counts; its own connections to backends idle out after a fixed 600 s, "
            "so backends should keep idle connections open longer than 600 s"
        ),
    ),
    # https://learn.microsoft.com/azure/load-balancer/load-balancer-tcp-idle-timeout
    # ("The default setting is 4 minutes"; 4-100 min) and load-balancer-tcp-reset.
    IdleTimeoutPreset(
        name="azure-lb",
        seconds=240,
        what="Azure Load Balancer, rule idle timeout (load balancing, inbound NAT, outbound)",
        keepalive_resets=True,
        source="https://learn.microsoft.com/azure/load-balancer/load-balancer-tcp-idle-timeout",
        notes=(
            "configurable 4-100 min; flows are dropped silently unless 'TCP reset on idle' "
            "is enabled on the rule, which sends an RST to both ends"
        ),
    ),
    # https://learn.microsoft.com/azure/nat-gateway/nat-gateway-resource (TCP idle timeout:
    # "4 minutes (default) - 120 minutes").
    IdleTimeoutPreset(
        name="azure-nat",
        seconds=240,
        what="Azure NAT Gateway, TCP idle timeout",
        keepalive_resets=True,
        source="https://learn.microsoft.com/azure/nat-gateway/nat-gateway-resource",
        notes=(
            "configurable 4-120 min; the mapping is dropped silently and the next packet on "
            "it gets an RST; long timeouts hold SNAT ports longer"
        ),
    ),
    # tcp_timeouts[TCP_CONNTRACK_ESTABLISHED] = 5 DAYS in net/netfilter/nf_conntrack_proto_tcp.c
    IdleTimeoutPreset(
        name="conntrack",
        seconds=NF_CT_TCP_TIMEOUT_ESTABLISHED,
        what="Linux netfilter connection tracking (NAT, stateful rules), established flows",
        keepalive_resets=True,
        source=f"{CONNTRACK_SYSCTL} (tcp_timeouts[] in nf_conntrack_proto_tcp.c)",
        notes=(
            "per network namespace; kube-proxy and similar tools often lower it; with "
            "nf_conntrack_tcp_loose=1 (the default) a plain stateful filter may pick a "
            "forgotten flow up again, but a NAT mapping is not restored"
        ),
        vendor=False,
    ),
)

_BY_NAME: Final = {preset.name: preset for preset in PRESETS}
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)")


def preset(name: str) -> IdleTimeoutPreset | None:
    """The preset called `name` (case and '_' vs '-' do not matter), or None."""
    return _BY_NAME.get(name.strip().lower().replace("_", "-"))


def preset_names() -> str:
    return ", ".join(p.name for p in PRESETS)


def parse_duration(text: str) -> float | None:
    """Seconds in "350", "350s", "5m", "1h", "1h30m", "1.5h"; None when it is not one."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        return None
    position, total = 0, 0.0
    units_seen: list[str] = []
    while position < len(compact):
        part = _PART.match(compact, position)
        if part is None:
            return None
        number, unit = part.groups()
        if unit in units_seen or (not unit and (position or part.end() < len(compact))):
            return None  # "5m5m", or a bare number mixed with units ("1h30")
        units_seen.append(unit)
        total += float(number) * _UNITS[unit]
        position = part.end()
    return total


def parse_idle_timeout(text: str) -> tuple[float, str]:
    """--idle-timeout: seconds ("350", "5m", "1h") or a preset name -> (seconds, source).

    The source is the preset's name, or "--idle-timeout" for a number. For "conntrack" the
    seconds are the kernel default; the rule replaces them with the namespace's value.
    """
    found = preset(text)
    if found is not None:
        return float(found.seconds), found.name
    seconds = parse_duration(text)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise InputError(
            f"bad --idle-timeout {text!r}: give a positive duration (350, 90s, 5m, 1h) "
            f"or a preset ({preset_names()})"
        )
    return seconds, USER_SOURCE
