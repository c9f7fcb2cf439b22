"""Topics about reusing 4-tuples and ports: tcp_tw_reuse, the removed tcp_tw_recycle,
timestamps, ephemeral ports and file-descriptor limits.

Every number in the prose is computed from tcpdoctor.kernel when the topic is built.
"""

from __future__ import annotations

from tcpdoctor.explain._fmt import counter_added, num, secs, sysctl_added, sysctl_removed
from tcpdoctor.explain.model import KeyNumber, Topic
from tcpdoctor.kernel import timing
from tcpdoctor.kernel.constants import (
    DEFAULT_PORT_RANGE,
    FIN_TIME_RTO_FACTOR,
    MAX_PORT,
    NR_FILE,
    NR_OPEN_DEFAULT,
    REFERENCE_HZ,
    TCP_PAWS_MSL,
    TCP_TIMESTAMPS_DEFAULT,
    TCP_TIMEWAIT_LEN,
    TCP_TW_REUSE_DEFAULT,
    TCP_TW_REUSE_DELAY_MS,
    TCP_TW_REUSE_DELAY_MS_MAX,
    TW_REUSE_SEQ_JUMP,
)

_MS = 1000.0
_REUSE_ON = 1  # tcp_tw_reuse=1: every destination


def tw_reuse() -> Topic:
    ports = timing.port_capacity()
    without = timing.max_connection_rate(ports, tw_reuse=0)
    with_reuse = timing.max_connection_rate(ports, tw_reuse=_REUSE_ON)
    delay = TCP_TW_REUSE_DELAY_MS / _MS
    added = sysctl_added("net.ipv4.tcp_tw_reuse_delay")
    return Topic(
        id="tw-reuse",
        title="tcp_tw_reuse: letting connect() take over a TIME_WAIT",
        aliases=("tcp_tw_reuse", "tcp_tw_reuse_delay", "reuse", "tw_reuse"),
        summary=(
            "Lets an outgoing connection reuse the 4-tuple of a TIME_WAIT that used "
            "timestamps, once it is tcp_tw_reuse_delay old; it never affects incoming "
            "connections."
        ),
        body=(
            "tcp_tw_reuse decides whether connect() may pick a local port whose 4-tuple to "
            "the same destination is still held by a TIME_WAIT. 0 switches it off, 1 allows "
            f"it for every destination, and {TCP_TW_REUSE_DEFAULT}, the default, only for "
            "loopback connections (bound to the loopback device, or using an address in "
            "127.0.0.0/8 or ::1). Traffic to any real address needs 1.",
            "Reuse is allowed only if the old connection carried TCP timestamps. The new "
            "connection inherits the last timestamp seen, so PAWS throws away any late "
            "segment of the old one, and it starts its sequence numbers "
            f"{TW_REUSE_SEQ_JUMP} beyond where the old connection stopped. Since Linux {added} the "
            "TIME_WAIT must also be at least tcp_tw_reuse_delay old (default "
            f"{num(TCP_TW_REUSE_DELAY_MS)} ms, counted from entry into TIME_WAIT, at most "
            f"{num(TCP_TW_REUSE_DELAY_MS_MAX)} ms); older kernels compared against a clock "
            "ticking once per second, so the effective delay was anywhere from zero to one "
            "second. With timestamps off on either end nothing is ever reused. Each "
            "takeover is counted in TWRecycled.",
            "It only acts inside connect(), so it is a client-side setting. A server's "
            "TIME_WAITs are never touched by it and need nothing: a new SYN from the same "
            "client port is accepted over them when its sequence number or timestamp is "
            "newer. It does not shorten TIME_WAIT or change what ss shows; a TIME_WAIT "
            "lives on until it is taken over. FIN_WAIT2 minisockets are never reused.",
            "One path ignores both the sysctl and the delay: a socket that bound its local "
            "port explicitly (bind() with SO_REUSEADDR, then connect()) takes over a "
            "TIME_WAIT on that 4-tuple at once, provided timestamps were in use. Without "
            "SO_REUSEADDR the bind() itself fails with EADDRINUSE. SO_REUSEADDR is a bind() "
            "rule and otherwise unrelated to tcp_tw_reuse.",
            "With reuse in effect a port is held for about the delay instead of "
            f"{secs(TCP_TIMEWAIT_LEN)}, which lifts the default range's ceiling towards one "
            f"destination from {num(without.max_rate, 1)} to about "
            f"{num(with_reuse.max_rate, 1)} new connections per second. Connection reuse is "
            "still the better fix: every new connection costs a handshake.",
        ),
        key_numbers=(
            KeyNumber("default mode (loopback only)", TCP_TW_REUSE_DEFAULT, "", "tcp_sk_init()"),
            KeyNumber("reuse delay", delay, "s", "tcp_tw_reuse_delay default"),
            KeyNumber("sequence jump on reuse", TW_REUSE_SEQ_JUMP, "", "tcp_twsk_unique()"),
            KeyNumber(
                "conn/s to one destination without reuse",
                round(without.max_rate, 1),
                "conn/s",
                "max_connection_rate(tw_reuse=0)",
            ),
            KeyNumber(
                "conn/s to one destination with tcp_tw_reuse=1",
                round(with_reuse.max_rate, 1),
                "conn/s",
                "max_connection_rate(tw_reuse=1)",
            ),
        ),
        sysctls=(
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.tcp_tw_reuse_delay",
            "net.ipv4.tcp_timestamps",
            "net.ipv4.ip_local_port_range",
        ),
        counters=("TcpExt.TWRecycled", "TcpExt.TW"),
        see_also=("time-wait", "timestamps", "ports", "tw-recycle"),
        calc=("tcpdoctor calc ports --tw-reuse 1", "tcpdoctor calc ports --tw-reuse 0"),
    )


