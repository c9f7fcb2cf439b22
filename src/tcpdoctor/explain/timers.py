"""Topics about timers that decide when a live connection is given up on: retransmission
(RTO, tcp_retries2, SYN retries), keepalive, TCP_USER_TIMEOUT, middlebox idle timers and
the listen queues.

Every number in the prose is computed from tcpdoctor.kernel when the topic is built.
"""

from __future__ import annotations

from tcpdoctor.explain._fmt import days, hms, ms, num, secs, sysctl_added, times, us
from tcpdoctor.explain.model import KeyNumber, Topic
from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import (
    MAX_TCP_KEEPCNT,
    MAX_TCP_KEEPIDLE,
    MAX_TCP_KEEPINTVL,
    NF_CT_TCP_TIMEOUT_CLOSE_WAIT,
    NF_CT_TCP_TIMEOUT_ESTABLISHED,
    NF_CT_TCP_TIMEOUT_UNACKNOWLEDGED,
    REFERENCE_HZ,
    REQUEST_SOCK_BYTES,
    SOMAXCONN_DEFAULT,
    TCP_KEEPALIVE_INTVL,
    TCP_KEEPALIVE_PROBES,
    TCP_KEEPALIVE_TIME,
    TCP_RETR1,
    TCP_RETR2,
    TCP_RTO_MAX,
    TCP_RTO_MIN,
    TCP_SYN_LINEAR_TIMEOUTS,
    TCP_SYN_RETRIES,
    TCP_SYNACK_RETRIES,
    TCP_SYNCOOKIES_DEFAULT,
    TCP_TIMEOUT_FALLBACK,
    TCP_TIMEOUT_INIT,
)

# Example inputs for worked examples; they are not kernel values.
_KEEPALIVE_EXAMPLE = (60.0, 10.0, 5)  # TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT
_KEEPALIVE_USER_TIMEOUT_EXAMPLE = 90.0
_SHORT_USER_TIMEOUT_EXAMPLE = 30.0
_RETRIES2_EXAMPLE = 8
_RTO_MAX_EXAMPLE = 10.0
_WAN_RTT_EXAMPLE = 0.1
_LAN_RTT_EXAMPLE = 50e-6
_MS = 1000


def _ms_arg(seconds: float) -> int:
    return round(seconds * _MS)


