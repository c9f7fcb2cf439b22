"""The sysctl catalogue: each knob tcpdoctor reads, with default, scope, history and hazards.

One frozen `SysctlSpec` per knob. Defaults are typed exactly like the parsers' output, so a
value read from /proc/sys can be compared with `spec.default` directly. Where a default is
computed at boot (hash-table sizes, RAM), `default` is None and `default_rule` says how.

Facts name the kernel symbol they come from; "[measured]" ones were checked on 6.18, HZ=250.
The parsers at the bottom are pure: /proc/sys text in, typed value out, and anything else
raises KernelInterfaceError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import NamedTuple

from tcpdoctor.errors import InputError, KernelInterfaceError
from tcpdoctor.kernel.constants import (
    DEFAULT_PORT_RANGE,
    MAX_PORT,
    NF_CT_TCP_LOOSE_DEFAULT,
    NF_CT_TCP_TIMEOUT_CLOSE,
    NF_CT_TCP_TIMEOUT_CLOSE_WAIT,
    NF_CT_TCP_TIMEOUT_ESTABLISHED,
    NF_CT_TCP_TIMEOUT_FIN_WAIT,
    NF_CT_TCP_TIMEOUT_LAST_ACK,
    NF_CT_TCP_TIMEOUT_MAX_RETRANS,
    NF_CT_TCP_TIMEOUT_SYN_RECV,
    NF_CT_TCP_TIMEOUT_SYN_SENT,
    NF_CT_TCP_TIMEOUT_TIME_WAIT,
    NF_CT_TCP_TIMEOUT_UNACKNOWLEDGED,
    NR_FILE,
    NR_OPEN_DEFAULT,
    SOMAXCONN_DEFAULT,
    TCP_FIN_TIMEOUT,
    TCP_KEEPALIVE_INTVL,
    TCP_KEEPALIVE_PROBES,
    TCP_KEEPALIVE_TIME,
    TCP_ORPHAN_RETRIES,
    TCP_RETR1,
    TCP_RETR2,
    TCP_RTO_MAX,
    TCP_RTO_MIN,
    TCP_SYN_LINEAR_TIMEOUTS,
    TCP_SYN_RETRIES,
    TCP_SYNACK_RETRIES,
    TCP_SYNCOOKIES_DEFAULT,
    TCP_TIMESTAMPS_DEFAULT,
    TCP_TW_REUSE_DEFAULT,
    TCP_TW_REUSE_DELAY_MS,
)

PortRange = tuple[int, int]
PortRanges = tuple[PortRange, ...]
SysctlValue = int | PortRange | PortRanges


class Scope(Enum):
    """Whether a network namespace has its own copy of a knob or counter."""

    PER_NETNS = "per-netns"
    GLOBAL = "global"


class Unit(Enum):
    """What a sysctl's number means; also selects the parser for its text."""

    SECONDS = "s"
    MILLISECONDS = "ms"
    MICROSECONDS = "us"
    COUNT = "count"
    BOOLEAN = "0/1"
    MODE = "mode"
    PORT_RANGE = "port range"
    PORT_LIST = "port list"


