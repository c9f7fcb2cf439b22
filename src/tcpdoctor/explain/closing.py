"""Topics about how connections end: TIME_WAIT, CLOSE_WAIT, FIN_WAIT2, SO_LINGER, orphans,
and the TIME_WAIT cap.

Every number in the prose is computed from tcpdoctor.kernel when the topic is built.
"""

from __future__ import annotations

from tcpdoctor.explain._fmt import hms, num, secs
from tcpdoctor.explain.model import KeyNumber, Topic
from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import (
    FIN_TIME_RTO_FACTOR,
    NF_CT_TCP_TIMEOUT_CLOSE_WAIT,
    REFERENCE_HZ,
    TCP_FIN_TIMEOUT,
    TCP_FIN_TIMEOUT_MAX,
    TCP_ORPHAN_RETRIES,
    TCP_ORPHAN_RETRIES_ZERO_MEANS,
    TCP_RTO_MIN,
    TCP_SOCK_BYTES,
    TCP_TIMEWAIT_LEN,
    TW_KILLED_THRESHOLD,
    TW_SOCK_BYTES,
)

# Example inputs for worked examples; they are not kernel values.
_FIN_TIMEOUT_EXAMPLES = (90, 120)
_ORPHAN_RETRIES_EXAMPLE = 5
_TW_COUNT_EXAMPLE = 100_000


