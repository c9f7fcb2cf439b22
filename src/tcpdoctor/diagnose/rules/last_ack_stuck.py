"""last-ack-stuck: the peer closed first, we closed after it, and our FIN is never acknowledged.

LAST_ACK normally lasts one round trip and ends without TIME_WAIT. A socket counts as stuck
once it has retried its FIN 3 times without an answer (retransmission or zero-window probe
timer): the peer vanished right after closing, or the path stopped carrying the flow. A
common cause: the application stayed in CLOSE_WAIT longer than a stateful firewall remembers
a closing flow, so its late FIN is dropped. Grouped by peer: 1-9 stuck sockets are info, 10
or more a warning; orphans give up after the tcp_orphan_retries budget, counted from the
first RTO retransmission [measured on 6.18, RTO 204 ms: tcp_orphan_retries=3 (3.0 s) ended
a LAST_ACK orphan after 6.77 s, =2 (1.4 s) after 3.36 s].

Evidence: the same keys as fin-wait1-stuck (peer, stuck, orphaned, owned, retransmitting,
probing, max_retransmissions, peer_silent_s, tcp_orphan_retries, orphan_retries_effective,
orphan_give_up_s, orphan_late_give_up_s, owned_give_up_s).
"""

from __future__ import annotations

from collections.abc import Iterator

from tcpdoctor.diagnose.context import Context
from tcpdoctor.diagnose.model import Finding, Fix, FixKind, Rule
from tcpdoctor.diagnose.rules._fin_retransmit import StuckKind, stuck_findings
from tcpdoctor.kernel.constants import NF_CT_TCP_TIMEOUT_CLOSE_WAIT
from tcpdoctor.kernel.states import TcpState

RULE_ID = "last-ack-stuck"

KIND = StuckKind(
    rule_id=RULE_ID,
    state=TcpState.LAST_ACK,
    situation=(
        "The peer closed first; this side read the end of stream, closed, and sent its own FIN, "
        "which the peer should acknowledge at once from its FIN_WAIT2."
    ),
    extra_fix=Fix(
        FixKind.APPLICATION,
        "Close promptly after the peer closes",
        "A close that comes long after the peer's FIN may meet a middlebox that has already "
        f"forgotten the flow: Linux conntrack keeps a flow in CLOSE_WAIT for "
        f"{NF_CT_TCP_TIMEOUT_CLOSE_WAIT} s by default, and the peer's own FIN_WAIT2 ends after "
        "tcp_fin_timeout. See close-wait-leak.",
        "if not sock.recv(65536):\n    sock.close()",
    ),
    topics=("retries", "orphans", "close-wait", "rto"),
)


def check(ctx: Context) -> Iterator[Finding]:
    yield from stuck_findings(ctx, KIND)


RULE = Rule(RULE_ID, "LAST_ACK sockets retransmitting a FIN nobody acknowledges", check)
