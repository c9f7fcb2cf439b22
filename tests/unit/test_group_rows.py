"""group_rows: hash grouping with an exact fallback, checked against a plain dict grouping."""

from __future__ import annotations

import numpy as np
import pytest

from tcpdoctor.observe import summary
from tcpdoctor.observe.summary import RowGroups, group_rows


def _columns(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "family": rng.choice(np.array([2, 10], dtype=np.uint8), count),
        "dst": rng.integers(0, 3, (count, 4)).astype(">u4"),
        "port": rng.choice(np.array([80, 443, 6379], dtype=np.uint16), count),
    }


def _expected(columns: dict[str, np.ndarray]) -> list[set[int]]:
    groups: dict[tuple[int, ...], set[int]] = {}
    count = len(next(iter(columns.values())))
    for row in range(count):
        key = tuple(int(v) for c in columns.values() for v in np.ravel(c[row]))
        groups.setdefault(key, set()).add(row)
    return sorted(groups.values(), key=min)


def _found(groups: RowGroups) -> list[set[int]]:
    members: dict[int, set[int]] = {}
    for row, gid in enumerate(groups.group.tolist()):
        members.setdefault(gid, set()).add(row)
    return sorted(members.values(), key=min)


def _check(columns: dict[str, np.ndarray]) -> None:
    groups = group_rows(columns)
    assert _found(groups) == _expected(columns)
    # `first` names one member of each group, `order` lists rows group after group.
    assert (groups.group[groups.first] == np.arange(len(groups.first))).all()
    assert sorted(groups.order.tolist()) == list(range(len(groups.group)))
    assert (np.diff(groups.group[groups.order]) >= 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_groups_match_a_plain_grouping(seed: int) -> None:
    _check(_columns(400, seed))


def test_hash_collisions_fall_back_to_exact_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a zero multiplier the hash keeps only the last varying word: many collisions.
    monkeypatch.setattr(summary, "_HASH_MULTIPLIER", np.uint64(0))
    _check(_columns(400, 11))


def test_constant_and_empty_columns() -> None:
    _check({"a": np.full(5, 7, dtype=np.uint16)})
    empty = group_rows({"a": np.zeros(0, dtype=np.uint16)})
    assert len(empty.first) == len(empty.group) == len(empty.order) == 0