def time_wait() -> Topic:
    tw = TCP_TIMEWAIT_LEN
    slack = timing.timer_slack(tw, REFERENCE_HZ)
    ports = timing.port_capacity()
    rate = timing.max_connection_rate(ports)
    full_range = timing.time_wait_memory(ports.capacity)
    return Topic(
        id="time-wait",
        title="TIME_WAIT: the wait after closing first",
        aliases=("TIME_WAIT", "timewait", "TIME-WAIT", "tw", "2msl", "TCP_TIMEWAIT_LEN"),
        summary=(
            f"The side that closes first keeps each finished connection's 4-tuple for a fixed "
            f"{secs(tw)}; that protects the next connection and only hurts a client opening "
            "many short connections to one destination."
        ),
        body=(
            "A normal close leaves the endpoint that sent the first FIN (the active closer) in "
            "TIME_WAIT once it has acknowledged the peer's FIN. The other endpoint goes "
            "through CLOSE_WAIT and LAST_ACK and is gone as soon as its own FIN is "
            "acknowledged, with no TIME_WAIT at all. Client or server does not matter: a "
            "server that ends connections itself (HTTP keep-alive turned off, idle timeouts) "
            "collects the TIME_WAITs. When both ends close at the same moment, both get one.",
            "The state has two jobs. Our last ACK can be lost; the peer then sends its FIN "
            "again, and only a socket that still remembers the connection can acknowledge it "
            "instead of answering with an RST that turns the peer's clean close into an "
            "error. And segments of the old connection may still be travelling: a new "
            "connection on the same addresses and ports, opened at once, could take a late "
            "one for its own data. Waiting lets those strays die out.",
            f"Linux waits {secs(tw)} (TCP_TIMEWAIT_LEN). The length is compiled into the "
            "kernel: no sysctl changes it, tcp_fin_timeout included. A retransmitted FIN, "
            "or any other non-RST segment carrying an ACK, restarts the full "
            f"{secs(tw)}, so the state really ends {secs(tw)} after the peer's last "
            f"retransmission; the timer wheel may fire up to {secs(slack.max_lateness)} "
            f"late at HZ={REFERENCE_HZ}. With tcp_rfc1337 at its default, an in-window RST "
            "ends TIME_WAIT at once.",
            "On entry the full socket is freed and replaced by a small timewait minisocket "
            f"of about {TW_SOCK_BYTES} bytes (a full TCP socket is about {TCP_SOCK_BYTES}). "
            "It has no file descriptor and no owning process, which is why ss shows none. "
            f"Even {ports.capacity} of them, one per port of the default range, take "
            f"{num(full_range.total_mib, 1)} MiB. Memory is rarely the problem; what a "
            "TIME_WAIT really occupies is its 4-tuple.",
            "That 4-tuple is scarce only for a client opening many short connections to one "
            "destination address and port: the client owns the local port, and the default "
            f"range offers {ports.capacity} of them per destination, so about "
            f"{num(rate.max_rate, 1)} new connections per second when each one ends in a "
            f"{secs(tw)} TIME_WAIT. A server's TIME_WAITs all share its listening port and "
            "block nothing: a new SYN from the same client port is accepted over a TIME_WAIT "
            "when its sequence number or timestamp is newer, whatever tcp_tw_reuse says.",
            "Remedies, best first: reuse connections (pools, keep-alive); spread over more "
            "destination addresses or ports; let connect() take over old TIME_WAITs with "
            "tcp_tw_reuse=1. Not the shortcuts: zero SO_LINGER (an RST instead of a close), "
            "a lowered tcp_max_tw_buckets, or tcp_tw_recycle, which no longer exists.",
        ),
        key_numbers=(
            KeyNumber("TIME_WAIT length", tw, "s", "TCP_TIMEWAIT_LEN (include/net/tcp.h)"),
            KeyNumber(
                f"latest firing at HZ={REFERENCE_HZ}",
                slack.latest_expiry,
                "s",
                "timer_slack(): timer-wheel granularity",
            ),
            KeyNumber("timewait minisocket", TW_SOCK_BYTES, "bytes", "tw_sock_TCP slab object"),
            KeyNumber(
                "TIME_WAITs filling the default port range",
                round(full_range.total_mib, 2),
                "MiB",
                "time_wait_memory(port_capacity().capacity)",
            ),
            KeyNumber(
                "new connections per second to one destination",
                round(rate.max_rate, 1),
                "conn/s",
                "max_connection_rate(port_capacity())",
            ),
        ),
        sysctls=(
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.tcp_tw_reuse_delay",
            "net.ipv4.tcp_max_tw_buckets",
            "net.ipv4.tcp_rfc1337",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_fin_timeout",
        ),
        counters=(
            "TcpExt.TW",
            "TcpExt.TWRecycled",
            "TcpExt.TCPTimeWaitOverflow",
            "TcpExt.TCPACKSkippedTimeWait",
            "TCP.tw",
        ),
        see_also=("tw-reuse", "ports", "linger", "max-tw-buckets", "timestamps", "fin-wait2"),
        calc=(
            "tcpdoctor calc ports",
            f"tcpdoctor calc time-wait-memory {ports.capacity}",
            f"tcpdoctor calc timer-slack {num(tw)}",
        ),
    )


