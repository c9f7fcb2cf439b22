"""keepalive-vs-idle-timeout and slow-failure-detection against real sockets.

Each test builds two `tdlab-` namespaces joined by a veth pair (client 198.18.1.1, server
198.18.1.2), makes the sockets from this process (a thread enters the namespace, the
socket stays there), drops packets with an nftables table `tdlab-drop` inside the server
namespace, and diagnoses the client namespace with the doctor's own collect(). Sysctls
are only set inside these namespaces. Everything is deleted in a finally.
"""

from __future__ import annotations

import contextlib
import errno
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from tcpdoctor.diagnose.context import Context, DoctorOptions
from tcpdoctor.diagnose.engine import diagnose
from tcpdoctor.diagnose.idle_timeouts import parse_idle_timeout
from tcpdoctor.diagnose.model import Finding, Severity
from tcpdoctor.diagnose.rules import keepalive_vs_idle_timeout as keepalive_rule
from tcpdoctor.diagnose.rules import slow_failure_detection as slow_rule
from tcpdoctor.diagnose.rules._liveness import initial_rto
from tcpdoctor.diagnose.watch import collect
from tcpdoctor.kernel.states import TcpState
from tcpdoctor.kernel.timing import established_give_up, syn_give_up
from tcpdoctor.observe.netns import NetnsTarget, run_in

pytestmark = pytest.mark.kernel

CLIENT, SERVER, BLACKHOLE = "198.18.1.1", "198.18.1.2", "198.18.1.3"
NFT_TABLE = "tdlab-drop"
TIMEOUT = 30
RULES = (keepalive_rule.RULE, slow_rule.RULE)


def _sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Lab:
    """Two namespaces over a veth pair; sockets made here are closed by close()."""

    client: str
    server: str
    socks: list[socket.socket] = field(default_factory=list)

    @property
    def client_ns(self) -> NetnsTarget:
        return NetnsTarget(f"/run/netns/{self.client}", self.client)

    @property
    def server_ns(self) -> NetnsTarget:
        return NetnsTarget(f"/run/netns/{self.server}", self.server)

    def sysctl(self, netns: str, name: str, value: int) -> None:
        _sh("ip", "netns", "exec", netns, "sysctl", "-qw", f"{name}={value}")

    def nft(self, *commands: str) -> None:
        for command in commands:
            _sh("ip", "netns", "exec", self.server, "nft", command)

    def drop_in_server(self, match: str) -> None:
        """An nftables table in the server namespace dropping what `match` selects."""
        self.nft(
            f"add table inet {NFT_TABLE}",
            f"add chain inet {NFT_TABLE} in "
            "{ type filter hook prerouting priority -300; policy accept; }",
            f"add rule inet {NFT_TABLE} in {match} counter drop",
        )

    def dropped(self) -> int:
        listing = _sh("ip", "netns", "exec", self.server, "nft", f"list table inet {NFT_TABLE}")
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))

    def keep(self, sock: socket.socket) -> socket.socket:
        self.socks.append(sock)
        return sock

    def listen(self, port: int) -> socket.socket:
        def work() -> socket.socket:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((SERVER, port))
            sock.listen(64)
            sock.settimeout(5)
            return sock

        return self.keep(run_in(self.server_ns, work))

    def connect(
        self, listener: socket.socket, port: int, setup: Callable[[socket.socket], None]
    ) -> tuple[socket.socket, socket.socket]:
        """An ESTABLISHED pair that has carried one byte each way."""

        def work() -> socket.socket:
            sock = socket.socket()
            setup(sock)
            sock.settimeout(5)
            sock.connect((SERVER, port))
            return sock

        client = self.keep(run_in(self.client_ns, work))
        server, _ = listener.accept()
        self.keep(server)
        client.sendall(b"q")
        assert server.recv(1) == b"q"
        server.sendall(b"a")
        assert client.recv(1) == b"a"
        return client, server

    def diagnose(
        self, netns: NetnsTarget, options: DoctorOptions, *, watch: float = 0.0
    ) -> list[Finding]:
        ctx: Context = collect(netns, options, watch=watch, interval=0.5)
        found = diagnose(ctx, RULES)
        assert found.skipped == (), found.skipped
        return list(found.findings)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    tag = uuid.uuid4().hex[:8]
    made = Lab(f"tdlab-lc-{tag}", f"tdlab-ls-{tag}")
    try:
        for name in (made.client, made.server):
            _sh("ip", "netns", "add", name)
            _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh(
            "ip", "-n", made.client, "link", "add", "tdlab-c", "type", "veth",
            "peer", "name", "tdlab-s", "netns", made.server,
        )  # fmt: skip
        _sh("ip", "-n", made.client, "addr", "add", f"{CLIENT}/24", "dev", "tdlab-c")
        _sh("ip", "-n", made.server, "addr", "add", f"{SERVER}/24", "dev", "tdlab-s")
        _sh("ip", "-n", made.server, "addr", "add", f"{BLACKHOLE}/32", "dev", "tdlab-s")
        _sh("ip", "-n", made.client, "link", "set", "tdlab-c", "up")
        _sh("ip", "-n", made.server, "link", "set", "tdlab-s", "up")
        yield made
    finally:
        made.close()
        for name in (made.client, made.server):
            subprocess.run(
                ["ip", "netns", "delete", name], capture_output=True, timeout=TIMEOUT, check=False
            )