class KernelVersion(NamedTuple):
    """A mainline release, major.minor. Tuple order makes comparisons work."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def parse(cls, release: str) -> KernelVersion:
        """'6.18.44-fc-v657' (uname -r) or '6.18' -> KernelVersion(6, 18)."""
        match = re.match(r"(\d+)\.(\d+)", release.strip())
        if match is None:
            raise KernelInterfaceError(f"cannot read a kernel version from {_show(release)}")
        return cls(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class SysctlSpec:
    """One knob under /proc/sys.

    `added`/`removed` are mainline releases; None for `added` means present in every 5.x/6.x
    kernel. `requires_module` names a module whose loading creates the file.
    `visible_in_child_netns` is False for host-wide knobs that only the initial network
    namespace can see (reading them elsewhere gives ENOENT).
    """

    name: str
    unit: Unit
    scope: Scope
    default: SysctlValue | None
    meaning: str
    risks: str
    kernel_symbol: str
    default_rule: str = ""
    added: KernelVersion | None = None
    removed: KernelVersion | None = None
    requires_module: str | None = None
    visible_in_child_netns: bool = True

    def __post_init__(self) -> None:
        # A catalogue entry that cannot state its default is a bug, not a runtime condition.
        if (self.default is None) == (not self.default_rule):
            raise ValueError(f"{self.name}: give exactly one of default and default_rule")

    @property
    def path(self) -> str:
        """Path below /proc/sys: dots become slashes (no catalogued name contains one)."""
        return self.name.replace(".", "/")

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def parse(self, text: str) -> SysctlValue:
        """Turn the file's text into this knob's typed value."""
        if self.unit is Unit.PORT_RANGE:
            return parse_port_range(text, what=self.name)
        if self.unit is Unit.PORT_LIST:
            return parse_reserved_ports(text, what=self.name)
        return parse_int(text, what=self.name)

    def format(self, value: SysctlValue) -> str:
        """The text `sysctl -w` accepts for this value (and /proc/sys prints, bar the tab)."""
        return format_value(self.unit, value)

    def exists_in(self, version: KernelVersion) -> bool:
        """Whether a kernel of this release has the knob at all (ignoring modules)."""
        if self.added is not None and version < self.added:
            return False
        return self.removed is None or version < self.removed

    def absence_reason(self) -> str:
        """Most likely reason the file is missing, for a human."""
        if self.removed is not None:
            return f"removed in Linux {self.removed}"
        if self.requires_module is not None:
            return f"appears only while the {self.requires_module} module is loaded"
        if not self.visible_in_child_netns:
            return "host-wide knob, visible only from the initial network namespace"
        if self.added is not None:
            return f"added in Linux {self.added}; this kernel predates it"
        return "not present on this kernel"


# --- Parsers -------------------------------------------------------------------------------

_INT = re.compile(r"-?[0-9]+")
_SHOW_LIMIT = 40


def _show(text: str) -> str:
    """A short, single-line rendering of untrusted text for error messages."""
    if len(text) > _SHOW_LIMIT:
        return repr(text[:_SHOW_LIMIT]) + "..."
    return repr(text)


def _int_token(token: str, what: str) -> int:
    # int() alone would also take '1_000', '+5' and non-ASCII digits; the kernel prints none.
    if _INT.fullmatch(token) is None:
        raise KernelInterfaceError(f"{what}: expected an integer, got {_show(token)}")
    return int(token)


def parse_int(text: str, *, what: str = "sysctl") -> int:
    """'60\\n' -> 60."""
    return _int_token(text.strip(), what)


def _port(token: str, what: str) -> int:
    port = _int_token(token, what)
    if not 0 <= port <= MAX_PORT:
        raise KernelInterfaceError(f"{what}: port {port} is outside 0-{MAX_PORT}")
    return port


def parse_port_range(text: str, *, what: str = "ip_local_port_range") -> PortRange:
    """'32768\\t60999\\n' -> (32768, 60999). The kernel refuses ranges with high < low."""
    tokens = text.split()
    if len(tokens) != 2:
        raise KernelInterfaceError(f"{what}: expected two port numbers, got {_show(text)}")
    low, high = _port(tokens[0], what), _port(tokens[1], what)
    if high < low:
        raise KernelInterfaceError(f"{what}: range {low}-{high} ends below its start")
    return (low, high)


def parse_reserved_ports(text: str, *, what: str = "ip_local_reserved_ports") -> PortRanges:
    """'1000-1002,2000\\n' -> ((1000, 1002), (2000, 2000)); '' -> ().

    Output is sorted with overlapping or touching ranges merged, the same canonical form the
    kernel prints back from its bitmap (proc_do_large_bitmap).
    """
    body = text.strip()
    if not body:
        return ()
    ranges = sorted(_reserved_item(item, what) for item in body.split(","))
    return _merge(ranges)


def _reserved_item(item: str, what: str) -> PortRange:
    low_text, dash, high_text = item.strip().partition("-")
    low = _port(low_text, what)
    high = _port(high_text, what) if dash else low
    if high < low:
        raise KernelInterfaceError(f"{what}: range {low}-{high} ends below its start")
    return (low, high)


def _merge(ranges: list[PortRange]) -> PortRanges:
    merged: list[PortRange] = []
    for low, high in ranges:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def format_value(unit: Unit, value: SysctlValue) -> str:
    """Inverse of the parsers, in the form `sysctl -w` takes."""
    if isinstance(value, int):
        return str(value)
    if unit is Unit.PORT_RANGE:
        low, high = _as_pair(value)
        return f"{low} {high}"
    return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in _as_ranges(value))


def _as_pair(value: PortRange | PortRanges) -> PortRange:
    if len(value) == 2:
        low, high = value
        if isinstance(low, int) and isinstance(high, int):
            return (low, high)
    raise TypeError("a port range is a (low, high) pair of ints")


def _as_ranges(value: PortRange | PortRanges) -> PortRanges:
    ranges: list[PortRange] = []
    for item in value:
        if isinstance(item, int):
            raise TypeError("a port list is a tuple of (low, high) pairs")
        ranges.append(item)
    return tuple(ranges)


# --- The catalogue -------------------------------------------------------------------------

_V = KernelVersion
_CT_TIMEOUTS = "tcp_timeouts[] in net/netfilter/nf_conntrack_proto_tcp.c"


def _ct_timeout(state: str, default: int, meaning: str, risks: str) -> SysctlSpec:
    return SysctlSpec(
        name=f"net.netfilter.nf_conntrack_tcp_timeout_{state}",
        unit=Unit.SECONDS,
        scope=Scope.PER_NETNS,
        default=default,
        meaning=meaning,
        risks=risks,
        kernel_symbol=_CT_TIMEOUTS,
        requires_module="nf_conntrack",
    )


ALL_SYSCTLS: tuple[SysctlSpec, ...] = (
    # --- Ports --------------------------------------------------------------------------
    SysctlSpec(
        name="net.ipv4.ip_local_port_range",
        unit=Unit.PORT_RANGE,
        scope=Scope.PER_NETNS,
        default=DEFAULT_PORT_RANGE,
        meaning=(
            "Ephemeral ports used by connect() without a bound port and by bind(0). connect() "
            "may use one port towards many different destinations, so capacity is counted per "
            "(source address, destination address, destination port)."
        ),
        risks=(
            "When the range is used up, connect() fails with EADDRNOTAVAIL and bind(0) with "
            "EADDRINUSE. Starting it low can hand out ports that a server later wants to "
            "listen on. Both ends of the same parity log a warning: connect() prefers one "
            "parity and bind(0) the other."
        ),
        kernel_symbol="inet_init_net() in net/ipv4/af_inet.c; inet_sk_get_local_port_range()",
    ),
    SysctlSpec(
        name="net.ipv4.ip_local_reserved_ports",
        unit=Unit.PORT_LIST,
        scope=Scope.PER_NETNS,
        default=(),
        meaning=(
            "Ports that automatic selection (connect() autobind and bind(0)) never picks. An "
            "explicit bind() to one of them still succeeds."
        ),
        risks=(
            "Each reserved port is taken out of the ephemeral pool. Reserving the ports of "
            "local servers stops outgoing connections from occupying them before the server "
            "starts."
        ),
        kernel_symbol="inet_is_local_reserved_port(); sysctl_local_reserved_ports bitmap",
    ),
    SysctlSpec(
        name="net.ipv4.ip_autobind_reuse",
        unit=Unit.BOOLEAN,
        scope=Scope.PER_NETNS,
        default=0,
        meaning=(
            "1: once every ephemeral port is taken, bind(0) on an SO_REUSEADDR socket may "
            "return a port that another SO_REUSEADDR socket already holds."
        ),
        risks=(
            "Sockets then share a local port and only a unique 4-tuple keeps them apart; "
            "meant for applications that know they will connect() to distinct peers."
        ),
        kernel_symbol="inet_csk_find_open_port() in net/ipv4/inet_connection_sock.c",
        added=_V(5, 7),
    ),
    # --- TIME_WAIT ----------------------------------------------------------------------
    SysctlSpec(
        name="net.ipv4.tcp_tw_reuse",
        unit=Unit.MODE,
        scope=Scope.PER_NETNS,
        default=TCP_TW_REUSE_DEFAULT,
        meaning=(
            "Whether connect() may take over the 4-tuple of a TIME_WAIT socket once "
            "tcp_tw_reuse_delay has passed: 0 never, 1 always, 2 only for loopback. Only "
            "outgoing connections are affected, and only if the old connection used timestamps."
        ),
        risks=(
            "Safe where timestamps are on, because PAWS rejects old duplicates. It cannot help "
            "a server's TIME_WAITs, does nothing with tcp_timestamps=0, and a socket that bound "
            "its port explicitly reuses a TIME_WAIT whatever this says."
        ),
        kernel_symbol="tcp_twsk_unique() in net/ipv4/tcp_ipv4.c",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_tw_reuse_delay",
        unit=Unit.MILLISECONDS,
        scope=Scope.PER_NETNS,
        default=TCP_TW_REUSE_DELAY_MS,
        meaning=(
            "Minimum age of a TIME_WAIT, counted from its entry into TIME_WAIT, before "
            "tcp_tw_reuse lets connect() reuse it. Accepts 1-60000 [measured]."
        ),
        risks=(
            "Small values leave only PAWS to guard against delayed segments of the old "
            "connection. Before 6.14 the delay was an implicit 0-1 s."
        ),
        kernel_symbol="sysctl_tcp_tw_reuse_delay; tw_entry_stamp in tcp_twsk_unique()",
        added=_V(6, 14),
    ),
    SysctlSpec(
        name="net.ipv4.tcp_tw_recycle",
        unit=Unit.BOOLEAN,
        scope=Scope.PER_NETNS,
        default=0,
        meaning=(
            "Legacy. Cut TIME_WAIT short and dropped SYNs whose timestamp went backwards "
            "compared with the last one cached for the same source address."
        ),
        risks=(
            "Dropped SYNs from clients behind a shared NAT, whose timestamp clocks are "
            "unrelated; once timestamp offsets became per connection it broke everyone. Gone "
            "since 4.12, so old sysctl.conf lines for it fail to apply."
        ),
        kernel_symbol='commit 4396e46187ca "tcp: remove tcp_tw_recycle"',
        removed=_V(4, 12),
    ),
    SysctlSpec(
        name="net.ipv4.tcp_timestamps",
        unit=Unit.MODE,
        scope=Scope.PER_NETNS,
        default=TCP_TIMESTAMPS_DEFAULT,
        meaning=(
            "RFC 7323 timestamps: 0 off, 1 on with a randomised offset, 2 on without an offset "
            '(commit 25429d7b7dca "tcp: allow to turn tcp timestamp randomization off", 4.10).'
        ),
        risks=(
            "0 disables PAWS, and with it tcp_tw_reuse; coarser RTT samples. Writes of values "
            "above 2 are accepted [measured: 3 on 6.18]."
        ),
        kernel_symbol="sysctl_tcp_timestamps; secure_tcp_ts_off() via tcp_v4_connect()",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_max_tw_buckets",
        unit=Unit.COUNT,
        scope=Scope.PER_NETNS,
        default=None,
        default_rule=(
            "half the entries of the namespace's established hash (tcp_set_hashinfo()): "
            "131072 with the usual 262144-entry table"
        ),
        meaning="Cap on TIME_WAIT and FIN_WAIT2 minisockets in this namespace.",
        risks=(
            "Over the cap nothing fails visibly: a closing socket skips TIME_WAIT (or its "
            "orphaned FIN_WAIT2) and is destroyed, with no RST and no log line, only "
            "TCPTimeWaitOverflow rising. Lowering it to free ports gives up TIME_WAIT's "
            "protection instead of curing the churn."
        ),
        kernel_symbol="inet_twsk_alloc(); tcp_death_row.sysctl_max_tw_buckets",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_rfc1337",
        unit=Unit.BOOLEAN,
        scope=Scope.PER_NETNS,
        default=0,
        meaning=(
            "1: a TIME_WAIT socket ignores an in-window RST. 0: the RST ends the TIME_WAIT at "
            "once (the RFC 1337 'assassination' hazard)."
        ),
        risks="With 0 a stray or forged RST can end TIME_WAIT early.",
        kernel_symbol="tcp_timewait_state_process() in net/ipv4/tcp_minisocks.c",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_fin_timeout",
        unit=Unit.SECONDS,
        scope=Scope.PER_NETNS,
        default=int(TCP_FIN_TIMEOUT),
        meaning=(
            "Lifetime of an orphaned FIN_WAIT2 socket: the application has closed it and the "
            "peer has not sent its FIN yet. Never shorter than 3.5 x RTO. TIME_WAIT stays 60 s "
            "whatever this says."
        ),
        risks=(
            "Above 60 the FIN_WAIT2 actually lasts 2 x (value - 60) s [measured]. A socket "
            "still open in the application (shutdown() without close()) has no FIN_WAIT2 "
            "timer at all."
        ),
        kernel_symbol="tcp_fin_time() in include/net/tcp.h",
    ),
    # --- Keepalive ----------------------------------------------------------------------
    SysctlSpec(
        name="net.ipv4.tcp_keepalive_time",
        unit=Unit.SECONDS,
        scope=Scope.PER_NETNS,
        default=int(TCP_KEEPALIVE_TIME),
        meaning=(
            "Idle time, since the last segment received, before the first keepalive probe. "
            "Used by SO_KEEPALIVE sockets without TCP_KEEPIDLE."
        ),
        risks=(
            "Two hours is longer than most NAT and firewall idle timeouts, so middleboxes "
            "forget idle flows first. A dead peer is noticed after time + probes x intvl "
            "(7875 s with defaults)."
        ),
        kernel_symbol="keepalive_time_when(); tcp_keepalive_timer() in net/ipv4/tcp_timer.c",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_keepalive_intvl",
        unit=Unit.SECONDS,
        scope=Scope.PER_NETNS,
        default=int(TCP_KEEPALIVE_INTVL),
        meaning="Gap between keepalive probes that get no answer (unless TCP_KEEPINTVL).",
        risks="Multiplies with tcp_keepalive_probes into the time a dead peer goes unnoticed.",
        kernel_symbol="keepalive_intvl_when(); tcp_keepalive_timer()",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_keepalive_probes",
        unit=Unit.COUNT,
        scope=Scope.PER_NETNS,
        default=TCP_KEEPALIVE_PROBES,
        meaning=(
            "Unanswered keepalive probes before the connection is reset with ETIMEDOUT "
            "(unless TCP_KEEPCNT)."
        ),
        risks="Ignored when TCP_USER_TIMEOUT is set; that deadline wins.",
        kernel_symbol="keepalive_probes(); tcp_keepalive_timer()",
    ),
    # --- Retransmission -----------------------------------------------------------------
    SysctlSpec(
        name="net.ipv4.tcp_retries1",
        unit=Unit.COUNT,
        scope=Scope.PER_NETNS,
        default=TCP_RETR1,
        meaning=(
            "After this much retransmission time (about 3 s with the 200 ms base) the route "
            "is re-validated and MTU black-hole probing may start."
        ),
        risks="Aborts nothing; often confused with tcp_retries2.",
        kernel_symbol="tcp_write_timeout() in net/ipv4/tcp_timer.c",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_retries2",
        unit=Unit.COUNT,
        scope=Scope.PER_NETNS,
        default=TCP_RETR2,
        meaning=(
            "Time budget for unacknowledged data before the connection fails with "
            "ETIMEDOUT, written as a retransmission count of an ideal doubling RTO from "
            "200 ms: 15 means 924.6 s, counted from the first RTO retransmission."
        ),
        risks=(
            "It is a time limit, so a path with a large RTO sees fewer retransmissions. Low "
            "values notice dead peers sooner but kill connections across short outages."
        ),
        kernel_symbol="retransmits_timed_out(), tcp_model_timeout() in net/ipv4/tcp_timer.c",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_orphan_retries",
        unit=Unit.COUNT,
        scope=Scope.PER_NETNS,
        default=TCP_ORPHAN_RETRIES,
        meaning=(
            "Retransmission budget of orphans (closed by the application, still in "
            "FIN_WAIT1, CLOSING or LAST_ACK). 0 means 8, 102.2 s counted from the first "
            "RTO retransmission."
        ),
        risks=(
            "Orphans keep memory and a port until it runs out. Lower values free them "
            "sooner but may give up on the final FIN over a lossy path."
        ),
        kernel_symbol="tcp_orphan_retries() in net/ipv4/tcp_timer.c",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_max_orphans",
        unit=Unit.COUNT,
        scope=Scope.GLOBAL,
        default=None,
        default_rule=(
            "half the entries of the global established hash (tcp_init()): 131072 with the "
            "usual 262144-entry table"
        ),
        meaning=(
            "Host-wide cap on orphaned TCP sockets, shared by every namespace; the file exists "
            "only in the initial namespace [measured]."
        ),
        risks=(
            "Past it, orphans are killed with an RST, TCPAbortOnMemory rises and the kernel "
            "logs 'too many orphaned sockets'. Containers cannot see or tune it."
        ),
        kernel_symbol="sysctl_tcp_max_orphans; tcp_too_many_orphans(), tcp_out_of_resources()",
        visible_in_child_netns=False,
    ),
    SysctlSpec(
        name="net.ipv4.tcp_rto_min_us",
        unit=Unit.MICROSECONDS,
        scope=Scope.PER_NETNS,
        default=round(TCP_RTO_MIN * 1_000_000),
        meaning=(
            "Minimum RTO given to new sockets; it bounds the variance term of the RTO. "
            "Route rto_min and TCP_RTO_MIN_US take precedence."
        ),
        risks=(
            "Rounded to jiffies (4 ms steps at HZ=250). Lower values add spurious "
            "retransmissions but do not shorten the tcp_retries2 budget, which uses the "
            "200 ms constant."
        ),
        kernel_symbol='commit f086edef71be "tcp: add sysctl_tcp_rto_min_us"; tcp_rto_min_us()',
        added=_V(6, 11),
    ),
    SysctlSpec(
        name="net.ipv4.tcp_rto_max_ms",
        unit=Unit.MILLISECONDS,
        scope=Scope.PER_NETNS,
        default=round(TCP_RTO_MAX * 1000),
        meaning="Ceiling of the RTO for new sockets; accepts 1000-120000 [measured].",
        risks=(
            "Also shortens the give-up time derived from tcp_retries2, which is computed "
            "with this ceiling."
        ),
        kernel_symbol="tcp_rto_max(); tcp_model_timeout() in net/ipv4/tcp_timer.c",
        added=_V(6, 15),
    ),
    # --- Connection establishment -------------------------------------------------------
    SysctlSpec(
        name="net.ipv4.tcp_syn_retries",
        unit=Unit.COUNT,
        scope=Scope.PER_NETNS,
        default=TCP_SYN_RETRIES,
        meaning=(
            "SYN retransmissions before connect() fails with ETIMEDOUT. With "
            "tcp_syn_linear_timeouts=4 the default gives up after 131 s (127 s before 6.5)."
        ),
        risks="Most clients want a far shorter connect timeout and should set their own.",
        kernel_symbol="tcp_write_timeout() in net/ipv4/tcp_timer.c",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_syn_linear_timeouts",
        unit=Unit.COUNT,
        scope=Scope.PER_NETNS,
        default=TCP_SYN_LINEAR_TIMEOUTS,
        meaning=(
            "How many SYN timeouts keep the initial 1 s RTO before it starts doubling; they "
            "are added to tcp_syn_retries. Accepts 0-127 [measured]."
        ),
        risks="Changes the total connect() timeout too; read it with tcp_syn_retries.",
        kernel_symbol="tcp_retransmit_timer(), tcp_write_timeout() in net/ipv4/tcp_timer.c",
        added=_V(6, 5),
    ),
    SysctlSpec(
        name="net.ipv4.tcp_synack_retries",
        unit=Unit.COUNT,
        scope=Scope.PER_NETNS,
        default=TCP_SYNACK_RETRIES,
        meaning=(
            "SYN-ACK retransmissions for a half-open connection at a listener; with the "
            "default the request is dropped after about 63 s."
        ),
        risks=(
            "Lower values drain the SYN queue faster under a flood but fail clients on lossy paths."
        ),
        kernel_symbol="reqsk_timer_handler() in net/ipv4/inet_connection_sock.c",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_max_syn_backlog",
        unit=Unit.COUNT,
        scope=Scope.PER_NETNS,
        default=None,
        default_rule=(
            "max(128, established-hash entries / 128) (tcp_set_hashinfo()): 2048 with a "
            "262144-entry table"
        ),
        meaning=(
            "With tcp_syncookies=0, a listener whose SYN queue is over 3/4 of this value drops "
            "SYNs from peers it has no RTT history for. The queue's hard limit is the listen() "
            "backlog."
        ),
        risks="Matters only without syncookies; raising it does not raise any backlog.",
        kernel_symbol="tcp_conn_request() in net/ipv4/tcp_input.c",
    ),
    SysctlSpec(
        name="net.core.somaxconn",
        unit=Unit.COUNT,
        scope=Scope.PER_NETNS,
        default=SOMAXCONN_DEFAULT,
        meaning=(
            "Silent upper bound on the backlog given to listen(); the accept queue then "
            "holds backlog + 1 connections."
        ),
        risks=(
            "A server asking for more gets less without an error, and overflows show up only "
            "as ListenOverflows/ListenDrops. Read at listen() time: listeners must be "
            "restarted after raising it. Was 128 before 5.4."
        ),
        kernel_symbol="backlog clamp in __sys_listen_socket() / __sys_listen(), net/socket.c",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_syncookies",
        unit=Unit.MODE,
        scope=Scope.PER_NETNS,
        default=TCP_SYNCOOKIES_DEFAULT,
        meaning=(
            "0 never send SYN cookies, 1 send them when a listener's SYN queue is full, 2 always."
        ),
        risks=(
            "With 0, floods or a slow accept loop lose connections outright. Cookie "
            "connections keep window scaling and SACK only when timestamps are on."
        ),
        kernel_symbol="tcp_syn_flood_action(), cookie_v4_check()",
    ),
    SysctlSpec(
        name="net.ipv4.tcp_abort_on_overflow",
        unit=Unit.BOOLEAN,
        scope=Scope.PER_NETNS,
        default=0,
        meaning=(
            "1: when the accept queue is full as the handshake's last ACK arrives, answer "
            "with an RST. 0: drop that ACK and let the client retransmit."
        ),
        risks=(
            "Clients get ECONNRESET at once instead of the retry that normally rides out a "
            "burst; only worth it when the overflow is permanent."
        ),
        kernel_symbol="tcp_check_req() in net/ipv4/tcp_minisocks.c",
    ),
    # --- File descriptors ---------------------------------------------------------------
    SysctlSpec(
        name="fs.file-max",
        unit=Unit.COUNT,
        scope=Scope.GLOBAL,
        default=None,
        default_rule=(
            f"about one file per 10 KiB of RAM, at least NR_FILE ({NR_FILE}) "
            "(files_maxfiles_init())"
        ),
        meaning="Host-wide limit on open file structures; every socket holds one.",
        risks=(
            "Rarely the first limit hit: a process's RLIMIT_NOFILE gives EMFILE long "
            "before; reaching file-max gives ENFILE to every process."
        ),
        kernel_symbol="files_stat.max_files; files_maxfiles_init() in fs/file_table.c",
    ),
    SysctlSpec(
        name="fs.nr_open",
        unit=Unit.COUNT,
        scope=Scope.GLOBAL,
        default=NR_OPEN_DEFAULT,
        meaning="Highest value RLIMIT_NOFILE can be raised to.",
        risks=(
            "Raising a ulimit above it fails with EPERM; raising it raises nobody's limit "
            "by itself."
        ),
        kernel_symbol="sysctl_nr_open in fs/file.c",
    ),
    # --- Connection tracking (only with nf_conntrack loaded) ---------------------------
    SysctlSpec(
        name="net.netfilter.nf_conntrack_max",
        unit=Unit.COUNT,
        scope=Scope.GLOBAL,
        default=None,
        default_rule=(
            "equal to nf_conntrack_buckets, which scales with RAM (262144 above 4 GiB on "
            "64-bit); 8 x buckets if the hash size was set by hand (nf_conntrack_init_start())"
        ),
        meaning=(
            "Limit on tracked connections. One value for the host, read-only inside child "
            "namespaces [measured], while each namespace's entries are counted separately "
            "against it (__nf_conntrack_alloc())."
        ),
        risks=(
            "When full, new flows are dropped after an attempt to evict an unconfirmed "
            "entry, with 'nf_conntrack: table full, dropping packet' in the log: new "
            "connections hang in SYN_SENT."
        ),
        kernel_symbol="nf_conntrack_max; __nf_conntrack_alloc() in nf_conntrack_core.c",
        requires_module="nf_conntrack",
    ),
    _ct_timeout(
        "established",
        NF_CT_TCP_TIMEOUT_ESTABLISHED,
        "How long an idle tracked ESTABLISHED connection is remembered (5 days).",
        "If shorter than the application's idle periods the box forgets the flow. The next "
        "segment has no entry: it is picked up again as a NEW flow without SYN "
        "(nf_conntrack_tcp_loose=1) or left INVALID (=0), and a stateful firewall drops "
        "either, so the connection hangs silently [measured in the lab: "
        "idle-timeout-middlebox].",
    ),
    SysctlSpec(
        name="net.netfilter.nf_conntrack_tcp_loose",
        unit=Unit.BOOLEAN,
        scope=Scope.PER_NETNS,
        default=NF_CT_TCP_LOOSE_DEFAULT,
        meaning=(
            "1: a TCP segment without SYN that matches no entry starts a new entry in "
            "ESTABLISHED (mid-stream pickup), so a flow the box forgot, or one that existed "
            "before conntrack was loaded, is tracked and NATed again. 0: such segments stay "
            "untracked and match 'ct state invalid'."
        ),
        risks=(
            "With 1 the picked-up segment is ct state NEW without SYN: rule sets that accept "
            "only SYNs as new drop it anyway, and a DNAT load balancer may map it to another "
            "backend, which answers with an RST. With 0 nothing is NATed after the entry is "
            "gone."
        ),
        kernel_symbol="nf_ct_tcp_loose; tcp_new() in net/netfilter/nf_conntrack_proto_tcp.c",
        requires_module="nf_conntrack",
    ),
    _ct_timeout(
        "syn_sent",
        NF_CT_TCP_TIMEOUT_SYN_SENT,
        "Entry lifetime after a SYN that has not been answered.",
        "Long values let SYN floods through this box fill the table.",
    ),
    _ct_timeout(
        "syn_recv",
        NF_CT_TCP_TIMEOUT_SYN_RECV,
        "Entry lifetime after the SYN-ACK, until the handshake's last ACK.",
        "Shorter than the server's SYN-ACK retries (about 63 s) loses slow handshakes.",
    ),
    _ct_timeout(
        "fin_wait",
        NF_CT_TCP_TIMEOUT_FIN_WAIT,
        "Entry lifetime after the first FIN.",
        "A half-closed flow that stays quiet longer than this is forgotten.",
    ),
    _ct_timeout(
        "close_wait",
        NF_CT_TCP_TIMEOUT_CLOSE_WAIT,
        "Entry lifetime once the first FIN is acknowledged and the other side has not closed yet.",
        "Applications that keep half-closed connections open longer lose the mapping.",
    ),
    _ct_timeout(
        "last_ack",
        NF_CT_TCP_TIMEOUT_LAST_ACK,
        "Entry lifetime after the second FIN, until its ACK.",
        "Short values can drop the final ACK of a slow peer.",
    ),
    _ct_timeout(
        "time_wait",
        NF_CT_TCP_TIMEOUT_TIME_WAIT,
        "Entry lifetime after both FINs are acknowledged; longer than the "
        "endpoints' 60 s TIME_WAIT.",
        "Holds a table slot per closed connection; high churn through NAT fills the table "
        "with these.",
    ),
    _ct_timeout(
        "close",
        NF_CT_TCP_TIMEOUT_CLOSE,
        "Entry lifetime after an RST.",
        "Rarely matters; a new SYN on the same tuple replaces the entry.",
    ),
    _ct_timeout(
        "max_retrans",
        NF_CT_TCP_TIMEOUT_MAX_RETRANS,
        "Lifetime used instead of a longer one once a segment was retransmitted "
        "more than nf_conntrack_tcp_max_retrans times.",
        "A connection stuck retransmitting through this box is forgotten after 5 minutes.",
    ),
    _ct_timeout(
        "unacknowledged",
        NF_CT_TCP_TIMEOUT_UNACKNOWLEDGED,
        "Lifetime used instead of a longer one while sent data is unacknowledged.",
        "A peer that stops acknowledging is forgotten after 5 minutes, even if ESTABLISHED.",
    ),
)

SYSCTLS: Mapping[str, SysctlSpec] = MappingProxyType({s.name: s for s in ALL_SYSCTLS})


def lookup_sysctl(name: str) -> SysctlSpec:
    """Find a knob by full name ('net.ipv4.tcp_fin_timeout', '/' accepted) or last part."""
    key = name.strip().replace("/", ".")
    if key in SYSCTLS:
        return SYSCTLS[key]
    matches = [spec for spec in ALL_SYSCTLS if spec.short_name == key]
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"unknown sysctl {name!r}")