def close_wait() -> Topic:
    fin = timing.fin_wait2_lifetime()
    keepalive = timing.keepalive_detection()
    return Topic(
        id="close-wait",
        title="CLOSE_WAIT: the peer has closed, the application has not",
        aliases=("CLOSE_WAIT", "closewait", "CLOSE-WAIT"),
        summary=(
            "The peer sent its FIN and the kernel acknowledged it; the socket now waits, "
            "with no kernel timer of its own, for the application to call close()."
        ),
        body=(
            "CLOSE_WAIT is where the passive closer sits between receiving the peer's FIN "
            "and closing its own direction. The kernel acknowledges the FIN by itself and "
            "then has nothing left to do: sending our FIN is the application's move, made "
            "by calling close() or shutdown(). The kernel has no CLOSE_WAIT timer: "
            "tcp_fin_timeout, TIME_WAIT settings and the other closing knobs do not touch "
            "it, and a socket can stay here until its process exits.",
            "Piling-up CLOSE_WAIT sockets are therefore an application bug, never a kernel "
            "tuning problem. Usual causes: code that never notices end-of-file (recv() "
            "returning 0, or its library equivalent), a connection pool that keeps dead "
            "connections without checking them, a leak on an error path, or threads stuck "
            "elsewhere so close() is never reached. Each CLOSE_WAIT still holds a file "
            "descriptor, so the leak ends in EMFILE, 'Too many open files'.",
            "Recv-Q tells how far the application got. A CLOSE_WAIT with Recv-Q 1 has not "
            "even read the end-of-file: the FIN occupies one sequence number and stays "
            "'unread' until recv() returns 0. A larger Recv-Q means data is unread as well. "
            "Recv-Q 0 means the application saw the end and still did not close. The "
            "owning process (ss -p, tcpdoctor scan -p) is the one to fix.",
            "Only a few things end it without the application: an RST from the peer; a "
            "keepalive probe (keepalive keeps running in CLOSE_WAIT) that the peer answers "
            "with an RST because it has already forgotten the connection; or a write that "
            "a fully closed peer answers with an RST, or that times out when the peer is "
            "unreachable (a peer that only shut down its sending side still accepts the "
            "data). On the peer, the matching socket waits in "
            f"FIN_WAIT2 for {secs(fin.lifetime or 0.0)} if it was closed, and indefinitely "
            "if it was only shut down. A Linux NAT or firewall in between forgets a "
            f"half-closed flow after {secs(NF_CT_TCP_TIMEOUT_CLOSE_WAIT)} "
            "(nf_conntrack_tcp_timeout_close_wait).",
        ),
        key_numbers=(
            KeyNumber(
                "peer's FIN_WAIT2 after its close()",
                fin.lifetime or 0.0,
                "s",
                "fin_wait2_lifetime(): tcp_fin_timeout default",
            ),
            KeyNumber(
                "keepalive detection, if SO_KEEPALIVE is set",
                keepalive.detected_at,
                "s",
                "keepalive_detection()",
            ),
            KeyNumber(
                "conntrack entry of a half-closed flow",
                NF_CT_TCP_TIMEOUT_CLOSE_WAIT,
                "s",
                "nf_conntrack tcp_timeouts[TCP_CONNTRACK_CLOSE_WAIT]",
            ),
        ),
        sysctls=(
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_keepalive_time",
            "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
        ),
        counters=("Tcp.CurrEstab", "Tcp.EstabResets"),
        see_also=("fin-wait2", "keepalive", "fd-limits", "orphans"),
        calc=("tcpdoctor calc fin-wait2", "tcpdoctor calc keepalive"),
    )


