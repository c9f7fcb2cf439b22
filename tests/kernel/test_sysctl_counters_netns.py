"""The sysctl and counter readers against real namespaces on the running kernel.

Each test creates its own `tdlab-t-<random>` namespace, changes sysctls only inside it, and
deletes it in a finally. The host's own settings are only read, never written.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tcpdoctor.kernel.sysctls import SYSCTLS
from tcpdoctor.observe.counters import CounterSnapshot, read_counters
from tcpdoctor.observe.sysctls import ReadStatus, SysctlValues, read_sysctls

pytestmark = pytest.mark.kernel

SRC = Path(__file__).resolve().parents[2] / "src"
CLONE_NEWNET = 0x40000000
TIMEOUT = 60


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"tdlab-t-{secrets.token_hex(4)}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(
            ["ip", "netns", "delete", name], capture_output=True, timeout=TIMEOUT, check=False
        )


def _python_in(netns: str, code: str) -> Any:
    """Run `code` with this interpreter inside `netns`; it prints one JSON document."""
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", code]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"child in {netns} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def _sysctl_in(netns: str, name: str, value: str) -> None:
    _run("ip", "netns", "exec", netns, "sysctl", "-q", "-w", f"{name}={value}")


def _differs(host: SysctlValues, name: str, first: Any, second: Any) -> Any:
    """A value for `name` that the host does not have."""
    return second if host.value(name) == first else first


READ_SYSCTLS_JSON = """
import json
from tcpdoctor.observe.sysctls import read_sysctls
print(json.dumps({r.name: [r.status.value, r.value, r.reason] for r in read_sysctls()}))
"""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def test_sysctls_read_inside_a_netns_are_that_netns(netns: str) -> None:
    host = read_sysctls()
    wanted: dict[str, Any] = {
        "net.ipv4.tcp_fin_timeout": _differs(host, "net.ipv4.tcp_fin_timeout", 17, 18),
        "net.ipv4.tcp_keepalive_time": _differs(host, "net.ipv4.tcp_keepalive_time", 4242, 4243),
        "net.ipv4.tcp_tw_reuse": _differs(host, "net.ipv4.tcp_tw_reuse", 0, 1),
        "net.ipv4.ip_local_port_range": _differs(
            host, "net.ipv4.ip_local_port_range", (40000, 40999), (41000, 41999)
        ),
    }
    for name, value in wanted.items():
        _sysctl_in(netns, name, SYSCTLS[name].format(value))

    inside = _python_in(netns, READ_SYSCTLS_JSON)

    for name, value in wanted.items():
        assert inside[name][:2] == ["present", _jsonable(value)], name
        assert _jsonable(host.value(name)) != inside[name][1], name


def test_host_wide_and_removed_knobs_are_absent_in_a_child_netns(netns: str) -> None:
    inside = _python_in(netns, READ_SYSCTLS_JSON)
    status, value, reason = inside["net.ipv4.tcp_max_orphans"]
    assert (status, value) == ("absent", None)
    assert "initial network namespace" in reason
    assert inside["net.ipv4.tcp_tw_recycle"][0] == "absent"  # gone since 4.12
    assert inside["fs.nr_open"][0] == "present"  # fs.* is not namespaced at all


TIME_WAIT_JSON = """
import json, socket, time
from tcpdoctor.observe.counters import read_counters

before = read_counters()
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
client.close()  # the side that closes first is the one left in TIME_WAIT
time.sleep(0.05)
server.close()
deadline = time.monotonic() + 5
after = read_counters()
while after.sockstat.tcp_tw < 1 and time.monotonic() < deadline:
    time.sleep(0.05)
    after = read_counters()
print(json.dumps({
    "tw_before": before["TcpExt.TW"], "tw_after": after["TcpExt.TW"],
    "inuse_before": before.sockstat.tcp_inuse, "sockstat_tw": after.sockstat.tcp_tw,
    "active_opens": after.delta(before, "Tcp.ActiveOpens"),
}))
"""


def test_time_wait_is_counted_in_the_netns(netns: str) -> None:
    seen = _python_in(netns, TIME_WAIT_JSON)
    assert seen["inuse_before"] == 0  # a fresh namespace has no TCP sockets: per-netns gauge
    assert seen["tw_after"] >= seen["tw_before"] + 1
    assert seen["sockstat_tw"] >= 1
    assert seen["active_opens"] == 1


ORPHAN_JSON = """
import json, socket, sys, time
from tcpdoctor.observe.counters import read_counters

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
client = socket.socket()
client.connect(listener.getsockname())
server, _ = listener.accept()
server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
client.setblocking(False)
try:  # fill the peer's window so close() leaves unsent data: an orphan in FIN_WAIT1
    while True:
        client.send(b"x" * 65536)
except BlockingIOError:
    pass
client.close()
time.sleep(0.2)
here = read_counters()
host = read_counters(proc_net=sys.argv[1])
print(json.dumps({"netns_orphan": here.sockstat.tcp_orphan, "host_orphan": host.sockstat.tcp_orphan,
                  "netns_inuse": here.sockstat.tcp_inuse}))
"""


def test_sockstat_orphans_are_host_wide(netns: str) -> None:
    host_net = f"/proc/{os.getpid()}/net"  # this test process stays in the original netns
    code = f"import sys; sys.argv[1:] = [{host_net!r}]\n" + ORPHAN_JSON
    seen = _python_in(netns, code)
    assert seen["netns_orphan"] >= 1
    # The orphan lives in the child netns, yet the host's sockstat counts it too.
    assert seen["host_orphan"] >= 1
    assert seen["netns_inuse"] >= 2


def _in_thread_inside(netns: str, work: Callable[[], Any]) -> Any:
    """Run `work` in a fresh thread that has joined `netns`; the thread then exits."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            outcome["value"] = work()
        except BaseException as exc:  # handed back to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(TIMEOUT)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_thread_inside_a_netns_reads_that_netns(netns: str) -> None:
    _sysctl_in(netns, "net.ipv4.tcp_fin_timeout", "23")

    def work() -> tuple[SysctlValues, CounterSnapshot, CounterSnapshot]:
        import socket

        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            sysctls = read_sysctls()  # /proc/sys/net follows the calling thread
            mine = read_counters(proc_net="/proc/thread-self/net")
            leader = read_counters(proc_net="/proc/self/net")  # the thread-group leader's
        return sysctls, mine, leader

    sysctls, mine, leader = _in_thread_inside(netns, work)
    assert sysctls.value("tcp_fin_timeout") == 23
    assert sysctls["tcp_max_orphans"].status is ReadStatus.ABSENT
    assert mine.sockstat.tcp_inuse == 1  # just our listener in the fresh netns
    assert mine.proc_net == "/proc/thread-self/net"
    assert leader.sockstat.fields != mine.sockstat.fields
