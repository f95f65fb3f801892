#!/usr/bin/env python3
"""What ``@guard`` costs an agent, next to a bare grpcio call to ``Ping``.

Run enrolled, with ``PALISADE_SOCKET`` set, by ``cargo xtask bench decide``
(``tests/src/bin/palisade-guard-bench.rs`` starts the daemon with the decide
benchmark's policy). One process, one thread, one channel each, as an agent
runtime would call: rounds interleave three kinds of call so machine noise
hits them alike:

- ``ping``: a bare grpcio call to ``Ping`` (an empty handler) on a raw stub;
- ``decide``: a bare grpcio call to ``Decide`` on a raw stub, the request
  built once: what the daemon's decision costs seen from Python;
- ``guard``: a call of a ``@guard``-ed function that is allowed (the
  function itself does nothing), with the public client: argument binding,
  parameter conversion, ``Decide``, the answer turned into a ``Decision``.

Prints one JSON object: per kind the number of calls, p50/p99/mean in µs
and calls/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from palisade_client import Client, guard  # noqa: E402
from palisade_client._flow import CHANNEL_OPTIONS, target  # noqa: E402
from palisade_client._stubs import pb, pb_grpc  # noqa: E402


def timed(call: Callable[[], Any], n: int) -> tuple[list[int], int]:
    lat = []
    started = time.perf_counter_ns()
    for _ in range(n):
        t = time.perf_counter_ns()
        call()
        lat.append(time.perf_counter_ns() - t)
    return lat, time.perf_counter_ns() - started


def summary(lat: list[int], wall_ns: int) -> dict[str, float]:
    lat = sorted(lat)

    def pct(p: float) -> float:
        return lat[round((len(lat) - 1) * p)] / 1000

    return {
        "calls": len(lat),
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "mean_us": statistics.fmean(lat) / 1000,
        "calls_per_s": len(lat) / (wall_ns / 1e9),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000, help="calls per kind per round")
    args = parser.parse_args()
    socket = os.environ["PALISADE_SOCKET"]

    channel = grpc.insecure_channel(target(socket), options=CHANNEL_OPTIONS)
    stub = pb_grpc.PalisadeStub(channel)
    request = pb.DecideRequest(tool="stripe", action="create_payment")
    request.params.update({"amount": 10, "currency": "USD", "customer": "cus_bench"})

    def ping() -> None:
        stub.Ping(pb.PingRequest(), timeout=2)

    def decide() -> None:
        r = stub.Decide(request, timeout=2)
        if r.verdict != pb.ALLOW:
            raise SystemExit(f"Decide was not ALLOW: {r.reason} {r.message}")

    client = Client(socket)

    @guard(client, tool="stripe", action="create_payment")
    def create_payment(amount: float, currency: str, customer: str) -> None:
        return None

    def guarded() -> None:
        create_payment(10, "USD", "cus_bench")

    kinds = {"ping": ping, "decide": decide, "guard": guarded}
    for call in kinds.values():  # connect and warm up
        for _ in range(200):
            call()
    lat: dict[str, list[int]] = {k: [] for k in kinds}
    wall: dict[str, int] = {k: 0 for k in kinds}
    for _ in range(args.rounds):
        for kind, call in kinds.items():
            l, w = timed(call, args.calls)
            lat[kind] += l
            wall[kind] += w
    print(json.dumps({kind: summary(lat[kind], wall[kind]) for kind in kinds}))


if __name__ == "__main__":
    main()