def fin_wait2() -> Topic:
    default = timing.fin_wait2_lifetime()
    floor = timing.fin_wait2_lifetime(0)
    examples = [(f, timing.fin_wait2_lifetime(f).lifetime or 0.0) for f in _FIN_TIMEOUT_EXAMPLES]
    tw = TCP_TIMEWAIT_LEN
    factor = num(FIN_TIME_RTO_FACTOR)
    shown = ", ".join(f"{f} gives {secs(life)}" for f, life in examples)
    return Topic(
        id="fin-wait2",
        title="FIN_WAIT2: our FIN is acknowledged, the peer's has not come",
        aliases=("FIN_WAIT2", "finwait2", "fin-wait-2", "tcp_fin_timeout", "TCP_LINGER2"),
        summary=(
            "Waiting for the peer's FIN: bounded by tcp_fin_timeout "
            f"({secs(default.lifetime or 0.0)}) once the application has closed the socket, "
            "unbounded while it still holds it."
        ),
        body=(
            "After our FIN is acknowledged the socket waits in FIN_WAIT2 for the peer to "
            "close its direction too. If the peer's application never closes (its socket "
            "stays in CLOSE_WAIT), that FIN never comes. What happens next depends on "
            "whether our application still holds the socket.",
            "If it has called close(), the socket is an orphan and the kernel bounds the "
            f"wait with tcp_fin_timeout (default {secs(TCP_FIN_TIMEOUT)}, equal to the "
            "TIME_WAIT length but a separate setting), or with TCP_LINGER2 if the socket set "
            f"it, and never less than {factor} × RTO. Up to {secs(tw)} the full socket is "
            "replaced at once by a small minisocket: ss shows it as FIN-WAIT-2 with a "
            "'timewait' timer, and it counts against tcp_max_tw_buckets like a TIME_WAIT. "
            f"When the FIN does arrive, the socket moves on to TIME_WAIT for a full {secs(tw)}.",
            f"Values above {secs(tw)} behave unexpectedly: the full socket first waits "
            f"(value − {num(tw)}) s on its keepalive timer, then becomes a minisocket for "
            f"another (value − {num(tw)}) s. The total is 2 × (value − {num(tw)}) s, not the "
            f"value: {shown}. The sysctl accepts 0 too, which leaves only the "
            f"{factor} × RTO floor ({secs(floor.lifetime or 0.0)} with a "
            f"{secs(TCP_RTO_MIN)} RTO); minisockets of {secs(TW_KILLED_THRESHOLD)} or less "
            "are counted as TWKilled rather than TW.",
            "If the application only called shutdown(SHUT_WR) and keeps the descriptor, "
            "there is no FIN_WAIT2 timer at all: the socket waits for the peer's FIN, an RST "
            "or close() for as long as that takes. tcp_fin_timeout starts to apply only at "
            "close().",
            "TCP_LINGER2 overrides the sysctl per socket: values above "
            f"{secs(TCP_FIN_TIMEOUT_MAX)} are clamped to it, 0 means 'use the sysctl', and a "
            "negative value makes the kernel reset the connection instead of waiting in "
            "FIN_WAIT2 (TCPAbortOnLinger). Many FIN_WAIT2 sockets are a symptom on the "
            "peer's side: look there for CLOSE_WAIT.",
        ),
        key_numbers=(
            KeyNumber(
                "orphaned FIN_WAIT2, default", default.lifetime or 0.0, "s", "tcp_fin_time()"
            ),
            KeyNumber(
                "never shorter than",
                FIN_TIME_RTO_FACTOR,
                "× RTO",
                "tcp_fin_time(): (rto<<2)-(rto>>1)",
            ),
            *(
                KeyNumber(
                    f"lifetime with tcp_fin_timeout={f}",
                    life,
                    "s",
                    "fin_wait2_lifetime(): 2 × (F − TCP_TIMEWAIT_LEN) above it",
                )
                for f, life in examples
            ),
            KeyNumber("TCP_LINGER2 clamp", TCP_FIN_TIMEOUT_MAX, "s", "TCP_FIN_TIMEOUT_MAX (tcp.h)"),
        ),
        sysctls=("net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_max_tw_buckets"),
        counters=(
            "TcpExt.TW",
            "TcpExt.TWKilled",
            "TcpExt.TCPAbortOnLinger",
            "TcpExt.TCPTimeWaitOverflow",
        ),
        see_also=("close-wait", "time-wait", "orphans", "linger", "max-tw-buckets"),
        calc=(
            "tcpdoctor calc fin-wait2",
            f"tcpdoctor calc fin-wait2 --fin-timeout {_FIN_TIMEOUT_EXAMPLES[0]}",
            "tcpdoctor calc fin-wait2 --not-orphaned",
        ),
    )


def _orphan_end(give_up: timing.OrphanGiveUp) -> float:
    """Where late timers may end an orphan; the nominal give-up when they cannot."""
    if give_up.sooner_give_up_at is None:
        return give_up.schedule.gives_up_at
    return give_up.sooner_give_up_at


