"""Kernel constants, in seconds unless the name says otherwise.

Each is tied to the symbol it mirrors. Most live in include/net/tcp.h, defined in jiffies
as multiples of HZ, so their value in seconds is the same on every kernel.
"""

from __future__ import annotations

from typing import Final

# --- TIME_WAIT / FIN_WAIT2 (include/net/tcp.h) -------------------------------------------
TCP_TIMEWAIT_LEN: Final = 60.0  # (60*HZ); hard-coded, no sysctl changes it
TCP_FIN_TIMEOUT: Final = TCP_TIMEWAIT_LEN  # default net.ipv4.tcp_fin_timeout
TCP_FIN_TIMEOUT_MAX: Final = 120.0  # (120*HZ); clamp for the TCP_LINGER2 socket option
TCP_PAWS_MSL: Final = 60  # seconds; also the upper bound of tcp_tw_reuse_delay
# tcp_fin_time() never returns less than 3.5 x RTO: (rto << 2) - (rto >> 1).
FIN_TIME_RTO_FACTOR: Final = 3.5
# __inet_twsk_schedule(): a minisock scheduled for more than this counts as TW, else TWKilled.
TW_KILLED_THRESHOLD: Final = 4.0  # timeouts <= 4 s count as TWKilled instead of TW

# --- Retransmission (include/net/tcp.h) ---------------------------------------------------
TCP_RTO_MIN: Final = 0.2  # (HZ/5)
TCP_RTO_MAX: Final = 120.0  # (120*HZ); TCP_RTO_MAX_SEC since 6.15
TCP_TIMEOUT_INIT: Final = 1.0  # (1*HZ), RFC 6298 2.1 initial RTO for SYN / SYN-ACK
TCP_TIMEOUT_FALLBACK: Final = 3.0  # (3*HZ), RFC 6298 5.7, after a lost handshake packet
TCP_RETR1: Final = 3  # default tcp_retries1
TCP_RETR2: Final = 15  # default tcp_retries2
TCP_SYN_RETRIES: Final = 6  # default tcp_syn_retries
TCP_SYNACK_RETRIES: Final = 5  # default tcp_synack_retries
TCP_SYN_LINEAR_TIMEOUTS: Final = 4  # default tcp_syn_linear_timeouts (6.5+, tcp_sk_init)
TCP_ORPHAN_RETRIES_ZERO_MEANS: Final = 8  # tcp_orphan_retries(): 0 is treated as 8
TCP_RTO_MAX_MS_MIN: Final = 1000  # tcp_rto_max_ms lower bound (6.15)
TCP_RTO_MAX_MS_MAX: Final = 120_000  # tcp_rto_max_ms upper bound (6.15)
# tcp_schedule_loss_probe(): with more than one packet in flight the probe timeout is
# 2 x SRTT + TCP_TIMEOUT_MIN_US (2 ms); with one, 2 x SRTT + the RTO minimum (delayed ACK).
TCP_TIMEOUT_MIN_US: Final = 2000
TCP_EARLY_RETRANS_TLP: Final = (3, 4)  # tcp_early_retrans values that enable tail loss probes

# --- Keepalive (include/net/tcp.h) --------------------------------------------------------
TCP_KEEPALIVE_TIME: Final = 7200.0  # (120*60*HZ)
TCP_KEEPALIVE_INTVL: Final = 75.0  # (75*HZ)
TCP_KEEPALIVE_PROBES: Final = 9
MAX_TCP_KEEPIDLE: Final = 32767  # seconds, TCP_KEEPIDLE upper bound
MAX_TCP_KEEPINTVL: Final = 32767  # seconds, TCP_KEEPINTVL upper bound
MAX_TCP_KEEPCNT: Final = 127  # TCP_KEEPCNT upper bound

