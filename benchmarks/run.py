"""Side-by-side benchmark: tcpdoctor against ss, psutil and pyroute2 on one socket population.

For each size the runner builds a population in a fresh `tdlab-bench-*` namespace
(benchmarks/population.py), then runs every tool as its own process inside that namespace.
A small wrapper (this file, `_measure`) runs inside the namespace, starts the tool under
GNU time (for its peak RSS), and times it from fork to wait4(), so neither `ip netns exec`
nor the wrapper is measured. Timed runs of ss and `tcpdoctor scan` write to /dev/null; one
extra, untimed run of each reads their output to count the sockets they printed. Python
tools (library calls, psutil, pyroute2) report their count and in-process call time.

TIME_WAITs vanish 60 s after they are made, so measurements are scheduled into the window
where at least 95% of the population still exists; when the next one would not fit, the
population is rebuilt in a new namespace. Every sample records the namespace's socket
count just before and after it.

    .venv/bin/python benchmarks/run.py                      # 100k and 1M, 3 repeats
    .venv/bin/python benchmarks/run.py --quick              # 20k, 1 repeat (CI smoke)
    .venv/bin/python benchmarks/run.py --sizes 100000 --repeat 5 --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
DEFAULT_OUT = HERE.parent / "results" / "latest.json"
PYTHON = sys.executable
TCPDOCTOR = str(Path(PYTHON).with_name("tcpdoctor"))

VALID_SHARE = 0.95  # a sample counts when the tool saw at least this share of the sockets
QUICK_SIZE = 20_000
QUICK_CAP_S = 20.0
DEFAULT_CAP_S = 50.0
COUNT_RUN = -1  # the repeat number of a CLI tool's untimed counting run
MAX_ROUNDS_PER_SIZE = 12  # population rebuilds per size, whatever happens
SETTLE_TIMEOUT_S = 30.0  # waiting for a deleted namespace's TIME_WAITs to be freed
PIPE_BYTES = 1 << 20  # tool stdout pipe size: the reader never throttles the writer
OUTER_GRACE_S = 60.0  # extra time the host side gives a wrapper beyond the tool's cap
HEAD_BYTES = 64 << 10  # output kept from a CLI tool (the scan JSON header is in it)
GNU_TIME = "/usr/bin/time"


# ----------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Tool:
    key: str
    label: str
    argv: tuple[str, ...]
    kind: str  # "child" (prints one JSON line), "lines" (ss), "scan_json" (meta.socket_count)
    slow: bool  # an anchor that may need a population of its own at large sizes
    per_socket_s: float  # first guess of its cost, until measured
    base_s: float
    once: bool = False  # a side measurement, not repeated and not a table column

    @property
    def prints_sockets(self) -> bool:
        """Timed with stdout on /dev/null; its count comes from one extra, untimed run."""
        return self.kind in {"lines", "scan_json"}


def _child(name: str) -> tuple[str, ...]:
    return (PYTHON, str(HERE), "_child", name)


TOOLS: tuple[Tool, ...] = (
    Tool("snapshot", "snapshot", _child("snapshot"), "child", False, 2e-6, 0.5),
    Tool("scan_json", "scan --json", (TCPDOCTOR, "scan", "--json"), "scan_json", False, 4e-6, 0.6),
    Tool("doctor", "doctor --json", (TCPDOCTOR, "doctor", "--json"), "scan_json", False, 4e-6, 0.8),
    Tool("ss_tan", "ss -tan", ("ss", "-tan"), "lines", False, 2.5e-6, 0.1),
    Tool("ss_tanp", "ss -tanp", ("ss", "-tanp"), "lines", False, 3e-6, 0.2),
    Tool("owners", "owners", _child("owners"), "child", False, 2e-6, 0.5),
    Tool("traced", "take traced", _child("traced"), "child", False, 6e-6, 0.5, once=True),
    Tool("psutil", "psutil", _child("psutil"), "child", True, 1.5e-5, 0.5),
    Tool("pyroute2", "pyroute2", _child("pyroute2"), "child", True, 7e-5, 0.8),
)
TOOL_BY_KEY = {tool.key: tool for tool in TOOLS}


# ------------------------------------------------------------- children (in the netns)


def _vm_hwm_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def child_snapshot() -> dict[str, Any]:
    """The library call as a program would make it: import, take(), done."""
    import tcpdoctor.observe.snapshot as snapshot_mod

    hwm_before = _vm_hwm_kib()
    t0 = time.perf_counter()
    snap = snapshot_mod.take()
    call_s = time.perf_counter() - t0
    return {
        "count": len(snap),
        "call_s": call_s,
        "reader_elapsed_s": snap.meta.elapsed_s,
        "source": snap.meta.source.value,
        "interrupted": snap.meta.interrupted,
        "nbytes": snap.nbytes,
        "bytes_per_socket": snap.nbytes / max(len(snap), 1),
        "hwm_before_kib": hwm_before,
        "hwm_after_kib": _vm_hwm_kib(),
    }


def child_owners() -> dict[str, Any]:
    """Owner lookup for the CLOSE_WAIT subset, timed after a snapshot (as `scan -p` would)."""
    import tcpdoctor.observe.snapshot as snapshot_mod
    from tcpdoctor.kernel.states import TcpState
    from tcpdoctor.observe.owners import find_owners

    snap = snapshot_mod.take()
    inodes = snap.sockets["inode"][snap.states == TcpState.CLOSE_WAIT].tolist()
    t0 = time.perf_counter()
    found = find_owners(inodes)
    call_s = time.perf_counter() - t0
    return {
        "count": len(snap),
        "call_s": call_s,
        "closewait": len(inodes),
        "closewait_owned": sum(1 for inode in inodes if inode in found.owners),
        "pids_unreadable": found.unreadable_pids,
    }


def child_traced() -> dict[str, Any]:
    """take() under tracemalloc: the peak of Python-visible allocations during the call."""
    import tracemalloc

    import tcpdoctor.observe.snapshot as snapshot_mod

    tracemalloc.start()
    t0 = time.perf_counter()
    snap = snapshot_mod.take()
    call_s = time.perf_counter() - t0  # slowed down by tracing: not a timing result
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "count": len(snap),
        "call_s": call_s,
        "tracemalloc_peak_bytes": peak,
        "tracemalloc_kept_bytes": current,
        "tracemalloc_peak_per_socket": peak / max(len(snap), 1),
    }


def child_psutil() -> dict[str, Any]:
    import psutil

    t0 = time.perf_counter()
    conns = psutil.net_connections(kind="tcp")
    call_s = time.perf_counter() - t0
    return {"count": len(conns), "call_s": call_s, "version": psutil.__version__}


def child_pyroute2() -> dict[str, Any]:
    import socket

    import pyroute2
    from pyroute2 import DiagSocket

    all_states = 0xFFF  # every TCP state, as `ss -a` asks for
    t0 = time.perf_counter()
    count = 0
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            count += len(diag.get_sock_stats(family=family, states=all_states))
    call_s = time.perf_counter() - t0
    return {"count": count, "call_s": call_s, "version": pyroute2.__version__}


CHILDREN = {
    "snapshot": child_snapshot,
    "owners": child_owners,
    "traced": child_traced,
    "psutil": child_psutil,
    "pyroute2": child_pyroute2,
}


def child_main(name: str) -> int:
    report = CHILDREN[name]()
    print(json.dumps(report), flush=True)
    return 0


# ------------------------------------------------------------- measuring wrapper (netns)


class _Drain(threading.Thread):
    """Reads a pipe to its end, counting bytes and newlines and keeping the head."""

    def __init__(self, fd: int, keep_all: bool) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.keep_all = keep_all
        self.bytes = 0
        self.lines = 0
        self.head = bytearray()

    def run(self) -> None:
        while True:
            chunk = os.read(self.fd, PIPE_BYTES)
            if not chunk:
                break
            self.bytes += len(chunk)
            self.lines += chunk.count(b"\n")
            if self.keep_all or len(self.head) < HEAD_BYTES:
                self.head += chunk
        os.close(self.fd)


class ToolRun:
    """One tool run inside the namespace: output sink, GNU time for RSS, cap, cleanup.

    Peak RSS comes from GNU time's %M: the tool is then forked from that small C process.
    A child forked from this Python wrapper would report the wrapper's own pages as its
    peak (fork copies them, exec keeps the high-water mark), inflating small tools like ss.
    """

    def __init__(self, kind: str, sink: str, argv: list[str]) -> None:
        import fcntl
        import tempfile

        self.kind = kind
        self.sink = sink
        if sink == "devnull":
            self.out_r, self.out_w = -1, os.open(os.devnull, os.O_WRONLY)
        else:
            self.out_r, self.out_w = os.pipe()
            fcntl.fcntl(self.out_r, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.err_r, self.err_w = os.pipe()
        self.out = _Drain(self.out_r, keep_all=kind == "child")
        self.err = _Drain(self.err_r, keep_all=False)
        rss_fd, self.rss_path = tempfile.mkstemp(prefix="tdlab-bench-rss-")
        os.close(rss_fd)
        self.gnu_time = os.path.exists(GNU_TIME)
        self.argv = [GNU_TIME, "-f", "%M", "-o", self.rss_path, *argv] if self.gnu_time else argv
        self.timed_out = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0

    def start(self) -> None:
        sys.path.insert(0, str(HERE.parent))
        from population import die_with_parent

        self.t0 = time.perf_counter()
        # No thread runs yet in this process, so preexec_fn is safe here.
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self.out_w,
            stderr=self.err_w,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        os.close(self.out_w)
        os.close(self.err_w)
        if self.out_r >= 0:
            self.out.start()
        self.err.start()

    def expire(self) -> None:
        """The cap: kill the tool first, so GNU time still reports its peak RSS."""
        import signal

        assert self.proc is not None
        self.timed_out.set()
        for pid in _children(self.proc.pid):
            os.kill(pid, signal.SIGKILL)
        if not _exited_within(self.proc.pid, 5.0):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the whole session: time and the tool

    def abort(self, signum: int, frame: object) -> None:
        import signal

        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.unlink(self.rss_path)
        os._exit(128 + signum)

    def wait(self, cap_s: float) -> dict[str, Any]:
        assert self.proc is not None
        timer = threading.Timer(cap_s - (time.perf_counter() - self.t0), self.expire)
        timer.start()
        _, status, usage = os.wait4(self.proc.pid, 0)
        wall = time.perf_counter() - self.t0
        timer.cancel()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.out_r >= 0:
            self.out.join(timeout=30)
        self.err.join(timeout=30)
        maxrss_kib = _read_time_rss(self.rss_path) if self.gnu_time else usage.ru_maxrss
        os.unlink(self.rss_path)
        result: dict[str, Any] = {
            "wall_s": wall,
            "maxrss_kib": maxrss_kib,
            "rss_from": "gnu-time" if self.gnu_time else "wait4 (includes the wrapper's pages)",
            "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime,
            "exit": self.proc.returncode,
            "timed_out": self.timed_out.is_set(),
            "sink": self.sink,
            "out_bytes": self.out.bytes,
            "out_lines": self.out.lines,
            "stderr_tail": bytes(self.err.head[-1500:]).decode(errors="replace"),
            "count": None,
        }
        if not self.timed_out.is_set() and self.proc.returncode == 0 and self.out_r >= 0:
            result.update(_tool_count(self.kind, self.out))
        return result


def measure_main(kind: str, cap_s: float, sink: str, argv: list[str]) -> int:
    """Run one tool; print its wall time, peak RSS, exit and the socket count it reported.

    With sink "devnull" the tool's stdout is /dev/null, as in `ss -tan > /dev/null`, and
    no count is taken; with "pipe" its output is read here and the sockets counted. The
    wall time runs from just before the fork to wait4() returning.
    """
    import signal

    sys.path.insert(0, str(HERE.parent))
    from population import die_with_parent

    die_with_parent(signal.SIGTERM)  # the runner went away: stop the tool (abort)
    run = ToolRun(kind, sink, argv)
    signal.signal(signal.SIGTERM, run.abort)
    signal.signal(signal.SIGINT, run.abort)
    run.start()
    print(json.dumps(run.wait(cap_s)), flush=True)
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(word) for word in handle.read().split()]
    except OSError:
        return []


def _exited_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def _read_time_rss(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            words = handle.read().split()
        return int(words[-1])
    except (OSError, ValueError, IndexError):
        return None  # time itself was killed: no honest number


def _tool_count(kind: str, out: _Drain) -> dict[str, Any]:
    if kind == "lines":  # ss prints one header line, then one line per socket
        return {"count": max(out.lines - 1, 0)}
    if kind == "scan_json":
        marker = b'"socket_count":'
        at = out.head.find(marker)
        if at < 0:
            return {"count": None}
        tail = out.head[at + len(marker) : at + len(marker) + 32]
        digits = bytes(tail).split(b",")[0].strip()
        return {"count": int(digits)}
    report = json.loads(bytes(out.head).decode().strip().splitlines()[-1])
    return {"count": report.get("count"), "report": report}


# ------------------------------------------------------------------------- host side


@dataclass
class Sample:
    tool: str
    size: int
    round: int
    netns: str
    wall_s: float | None
    call_s: float | None  # in-process time of the call, for the Python children
    maxrss_mib: float | None
    count: int | None  # sockets the tool itself reported
    population_before: int
    population_after: int
    timed_out: bool
    valid: bool
    timed: bool  # False for a CLI tool's counting run (stdout read through a pipe)
    first_in_round: bool
    seconds_after_build: float
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Summary:
    tool: str
    samples: int
    valid_samples: int
    wall_s: float | None  # median over valid samples
    call_s: float | None
    maxrss_mib: float | None
    count: int | None
    timed_out: bool
    note: str = ""


def _measure(pop: Any, tool: Tool, cap_s: float, round_no: int, first: bool, timed: bool) -> Sample:
    before = pop.count()
    started = time.monotonic()
    sink = "devnull" if timed and tool.prints_sockets else "pipe"
    argv = pop.exec_argv(
        PYTHON, str(HERE), "_measure", "--kind", tool.kind, "--cap", str(cap_s), "--sink", sink
    )
    argv += ["--", *tool.argv]
    error: str | None = None
    data: dict[str, Any] = {}
    wrapper = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = wrapper.communicate(timeout=cap_s + OUTER_GRACE_S)
        lines = stdout.strip().splitlines()
        if wrapper.returncode != 0 or not lines:
            error = f"wrapper exit {wrapper.returncode}: {stderr.strip()[-800:]}"
        else:
            data = json.loads(lines[-1])
    except subprocess.TimeoutExpired:
        _stop_wrapper(wrapper)
        error = "wrapper did not return"
    except BaseException:
        _stop_wrapper(wrapper)  # interrupted: the wrapper takes its tool down with it
        raise
    after = pop.count()
    if not error and not data.get("timed_out") and data.get("exit") != 0:
        error = f"{tool.label} exit {data.get('exit')}: {data.get('stderr_tail', '').strip()}"
    report = data.get("report") or {}
    count = data.get("count")
    timed_out = bool(data.get("timed_out"))
    # A run to /dev/null reports no count: the namespace's count after it stands in.
    seen = count if count is not None else (after if sink == "devnull" else None)
    valid = not error and not timed_out and seen is not None and seen >= VALID_SHARE * pop.size
    return Sample(
        tool=tool.key,
        size=pop.size,
        round=round_no,
        netns=pop.name,
        wall_s=data.get("wall_s"),
        call_s=report.get("call_s"),
        maxrss_mib=data["maxrss_kib"] / 1024 if data.get("maxrss_kib") is not None else None,
        count=count,
        population_before=before,
        population_after=after,
        timed_out=timed_out,
        valid=valid,
        timed=timed,
        first_in_round=first,
        seconds_after_build=round(started - pop.tw_finished, 3),
        error=error,
        detail={k: v for k, v in data.items() if k not in {"report", "stderr_tail"}}
        | {"report": report},
    )


def _stop_wrapper(wrapper: subprocess.Popen[str]) -> None:
    wrapper.terminate()  # its SIGTERM handler kills the tool's whole session
    try:
        wrapper.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        wrapper.kill()
        wrapper.communicate(timeout=10)


def _estimate(tool: Tool, size: int, samples: list[Sample]) -> float:
    seen = [s.wall_s for s in samples if s.tool == tool.key and s.wall_s is not None]
    if seen:
        return max(seen) * 1.15 + 0.3
    return tool.base_s + tool.per_socket_s * size + 0.3


def _tw_slab_objects() -> int | None:
    try:
        with open("/proc/slabinfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("tw_sock_TCP "):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _wait_for_release(baseline: int | None, size: int) -> float:
    """After deleting a namespace, wait (bounded) until its TIME_WAITs are freed."""
    started = time.monotonic()
    if baseline is None:
        return 0.0
    while time.monotonic() - started < SETTLE_TIMEOUT_S:
        now = _tw_slab_objects()
        if now is None or now <= baseline + 0.02 * size + 1000:
            break
        time.sleep(0.5)
    return time.monotonic() - started


@dataclass
class SizeRun:
    size: int
    builds: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    settle_s: list[float] = field(default_factory=list)


def run_size(
    size: int, tools: list[Tool], repeat: int, cap_s: float, closewait: int, workers: int
) -> SizeRun:
    from population import Population

    out = SizeRun(size)
    fast = [t for t in tools if not t.slow]
    slow = [t for t in tools if t.slow]
    pending: deque[tuple[Tool, int]] = deque()
    for rep in range(repeat):  # interleaved, so drift hits every tool alike
        pending.extend((t, rep) for t in fast if rep == 0 or not t.once)
        if rep == 0:
            pending.extend((t, COUNT_RUN) for t in fast if t.prints_sockets)
    for tool in slow:
        pending.extend((tool, rep) for rep in range(repeat))
    retried: set[tuple[str, int]] = set()
    dropped: set[str] = set()
    for round_no in range(1, MAX_ROUNDS_PER_SIZE + 1):
        if not pending:
            break
        baseline = _tw_slab_objects()
        with Population(size, closewait=closewait, workers=workers) as pop:
            out.builds.append(asdict(pop.report) | {"round": round_no})
            _log(
                f"  round {round_no}: {pop.name} built in {pop.report.build_s:.1f} s"
                f" ({pop.report.fill_rate:,.0f} TIME_WAIT/s),"
                f" {pop.report.count_after_build:,} sockets"
            )
            _run_round(pop, pending, out, cap_s, round_no, retried, dropped)
        out.settle_s.append(_wait_for_release(baseline, size))
    for tool, _ in pending:
        _log(f"  gave up on {tool.label}: no round left")
    return out


def _run_round(
    pop: Any,
    pending: deque[tuple[Tool, int]],
    out: SizeRun,
    cap_s: float,
    round_no: int,
    retried: set[tuple[str, int]],
    dropped: set[str],
) -> None:
    first = True
    while pending:
        tool, rep = pending[0]
        if tool.key in dropped:
            pending.popleft()
            continue
        if not first:
            fits = time.monotonic() + _estimate(tool, pop.size, out.samples) <= pop.valid_until
            if not fits or pop.count() < VALID_SHARE * pop.size:
                return  # rebuild
        pending.popleft()
        sample = _measure(pop, tool, cap_s, round_no, first, timed=rep != COUNT_RUN)
        out.samples.append(sample)
        _log(_describe(sample, tool))
        if sample.error:
            raise RuntimeError(f"{tool.label} failed: {sample.error}")
        if sample.timed_out:
            dropped.add(tool.key)  # over the cap once: further repeats would be too
        elif not sample.valid:
            if first:
                dropped.add(tool.key)  # slower than the whole window: cannot do better
            elif (tool.key, rep) not in retried:
                retried.add((tool.key, rep))
                pending.appendleft((tool, rep))  # the window estimate was off: redo it
                return
        first = False


def _describe(sample: Sample, tool: Tool) -> str:
    wall = f"{sample.wall_s:.3f} s" if sample.wall_s is not None else "-"
    call = f" (call {sample.call_s:.3f} s)" if sample.call_s is not None else ""
    rss = f"{sample.maxrss_mib:.0f} MiB" if sample.maxrss_mib is not None else "-"
    flag = " TIMED OUT" if sample.timed_out else ("" if sample.valid else " INVALID")
    if not sample.timed:
        flag += " (counting run, stdout to a pipe, not timed)"
    seen = "-" if sample.count is None else f"{sample.count}"
    return (
        f"    {tool.label:<12} {wall}{call}, {rss}, saw {seen}, "
        f"population {sample.population_before}->{sample.population_after}, "
        f"t+{sample.seconds_after_build:.1f} s{flag}"
    )


# ----------------------------------------------------------------------- aggregation


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(tool: str, samples: list[Sample], cap_s: float) -> Summary:
    mine = [s for s in samples if s.tool == tool and s.timed]
    counting = [s for s in samples if s.tool == tool and not s.timed]
    valid = [s for s in mine if s.valid]
    timed_out = any(s.timed_out for s in mine + counting)
    use = valid
    note = ""
    if not valid:
        use = [s for s in mine if s.wall_s is not None and not s.timed_out]
        if timed_out:
            note = f">{cap_s:g} s cap"
        elif use:
            note = "population below 95% during the run"
        else:
            note = "not measured"
    if timed_out and not use:  # how much memory it had reached when it was stopped
        use = [s for s in mine if s.timed_out]
    counts = [s.count for s in (counting or use) if s.count is not None]
    return Summary(
        tool=tool,
        samples=len(mine),
        valid_samples=len(valid),
        wall_s=_median([s.wall_s for s in use if s.wall_s is not None and not s.timed_out]),
        call_s=_median([s.call_s for s in use if s.call_s is not None and not s.timed_out]),
        maxrss_mib=_median([s.maxrss_mib for s in use if s.maxrss_mib is not None]),
        count=int(statistics.median(counts)) if counts else None,
        timed_out=timed_out and not valid,
        note=note,
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def size_report(run: SizeRun, tools: list[Tool], cap_s: float) -> dict[str, Any]:
    sums = {t.key: summarize(t.key, run.samples, cap_s) for t in tools}
    ss = sums.get("ss_tan")
    ssp = sums.get("ss_tanp")
    ss_wall = ss.wall_s if ss else None
    ssp_wall = ssp.wall_s if ssp else None
    tools_out: dict[str, Any] = {}
    for key, summary in sums.items():
        entry = asdict(summary)
        if TOOL_BY_KEY[key].once:  # slowed down by tracing: a memory view, not a timing
            entry["note"] = entry["note"] or "memory view only; timing slowed by tracemalloc"
            tools_out[key] = entry
            continue
        entry["ratio_vs_ss_tan"] = _ratio(summary.wall_s, ss_wall)
        if summary.call_s is not None:
            entry["call_ratio_vs_ss_tan"] = _ratio(summary.call_s, ss_wall)
        tools_out[key] = entry
    extra: dict[str, Any] = {}
    snap_samples = [s for s in run.samples if s.tool == "snapshot" and s.valid]
    if snap_samples:
        reports = [s.detail["report"] for s in snap_samples]
        extra["bytes_per_socket"] = statistics.median(r["bytes_per_socket"] for r in reports)
        extra["rss_growth_per_socket"] = statistics.median(
            (r["hwm_after_kib"] - r["hwm_before_kib"]) * 1024 / max(r["count"], 1) for r in reports
        )
        tools_out["snapshot"]["hwm_after_take_mib"] = (
            statistics.median(r["hwm_after_kib"] for r in reports) / 1024
        )
    traced = [s for s in run.samples if s.tool == "traced" and s.valid]
    if traced:
        extra["tracemalloc_peak_per_socket"] = statistics.median(
            s.detail["report"]["tracemalloc_peak_per_socket"] for s in traced
        )
    own_samples = [s for s in run.samples if s.tool == "owners" and s.valid]
    if own_samples:
        reports = [s.detail["report"] for s in own_samples]
        extra["closewait_seen"] = reports[-1]["closewait"]
        extra["closewait_owned"] = reports[-1]["closewait_owned"]
        if "owners" in tools_out:
            tools_out["owners"]["ratio_vs_ss_tanp"] = _ratio(sums["owners"].call_s, ssp_wall)
    return {
        "size": run.size,
        "tools": tools_out,
        "memory": extra,
        "builds": run.builds,
        "settle_s": run.settle_s,
        "samples": [asdict(s) for s in run.samples],
    }


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    tools = report["tools"]
    size = report["size"]
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, detail: str) -> None:
        status = "PASS" if value is not None and value <= limit else "FAIL"
        if value is None:
            status = "N/A"
        checks.append(
            {"size": size, "target": name, "value": value, "limit": limit, "status": status}
            | {"detail": detail}
        )

    snap = tools.get("snapshot", {})
    ss = tools.get("ss_tan", {})
    if snap and ss:
        add(
            "library snapshot call <= 1.0x ss -tan",
            snap.get("call_ratio_vs_ss_tan"),
            1.0,
            f"take() {_fmt_s(snap.get('call_s'))} vs ss -tan {_fmt_s(ss.get('wall_s'))}"
            f" (whole process {_fmt_s(snap.get('wall_s'))},"
            f" {_fmt_x(snap.get('ratio_vs_ss_tan'))})",
        )
    scan = tools.get("scan_json", {})
    if scan and ss:
        add(
            "scan --json <= 2x ss -tan",
            scan.get("ratio_vs_ss_tan"),
            2.0,
            f"{_fmt_s(scan.get('wall_s'))} vs {_fmt_s(ss.get('wall_s'))}",
        )
    doctor = tools.get("doctor", {})
    if doctor and ss:
        add(
            "doctor <= 2x ss -tan",
            doctor.get("ratio_vs_ss_tan"),
            2.0,
            f"{_fmt_s(doctor.get('wall_s'))} vs {_fmt_s(ss.get('wall_s'))}",
        )
    owners = tools.get("owners", {})
    ssp = tools.get("ss_tanp", {})
    if owners and ssp:
        add(
            "owner lookup (CLOSE_WAIT subset) <= 0.5x ss -tanp",
            owners.get("ratio_vs_ss_tanp"),
            0.5,
            f"find_owners {_fmt_s(owners.get('call_s'))} vs ss -tanp {_fmt_s(ssp.get('wall_s'))}",
        )
    memory = report["memory"]
    if "bytes_per_socket" in memory:
        add(
            "Snapshot memory <= 150 bytes/socket",
            memory["bytes_per_socket"],
            150.0,
            f"Snapshot.nbytes/len = {memory['bytes_per_socket']:.0f} B"
            f" (tracemalloc peak in take(): {memory.get('tracemalloc_peak_per_socket', 0):.0f}"
            f" B/socket; RSS growth {memory.get('rss_growth_per_socket', 0):.0f} B/socket)",
        )
    return checks


# ---------------------------------------------------------------------------- output


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _fmt_x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


COLUMNS = (
    ("snapshot", "call", "snapshot call"),
    ("snapshot", "wall", "snapshot proc"),
    ("scan_json", "wall", "scan --json"),
    ("doctor", "wall", "doctor"),
    ("ss_tan", "wall", "ss -tan"),
    ("ss_tanp", "wall", "ss -tanp"),
    ("psutil", "wall", "psutil"),
    ("pyroute2", "wall", "pyroute2"),
    ("owners", "call", "owners(CW)"),
)


def _cell(entry: dict[str, Any] | None, what: str, metric: str) -> str:
    if not entry:
        return "-"
    note = entry.get("note", "")
    if entry.get("timed_out") and metric in {"time", "ratio"}:
        return note or ">cap"
    if entry.get("timed_out") and metric == "count":
        return "-"
    if metric == "time":
        value = entry.get("call_s") if what == "call" else entry.get("wall_s")
        text = "-" if value is None else f"{value:.3f}"
        return text + ("!" if note and value is not None else "")
    if metric == "ratio":
        if what == "call" and entry["tool"] == "owners":
            value = entry.get("ratio_vs_ss_tanp")
            return "-" if value is None else f"{value:.3f}xP"
        key = "call_ratio_vs_ss_tan" if what == "call" else "ratio_vs_ss_tan"
        value = entry.get(key)
        return "-" if value is None else f"{value:.2f}x"
    if metric == "rss":
        if what == "call":  # the snapshot's VmHWM right after take() returned
            value = entry.get("hwm_after_take_mib")
            return "-" if value is None else f"{value:.1f}"
        value = entry.get("maxrss_mib")
        prefix = ">" if entry.get("timed_out") else ""  # RSS reached when it was stopped
        return "-" if value is None else f"{prefix}{value:.1f}"
    value = entry.get("count")
    return "-" if value is None else f"{value:,}"


def render_table(reports: list[dict[str, Any]]) -> str:
    width = 14
    head = f"{'sockets':>9}  {'':<15}" + "".join(f"{label:>{width}}" for _, _, label in COLUMNS)
    lines = [head, "-" * len(head)]
    rows = (
        ("time", "wall/call s"),
        ("ratio", "x ss -tan"),
        ("rss", "peak RSS MiB"),
        ("count", "sockets seen"),
    )
    for report in reports:
        for index, (metric, label) in enumerate(rows):
            size = f"{report['size']:,}" if index == 0 else ""
            cells = "".join(
                f"{_cell(report['tools'].get(key), what, metric):>{width}}"
                for key, what, _ in COLUMNS
            )
            lines.append(f"{size:>9}  {label:<15}{cells}")
        lines.append("")
    lines.append(
        "call = in-process time of the library call (take() / find_owners()); other columns are"
    )
    lines.append(
        "the tool's whole process (interpreter start and imports included). xP = ratio to ss -tanp."
    )
    lines.append("! = no sample with >=95% of the population; the median of the others is shown.")
    return "\n".join(lines)


def render_checks(checks: list[dict[str, Any]]) -> str:
    lines = []
    for check in checks:
        value = check["value"]
        shown = "-" if value is None else f"{value:.3f}"
        lines.append(
            f"  [{check['status']}] {check['size']:>9,}  {check['target']}: {shown}"
            f" (limit {check['limit']}) - {check['detail']}"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {
        "kernel": os.uname().release,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / (1 << 20), 1)
    info["ss"] = _first_line(["ss", "-V"])
    info["commit"] = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    info["src_uncommitted"] = _uncommitted(REPO / "src")
    for module in ("numpy", "psutil", "pyroute2", "tcpdoctor"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info


def _uncommitted(path: Path) -> int | None:
    """How many files under `path` differ from the commit (the measured tree is not HEAD)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", str(path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return len(done.stdout.splitlines()) if done.returncode == 0 else None


