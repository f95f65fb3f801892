#!/usr/bin/env python3
"""Scenarios of the Python client against a real daemon.

``tests/tests/python_client.rs`` runs ``python3 scenarios.py NAME`` enrolled
(``palisade exec --identity finance-agent``) with ``PALISADE_SOCKET`` set,
and asserts on what it prints: one JSON object per line, the last one being
the scenario's result. Some scenarios print a progress line first and wait
for a line on stdin (the test acts in between: approves, stops the daemon).

Every scenario guards a fake payment function that counts its runs, so the
test can check that a denied call never ran and an approved one ran once.
The policy they expect is ``POLICY`` in python_client.rs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from palisade_client import (  # noqa: E402
    ApprovalRequired,
    Client,
    Decision,
    PalisadeDenied,
    PalisadeError,
    guard,
)

SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {}


def scenario(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    SCENARIOS[fn.__name__.replace("_", "-")] = fn
    return fn


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, default=_plain), flush=True)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.name
    raise TypeError(f"cannot print a {type(value).__name__}")


def wait_for_go() -> None:
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected `go` on stdin, got {line!r}")


def denial(e: PalisadeDenied) -> dict[str, Any]:
    return {
        "error": type(e).__name__,
        "is_denied": isinstance(e, PalisadeDenied),
        "reason": e.reason,
        "message": e.message,
        "text": str(e),
        "decision_id": e.decision_id,
        "matched_rules": list(e.matched_rules),
        "policy_version": e.policy_version,
        "local": e.decision.local,
        "status_code": e.decision.status_code.name if e.decision.status_code else None,
        "approval_id": getattr(e, "approval_id", None),
        "approval_state": e.approval.state.name if e.approval else None,
        "approver": e.approval.approver if e.approval else None,
    }


class Payments:
    """A fake payment tool that counts how often it really ran."""

    def __init__(self, client: Client, wait: float | None = None) -> None:
        self.runs: list[dict[str, Any]] = []
        self.decisions: list[Decision] = []
        self.create_payment = guard(
            client,
            tool="stripe",
            action="create_payment",
            params=lambda amount, currency="USD", customer="cus_1": {
                "amount": amount,
                "currency": currency,
                "customer": customer,
            },
            wait=wait,
            on_decision=self.decisions.append,
        )(self._create_payment)
        self.refund = guard(client, tool="stripe", action="refund", on_decision=self.decisions.append)(
            self._refund
        )

    def _create_payment(self, amount: float, currency: str = "USD", customer: str = "cus_1") -> str:
        self.runs.append({"amount": amount, "currency": currency})
        return f"pi_{len(self.runs)}"

    def _refund(self, payment: str) -> str:
        self.runs.append({"refund": payment})
        return "re_1"

    def pay(self, amount: float, currency: str = "USD") -> dict[str, Any]:
        before = len(self.runs)
        try:
            result = self.create_payment(amount, currency=currency)
            outcome: dict[str, Any] = {"result": result}
        except PalisadeDenied as e:
            outcome = denial(e)
        outcome["ran"] = len(self.runs) - before
        return outcome


@scenario
def allow() -> dict[str, Any]:
    payments = Payments(Client())
    outcome = payments.pay(800)
    return {"payment": outcome, "decisions": payments.decisions}


@scenario
def deny() -> dict[str, Any]:
    payments = Payments(Client())
    euro = payments.pay(250, currency="EUR")
    try:
        payments.refund("pi_1")
        refund: dict[str, Any] = {"result": "refunded"}
    except PalisadeDenied as e:
        refund = denial(e)
    return {"euro": euro, "refund": refund, "runs": len(payments.runs)}


@scenario
def approval_raise() -> dict[str, Any]:
    client = Client()
    payments = Payments(client)
    outcome = payments.pay(4200)
    approval = client.get_approval(outcome["approval_id"])
    return {"payment": outcome, "approval": approval}


@scenario
def approval_wait() -> dict[str, Any]:
    """The test approves (or rejects) while the guard waits."""
    client = Client()
    payments = Payments(client, wait=60)
    outcome = payments.pay(4200)
    return {"payment": outcome, "decisions": payments.decisions, "runs": len(payments.runs)}


@scenario
def override_once() -> dict[str, Any]:
    """The approval flow by hand: the override token allows the approved call
    once, and nothing else."""
    client = Client()
    params = {"amount": 4300, "currency": "USD", "customer": "cus_9"}
    first = client.decide("stripe", "create_payment", params=params)
    emit({"approval_id": first.approval_id})
    approval = client.wait_for_approval(first.approval_id, timeout=60)
    token = approval.override_token
    approved = client.decide("stripe", "create_payment", params=params, override_token=token)
    replayed = client.decide("stripe", "create_payment", params=params, override_token=token)
    after = client.get_approval(first.approval_id)
    return {
        "first": first,
        "approval_state": approval.state.name,
        "approver": approval.approver,
        "had_token": bool(token),
        "token_in_repr": token in repr(approval),
        "approved": approved,
        "replayed": replayed,
        "after_state": after.state.name,
        "after_has_token": bool(after.override_token),
    }


@scenario
def budget() -> dict[str, Any]:
    payments = Payments(Client())
    outcomes = [payments.pay(amount) for amount in (800, 900, 500)]
    return {"payments": outcomes, "decisions": payments.decisions, "runs": len(payments.runs)}


@scenario
def daemon_down() -> dict[str, Any]:
    """Allowed while the daemon runs; the test stops it; then denied."""
    client = Client()
    payments = Payments(client)
    emit({"before": payments.pay(100)})
    wait_for_go()
    after = payments.pay(100)
    direct = client.decide("stripe", "create_payment", params={"amount": 100, "currency": "USD", "customer": "c"})
    try:
        client.get_approval("whatever")
        approval_error = None
    except PalisadeError as e:
        approval_error = e.code.name if e.code else "none"
    return {"after": after, "direct": direct, "approval_error": approval_error}


@scenario
def wrong_socket() -> dict[str, Any]:
    client = Client(os.environ["PALISADE_WRONG_SOCKET"])
    payments = Payments(client)
    return {"payment": payments.pay(100)}


@scenario
def deadline() -> dict[str, Any]:
    """A server that accepts and never answers: the deadline denies."""
    import socket
    import time

    path = os.environ["PALISADE_SILENT_SOCKET"]
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(path)
    silent.listen(16)
    client = Client(path, timeout=0.5)
    payments = Payments(client)
    started = time.monotonic()
    outcome = payments.pay(100)
    return {"payment": outcome, "seconds": time.monotonic() - started}


@scenario
def unenrolled() -> dict[str, Any]:
    payments = Payments(Client())
    return {"payment": payments.pay(100)}


@scenario
def asyncio_guard() -> dict[str, Any]:
    client = Client()
    runs: list[float] = []

    @guard(client, tool="stripe", action="create_payment")
    async def create_payment(amount: float, currency: str, customer: str) -> str:
        runs.append(amount)
        await asyncio.sleep(0)
        return "pi_async"

    async def main() -> dict[str, Any]:
        allowed = await create_payment(700, "USD", "cus_2")
        try:
            await create_payment(700, "EUR", "cus_2")
            denied: dict[str, Any] = {"result": "ran"}
        except PalisadeDenied as e:
            denied = denial(e)
        return {"allowed": allowed, "denied": denied, "runs": runs}

    return asyncio.run(main())


@scenario
def egress() -> dict[str, Any]:
    client = Client()
    grant = client.request_egress("10.50.1.7", [5432], protocol="tcp", ttl_seconds=60, reason="migration")
    try:
        client.request_egress("192.0.2.1", [443], protocol="tcp", ttl_seconds=60)
        refused = None
    except PalisadeError as e:
        refused = {"code": e.code.name if e.code else None, "text": str(e)}
    return {"grant": grant, "refused": refused}


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        raise SystemExit(f"usage: scenarios.py {{{','.join(SCENARIOS)}}}")
    result = SCENARIOS[sys.argv[1]]()
    emit({"scenario": sys.argv[1], **result})


if __name__ == "__main__":
    main()
