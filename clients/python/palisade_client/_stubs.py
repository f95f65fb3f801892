"""The generated gRPC modules, with a clear error when they are missing."""

from __future__ import annotations

try:
    from ._gen import palisade_pb2 as pb
    from ._gen import palisade_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover - exercised by hand
    raise ImportError(
        "palisade_client: the gRPC stubs are not generated or do not import "
        f"({e}). Run `python3 clients/python/generate_stubs.py` (it needs "
        "`python3 -m pip install -r clients/python/requirements.txt`)."
    ) from e

__all__ = ["pb", "pb_grpc"]
