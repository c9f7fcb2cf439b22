"""fin-wait1-stuck: this side closed and its FIN is never acknowledged.

FIN_WAIT1 normally lasts one round trip. A socket counts as stuck once it has retried its FIN
(or the data queued before it) 3 times without an answer, on the retransmission timer or the
zero-window probe timer: a peer that vanished, a path that drops the flow, a peer that stopped
reading, or a local firewall dropping our own output. Grouped by peer: 1-9 stuck sockets are
info, 10 or more a warning. Orphans give up after the tcp_orphan_retries budget (0 means 8,
102.2 s), sockets still held by a process after the tcp_retries2 budget (924.6 s); both
budgets run from the first RTO retransmission (the kernel's retrans_stamp), so at the
minimum RTO an orphan ends 204.6 s after its FIN, or at 102.2 s when late timers (judged
at HZ=250) use up the last 0.2 s.

Evidence: peer, stuck, orphaned, owned, retransmitting, probing, max_retransmissions,
peer_silent_s, tcp_orphan_retries, orphan_retries_effective, orphan_give_up_s,
orphan_late_give_up_s, owned_give_up_s.
"""

from __future__ import annotations

from collections.abc import Iterator

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Finding, Fix, FixKind, Rule
from tcpdoctor.diagnose.rules._fin_retransmit import StuckKind, stuck_findings
from tcpdoctor.kernel.states import TcpState

RULE_ID = "fin-wait1-stuck"

KIND = StuckKind(
    rule_id=RULE_ID,
    state=TcpState.FIN_WAIT1,
    situation=(
        "This side called close() or shutdown() and sent its FIN; the peer has acknowledged "
        "neither the FIN nor, possibly, the last data queued before it."
    ),
    extra_fix=Fix(
        FixKind.SOCKET_OPTION,
        "Bound sockets the application still holds with TCP_USER_TIMEOUT",
        "A socket closed with shutdown() but kept open retries for the whole tcp_retries2 "
        "budget; TCP_USER_TIMEOUT (ms) caps how long unacknowledged data and FINs may wait.",
        "setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &(int){30000}, sizeof(int));",
    ),
    topics=("retries", "orphans", "rto", "user-timeout"),
)


def check(ctx: Context) -> Iterator[Finding]:
    yield from stuck_findings(ctx, KIND)


RULE = Rule(RULE_ID, "FIN_WAIT1 sockets retransmitting a FIN nobody acknowledges", check)
