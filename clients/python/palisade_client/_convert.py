"""Python values to ``google.protobuf.Struct``, strictly.

A Struct holds JSON: strings, booleans, null, lists, objects and numbers that
are IEEE doubles. Anything else is refused here rather than converted by a
guess (a ``Decimal`` amount, a ``datetime``, bytes, an integer too large to
be a double exactly): a policy condition such as ``params.amount <= 5000``
must see the value the tool will use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.struct_pb2 import Struct

# Integers beyond this lose precision as doubles.
_MAX_EXACT_INT = 2**53


def to_struct(value: Mapping[str, Any] | None, what: str) -> Struct | None:
    """``value`` as a Struct (None stays None). Raises ``TypeError`` or
    ``ValueError`` naming the offending path, e.g. ``params.items[2].price``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping (a dict), not {type(value).__name__}")
    struct = Struct()
    struct.update(_object(value, what))
    return struct


def _object(value: Mapping[Any, Any], path: str) -> dict[str, Any]:
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{path}: keys must be strings, not {type(key).__name__} ({key!r})")
        out[key] = _json(item, f"{path}.{key}")
    return out


def _json(value: Any, path: str) -> Any:
    # bool before int: bool is a subclass of int.
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_EXACT_INT:
            raise ValueError(f"{path}: {value} is too large to send exactly (JSON numbers are doubles)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value} is not a JSON number")
        return value
    if isinstance(value, Mapping):
        return _object(value, path)
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"{path}: a {type(value).__name__} is not JSON; convert it first "
        "(e.g. a Decimal to float or str, a datetime to an ISO string)"
    )