def linger() -> Topic:
    orphan = timing.orphan_give_up(hz=REFERENCE_HZ)
    return Topic(
        id="linger",
        title="SO_LINGER: what close() does with a connection",
        aliases=("SO_LINGER", "zero-linger", "abortive-close", "l_linger"),
        summary=(
            "Zero SO_LINGER turns close() into an RST (no FIN, no TIME_WAIT, unsent data "
            "lost); a nonzero one makes close() block; neither cures port exhaustion."
        ),
        body=(
            "By default close() returns at once and the kernel finishes the connection in "
            "the background: it sends whatever is still queued, then the FIN, and the "
            "socket lives on as an orphan until that exchange completes. SO_LINGER changes "
            "this through two fields, l_onoff and l_linger.",
            "l_onoff=1 with l_linger=0 is an abortive close. close() discards anything not "
            "yet sent, sends an RST instead of a FIN and frees the socket immediately: no "
            "FIN_WAIT, no TIME_WAIT, and the local port is free at once. The peer's next "
            "call on the connection fails with ECONNRESET, 'connection reset by peer'. Linux "
            "counts it as TCPAbortOnData, not TCPAbortOnLinger (that one belongs to "
            "TCP_LINGER2).",
            "Because it skips TIME_WAIT, zero linger is often offered as a cure for port "
            "exhaustion. It swaps a visible limit for invisible damage: every close becomes "
            "an error on the other side, queued data silently disappears, and nothing stops "
            "a late segment of the old connection from landing in a new one on the same "
            f"4-tuple, the very thing the {secs(TCP_TIMEWAIT_LEN)} TIME_WAIT is there for. "
            "For exhaustion, open fewer connections (reuse them), add destination addresses "
            "or ports, or let connect() reuse TIME_WAITs with tcp_tw_reuse. Keep zero "
            "linger for tearing down a connection that is already broken.",
            "l_onoff=1 with a positive l_linger makes close() wait until our FIN has been "
            "acknowledged or the time is up, even on a non-blocking socket (Linux does not "
            "return EWOULDBLOCK here). When the time runs out close() still reports success "
            "and the kernel carries on in the background as if there had been no linger; "
            "nothing is reset. It is a way to block, not a guarantee that the peer read "
            "the data.",
            "Separately from SO_LINGER, closing a socket with received data still unread "
            "also sends an RST (RFC 2525), counted as TCPAbortOnClose, and this check comes "
            "first. Read until end-of-file, or at least drain the receive queue, before "
            "closing if the peer must see a clean FIN. After a normal close, an orphan whose "
            f"FIN is never acknowledged retransmits it for a {secs(orphan.budget)} budget "
            "counted from its first retransmission: at the minimum RTO it disappears "
            f"{secs(orphan.schedule.gives_up_at)} after the close, or already at "
            f"{secs(_orphan_end(orphan))} when late timers use up the rest (see orphans).",
        ),
        key_numbers=(
            KeyNumber(
                "TIME_WAIT skipped by zero linger", TCP_TIMEWAIT_LEN, "s", "TCP_TIMEWAIT_LEN"
            ),
            KeyNumber(
                "orphan retransmission budget after a normal close",
                orphan.budget,
                "s",
                f"orphan_give_up(): tcp_orphan_retries {TCP_ORPHAN_RETRIES} means "
                f"{TCP_ORPHAN_RETRIES_ZERO_MEANS}",
            ),
        ),
        sysctls=("net.ipv4.tcp_orphan_retries", "net.ipv4.tcp_fin_timeout"),
        counters=(
            "TcpExt.TCPAbortOnData",
            "TcpExt.TCPAbortOnClose",
            "TcpExt.TCPAbortOnLinger",
            "Tcp.OutRsts",
            "Tcp.EstabResets",
        ),
        see_also=("time-wait", "ports", "orphans", "fin-wait2", "tw-reuse"),
        calc=("tcpdoctor calc orphan-retries", "tcpdoctor calc ports --tw-reuse 1"),
    )