def by_subject(findings: list[Finding], rule: str) -> dict[str, Finding]:
    return {f.subject: f for f in findings if f.rule == rule}


def evidence(finding: Finding) -> dict[str, object]:
    return {e.key: e.value for e in finding.evidence}


def number(finding: Finding, key: str) -> float:
    value = evidence(finding)[key]
    assert isinstance(value, int | float), (key, value)
    return float(value)


def _keepalive(
    idle: int | None = None, intvl: int | None = None
) -> Callable[[socket.socket], None]:
    def setup(sock: socket.socket) -> None:
        if idle is None:
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        if intvl is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, intvl)

    return setup


# (a) ------------------------------------------------------------------------------------

# port -> (TCP_KEEPIDLE, TCP_KEEPINTVL, connections); None = no SO_KEEPALIVE
POOLS = {
    7001: (None, None, 3),
    7002: (600, None, 3),
    7003: (1, 1, 3),
    7004: (1, None, 2),  # keepidle below the timeout, but the default intvl is 75 s
}
IDLE_FOR_S = 3.2
IDLE_TIMEOUT = 2.0


def test_idle_connections_without_fast_enough_keepalive_are_at_risk() -> None:
    with lab() as made:
        for port, (idle, intvl, count) in POOLS.items():
            listener = made.listen(port)
            for _ in range(count):
                made.connect(listener, port, _keepalive(idle, intvl))
        time.sleep(IDLE_FOR_S)
        options = DoctorOptions(idle_timeout=IDLE_TIMEOUT, idle_timeout_source="--idle-timeout")
        found = by_subject(made.diagnose(made.client_ns, options), keepalive_rule.RULE_ID)

        none = evidence(found[f"connections to {SERVER}:7001"])
        assert none["without_keepalive"] == 3 and none["keepalive_too_slow"] == 0
        assert none["idle_past_timeout"] == 3
        longest = number(found[f"connections to {SERVER}:7001"], "longest_idle_s")
        assert IDLE_FOR_S - 0.5 <= longest <= IDLE_FOR_S + 2
        assert found[f"connections to {SERVER}:7001"].severity is Severity.WARNING

        slow = evidence(found[f"connections to {SERVER}:7002"])
        assert slow["keepalive_too_slow"] == 3 and slow["without_keepalive"] == 0
        assert 599 <= number(found[f"connections to {SERVER}:7002"], "keepalive_gap_s") <= 600.5

        # keepidle=1, intvl=1: probes every second, below the 2 s timeout -> not at risk.
        assert f"connections to {SERVER}:7003" not in found
        # keepidle=1 with the default 75 s intvl: after the first answered probe the timer
        # is re-armed for 75 s, so the middlebox sees 75 s of silence -> at risk.
        every75 = evidence(found[f"connections to {SERVER}:7004"])
        assert every75["keepalive_too_slow"] == 2
        assert 74 <= number(found[f"connections to {SERVER}:7004"], "keepalive_gap_s") <= 75.5
        assert len(found) == 3

        # No timeout given: the namespace's conntrack (5 days) or nothing -> silent.
        assert made.diagnose(made.client_ns, DoctorOptions()) == []


def test_a_watch_on_the_server_side_tells_probed_clients_from_silent_ones() -> None:
    with lab() as made:
        for port in (7001, 7003):
            idle, intvl, count = POOLS[port]
            listener = made.listen(port)
            for _ in range(count):
                made.connect(listener, port, _keepalive(idle, intvl))
        # Timeout 4 s: the silent clients pass it during the 1.5 s watch; the probed ones
        # are capped at the watch's length, below half the timeout.
        time.sleep(3.0)
        idle_timeout, source = parse_idle_timeout("4s")
        options = DoctorOptions(idle_timeout=idle_timeout, idle_timeout_source=source)
        found = by_subject(
            made.diagnose(made.server_ns, options, watch=1.5), keepalive_rule.RULE_ID
        )
        # Accepted sockets whose clients send keepalive probes every second moved their
        # segment counters during the watch; the silent ones did not.
        assert list(found) == ["clients of local port 7001"]
        finding = found["clients of local port 7001"]
        assert evidence(finding)["at_risk_connections"] == 3
        assert finding.severity is Severity.WARNING


# (b) ------------------------------------------------------------------------------------

RETRIES2 = 8  # budget 102.2 s instead of the default 924.6 s


