"""The generated gRPC modules (``_gen/``, generated from the repository's
``proto/`` by ``generate_stubs.py`` and shipped in the package)."""

from __future__ import annotations

from ._gen import palisade_pb2 as pb
from ._gen import palisade_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