def keepalive() -> Topic:
    default = timing.keepalive_detection()
    idle, intvl, count = _KEEPALIVE_EXAMPLE
    example = timing.keepalive_detection(idle, intvl, count)
    capped = timing.keepalive_detection(
        idle, intvl, count, user_timeout=_KEEPALIVE_USER_TIMEOUT_EXAMPLE
    )
    return Topic(
        id="keepalive",
        title="TCP keepalive: finding dead peers on idle connections",
        aliases=(
            "SO_KEEPALIVE",
            "keep-alive",
            "tcp_keepalive_time",
            "tcp_keepalive_intvl",
            "tcp_keepalive_probes",
            "TCP_KEEPIDLE",
            "TCP_KEEPINTVL",
            "TCP_KEEPCNT",
        ),
        summary=(
            "With SO_KEEPALIVE an idle connection is probed after tcp_keepalive_time and "
            f"reset when the probes go unanswered: {num(TCP_KEEPALIVE_TIME)} + "
            f"{TCP_KEEPALIVE_PROBES} × {num(TCP_KEEPALIVE_INTVL)} = "
            f"{secs(default.detected_at)} by default."
        ),
        body=(
            "Keepalive is off unless the application sets SO_KEEPALIVE on the socket; the "
            "sysctls alone switch nothing on. On a socket that has it, the kernel counts "
            "idle time from the last segment received. Once that reaches the keepalive time "
            "it sends a probe, a small segment the peer has to answer, and then one probe "
            "per interval. Any answer resets the count. After the configured number "
            "of unanswered probes the kernel sends an RST and the application's next call "
            "fails with ETIMEDOUT.",
            f"The defaults are {secs(TCP_KEEPALIVE_TIME)} of idleness, then "
            f"{TCP_KEEPALIVE_PROBES} probes {secs(TCP_KEEPALIVE_INTVL)} apart: a silent peer "
            f"is noticed {secs(default.detected_at)} ({hms(default.detected_at)}) after the "
            "last segment, plus timer slack. That is too slow for most uses and longer than "
            "nearly every NAT or load-balancer idle timeout, so applications set their own "
            f"with TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT (at most {MAX_TCP_KEEPIDLE} s, "
            f"{MAX_TCP_KEEPINTVL} s and {MAX_TCP_KEEPCNT}). With {secs(idle)} idle, "
            f"{secs(intvl)} between probes and {count} probes, a dead peer is found after "
            f"{secs(example.detected_at)}.",
            "Keepalive only acts on an idle connection. While data waits for an "
            "acknowledgement no probes are sent; the retransmission timer decides instead "
            "(tcp_retries2 or TCP_USER_TIMEOUT). A peer that rebooted answers the first "
            "probe with an RST, so the connection fails at once with ECONNRESET. Keepalive "
            "also runs in CLOSE_WAIT, where it can clean up after a peer that has already "
            "forgotten the connection.",
            "TCP_USER_TIMEOUT changes the rule: the probe count is ignored, and the "
            "connection is aborted at the first keepalive firing at which the idle time has "
            "reached the user timeout and at least one probe has been sent. With the "
            f"settings above and a {secs(_KEEPALIVE_USER_TIMEOUT_EXAMPLE)} user timeout the "
            f"abort comes at {secs(capped.detected_at)}.",
            "Application keep-alives are different things. HTTP persistent connections "
            "(nginx keepalive_timeout and the like) decide how long an idle connection is "
            "kept open, not whether the peer is alive; options called tcp-keepalive in "
            "databases and brokers usually just switch on SO_KEEPALIVE with their own idle "
            "time.",
        ),
        key_numbers=(
            KeyNumber("idle time before the first probe", TCP_KEEPALIVE_TIME, "s", "tcp.h"),
            KeyNumber("interval between probes", TCP_KEEPALIVE_INTVL, "s", "tcp.h"),
            KeyNumber("unanswered probes before reset", TCP_KEEPALIVE_PROBES, "", "tcp.h"),
            KeyNumber(
                "dead peer detected after", default.detected_at, "s", "keepalive_detection()"
            ),
            KeyNumber("TCP_KEEPIDLE maximum", MAX_TCP_KEEPIDLE, "s", "MAX_TCP_KEEPIDLE"),
            KeyNumber("TCP_KEEPCNT maximum", MAX_TCP_KEEPCNT, "", "MAX_TCP_KEEPCNT"),
        ),
        sysctls=(
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ),
        counters=("TcpExt.TCPKeepAlive", "TcpExt.TCPAbortOnTimeout", "Tcp.EstabResets"),
        see_also=("user-timeout", "idle-timeout", "retries", "close-wait"),
        calc=(
            "tcpdoctor calc keepalive",
            f"tcpdoctor calc keepalive --time {num(idle)} --intvl {num(intvl)} --probes {count}",
            f"tcpdoctor calc keepalive --time {num(idle)} --intvl {num(intvl)} "
            f"--probes {count} --user-timeout-ms {_ms_arg(_KEEPALIVE_USER_TIMEOUT_EXAMPLE)}",
        ),
    )


