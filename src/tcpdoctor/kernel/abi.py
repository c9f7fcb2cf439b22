"""Binary interface numbers from the kernel's uapi headers (netlink, inet_diag, sockopts).

Sources: include/uapi/linux/netlink.h, sock_diag.h, inet_diag.h, tcp.h, in.h, in6.h.
"""

from __future__ import annotations

from typing import Final

# netlink.h
NETLINK_SOCK_DIAG: Final = 4
NLM_F_REQUEST: Final = 0x01
NLM_F_MULTI: Final = 0x02
NLM_F_DUMP_INTR: Final = 0x10  # the dump changed under us; the result may be inconsistent
NLM_F_ROOT: Final = 0x100
NLM_F_MATCH: Final = 0x200
NLM_F_DUMP: Final = NLM_F_ROOT | NLM_F_MATCH
NLMSG_NOOP: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSG_HDRLEN: Final = 16
NLA_HDRLEN: Final = 4
NLA_TYPE_MASK: Final = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

# sock_diag.h / inet_diag.h
SOCK_DIAG_BY_FAMILY: Final = 20
INET_DIAG_REQ_V2_LEN: Final = 56
INET_DIAG_MSG_LEN: Final = 72
INET_DIAG_NOCOOKIE: Final = 0xFFFFFFFF
INET_DIAG_MEMINFO: Final = 1
INET_DIAG_INFO: Final = 2
INET_DIAG_SHUTDOWN: Final = 8
INET_DIAG_MARK: Final = 15

# in.h
IPPROTO_TCP: Final = 6

# Socket options (tcp.h, in.h) used by the lab and the doctor's advice.
TCP_KEEPIDLE: Final = 4
TCP_KEEPINTVL: Final = 5
TCP_KEEPCNT: Final = 6
TCP_SYNCNT: Final = 7
TCP_LINGER2: Final = 8
TCP_INFO: Final = 11
TCP_USER_TIMEOUT: Final = 18
IP_BIND_ADDRESS_NO_PORT: Final = 24
IP_LOCAL_PORT_RANGE: Final = 51  # 6.3+
TCP_RTO_MAX_MS: Final = 44  # 6.15+
TCP_RTO_MIN_US: Final = 45  # 6.15+

# sched.h: setns() flag for network namespaces.
CLONE_NEWNET: Final = 0x40000000
