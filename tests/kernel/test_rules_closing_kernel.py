"""The closing-state rules against real reproductions on the running kernel.

Each test makes its own `tdlab-t-…` namespace, builds the state with small stdlib-only Python
actors started inside it (tests/support/netns.TestNetns.popen), collects a snapshot or a short
watch with the doctor's own collector, and checks the rule's evidence against what the actors
built. Actors report one JSON line when their state is in place, die with the test process
(PR_SET_PDEATHSIG) and exit on their own after HOLD_S; the namespace is deleted in a finally.
Only loopback traffic inside the namespace; no sysctl is changed anywhere.
"""

from __future__ import annotations

import json
import select
import time
from collections.abc import Iterator, Sequence

import pytest

from support import netns as netns_support
from tcpdoctor.diagnose.context import Context, DoctorOptions
from tcpdoctor.diagnose.engine import diagnose
from tcpdoctor.diagnose.model import Finding, Severity
from tcpdoctor.diagnose.rules import (
    abortive_close,
    close_wait_leak,
    fd_limits,
    fin_wait1_stuck,
    fin_wait2,
    last_ack_stuck,
    listen_queue_overflow,
    orphans,
)
from tcpdoctor.diagnose.watch import collect
from tcpdoctor.kernel.timing import orphan_give_up
from tcpdoctor.observe import netns as netns_mod

pytestmark = pytest.mark.kernel

RULES = tuple(
    m.RULE
    for m in (
        close_wait_leak,
        fin_wait2,
        fin_wait1_stuck,
        last_ack_stuck,
        orphans,
        abortive_close,
        listen_queue_overflow,
        fd_limits,
    )
)
HOLD_S = 40.0  # an actor exits by itself after this
READY_S = 20.0  # how long an actor may take to build its state
LEAK = 120  # CLOSE_WAITs leaked by one process (>= 100: a warning)
HALF = 12  # half-closed connections kept open (>= 10: reported)
ABORTS = 10  # zero-linger closes during the watch
STUCK_WAIT_S = 8.0

# One stdlib-only program, several roles. argv: role, JSON arguments.
ACTOR = r"""
import ctypes, json, os, signal, socket, struct, sys, time

role, args = sys.argv[1], json.loads(sys.argv[2])
ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
deadline = time.monotonic() + args["hold_s"]
held = []
LO = "127.0.0.1"
announced = []

def announce():
    if not announced:
        print(json.dumps({"pid": os.getpid()}), flush=True)
        announced.append(True)

def listener(port, backlog=128):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((LO, port))
    s.listen(backlog)
    s.settimeout(5)
    held.append(s)
    return s

def pair(lst, port):
    c = socket.create_connection((LO, port), timeout=5)
    s, _ = lst.accept()
    return c, s

def count(state, port):
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    return sum(1 for r in rows if r[3] == state and int(r[1].split(":")[1], 16) == port)

def settle(state, port, n):
    limit = time.monotonic() + 10
    while count(state, port) != n:
        if time.monotonic() > limit:
            raise SystemExit(f"{state} on {port}: {count(state, port)} != {n}")
        time.sleep(0.02)

if role == "leaky":  # accepts and never closes: CLOSE_WAIT here, orphaned FIN_WAIT2 there
    lst = listener(args["port"])
    for _ in range(args["n"]):
        c, s = pair(lst, args["port"])
        c.close()
        held.append(s)
    settle("08", args["port"], args["n"])
elif role == "halfclose":  # shutdown(SHUT_WR) with the fd kept: FIN_WAIT2 owned here
    lst = listener(args["port"])
    for _ in range(args["n"]):
        c, s = pair(lst, args["port"])
        c.shutdown(socket.SHUT_WR)
        held += [c, s]
    settle("08", args["port"], args["n"])
elif role == "backlog":  # listen(1) and never accept()
    listener(args["port"], backlog=1)
elif role == "clients":  # connect (non-blocking) after a delay
    announce()
    time.sleep(args["delay_s"])
    for _ in range(args["n"]):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex((LO, args["port"]))
        held.append(c)
elif role == "aborter":  # established pairs, then zero-linger closes and one unread close
    lst = listener(args["port"])
    pairs = [pair(lst, args["port"]) for _ in range(args["n"])]
    unread_c, unread_s = pair(lst, args["port"])
    unread_c.sendall(b"request nobody reads")
    held += [s for _, s in pairs] + [unread_c]
    announce()
    time.sleep(args["delay_s"])
    for c, _ in pairs:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    unread_s.close()
elif role == "healthy":  # busy but well-behaved: open pairs, finished exchanges, a listener
    lst = listener(args["port"])
    for _ in range(args["n"]):
        held += list(pair(lst, args["port"]))
    for _ in range(5):  # request/response, client closes first, server reads EOF and closes
        c, s = pair(lst, args["port"])
        c.sendall(b"ping")
        s.recv(16)
        s.sendall(b"pong")
        c.recv(16)
        c.close()
        while s.recv(16):
            pass
        s.close()
elif role == "vanish":  # the client side drops everything from the server, then it closes
    import subprocess
    lst = listener(args["port"])
    a_c, a_s = pair(lst, args["port"])
    a_c.close()  # a_s: CLOSE_WAIT, and LAST_ACK once it closes
    b_c, b_s = pair(lst, args["port"])  # b_s: FIN_WAIT1 once it closes
    held += [a_c, b_c]
    settle("08", args["port"], 1)
    table = args["table"]
    clients = ", ".join(str(p) for p in (a_s.getpeername()[1], b_c.getsockname()[1]))
    for rule in (
        f"add table inet {table}",
        f"add chain inet {table} in {{ type filter hook input priority 0; policy accept; }}",
        f"add rule inet {table} in tcp sport {args['port']} tcp dport {{ {clients} }} drop",
    ):
        subprocess.run(["nft", rule], check=True, timeout=10)
    a_s.close()
    b_s.close()
elif role == "fdhog":  # a low open-files limit, nearly used up by sockets
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (args["limit"], args["limit"]))
    lst = listener(args["port"])
    while len(os.listdir("/proc/self/fd")) < args["fds"] - 1:
        held += list(pair(lst, args["port"]))
else:
    raise SystemExit(f"unknown role {role}")

announce()
while time.monotonic() < deadline:
    time.sleep(0.2)
"""