def user_timeout() -> Topic:
    retries = timing.established_give_up()
    syn = timing.syn_give_up()
    limit = _SHORT_USER_TIMEOUT_EXAMPLE
    capped = timing.established_give_up(user_timeout=limit)
    keepalive = timing.keepalive_detection(user_timeout=limit)
    return Topic(
        id="user-timeout",
        title="TCP_USER_TIMEOUT: a per-socket deadline for unacknowledged data",
        aliases=("TCP_USER_TIMEOUT", "usertimeout"),
        summary=(
            "A socket option, in milliseconds, that bounds how long sent data may stay "
            "unacknowledged before the connection is aborted; it replaces the tcp_retries2 "
            "and tcp_syn_retries budgets and overrides the keepalive probe count."
        ),
        body=(
            "TCP_USER_TIMEOUT is set with setsockopt() in milliseconds; 0 means unset and "
            "negative values are rejected. While anything is unacknowledged, a SYN in "
            "connect() included, the kernel gives up once that much time has passed since "
            "the clock of the tcp_retries2 budget started (the first retransmission of the "
            "oldest unacknowledged data; in connect(), the first SYN), instead of using "
            f"the budget derived from tcp_retries2 ({secs(retries.budget)} by default) or "
            f"tcp_syn_retries ({secs(syn.schedule.gives_up_at)}). It also shortens the last "
            "retransmission timeout so the deadline is met rather than overshot: with a "
            f"{secs(limit)} user timeout a connection sending into a blackhole fails "
            f"{secs(capped.schedule.gives_up_at)} after the send, its first retransmission "
            f"having come {secs(capped.budget_from)} in.",
            "With keepalive on, the user timeout replaces the probe count: the connection "
            "is aborted at the first keepalive firing at which the idle time has reached the "
            "user timeout and at least one probe went out. A user timeout shorter than the "
            "keepalive idle time therefore aborts one interval after the first unanswered "
            f"probe; with the default keepalive settings and a {secs(limit)} user timeout "
            f"that is {secs(keepalive.detected_at)}. To let keepalive decide, set the user "
            "timeout to at least idle + count × interval; to have one deadline for "
            "everything, set it alone.",
            "It also bounds zero-window probing: a peer that keeps advertising a zero "
            "window is given up on once probing has lasted the user timeout, where it could "
            "otherwise hold the connection open for good.",
            "It is the right tool for 'fail within N seconds when the peer is gone' on "
            "client connections, far better than lowering tcp_retries2 for the whole host. "
            "Keep it comfortably above a few RTOs of the path, so that one lost segment "
            "does not end the connection.",
        ),
        key_numbers=(
            KeyNumber(
                "budget it replaces (tcp_retries2)",
                retries.budget,
                "s",
                "established_give_up()",
            ),
            KeyNumber(
                "budget it replaces (tcp_syn_retries)",
                syn.schedule.gives_up_at,
                "s",
                "syn_give_up()",
            ),
            KeyNumber(
                f"give-up with a {num(limit)} s user timeout",
                capped.schedule.gives_up_at,
                "s",
                "established_give_up(user_timeout=...)",
            ),
        ),
        sysctls=(
            "net.ipv4.tcp_retries2",
            "net.ipv4.tcp_syn_retries",
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ),
        counters=("TcpExt.TCPAbortOnTimeout", "Tcp.EstabResets"),
        see_also=("keepalive", "retries", "syn-retries", "idle-timeout"),
        calc=(
            f"tcpdoctor calc retries2 --user-timeout-ms {_ms_arg(limit)}",
            f"tcpdoctor calc syn-retries --user-timeout-ms {_ms_arg(limit)}",
            f"tcpdoctor calc keepalive --user-timeout-ms {_ms_arg(limit)}",
        ),
    )


def idle_timeout() -> Topic:
    default = timing.keepalive_detection()
    return Topic(
        id="idle-timeout",
        title="Middlebox idle timeouts: when the path forgets a quiet connection",
        aliases=("middlebox", "nat-timeout", "conntrack", "load-balancer", "idle"),
        summary=(
            "NATs, firewalls and load balancers drop the state of idle flows long before "
            f"the default keepalive time ({secs(TCP_KEEPALIVE_TIME)}); both ends then keep a "
            "connection that no longer works."
        ),
        body=(
            "Anything between two hosts that keeps per-connection state (NAT gateways, "
            "stateful firewalls, load balancers, Linux conntrack) forgets a connection that "
            "stays idle longer than its idle timeout, usually without telling either end. "
            "Both hosts still show ESTABLISHED. The next segment is either dropped, and the "
            "connection hangs until tcp_retries2 or an application timeout gives up, or it "
            "reaches a different backend that answers with an RST: 'connection reset by "
            "peer' on a connection that was fine a moment ago.",
            "The end that does not send next learns nothing at all. A server waiting for "
            "the next request keeps the dead connection until its own keepalive or idle "
            "timer fires, and such connections pile up as idle ESTABLISHED sockets. On a "
            "Linux box in the path the table is nf_conntrack: an established entry lives "
            f"{days(NF_CT_TCP_TIMEOUT_ESTABLISHED)} days by default, but only "
            f"{secs(NF_CT_TCP_TIMEOUT_UNACKNOWLEDGED)} while data goes unacknowledged and "
            f"{secs(NF_CT_TCP_TIMEOUT_CLOSE_WAIT)} once one side's FIN has been acknowledged; when "
            "nf_conntrack_max is reached, new flows are dropped instead.",
            "TCP keepalive is the kernel's answer: set SO_KEEPALIVE and a TCP_KEEPIDLE "
            "below the shortest idle timeout on the path, so that probes keep the state "
            "alive and notice when it is gone anyway. The default idle time of "
            f"{secs(TCP_KEEPALIVE_TIME)} (detection after {hms(default.detected_at)}) is far "
            "longer than typical middlebox timeouts, which are minutes rather than hours, so "
            "the sysctl defaults rarely help. Alternatives: application-level pings, or "
            "closing pooled connections after an idle time shorter than the middlebox's.",
            "HTTP persistent connections are a separate mechanism: the server's keep-alive "
            "timeout closes idle connections itself, with a normal FIN, and leaves the "
            "TIME_WAITs on the server. On every hop, keep the idle timeout of the side that "
            "sends requests shorter than that of the side that answers them (behind a load "
            "balancer: backend keep-alive longer than the balancer's idle timeout), so a "
            "request is never sent into a connection that is just being closed.",
        ),
        key_numbers=(
            KeyNumber("default keepalive idle time", TCP_KEEPALIVE_TIME, "s", "tcp.h"),
            KeyNumber(
                "default keepalive detection", default.detected_at, "s", "keepalive_detection()"
            ),
            KeyNumber(
                "conntrack established entry",
                NF_CT_TCP_TIMEOUT_ESTABLISHED,
                "s",
                "nf_conntrack tcp_timeouts[ESTABLISHED]",
            ),
            KeyNumber(
                "conntrack entry with unacknowledged data",
                NF_CT_TCP_TIMEOUT_UNACKNOWLEDGED,
                "s",
                "nf_conntrack tcp_timeouts[UNACK]",
            ),
        ),
        sysctls=(
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            "net.netfilter.nf_conntrack_tcp_timeout_unacknowledged",
            "net.netfilter.nf_conntrack_max",
        ),
        counters=("TcpExt.TCPKeepAlive", "TcpExt.TCPAbortOnTimeout", "Tcp.EstabResets"),
        see_also=("keepalive", "user-timeout", "retries", "close-wait"),
        calc=(
            "tcpdoctor calc keepalive",
            f"tcpdoctor calc keepalive --time {num(_KEEPALIVE_EXAMPLE[0])} "
            f"--intvl {num(_KEEPALIVE_EXAMPLE[1])} --probes {_KEEPALIVE_EXAMPLE[2]}",
        ),
    )