def orphans() -> Topic:
    default = timing.orphan_give_up(hz=REFERENCE_HZ)
    example = timing.orphan_give_up(_ORPHAN_RETRIES_EXAMPLE, hz=REFERENCE_HZ)
    fin = timing.fin_wait2_lifetime()
    return Topic(
        id="orphans",
        title="Orphans: connections the application has already closed",
        aliases=("orphan", "tcp_orphan_retries", "tcp_max_orphans", "LAST_ACK", "FIN_WAIT1"),
        summary=(
            "After close() the kernel finishes the connection alone; orphans in FIN_WAIT1, "
            f"CLOSING or LAST_ACK facing a silent peer give up after a {secs(default.budget)} "
            "budget counted from their first retransmission, and tcp_max_orphans caps how "
            "many the host keeps."
        ),
        body=(
            "close() does not wait for the connection to end. The socket loses its file "
            "descriptor and becomes an orphan: the kernel still sends queued data and the "
            "FIN, retransmits them and waits for the peer. Orphans appear in ss without an "
            "owning process, mostly in FIN_WAIT1 (our FIN not yet acknowledged), FIN_WAIT2, "
            "CLOSING and LAST_ACK.",
            "Their retransmissions are limited by tcp_orphan_retries, not tcp_retries2. The "
            f"default {TCP_ORPHAN_RETRIES} means {default.effective_retries} while the peer "
            "still looks alive, and the kernel turns that into a time budget the same way it "
            f"does for tcp_retries2: {secs(default.budget)} ({hms(default.budget)}). As for "
            "tcp_retries2, the clock starts at the first retransmission by the RTO timer, "
            "not at the FIN itself, and the orphan goes at the first timeout after the "
            "budget has run out. A FIN_WAIT1 or LAST_ACK orphan facing a silent peer then "
            "disappears without sending an RST (counted in TCPAbortOnTimeout): at the "
            f"minimum RTO the FIN goes out again at {secs(default.budget_from)}, its "
            f"{default.schedule.retransmissions}th retransmission comes "
            f"{secs(default.headroom or 0.0)} short of the budget, and so on paper the "
            f"orphan lasts {secs(default.schedule.gives_up_at)} "
            f"({hms(default.schedule.gives_up_at)}). Timers fire late, though, and their "
            "lateness counts towards the budget: a few late ones use up that "
            f"{secs(default.headroom or 0.0)} and the kernel gives up at "
            f"{secs(_orphan_end(default))} instead. A tail loss probe sent before the first "
            "timeout does not start the clock; it moves everything later by up to one RTO. "
            "Orphans in FIN_WAIT2 follow tcp_fin_timeout instead "
            f"({secs(fin.lifetime or 0.0)} by default).",
            "tcp_max_orphans is one cap for the whole host, shared by every network "
            "namespace and visible only in the initial one. Beyond it, or under TCP memory "
            "pressure, the kernel kills orphans with an RST, counts TCPAbortOnMemory and "
            "logs 'too many orphaned sockets'. The orphan gauge in /proc/net/sockstat is "
            "host-wide as well, so a container sees the host's count.",
            "Many FIN_WAIT1 orphans usually point at peers that vanished or stopped "
            "reading, and each one keeps its unsent data until it gives up. A lower "
            "tcp_orphan_retries frees them sooner (with "
            f"{_ORPHAN_RETRIES_EXAMPLE} the budget is {secs(example.budget)}: gone after "
            f"{secs(example.schedule.gives_up_at)}, or {secs(_orphan_end(example))} with "
            "late timers), at the risk of abandoning the final FIN to a slow but live peer.",
        ),
        key_numbers=(
            KeyNumber(
                "effective tcp_orphan_retries (sysctl default)",
                default.effective_retries,
                "",
                f"tcp_orphan_retries(): 0 means {TCP_ORPHAN_RETRIES_ZERO_MEANS} while alive",
            ),
            KeyNumber(
                "orphan give-up budget, from the first retransmission",
                default.budget,
                "s",
                "orphan_give_up(), tcp_model_timeout",
            ),
            KeyNumber(
                "orphan gone in the ideal schedule, after the FIN",
                default.schedule.gives_up_at,
                "s",
                "orphan_give_up()",
            ),
            KeyNumber(
                "late timers may end it at",
                _orphan_end(default),
                "s",
                "orphan_give_up(hz=...)",
            ),
            KeyNumber("orphaned FIN_WAIT2", fin.lifetime or 0.0, "s", "tcp_fin_timeout default"),
        ),
        sysctls=(
            "net.ipv4.tcp_orphan_retries",
            "net.ipv4.tcp_max_orphans",
            "net.ipv4.tcp_fin_timeout",
        ),
        counters=("TcpExt.TCPAbortOnMemory", "TcpExt.TCPAbortOnTimeout", "TCP.orphan"),
        see_also=("linger", "fin-wait2", "close-wait", "retries"),
        calc=(
            "tcpdoctor calc orphan-retries",
            f"tcpdoctor calc orphan-retries {_ORPHAN_RETRIES_EXAMPLE}",
        ),
    )