def tw_recycle() -> Topic:
    removed = sysctl_removed("net.ipv4.tcp_tw_recycle")
    factor = num(FIN_TIME_RTO_FACTOR)
    return Topic(
        id="tw-recycle",
        title="tcp_tw_recycle: removed, and why",
        aliases=("tcp_tw_recycle", "recycle", "tw_recycle", "PAWSPassive"),
        summary=(
            "An old shortcut that cut TIME_WAIT short and dropped SYNs whose timestamps "
            f"went backwards; it broke clients behind NAT and was removed in Linux {removed}."
        ),
        body=(
            "tcp_tw_recycle made two changes. A TIME_WAIT whose peer's timestamp could be "
            "kept in a per-destination cache was destroyed after about "
            f"{factor} × RTO instead of {secs(TCP_TIMEWAIT_LEN)}. In exchange, a listener "
            "remembered the last timestamp seen from each source address and silently "
            "dropped any SYN from that address carrying an older one, within a "
            f"{secs(TCP_PAWS_MSL)} window (counted as PAWSPassive).",
            "That second rule assumes one host per address. Behind a NAT, a load balancer "
            "or a cloud gateway, many hosts share one address and their timestamp clocks "
            "have nothing to do with each other, so a server with recycling on dropped SYNs "
            "from some of them at random. The symptom is connects that time out now and "
            "then, typically when two clients behind the same gateway reach the same server "
            "shortly after each other, and it looks like a network fault. Once Linux gave "
            "each connection its own random timestamp offset, the rule misfired even "
            "without NAT.",
            f"The option was removed in Linux {removed}, together with the PAWSPassive "
            "counter, and the per-destination timestamp cache went in the same patch "
            "series. On a current kernel the file does not exist, so an old sysctl.conf "
            "line for it only produces an error when settings are applied. Nothing replaces "
            "it: outgoing connections have tcp_tw_reuse, and a server's TIME_WAITs need no "
            "help.",
        ),
        key_numbers=(
            KeyNumber(
                "window of the per-address timestamp check", TCP_PAWS_MSL, "s", "TCP_PAWS_MSL"
            ),
            KeyNumber("TIME_WAIT it cut short", TCP_TIMEWAIT_LEN, "s", "TCP_TIMEWAIT_LEN"),
            KeyNumber(
                "recycled TIME_WAIT, about",
                FIN_TIME_RTO_FACTOR,
                "× RTO",
                f"tcp_tw_recycle before Linux {removed}",
            ),
        ),
        sysctls=(
            "net.ipv4.tcp_tw_recycle",
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.tcp_timestamps",
        ),
        counters=("TcpExt.PAWSPassive", "TcpExt.TWRecycled"),
        see_also=("tw-reuse", "timestamps", "time-wait", "syn-retries"),
        calc=("tcpdoctor calc ports --tw-reuse 1",),
    )