def start(ns: netns_support.TestNetns, role: str, **args: object) -> int:
    """Start an actor in `ns`; return its pid once it reports ready."""
    proc = ns.popen(
        [netns_support.PYTHON, "-c", ACTOR, role, json.dumps({"hold_s": HOLD_S, **args})]
    )
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + READY_S
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            break
    if not line:
        proc.kill()
        raise AssertionError(f"actor {role} not ready: {proc.stderr.read()[-2000:]}")
    pid = json.loads(line)["pid"]
    assert pid == proc.pid  # `ip netns exec` execs the interpreter: same pid
    return int(pid)


@pytest.fixture
def ns() -> Iterator[netns_support.TestNetns]:
    with netns_support.netns("tdlab-t") as created:
        yield created


def look(ns: netns_support.TestNetns, *, watch: float = 0.0) -> Context:
    target = netns_mod.resolve(name=ns.name)
    return collect(target, DoctorOptions(), watch=watch, interval=0.5)


def findings(ctx: Context, rule_id: str) -> list[Finding]:
    result = diagnose(ctx, RULES)
    assert not [s for s in result.skipped if "internal error" in s.reason], result.skipped
    return [f for f in result.findings if f.rule == rule_id]


def ev(finding: Finding) -> dict[str, object]:
    return {e.key: e.value for e in finding.evidence}


def by(found: Sequence[Finding], key: str, value: object) -> Finding:
    hits = [f for f in found if ev(f).get(key) == value]
    assert len(hits) == 1, [(f.title, ev(f).get(key)) for f in found]
    return hits[0]


