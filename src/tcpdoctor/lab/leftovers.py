"""`tcpdoctor lab cleanup`: remove what a killed run left behind, and nothing else.

Only objects whose name starts with `tdlab-` are considered: network namespaces (`ip netns
list`), and, in the host's own namespace, links (`ip link`) and nftables tables (`nft list
tables`). The lab itself never creates links or tables in the host namespace, so those are
only there if something went wrong; namespaces are the usual leftovers.

An object is kept when it may still be in use:
* it belongs to a lab run that is alive (its run lock is held, see _runlock);
* it is a `tdlab-` namespace that is not from a lab run (a test's or a benchmark's) and
  processes still run inside it, or it is younger than FOREIGN_GRACE_S (`--force` removes
  these two kinds anyway).
Processes inside a namespace of a *dead* lab run are its orphans and are killed first.
Running cleanup twice is harmless: the second run finds nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from tcpdoctor.errors import KernelInterfaceError
from tcpdoctor.lab import _names, _proc, _runlock
from tcpdoctor.lab.topology import netns_exists, netns_pids
from tcpdoctor.observe.netns import NETNS_RUN_DIR

KILL_WAIT_S = 3.0
FOREIGN_GRACE_S = 600.0  # a tdlab- namespace not from a lab run counts as in use this long


class Kind(Enum):
    NETNS = "netns"
    LINK = "link"
    NFT_TABLE = "nft table"

    @property
    def label(self) -> str:
        return self.value


@dataclass(frozen=True)
class Leftover:
    kind: Kind
    name: str
    family: str | None = None  # nftables family of a table

    @property
    def label(self) -> str:
        family = f" {self.family}" if self.family else ""
        return f"{self.kind.label}{family} {self.name}"


@dataclass(frozen=True)
class Outcome:
    leftover: Leftover
    removed: bool
    reason: str  # why it was kept, or what was done besides removing


# --- finding ------------------------------------------------------------------------------


def parse_netns_json(text: str) -> list[str]:
    data = json.loads(text) if text.strip() else []
    return [str(e["name"]) for e in data if isinstance(e, dict) and "name" in e]


def parse_links_json(text: str) -> list[str]:
    data = json.loads(text) if text.strip() else []
    return [str(e["ifname"]) for e in data if isinstance(e, dict) and "ifname" in e]


def parse_tables_json(text: str) -> list[tuple[str, str]]:
    data = json.loads(text) if text.strip() else {}
    tables = []
    for item in data.get("nftables", []):
        table = item.get("table") if isinstance(item, dict) else None
        if isinstance(table, dict):
            tables.append((str(table["family"]), str(table["name"])))
    return tables


def find() -> list[Leftover]:
    """Every tdlab- object visible from the host namespace."""
    try:
        found = [
            Leftover(Kind.NETNS, name)
            for name in parse_netns_json(_proc.run(["ip", "-j", "netns", "list"]).stdout)
        ]
        found += [
            Leftover(Kind.LINK, name)
            for name in parse_links_json(_proc.run(["ip", "-j", "link", "show"]).stdout)
        ]
        if shutil.which("nft") is not None:
            listed = _proc.run(["nft", "-j", "list", "tables"]).stdout
            found += [Leftover(Kind.NFT_TABLE, n, f) for f, n in parse_tables_json(listed)]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise KernelInterfaceError(
            f"cannot read the list of namespaces, links or tables: {err}"
        ) from None
    return [item for item in found if _names.is_lab_name(item.name)]


# --- deciding -----------------------------------------------------------------------------


def keep_reason(
    item: Leftover,
    runs: Mapping[str, _runlock.RunRecord],
    pids: Sequence[int],
    age_s: float | None,
    *,
    force: bool = False,
) -> str | None:
    """Why `item` must stay, or None when it may be removed. Pure: for tests.

    A live lab run's objects always stay. Other tdlab- namespaces (tests, benchmarks) stay
    while processes run in them or while they are younger than FOREIGN_GRACE_S, unless
    `force` is set.
    """
    run_id = _names.run_id_of(item.name)
    record = runs.get(run_id) if run_id else None
    if record is not None:
        if record.alive:
            who = f" (pid {record.pid})" if record.pid else ""
            return f"in use by a running lab{who}"
        return None  # a dead lab run: its processes are orphans
    if force or item.kind is not Kind.NETNS:
        return None
    if pids:
        shown = ", ".join(str(p) for p in pids[:5])
        return f"not from a lab run and still in use (pids {shown}); --force removes it"
    if age_s is not None and age_s < FOREIGN_GRACE_S:
        return (
            f"not from a lab run and only {age_s:.0f} s old, so maybe still in use; "
            f"kept until it is {FOREIGN_GRACE_S / 60:.0f} min old (--force removes it)"
        )
    return None


# --- removing -----------------------------------------------------------------------------


def sweep(run_dir: os.PathLike[str] | None = None, *, force: bool = False) -> list[Outcome]:
    """Remove every leftover that is not in use; report each object found."""
    directory = Path(run_dir) if run_dir is not None else _runlock.RUN_DIR
    runs = _runlock.runs(directory)
    outcomes = []
    for item in find():
        pids = netns_pids(item.name) if item.kind is Kind.NETNS else ()
        reason = keep_reason(item, runs, pids, _age(item), force=force)
        if reason is not None:
            outcomes.append(Outcome(item, False, reason))
            continue
        outcomes.append(_remove(item, pids))
    for record in runs.values():
        _runlock.forget(record)
    return outcomes


def _age(item: Leftover) -> float | None:
    """Seconds since a namespace was created (its bind mount under /run/netns)."""
    if item.kind is not Kind.NETNS:
        return None
    try:
        created = os.stat(os.path.join(NETNS_RUN_DIR, item.name)).st_mtime
    except OSError:
        return None
    return max(0.0, time.time() - created)


def _remove(item: Leftover, pids: Sequence[int]) -> Outcome:
    actions: dict[Kind, Callable[[], None]] = {
        Kind.NETNS: lambda: _remove_netns(item.name, pids),
        Kind.LINK: lambda: _remove_link(item.name),
        Kind.NFT_TABLE: lambda: _remove_table(item),
    }
    actions[item.kind]()
    gone = not _still_there(item)
    note = f"killed {len(pids)} orphaned process(es)" if pids and gone else ""
    return Outcome(item, gone, note if gone else "could not remove it")


def _remove_netns(name: str, pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while pids and netns_pids(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    _proc.run(["ip", "netns", "delete", name], check=False)


def _remove_link(name: str) -> None:
    _proc.run(["ip", "link", "delete", name], check=False)


def _remove_table(item: Leftover) -> None:
    assert item.family is not None
    _proc.run(["nft", "delete", "table", item.family, item.name], check=False)


def _still_there(item: Leftover) -> bool:
    if item.kind is Kind.NETNS:
        return netns_exists(item.name)
    return item in find()