def _first_line(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def render_machine(info: dict[str, Any]) -> str:
    return (
        f"machine: {info.get('cpu')}, {info.get('cores')} cores, {info.get('ram_gib')} GiB RAM, "
        f"kernel {info.get('kernel')}, Python {info.get('python')}, numpy {info.get('numpy')}, "
        f"{info.get('ss')}, psutil {info.get('psutil')}, pyroute2 {info.get('pyroute2')}, "
        f"tcpdoctor {info.get('tcpdoctor')} @ {info.get('commit')}"
        f" (+{info.get('src_uncommitted')} uncommitted files in src/), "
        f"load {tuple(round(x, 2) for x in info.get('loadavg_start', ()))}"
    )


# ------------------------------------------------------------------------ entry point


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _parse_sizes(text: str) -> list[int]:
    sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not sizes or any(s < 5000 or s > 2_000_000 for s in sizes):
        raise argparse.ArgumentTypeError("sizes must be between 5000 and 2000000")
    return sizes


def bench_main(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        _log("benchmarks/run.py needs root (it creates network namespaces)")
        return 4
    sys.path.insert(0, str(HERE.parent))
    from population import install_signal_handlers

    install_signal_handlers()
    sizes = [QUICK_SIZE] if args.quick else args.sizes
    repeat = 1 if args.quick else args.repeat
    cap_s = args.cap if args.cap is not None else (QUICK_CAP_S if args.quick else DEFAULT_CAP_S)
    closewait = args.closewait if args.closewait is not None else (500 if args.quick else 2000)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    tools = [t for t in TOOLS if t.key not in skip]
    machine = machine_info()
    _log(render_machine(machine))
    started = time.time()
    reports = []
    for size in sizes:
        _log(f"size {size:,}: {repeat} repeat(s), cap {cap_s:.0f} s per tool run")
        run = run_size(size, tools, repeat, cap_s, closewait, args.workers)
        reports.append(size_report(run, tools, cap_s))
    checks = [c for r in reports for c in check_targets(r)]
    machine["loadavg_end"] = os.getloadavg()
    result = {
        "machine": machine,
        "config": {
            "sizes": sizes,
            "repeat": repeat,
            "cap_s": cap_s,
            "closewait": closewait,
            "workers": args.workers,
            "tools": [t.key for t in tools],
            "valid_share": VALID_SHARE,
            "quick": args.quick,
        },
        "started": started,
        "duration_s": time.time() - started,
        "sizes": reports,
        "targets": checks,
    }
    print(render_machine(machine))
    print()
    print(render_table(reports))
    print()
    print("targets:")
    print(render_checks(checks))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        return child_main(argv[1])
    if argv[:1] == ["_measure"]:
        inner = argparse.ArgumentParser(prog="run.py _measure")
        inner.add_argument("--kind", required=True)
        inner.add_argument("--cap", type=float, required=True)
        inner.add_argument("--sink", choices=("pipe", "devnull"), default="pipe")
        inner.add_argument("tool", nargs=argparse.REMAINDER)
        ns = inner.parse_args(argv[1:])
        tool = ns.tool[1:] if ns.tool[:1] == ["--"] else ns.tool
        return measure_main(ns.kind, ns.cap, ns.sink, tool)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_parse_sizes, default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, choices=range(1, 11), default=3, metavar="1..10")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIZE:,} sockets, 1 repeat")
    parser.add_argument("--cap", type=float, help="seconds per tool run (default 50, quick 20)")
    parser.add_argument("--closewait", type=int, help="CLOSE_WAIT sockets held (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="processes making TIME_WAITs")
    parser.add_argument("--skip", default="", help="comma list of tools to leave out")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="JSON result file")
    return bench_main(parser.parse_args(argv))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        _log("interrupted; the benchmark namespaces were deleted")
        sys.exit(130)