def test_close_wait_leak_and_both_kinds_of_fin_wait2(ns: netns_support.TestNetns) -> None:
    leaky = start(ns, "leaky", port=7000, n=LEAK)
    halfclose = start(ns, "halfclose", port=7001, n=HALF)
    ctx = look(ns, watch=1.0)

    leak = by(findings(ctx, "close-wait-leak"), "pid", leaky)
    e = ev(leak)
    assert leak.severity is Severity.WARNING
    assert (e["close_wait"], e["fin_unread"], e["persisted_over_watch"]) == (LEAK, LEAK, LEAK)
    assert e["comm"] == "python3" or str(e["comm"]).startswith("python")
    assert 1.0 <= float(str(e["oldest_age_s"])) < 30.0  # the watch span, at least
    assert f"pid {leaky}" in leak.title
    # The half-closer's own server ends are CLOSE_WAIT too (12 >= 10): reported, as info.
    assert ev(by(findings(ctx, "close-wait-leak"), "pid", halfclose))["close_wait"] == HALF

    fw2 = findings(ctx, "fin-wait2")
    orphaned = by(fw2, "peer", "127.0.0.1:7000")
    e = ev(orphaned)
    assert (e["fin_wait2_orphaned"], e["minisocks"], e["full_sockets"]) == (LEAK, LEAK, 0)
    assert (e["peer_close_wait_here"], e["peer_pid"]) == (LEAK, leaky)
    assert e["orphan_lifetime_s"] == 60.0 and 0.0 <= float(str(e["oldest_age_s"])) < 30.0
    owned = by(fw2, "pid", halfclose)
    e = ev(owned)
    assert (e["fin_wait2_owned"], e["timer"], e["peer"]) == (HALF, "none", "127.0.0.1:7001")
    assert "fin_wait2_orphaned" not in e


def test_listen_overflow_names_the_port_during_a_watch(ns: netns_support.TestNetns) -> None:
    server = start(ns, "backlog", port=7002)
    start(ns, "clients", port=7002, n=6, delay_s=0.3)
    ctx = look(ns, watch=2.0)
    finding = by(findings(ctx, "listen-queue-overflow"), "listen_port", 7002)
    e = ev(finding)
    assert finding.severity is Severity.CRITICAL
    assert (e["pid"], e["accept_queue"], e["backlog"], e["queue_full"]) == (server, 2, 1, True)
    assert e["listen_address"] == "127.0.0.1:7002"
    assert int(str(e["listen_overflows_delta"])) >= 4  # 4 clients found the queue full
    assert int(str(e["listen_drops_delta"])) >= int(str(e["listen_overflows_delta"]))


def test_zero_linger_closes_raise_abort_on_data(ns: netns_support.TestNetns) -> None:
    start(ns, "aborter", port=7003, n=ABORTS, delay_s=0.7)
    ctx = look(ns, watch=2.0)
    found = findings(ctx, "abortive-close")
    on_data = by(found, "abort_on_data_delta", ABORTS)
    assert on_data.severity is Severity.WARNING  # 10 in about 2 s
    assert int(str(ev(on_data)["out_rsts_delta"])) >= ABORTS + 1
    on_close = by(found, "abort_on_close_delta", 1)
    assert on_close.severity is Severity.INFO


def test_fins_nobody_acknowledges_are_stuck_in_fin_wait1_and_last_ack(
    ns: netns_support.TestNetns,
) -> None:
    start(ns, "vanish", port=7006, table="tdlab-vanish")
    deadline = time.monotonic() + STUCK_WAIT_S  # 3 retransmissions take about 1.4 s
    while True:
        ctx = look(ns)
        one, other = findings(ctx, "fin-wait1-stuck"), findings(ctx, "last-ack-stuck")
        if (one and other) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    for found, state in ((one, "FIN_WAIT1"), (other, "LAST_ACK")):
        finding = by(found, "peer", "127.0.0.1 (client of local port 7006)")
        e = ev(finding)
        assert (e["stuck"], e["orphaned"], e["retransmitting"], e["probing"]) == (1, 1, 1, 0)
        assert int(str(e["max_retransmissions"])) >= 3 and state in finding.title
        assert e["orphan_give_up_s"] == orphan_give_up(0).schedule.gives_up_at
        assert finding.severity is Severity.INFO


def test_process_near_its_open_files_limit(ns: netns_support.TestNetns) -> None:
    hog = start(ns, "fdhog", port=7004, limit=64, fds=62)
    finding = by(findings(look(ns), "fd-limits"), "pid", hog)
    e = ev(finding)
    assert (e["nofile_soft"], e["nofile_hard"]) == (64, 64)
    assert int(str(e["open_fds"])) >= 60 and int(str(e["tcp_sockets"])) >= 55
    assert finding.severity is Severity.WARNING


def test_healthy_population_keeps_every_closing_rule_silent(ns: netns_support.TestNetns) -> None:
    start(ns, "healthy", port=7005, n=20)
    ctx = look(ns, watch=1.0)
    result = diagnose(ctx, RULES)
    assert result.findings == (), [f.title for f in result.findings]
    assert result.skipped == ()
    # The namespace cannot see the host-wide orphan limit, and says so.
    assert any("tcp_max_orphans" in line for line in result.limitations)