def rto() -> Topic:
    wan = timing.rto_for_rtt(_WAN_RTT_EXAMPLE)
    lan = timing.rto_for_rtt(_LAN_RTT_EXAMPLE, hz=REFERENCE_HZ)
    floor = ms(TCP_RTO_MIN)
    return Topic(
        id="rto",
        title="RTO: how long TCP waits before retransmitting",
        aliases=("retransmission-timeout", "tcp_rto_min_us", "tcp_rto_max_ms", "rto_min", "srtt"),
        summary=(
            f"Linux sets the retransmission timeout to srtt + max(4 × rttvar, {floor}), "
            f"starts at {secs(TCP_TIMEOUT_INIT)} for the handshake and doubles it on each "
            f"timeout up to {secs(TCP_RTO_MAX)}."
        ),
        body=(
            "Every unacknowledged segment is covered by the retransmission timer. Its "
            "length, the RTO, comes from the smoothed round-trip time (srtt) and its mean "
            "deviation (rttvar), as in RFC 6298 but with a Linux twist: the minimum of "
            f"{floor} applies to the variation term, not to the result. The RTO is about "
            f"srtt + max(4 × rttvar, {floor}): a path with a {ms(_WAN_RTT_EXAMPLE)} RTT "
            f"starts at {ms(wan.rto)}, and even a {us(_LAN_RTT_EXAMPLE)} LAN link gets "
            f"{ms(lan.rto)} at HZ={REFERENCE_HZ}.",
            f"Before any RTT sample exists (SYN and SYN-ACK) the RTO is "
            f"{secs(TCP_TIMEOUT_INIT)}. If a handshake packet had to be retransmitted, the "
            f"connection starts with {secs(TCP_TIMEOUT_FALLBACK)} instead, because its RTT "
            "is unknown. Each timeout doubles the RTO (exponential backoff) up to "
            f"{secs(TCP_RTO_MAX)}; new acknowledgements clear the backoff again. Before the "
            "first RTO of a burst fires, Linux usually sends a tail loss probe.",
            "Recent kernels add two sysctls for new sockets: tcp_rto_min_us (Linux "
            f"{sysctl_added('net.ipv4.tcp_rto_min_us')}+) moves the minimum, rounded to "
            "whole jiffies, and tcp_rto_max_ms (Linux "
            f"{sysctl_added('net.ipv4.tcp_rto_max_ms')}+) lowers the ceiling. The ceiling "
            "also shortens the tcp_retries2 give-up time; the minimum does not, because that "
            f"budget is always modelled from the {floor} constant. A route's rto_min metric "
            "takes precedence over both the TCP_RTO_MIN_US socket option and the sysctl.",
            "ss -ti shows rto, rtt and rttvar per socket; /proc/net/tcp shows a pending "
            "retransmission as timer code 1. A lower minimum helps fast datacenter paths "
            "recover sooner, but causes spurious retransmissions when the receiver delays "
            "its ACKs longer than the RTO.",
        ),
        key_numbers=(
            KeyNumber("minimum (variance term)", TCP_RTO_MIN, "s", "TCP_RTO_MIN"),
            KeyNumber("maximum", TCP_RTO_MAX, "s", "TCP_RTO_MAX"),
            KeyNumber("initial, handshake", TCP_TIMEOUT_INIT, "s", "TCP_TIMEOUT_INIT"),
            KeyNumber(
                "after a lost handshake packet", TCP_TIMEOUT_FALLBACK, "s", "TCP_TIMEOUT_FALLBACK"
            ),
            KeyNumber(f"first RTO for a {ms(_WAN_RTT_EXAMPLE)} RTT", wan.rto, "s", "rto_for_rtt()"),
        ),
        sysctls=("net.ipv4.tcp_rto_min_us", "net.ipv4.tcp_rto_max_ms", "net.ipv4.tcp_retries2"),
        counters=("TcpExt.TCPTimeouts", "TcpExt.TCPLossProbes", "Tcp.RetransSegs"),
        see_also=("retries", "syn-retries", "user-timeout"),
        calc=(
            f"tcpdoctor calc rto --rtt {num(_WAN_RTT_EXAMPLE)}",
            f"tcpdoctor calc rto --rtt {num(_LAN_RTT_EXAMPLE, 6)} --hz {REFERENCE_HZ}",
        ),
    )