def test_retransmitting_connection_reports_the_tcp_retries2_give_up() -> None:
    with lab() as made:
        made.sysctl(made.client, "net.ipv4.tcp_retries2", RETRIES2)
        listener = made.listen(7010)
        client, _server = made.connect(listener, 7010, _keepalive())
        made.drop_in_server(f"ip saddr {CLIENT} tcp dport 7010")
        client.setblocking(False)
        sent_at = time.monotonic()
        client.send(b"into the void")
        time.sleep(2.5)
        looked_from = time.monotonic() - sent_at
        ctx = collect(made.client_ns, DoctorOptions())
        looked_to = time.monotonic() - sent_at
        found = by_subject(list(diagnose(ctx, RULES).findings), slow_rule.RULE_ID)
        finding = found[f"connections to {SERVER}:7010"]
        values = evidence(finding)

        assert made.dropped() >= 3
        row = int(np.flatnonzero(ctx.sockets["dport"] == 7010)[0])
        assert ctx.sockets["state"][row] == TcpState.ESTABLISHED
        assert ctx.sockets["timer"][row] == 1 and ctx.sockets["retrans"][row] >= 2
        assert ctx.snapshot.info is not None
        info = ctx.snapshot.info[row]
        base = initial_rto(int(info["rto_us"]), int(info["backoff"]), 120.0)
        model = established_give_up(RETRIES2, initial_rto=base)
        assert values["tcp_retries2"] == RETRIES2
        assert values["give_up_budget_s"] == model.budget == 102.2
        assert values["gives_up_after_s"] == round(model.schedule.gives_up_at, 1)
        # The schedule starts at the first RTO; the tail loss probe before it shifts it.
        assert looked_from - 1.0 <= number(finding, "retransmitting_for_s") <= looked_to + 0.5
        assert finding.severity is Severity.WARNING  # 102 s > 30 s
        assert all(f.rule == slow_rule.RULE_ID for f in found.values())


# (c) ------------------------------------------------------------------------------------


def test_syn_sent_to_a_blackhole_reports_the_syn_give_up() -> None:
    with lab() as made:
        made.drop_in_server(f"ip daddr {BLACKHOLE}")

        def start() -> socket.socket:
            sock = socket.socket()
            sock.setblocking(False)
            code = sock.connect_ex((BLACKHOLE, 80))
            assert code == errno.EINPROGRESS, errno.errorcode.get(code, code)
            return sock

        started = time.monotonic()
        made.keep(run_in(made.client_ns, start))
        time.sleep(2.3)
        looked_from = time.monotonic() - started
        findings = made.diagnose(made.client_ns, DoctorOptions())
        looked_to = time.monotonic() - started
        (finding,) = findings
        values = evidence(finding)

        assert made.dropped() >= 2
        assert finding.rule == slow_rule.RULE_ID
        assert finding.subject == f"connections to {BLACKHOLE}:80"
        assert values["syn_give_up_s"] == syn_give_up().schedule.gives_up_at == 131.0
        assert values["tcp_syn_retries"] == 6 and values["tcp_syn_linear_timeouts"] == 4
        assert number(finding, "max_syn_retransmits") >= 2
        assert looked_from - 0.5 <= number(finding, "connecting_for_s") <= looked_to + 0.5
        assert 131 - looked_to - 0.5 <= number(finding, "gives_up_in_s") <= 131 - looked_from + 0.5
        assert "TCP_TIMEOUT_INIT" in finding.explanation
        assert finding.severity is Severity.WARNING


# (d) ------------------------------------------------------------------------------------


def test_healthy_population_triggers_neither_rule() -> None:
    with lab() as made:
        listener = made.listen(7020)
        pairs = [made.connect(listener, 7020, _keepalive()) for _ in range(20)]
        pairs += [made.connect(listener, 7020, _keepalive(60, 10)) for _ in range(5)]
        for _ in range(10):  # TIME_WAIT on the client side: it closes first
            client, server = made.connect(listener, 7020, _keepalive())
            client.close()
            assert server.recv(1) == b""  # the client's FIN arrived: no simultaneous close
            server.close()
        time.sleep(0.5)
        for client, server in pairs:  # a request/response just before we look
            client.sendall(b"ping")
            assert server.recv(4) == b"ping"
        for options in (
            DoctorOptions(),
            DoctorOptions(idle_timeout=350.0, idle_timeout_source="aws-nlb"),
            DoctorOptions(idle_timeout=30.0, idle_timeout_source="--idle-timeout"),
        ):
            for netns in (made.client_ns, made.server_ns):
                ctx = collect(netns, options)
                if netns is made.client_ns:
                    states = ctx.snapshot.count_by_state()
                    assert states[TcpState.ESTABLISHED] == 25
                    assert states[TcpState.TIME_WAIT] == 10
                found = diagnose(ctx, RULES)
                assert found.findings == () and found.skipped == ()