# --- Ports (net/ipv4/af_inet.c inet_init_net, inet_hashtables.c) --------------------------
DEFAULT_PORT_RANGE: Final = (32768, 60999)  # net.ipv4.ip_local_port_range per netns
MAX_PORT: Final = 65535
# include/net/sock.h PROT_SOCK: default net.ipv4.ip_unprivileged_port_start. Writing an
# ip_local_port_range whose start is below it fails with EINVAL (ipv4_local_port_range()).
PROT_SOCK: Final = 1024
# tcp_twsk_unique(): a reused TIME_WAIT port starts write_seq at tw_snd_nxt + 65535 + 2.
TW_REUSE_SEQ_JUMP: Final = 65537
TCP_TW_REUSE_DELAY_MS: Final = 1000  # default tcp_tw_reuse_delay (6.14+)
TCP_TW_REUSE_DEFAULT: Final = 2  # tcp_sk_init(): 2 = loopback only

# --- Listen queues ------------------------------------------------------------------------
SOMAXCONN_DEFAULT: Final = 4096  # net.core.somaxconn since 5.4 (was 128)

# --- Clocks -------------------------------------------------------------------------------
USER_HZ: Final = 100  # /proc/net/tcp timer column is in clock_t ticks (1/100 s)
# Timer-wheel slack (kernel/time/timer.c): a long timer fires up to one granularity step
# late. At HZ=250, timers of ~16-131 s round up to 2.048 s; at HZ=1000, ~33-262 s to 4.096 s.
TIMER_WHEEL_LVL_CLK_SHIFT: Final = 3  # each wheel level is 8x coarser
TIMER_WHEEL_LVL_SIZE: Final = 64  # buckets per level

# --- Memory (measured on 6.18 x86_64, slabinfo object sizes) ------------------------------
# A TIME_WAIT minisock is a tw_sock_TCP slab object; a full socket is TCP/TCPv6 plus buffers.
TW_SOCK_BYTES: Final = 256  # tw_sock_TCP objsize (kmem_cache), 6.x x86_64
TCP_SOCK_BYTES: Final = 2368  # TCP objsize, for comparison (slabinfo, 6.18)
TCP6_SOCK_BYTES: Final = 2496  # TCPv6 objsize
REQUEST_SOCK_BYTES: Final = 320  # request_sock_TCP objsize

# --- Sysctl defaults used by kernel/sysctls.py --------------------------------------------
TCP_ORPHAN_RETRIES: Final = 0  # default tcp_orphan_retries (tcp_sk_init); 0 acts as 8
TCP_TIMESTAMPS_DEFAULT: Final = 1  # tcp_sk_init(): on, with per-connection offsets
TCP_SYNCOOKIES_DEFAULT: Final = 1  # tcp_sk_init(): cookies only once the SYN queue is full
NR_OPEN_DEFAULT: Final = 1024 * 1024  # fs/file.c sysctl_nr_open
NR_FILE: Final = 8192  # include/linux/fs.h; floor of fs.file-max (files_maxfiles_init)

# --- nf_conntrack TCP timeouts, seconds (nf_conntrack_proto_tcp.c tcp_timeouts[]) ---------
NF_CT_TCP_TIMEOUT_SYN_SENT: Final = 120  # 2 MINS
NF_CT_TCP_TIMEOUT_SYN_RECV: Final = 60  # 60 SECS
NF_CT_TCP_TIMEOUT_ESTABLISHED: Final = 5 * 24 * 3600  # 5 DAYS
NF_CT_TCP_TIMEOUT_FIN_WAIT: Final = 120  # 2 MINS
NF_CT_TCP_TIMEOUT_CLOSE_WAIT: Final = 60  # 60 SECS
NF_CT_TCP_TIMEOUT_LAST_ACK: Final = 30  # 30 SECS
NF_CT_TCP_TIMEOUT_TIME_WAIT: Final = 120  # 2 MINS
NF_CT_TCP_TIMEOUT_CLOSE: Final = 10  # 10 SECS
NF_CT_TCP_TIMEOUT_MAX_RETRANS: Final = 300  # 5 MINS (TCP_CONNTRACK_RETRANS)
NF_CT_TCP_TIMEOUT_UNACKNOWLEDGED: Final = 300  # 5 MINS (TCP_CONNTRACK_UNACK)
# nf_ct_tcp_loose in nf_conntrack_proto_tcp.c, copied into each namespace's tcp_loose by
# nf_conntrack_tcp_init_net(): a segment without SYN for which no entry exists is picked up
# mid-stream as a NEW entry (tcp_new()) instead of being left untracked (ct state invalid).
NF_CT_TCP_LOOSE_DEFAULT: Final = 1