def _sooner(give_up: timing.EstablishedGiveUp) -> float:
    """Where late timers may end the schedule; the nominal give-up when they cannot."""
    if give_up.sooner_give_up_at is None:
        return give_up.schedule.gives_up_at
    return give_up.sooner_give_up_at


def retries() -> Topic:
    default = timing.established_give_up(hz=REFERENCE_HZ)
    lan_rto = timing.rto_for_rtt(_LAN_RTT_EXAMPLE, hz=REFERENCE_HZ).rto
    lan = timing.established_give_up(initial_rto=lan_rto)
    lower = timing.established_give_up(_RETRIES2_EXAMPLE)
    short_max = timing.established_give_up(rto_max=_RTO_MAX_EXAMPLE)
    retries1 = timing.model_timeout(TCP_RETR1, TCP_RTO_MIN, TCP_RTO_MAX)
    thresh = default.linear_backoff_thresh
    doubling = (2 << thresh) - 1
    formula = (
        f"{doubling} × {secs(TCP_RTO_MIN)} + {TCP_RETR2 - thresh} × {secs(TCP_RTO_MAX)}"
        if thresh < TCP_RETR2
        else f"{(2 << TCP_RETR2) - 1} × {secs(TCP_RTO_MIN)}"
    )
    return Topic(
        id="retries",
        title="tcp_retries2: when an established connection gives up",
        aliases=("tcp_retries2", "tcp_retries1", "retries2", "give-up", "ETIMEDOUT"),
        summary=(
            f"tcp_retries2 ({TCP_RETR2}) is a time budget, not a count: unacknowledged data "
            f"makes the connection fail with ETIMEDOUT once about {secs(default.budget)} "
            f"({hms(default.budget)}) have passed since its first retransmission."
        ),
        body=(
            "When data stays unacknowledged the kernel retransmits it with a doubling RTO "
            "and gives up at the first timeout after a time budget has run out. The clock "
            "of that budget starts at the first retransmission by the RTO timer, one RTO "
            "after the data was sent, not at the send itself; the first timeout never gives "
            "up. The budget is written as a number of retransmissions but used as a time: "
            "the kernel "
            f"computes how long {TCP_RETR2} retransmissions would take if the RTO started "
            f"at {ms(TCP_RTO_MIN)} and doubled up to {secs(TCP_RTO_MAX)}, which is "
            f"{formula} = {secs(default.budget)}. A path with a larger RTO reaches that "
            "time with fewer retransmissions; the deadline stays the same.",
            f"On a LAN at HZ={REFERENCE_HZ} the first RTO is {ms(lan_rto)} and the "
            f"connection fails {secs(lan.schedule.gives_up_at)} after the send, following "
            f"{lan.schedule.retransmissions} retransmissions. An RTO of exactly "
            f"{ms(TCP_RTO_MIN)} is a knife edge: retransmission number "
            f"{default.schedule.retransmissions}, at {secs(_sooner(default))}, comes only "
            f"{secs(default.headroom or 0.0)} short of the budget, so on paper the connection "
            f"lasts until {secs(default.schedule.gives_up_at)}. But timers fire late, never "
            "early, and their lateness counts towards the budget: a few of the long ones "
            f"can use up that {secs(default.headroom or 0.0)}, and then the kernel gives up "
            "at that expiry instead. A tail loss probe sent before the first RTO does not "
            "start the clock; it moves the whole schedule later by up to one RTO.",
            f"For {hms(default.budget)} a dead peer looks like a slow one: writes still "
            "fill the send buffer and reads simply block. Lowering tcp_retries2 shortens "
            f"this for the whole host (with {_RETRIES2_EXAMPLE} the budget is "
            f"{secs(lower.budget)}), at the risk of killing connections across short "
            "outages; TCP_USER_TIMEOUT sets a deadline per socket and is usually the better "
            f"tool. From Linux {sysctl_added('net.ipv4.tcp_rto_max_ms')}, a lower "
            "tcp_rto_max_ms shrinks the budget too: with "
            f"{secs(_RTO_MAX_EXAMPLE)} it becomes {secs(short_max.budget)}.",
            f"tcp_retries1 ({TCP_RETR1}, about {secs(retries1)}) aborts nothing: past it "
            "the kernel asks the routing layer to re-check the path and may start MTU "
            "black-hole probing. Orphaned sockets use tcp_orphan_retries instead. Zero-"
            "window probing is a case apart: a peer that keeps answering with a zero window "
            "can hold a connection open indefinitely; only unanswered probes count against "
            "tcp_retries2.",
            "The error reported is ETIMEDOUT, 'Connection timed out', or an ICMP error seen "
            "earlier such as EHOSTUNREACH. TCPAbortOnTimeout counts these aborts; "
            "EstabResets counts the connection leaving ESTABLISHED.",
        ),
        key_numbers=(
            KeyNumber("time budget", default.budget, "s", "tcp_model_timeout(), established"),
            KeyNumber(
                "retransmissions in the ideal schedule",
                default.schedule.retransmissions,
                "",
                "established_give_up()",
            ),
            KeyNumber(
                "ETIMEDOUT in the ideal schedule, after the send",
                default.schedule.gives_up_at,
                "s",
                "established_give_up()",
            ),
            KeyNumber(
                "late timers may end it at",
                _sooner(default),
                "s",
                "established_give_up(hz=...)",
            ),
            KeyNumber(
                f"ETIMEDOUT with a {ms(lan_rto)} RTO, after the send",
                lan.schedule.gives_up_at,
                "s",
                "established_give_up(initial_rto=...)",
            ),
            KeyNumber(
                f"budget with tcp_retries2={_RETRIES2_EXAMPLE}",
                lower.budget,
                "s",
                "established_give_up()",
            ),
            KeyNumber(
                f"budget with tcp_rto_max_ms={_ms_arg(_RTO_MAX_EXAMPLE)}",
                short_max.budget,
                "s",
                "established_give_up(rto_max=...)",
            ),
            KeyNumber("tcp_retries1 threshold", retries1, "s", "tcp_model_timeout()"),
        ),
        sysctls=(
            "net.ipv4.tcp_retries2",
            "net.ipv4.tcp_retries1",
            "net.ipv4.tcp_rto_max_ms",
            "net.ipv4.tcp_orphan_retries",
        ),
        counters=(
            "TcpExt.TCPAbortOnTimeout",
            "TcpExt.TCPTimeouts",
            "Tcp.EstabResets",
            "Tcp.RetransSegs",
        ),
        see_also=("rto", "user-timeout", "keepalive", "orphans", "syn-retries"),
        calc=(
            "tcpdoctor calc retries2",
            f"tcpdoctor calc retries2 {_RETRIES2_EXAMPLE}",
            f"tcpdoctor calc retries2 --rto-max-ms {_ms_arg(_RTO_MAX_EXAMPLE)}",
        ),
    )