def timestamps() -> Topic:
    return Topic(
        id="timestamps",
        title="TCP timestamps and PAWS",
        aliases=("tcp_timestamps", "PAWS", "timestamp", "tsval"),
        summary=(
            "The timestamp option gives RTT samples and PAWS, the check that drops old "
            "duplicate segments; tcp_tw_reuse depends on it, so leave it on."
        ),
        body=(
            "With timestamps on, every segment carries the sender's clock value and echoes "
            "the latest value it received (RFC 7323). Linux uses them to measure RTT and for "
            "PAWS, Protection Against Wrapped Sequences: a segment whose timestamp is older "
            "than the last one accepted on the connection is dropped, even if its sequence "
            "number looks valid. That is the same protection TIME_WAIT gives by waiting, "
            "which is why a TIME_WAIT that saw timestamps may be reused early and one that "
            "did not may not.",
            "The option is negotiated in the handshake, so both ends must allow it. "
            f"tcp_timestamps defaults to {TCP_TIMESTAMPS_DEFAULT}: on, with an offset added "
            "to the clock. Turning it off disables tcp_tw_reuse completely, removes PAWS, "
            "and leaves connections set up through SYN cookies without window scaling and "
            "SACK. The CPU it saves is negligible.",
            "The value on the wire is not the raw clock: Linux adds an offset derived from "
            "a keyed hash, so it says nothing about the host's uptime. That offset has been "
            "per connection, then per pair of host addresses, and recent stable kernels put "
            "the ports back into the hash. Either way, hosts behind one NAT never share a "
            "clock, which is what defeated tcp_tw_recycle.",
            "PAWS rejections are counted: PAWSActive for a SYN-ACK rejected in SYN_SENT, "
            "PAWSEstab for established sockets, and from Linux "
            f"{counter_added('TcpExt.PAWSTimewait')} PAWSTimewait for segments reaching a "
            "TIME_WAIT (earlier kernels counted those as PAWSEstab). A steady rise can point "
            "at a middlebox that rewrites timestamps, or at several hosts sharing one "
            "address.",
        ),
        key_numbers=(
            KeyNumber("tcp_timestamps default", TCP_TIMESTAMPS_DEFAULT, "", "tcp_sk_init()"),
            KeyNumber(
                "age at which tcp_tw_reuse may take a TIME_WAIT over",
                TCP_TW_REUSE_DELAY_MS / _MS,
                "s",
                "tcp_tw_reuse_delay default",
            ),
        ),
        sysctls=("net.ipv4.tcp_timestamps", "net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_syncookies"),
        counters=("TcpExt.PAWSActive", "TcpExt.PAWSEstab", "TcpExt.PAWSTimewait"),
        see_also=("tw-reuse", "tw-recycle", "time-wait", "rto"),
        calc=("tcpdoctor calc ports --tw-reuse 1 --no-timestamps",),
    )


