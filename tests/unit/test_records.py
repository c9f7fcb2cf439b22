"""The columnar records: picking rows as opaque items gives what plain indexing gives."""

from __future__ import annotations

import numpy as np
import pytest

from tcpdoctor.observe._records import INFO_DTYPE, SOCKET_DTYPE, empty_info, pick


def _rows(dtype: np.dtype, count: int) -> np.ndarray:
    raw = np.random.default_rng(7).integers(0, 256, count * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype)


@pytest.mark.parametrize("dtype", [SOCKET_DTYPE, INFO_DTYPE])
def test_pick_equals_plain_indexing(dtype: np.dtype) -> None:
    rows = _rows(dtype, 500)
    mask = rows.view(np.uint8).reshape(500, -1)[:, 0] % 3 == 0
    for which in (mask, np.flatnonzero(mask), np.array([499, 0, 7, 7]), np.zeros(0, np.intp)):
        picked = pick(rows, which)
        assert picked.dtype == dtype
        assert picked.tobytes() == rows[which].tobytes()


def test_pick_from_a_strided_view() -> None:
    rows = _rows(SOCKET_DTYPE, 100)[::3]
    assert pick(rows, np.array([1, 2])).tobytes() == rows[[1, 2]].tobytes()


def test_empty_info_reads_absent_in_every_field() -> None:
    info = empty_info(3)
    assert len(info) == 3
    assert all((info[name] == -1).all() for name in INFO_DTYPE.names or ())


def test_namespace_label_prefers_name_then_pid_then_host_then_inode() -> None:
    from tcpdoctor.observe.netns import NetnsId

    assert NetnsId(7, "web", 42, False).label == "web"
    assert NetnsId(7, None, 42, False).label == "of pid 42"
    assert NetnsId(7, None, None, True).label == "host"
    assert NetnsId(7, None, None, None).label == "inode 7"