def syn_retries() -> Topic:
    syn = timing.syn_give_up()
    old = timing.syn_give_up(linear_timeouts=0)
    synack = timing.synack_give_up()
    added = sysctl_added("net.ipv4.tcp_syn_linear_timeouts")
    return Topic(
        id="syn-retries",
        title="tcp_syn_retries: how long connect() keeps trying",
        aliases=(
            "tcp_syn_retries",
            "tcp_synack_retries",
            "tcp_syn_linear_timeouts",
            "TCP_SYNCNT",
            "connect-timeout",
            "SYN_SENT",
        ),
        summary=(
            f"An unanswered SYN is sent {syn.schedule.retransmissions} more times before "
            f"connect() fails with ETIMEDOUT after {secs(syn.schedule.gives_up_at)} "
            f"({secs(old.schedule.gives_up_at)} before Linux {added}); a listener drops an "
            f"unanswered SYN-ACK after {secs(synack.schedule.gives_up_at)}."
        ),
        body=(
            f"connect() sends a SYN with a {secs(TCP_TIMEOUT_INIT)} RTO. Since Linux "
            f"{added} the first {TCP_SYN_LINEAR_TIMEOUTS} timeouts keep that RTO "
            "(tcp_syn_linear_timeouts) before it starts doubling, so with the defaults the "
            f"SYN is resent at {times(syn.schedule.retransmit_times)} s and connect() fails "
            f"at {secs(syn.schedule.gives_up_at)}. Older kernels doubled from the start: "
            f"{times(old.schedule.retransmit_times)} s, giving up at "
            f"{secs(old.schedule.gives_up_at)}.",
            "The kernel stops at the first timeout where either the retransmission count "
            "reaches tcp_syn_retries + tcp_syn_linear_timeouts "
            f"({syn.max_retransmits}) or the time since the first SYN reaches a budget "
            f"computed from tcp_syn_retries alone ({secs(syn.model_budget)} here). "
            "TCP_SYNCNT replaces tcp_syn_retries per socket, and TCP_USER_TIMEOUT replaces "
            f"the time budget. Most clients want a connect timeout far below "
            f"{secs(syn.schedule.gives_up_at)} and should set it in the application "
            "(a non-blocking connect with a deadline) rather than lower the sysctl for the "
            "whole host.",
            "If the SYN is answered but the handshake's last ACK never arrives, the "
            "listener keeps the half-open request (shown as SYN_RECV) and resends its "
            "SYN-ACK with a doubling RTO, at "
            f"{times(synack.schedule.retransmit_times)} s, and drops it at "
            f"{secs(synack.schedule.gives_up_at)} (tcp_synack_retries = "
            f"{TCP_SYNACK_RETRIES}). Linear timeouts do not apply to SYN-ACKs, and when "
            "the SYN queue is more than half full, old requests get fewer retries.",
            "Usual causes of SYN timeouts: a firewall dropping the SYN, a full accept queue "
            "on the server (SYNs dropped, counted in the server's ListenOverflows), a full "
            "conntrack table on a middlebox, or, on old kernels, tcp_tw_recycle on the "
            "server. A refused connection (RST) fails at once with ECONNREFUSED instead.",
        ),
        key_numbers=(
            KeyNumber("connect() gives up", syn.schedule.gives_up_at, "s", "syn_give_up()"),
            KeyNumber("SYN retransmissions", syn.schedule.retransmissions, "", "syn_give_up()"),
            KeyNumber(
                f"connect() gives up before Linux {added}",
                old.schedule.gives_up_at,
                "s",
                "syn_give_up(linear_timeouts=0)",
            ),
            KeyNumber(
                "half-open request dropped",
                synack.schedule.gives_up_at,
                "s",
                "synack_give_up()",
            ),
            KeyNumber("initial RTO", TCP_TIMEOUT_INIT, "s", "TCP_TIMEOUT_INIT"),
            KeyNumber("default tcp_syn_retries", TCP_SYN_RETRIES, "", "TCP_SYN_RETRIES"),
        ),
        sysctls=(
            "net.ipv4.tcp_syn_retries",
            "net.ipv4.tcp_syn_linear_timeouts",
            "net.ipv4.tcp_synack_retries",
        ),
        counters=(
            "TcpExt.TCPSynRetrans",
            "TcpExt.TCPTimeouts",
            "TcpExt.TCPAbortOnTimeout",
            "Tcp.AttemptFails",
            "Tcp.ActiveOpens",
        ),
        see_also=("rto", "listen-queue", "user-timeout", "tw-recycle"),
        calc=(
            "tcpdoctor calc syn-retries",
            "tcpdoctor calc syn-retries --linear-timeouts 0",
            "tcpdoctor calc synack-retries",
        ),
    )