def ports() -> Topic:
    low, high = DEFAULT_PORT_RANGE
    capacity = timing.port_capacity()
    rate = timing.max_connection_rate(capacity)
    reuse = timing.max_connection_rate(capacity, tw_reuse=_REUSE_ON)
    return Topic(
        id="ports",
        title="Ephemeral ports: how many connections a client can open",
        aliases=(
            "ephemeral-ports",
            "ip_local_port_range",
            "ip_local_reserved_ports",
            "port-exhaustion",
            "EADDRNOTAVAIL",
            "IP_BIND_ADDRESS_NO_PORT",
        ),
        summary=(
            f"connect() takes local ports from ip_local_port_range ({low}-{high}, "
            f"{capacity.capacity} ports) per destination address and port, so a client can "
            f"hold {capacity.capacity} connections to each server endpoint, not in total."
        ),
        body=(
            "A TCP connection is identified by its 4-tuple: local address, local port, "
            "remote address, remote port. When connect() picks a local port it only needs "
            "that 4-tuple to be unique, so one local port can serve connections to "
            "different servers, or to different ports of the same server, at the same "
            f"time. The default range {low}-{high} therefore allows {capacity.capacity} "
            "concurrent connections per (source address, destination address, destination "
            f"port), not {capacity.capacity} for the whole host.",
            "The budget that runs out is the one towards a single busy destination, and "
            "TIME_WAIT is what usually eats it: a client that closes first holds each port "
            f"for {secs(TCP_TIMEWAIT_LEN)}, so the default range sustains about "
            f"{num(rate.max_rate, 1)} new connections per second to one destination "
            f"({num(rate.worst_case_max_rate, 1)} in the worst case, counting timer "
            f"lateness at HZ={REFERENCE_HZ}). Beyond that connect() fails with "
            "EADDRNOTAVAIL, 'Cannot assign requested address', which some clients report "
            "as 'could not connect' or as a timeout; bind() to port 0 fails with EADDRINUSE "
            "instead.",
            "Linux splits the range by parity: connect() starts with ports of the same "
            "parity as the start of the range (even ports with the default range) and "
            "bind() to port 0 with the other half, each falling back to the rest when its "
            "half is used up. Ports listed in ip_local_reserved_ports are never picked "
            "automatically, and connect() never shares a port that a socket took with "
            "bind(), listeners included.",
            "Calling bind() before connect() to choose a source address turns the "
            "per-destination budget into a shared one: bind() must pick a port without "
            "knowing the destination, so the port is taken for all of them. Setting "
            "IP_BIND_ADDRESS_NO_PORT before that bind() fixes the address but leaves the "
            "port to connect(), which chooses it with the destination in mind. On recent "
            "kernels IP_LOCAL_PORT_RANGE narrows the range for one socket.",
            "Fixes, best first: reuse connections (HTTP keep-alive, pools); spread over "
            "more destination addresses or ports, or more source addresses; widen "
            "ip_local_port_range, keeping it clear of ports local servers listen on; "
            "tcp_tw_reuse=1, so connect() can take over TIME_WAITs older than "
            f"tcp_tw_reuse_delay, which lifts the ceiling to about {num(reuse.max_rate, 1)} "
            "per second; or let the server close first, so the TIME_WAIT lands on its side.",
        ),
        key_numbers=(
            KeyNumber(
                "ports in the default range", capacity.range_size, "ports", "ip_local_port_range"
            ),
            KeyNumber(
                "connections per destination",
                capacity.capacity,
                "ports",
                "port_capacity()",
            ),
            KeyNumber(
                "new connections per second to one destination",
                round(rate.max_rate, 1),
                "conn/s",
                "max_connection_rate()",
            ),
            KeyNumber(
                f"worst case at HZ={REFERENCE_HZ}",
                round(rate.worst_case_max_rate, 1),
                "conn/s",
                "max_connection_rate() + timer_slack()",
            ),
            KeyNumber("highest port number", MAX_PORT, "", "the TCP header's port field"),
        ),
        sysctls=(
            "net.ipv4.ip_local_port_range",
            "net.ipv4.ip_local_reserved_ports",
            "net.ipv4.ip_autobind_reuse",
            "net.ipv4.tcp_tw_reuse",
            "net.ipv4.tcp_tw_reuse_delay",
        ),
        counters=("TcpExt.TWRecycled", "TCP.tw", "Tcp.ActiveOpens"),
        see_also=("time-wait", "tw-reuse", "fd-limits", "linger"),
        calc=("tcpdoctor calc ports", "tcpdoctor calc ports --tw-reuse 1"),
    )