# --- Limits and clocks used by kernel/timing.py -------------------------------------------
MAX_TCP_SYNCNT: Final = 127  # tcp.h; cap of TCP_SYNCNT, tcp_syn_retries, syn_linear_timeouts
TCP_SYN_RETRIES_MIN: Final = 1  # sysctl_net_ipv4.c tcp_syn_retries_min
SYSCTL_U8_MAX: Final = 255  # proc_dou8vec_minmax ceiling (tcp_retries2, tcp_synack_retries, ...)
TCP_USER_TIMEOUT_MAX_MS: Final = 2**31 - 1  # int; do_tcp_setsockopt() only rejects negatives
TCP_TW_REUSE_MAX: Final = 2  # sysctl_net_ipv4.c tcp_tw_reuse: extra2 = SYSCTL_TWO
TCP_TW_REUSE_DELAY_MS_MIN: Final = 1  # tcp_tw_reuse_delay: extra1 = SYSCTL_ONE (6.14+)
TCP_TW_REUSE_DELAY_MS_MAX: Final = TCP_PAWS_MSL * 1000  # tcp_tw_reuse_delay_max (6.14+)
TCP_LINGER2_RESET: Final = -1  # do_tcp_setsockopt(TCP_LINGER2): any negative is stored as -1
MIN_PORT: Final = 1  # sysctl_net_ipv4.c ip_local_port_range_min[]
TIMER_WHEEL_LVL_DEPTH: Final = 9  # kernel/time/timer.c LVL_DEPTH when HZ > 100
TIMER_WHEEL_LVL_DEPTH_LOW_HZ: Final = 8  # LVL_DEPTH when HZ <= 100
REFERENCE_HZ: Final = 250  # CONFIG_HZ of the 6.18 box the kernel notes were measured on
CONFIG_HZ_CHOICES: Final = (100, 250, 300, 1000)  # kernel/Kconfig.hz: the HZ_* choices

# --- TIME_WAIT limit defaults (net/ipv4/tcp_ipv4.c tcp_set_hashinfo()) ---------------------
# tcp_max_tw_buckets defaults to half the entries of the namespace's established hash. The
# hash size is chosen at boot from RAM (alloc_large_system_hash); 262144 is what common
# hosts get [measured on 6.18: tcp_ehash_entries -262144, tcp_max_tw_buckets 131072].
TCP_MAX_TW_BUCKETS_EHASH_DIVISOR: Final = 2
TCP_EHASH_ENTRIES_TYPICAL: Final = 262144
# "tcp: randomize tcp timestamp offsets for each connection" (4.10): from this release to the
# removal of tcp_tw_recycle (4.12) its per-peer timestamp check misfired for every client.
TCP_TS_OFFSET_RANDOMIZED_SINCE: Final = (4, 10)

# --- Orphans, accept queue, descriptors (closing-state rules) -----------------------------
# tcp_out_of_resources() (net/ipv4/tcp_timer.c) doubles an orphan's weight in
# tcp_too_many_orphans(orphans << shift > tcp_max_orphans) once for being idle longer than
# 2 x TCP_RTO_MAX (or probing a zero window) and once more for a soft error (ICMP), so the
# most penalised orphans are killed past tcp_max_orphans >> 2.
TCP_ORPHAN_PENALTY_SHIFT_MAX: Final = 2
# sk_acceptq_is_full() (include/net/inet_connection_sock.h): sk_ack_backlog >
# sk_max_ack_backlog, so listen(N) queues N + 1 connections before it drops [measured].
ACCEPT_QUEUE_SLACK: Final = 1
INR_OPEN_CUR: Final = 1024  # include/uapi/linux/fs.h: the soft RLIMIT_NOFILE init starts with