def listen_queue() -> Topic:
    synack = timing.synack_give_up()
    syn = timing.syn_give_up()
    return Topic(
        id="listen-queue",
        title="Listen queues: SYN queue, accept queue and backlog",
        aliases=(
            "backlog",
            "somaxconn",
            "accept-queue",
            "syn-queue",
            "ListenOverflows",
            "tcp_max_syn_backlog",
            "syncookies",
            "SYN_RECV",
        ),
        summary=(
            "A listener keeps half-open handshakes in the SYN queue and finished ones in "
            f"the accept queue (backlog + 1, the backlog capped by somaxconn = "
            f"{SOMAXCONN_DEFAULT}); when the accept queue is full, new connections are "
            "dropped silently."
        ),
        body=(
            "A listening socket has two queues. The SYN queue holds half-open handshakes: "
            "a SYN came in and a SYN-ACK went out; ss and tcpdoctor show these request "
            "sockets as SYN_RECV. The accept queue holds connections whose handshake is "
            "complete and which wait for the application to call accept(). For a LISTEN "
            "socket, ss shows the accept queue's current length as Recv-Q and its limit as "
            "Send-Q.",
            "The accept queue's limit is the backlog given to listen(), silently capped by "
            f"net.core.somaxconn ({SOMAXCONN_DEFAULT} by default), and it holds one more "
            "connection than that. somaxconn is read when listen() is called: a server must "
            "listen again (usually a restart) after it is raised, and a server that asks "
            "for a small backlog keeps it whatever the sysctl says.",
            "When the accept queue is full Linux drops rather than refuses: a new SYN is "
            "dropped, or the last ACK of a handshake is, and both are counted in "
            "ListenOverflows and ListenDrops. The client's retransmissions usually get "
            "through once the queue drains, so a short burst only adds latency in steps of "
            f"the SYN schedule (the first retry comes after "
            f"{secs(syn.schedule.retransmit_times[0])}); a queue that stays full turns into "
            "connect timeouts. tcp_abort_on_overflow=1 answers that last ACK with an RST "
            "instead, which is only worth it when the overflow is permanent. The cure is "
            "nearly always an application that accepts faster (more workers, nothing "
            "blocking the accept loop), and only then a larger backlog.",
            "The SYN queue rarely overflows: with tcp_syncookies at its default "
            f"({TCP_SYNCOOKIES_DEFAULT}), a listener whose SYN queue is full answers with "
            "SYN cookies instead of dropping (TCPReqQFullDoCookies) and keeps no state "
            "until the handshake completes. tcp_max_syn_backlog only matters with cookies "
            "off. A half-open request whose SYN-ACK is never answered is dropped after "
            f"{secs(synack.schedule.gives_up_at)}; each one costs about "
            f"{REQUEST_SOCK_BYTES} bytes.",
        ),
        key_numbers=(
            KeyNumber("somaxconn default", SOMAXCONN_DEFAULT, "", "net.core.somaxconn"),
            KeyNumber(
                "half-open request dropped", synack.schedule.gives_up_at, "s", "synack_give_up()"
            ),
            KeyNumber(
                "first SYN retransmission",
                syn.schedule.retransmit_times[0],
                "s",
                "TCP_TIMEOUT_INIT",
            ),
            KeyNumber("request socket", REQUEST_SOCK_BYTES, "bytes", "request_sock_TCP slab"),
        ),
        sysctls=(
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.tcp_syncookies",
            "net.ipv4.tcp_abort_on_overflow",
            "net.ipv4.tcp_synack_retries",
        ),
        counters=(
            "TcpExt.ListenOverflows",
            "TcpExt.ListenDrops",
            "TcpExt.TCPReqQFullDrop",
            "TcpExt.TCPReqQFullDoCookies",
            "TcpExt.SyncookiesSent",
            "TcpExt.SyncookiesFailed",
        ),
        see_also=("syn-retries", "fd-limits", "rto"),
        calc=("tcpdoctor calc synack-retries", "tcpdoctor calc syn-retries"),
    )