def max_tw_buckets() -> Topic:
    memory = timing.time_wait_memory(_TW_COUNT_EXAMPLE)
    return Topic(
        id="max-tw-buckets",
        title="tcp_max_tw_buckets: the TIME_WAIT cap",
        aliases=("tcp_max_tw_buckets", "TCPTimeWaitOverflow", "tw-buckets"),
        summary=(
            "A per-namespace cap on TIME_WAIT and FIN_WAIT2 minisockets; over it, closing "
            "sockets skip TIME_WAIT silently, seen only in TCPTimeWaitOverflow."
        ),
        body=(
            "tcp_max_tw_buckets limits how many timewait minisockets a network namespace "
            "may hold: real TIME_WAITs plus orphaned FIN_WAIT2 sockets, which are stored "
            "the same way. The default is half the size of the established-connection hash "
            "table, so it grows with memory. Each namespace enforces its own limit, even "
            "when it shares the hash table with the host. The current count is the tw "
            "field of /proc/net/sockstat.",
            "At the limit, a socket that should enter TIME_WAIT is simply destroyed: no "
            "TIME_WAIT, no RST, and on current kernels no log line (very old ones printed "
            "'time wait bucket table overflow'). The only trace is the TCPTimeWaitOverflow "
            "counter. An orphaned FIN_WAIT2 that cannot become a minisocket vanishes the "
            "same way, and the peer's FIN that arrives later is answered with an RST.",
            "Lowering the cap is sometimes suggested to free ports or memory. It frees "
            "them by switching off TIME_WAIT's protection for every connection over the "
            "cap: the same trade as zero SO_LINGER, only quieter. Memory is no reason: a "
            f"TIME_WAIT costs about {TW_SOCK_BYTES} bytes, so {_TW_COUNT_EXAMPLE:,} of them "
            f"take {num(memory.total_mib, 1)} MiB. A growing TCPTimeWaitOverflow means "
            "either someone lowered the cap or the host closes connections at a rate that "
            "calls for connection reuse.",
        ),
        key_numbers=(
            KeyNumber("timewait minisocket", TW_SOCK_BYTES, "bytes", "tw_sock_TCP slab object"),
            KeyNumber(
                f"memory of {_TW_COUNT_EXAMPLE:,} TIME_WAITs",
                round(memory.total_mib, 2),
                "MiB",
                "time_wait_memory()",
            ),
        ),
        sysctls=("net.ipv4.tcp_max_tw_buckets", "net.ipv4.tcp_fin_timeout"),
        counters=("TcpExt.TCPTimeWaitOverflow", "TcpExt.TW", "TCP.tw"),
        see_also=("time-wait", "fin-wait2", "linger", "ports"),
        calc=(f"tcpdoctor calc time-wait-memory {_TW_COUNT_EXAMPLE}",),
    )
