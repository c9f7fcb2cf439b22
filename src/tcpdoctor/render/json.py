"""JSON rendering: records (NamedTuples, dataclasses, enums, numpy scalars) to plain JSON values.

Keys are snake_case and documented in docs/json.md. Durations are float seconds unless
the key ends in _ms.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Convert a record tree into JSON-compatible values."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        label = getattr(value, "label", None)
        return label if isinstance(label, str) else value.name
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple record
        return {name: to_jsonable(getattr(value, name)) for name in value._fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {_key(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(
        value,
        ipaddress.IPv4Address
        | ipaddress.IPv6Address
        | ipaddress.IPv4Network
        | ipaddress.IPv6Network,
    ):
        return str(value)
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def _key(key: Any) -> str:
    """Mapping keys: enums by their label (TcpState.TIME_WAIT -> "TIME_WAIT"), not str()."""
    if isinstance(key, enum.Enum):
        label = getattr(key, "label", None)
        return label if isinstance(label, str) else key.name
    return str(key)


def dumps(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(value), indent=indent, ensure_ascii=False)