def fd_limits() -> Topic:
    capacity = timing.port_capacity()
    return Topic(
        id="fd-limits",
        title=f"File descriptors, sockets and the {MAX_PORT:,} myth",
        aliases=(
            "ulimit",
            "RLIMIT_NOFILE",
            "EMFILE",
            "file-max",
            "nr_open",
            "too-many-open-files",
            str(MAX_PORT),
            f"{MAX_PORT:,}",
        ),
        summary=(
            "Every open socket costs its process one file descriptor (RLIMIT_NOFILE, "
            f"fs.nr_open, fs.file-max); the {MAX_PORT:,} port numbers limit neither a "
            "server's connections nor a client's, except per destination."
        ),
        body=(
            f"Port numbers are {MAX_PORT.bit_length()} bits wide and top out at {MAX_PORT:,}, "
            "and a popular belief says a host can therefore hold no more connections than "
            "that. It is wrong on both sides. A server's accepted connections all use its one "
            "listening port and differ by the client's address and port, so one listening "
            f"port can carry far more than {MAX_PORT:,} connections. A client needs a local "
            "port per connection, but only per destination: the default range gives "
            f"{capacity.capacity} connections to each server address and port, and the same "
            "local port can be used again towards another destination.",
            "The real limit on both sides is file descriptors, and memory. Each socket an "
            "application holds is one descriptor, counted against the process's "
            "RLIMIT_NOFILE (ulimit -n); past it socket() and accept() fail with EMFILE, "
            "'Too many open files'. The hard limit can be raised up to fs.nr_open "
            f"({NR_OPEN_DEFAULT:,} by default). fs.file-max is host-wide, sized from RAM "
            f"(never below {NR_FILE:,}), makes every process get ENFILE once reached, and "
            "is rarely the first limit hit.",
            "Sockets the application has let go of do not count: TIME_WAIT minisockets "
            "and orphans have no descriptor (ss shows them without a process). CLOSE_WAIT "
            "sockets do, because the application has not closed them yet; a CLOSE_WAIT leak "
            "is the usual way a server runs out of descriptors. A server that hits EMFILE "
            "in accept() also stops draining its accept queue, so listen-queue overflows "
            "follow.",
            "Service managers and container runtimes set their own limits (systemd's "
            "LimitNOFILE, the runtime's defaults), so read the running process's limit in "
            "/proc/PID/limits rather than a shell's ulimit.",
        ),
        key_numbers=(
            KeyNumber("port numbers", MAX_PORT, "", "the TCP header's port field"),
            KeyNumber(
                "connections per destination (default range)",
                capacity.capacity,
                "ports",
                "port_capacity()",
            ),
            KeyNumber("fs.nr_open default", NR_OPEN_DEFAULT, "", "sysctl_nr_open (fs/file.c)"),
            KeyNumber("fs.file-max floor", NR_FILE, "", "NR_FILE (include/linux/fs.h)"),
        ),
        sysctls=("fs.file-max", "fs.nr_open", "net.ipv4.ip_local_port_range"),
        counters=("sockets.used", "TCP.inuse", "TCP.alloc", "TCP.orphan"),
        see_also=("ports", "close-wait", "listen-queue", "orphans"),
        calc=("tcpdoctor calc ports",),
    )
