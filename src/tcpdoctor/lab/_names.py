"""Names of everything the lab creates. All start with `tdlab-` so leftovers can be found.

Namespaces: tdlab-<scenario>-<run id>-<role>. Links and nftables tables carry the run id
too (tdlab-<run id><n>, tdlab-<run id>-<purpose>), so `lab cleanup` can tell a live run's
objects from leftovers. Interface names must fit IFNAMSIZ (15 characters).
"""

from __future__ import annotations

import re
import secrets

from tcpdoctor.errors import ScenarioError

PREFIX = "tdlab-"
IFNAMSIZ_MAX = 15  # include/uapi/linux/if.h IFNAMSIZ (16) minus the NUL
RUN_ID_HEX = 6
_WORD = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_RUN_ID = re.compile(rf"^[0-9a-f]{{{RUN_ID_HEX}}}$")


def new_run_id() -> str:
    return secrets.token_hex(RUN_ID_HEX // 2)


def _word(what: str, text: str) -> str:
    if not _WORD.match(text):
        raise ScenarioError(f"invalid lab {what} {text!r}: use lower-case letters, digits, '-'")
    return text


def _run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ScenarioError(f"invalid lab run id {run_id!r}")
    return run_id


def netns_name(scenario: str, run_id: str, role: str) -> str:
    if "-" in role:
        raise ScenarioError(f"invalid lab role {role!r}: one word, no '-'")
    return f"{PREFIX}{_word('scenario', scenario)}-{_run_id(run_id)}-{_word('role', role)}"


def link_name(run_id: str, index: int, side: str) -> str:
    """One end of veth pair `index`: tdlab-<run id><index><a|b> (at most 15 characters)."""
    name = f"{PREFIX}{_run_id(run_id)}{index}{_word('side', side)}"
    if len(name) > IFNAMSIZ_MAX:
        raise ScenarioError(f"interface name {name!r} is longer than {IFNAMSIZ_MAX} characters")
    return name


def table_name(run_id: str, purpose: str) -> str:
    return f"{PREFIX}{_run_id(run_id)}-{_word('table purpose', purpose)}"


def is_lab_name(name: str) -> bool:
    """True for any object name the lab (or its tests) may own: `tdlab-` and more."""
    return name.startswith(PREFIX) and len(name) > len(PREFIX)


def run_id_of(name: str) -> str | None:
    """The run id inside a name this module generated, or None for any other name."""
    for pattern in _GENERATED:
        match = pattern.match(name)
        if match:
            return match.group("run")
    return None


_HEX_ID = rf"(?P<run>[0-9a-f]{{{RUN_ID_HEX}}})"
_GENERATED = (
    re.compile(rf"^{PREFIX}[a-z0-9]+(?:-[a-z0-9]+)*-{_HEX_ID}-[a-z0-9]+$"),  # netns
    re.compile(rf"^{PREFIX}{_HEX_ID}[0-9]+[ab]$"),  # veth end
    re.compile(rf"^{PREFIX}{_HEX_ID}-[a-z0-9]+(?:-[a-z0-9]+)*$"),  # nftables table
)
