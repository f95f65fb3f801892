"""What the framework adapter tests share.

They run enrolled as ``finance-agent`` against a real daemon with the policy
in ``tests/tests/python_adapters.rs``, started by that test with
``PALISADE_SOCKET`` set, and with a stand-in operator that approves
approvals whose resource is ``auto-approve`` and rejects ``auto-reject``
ones. Run by hand only in that setting; without a daemon they fail.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from palisade_client import ApprovalState, Client  # noqa: E402

AUTO_APPROVE = "auto-approve"
AUTO_REJECT = "auto-reject"

if not os.environ.get("PALISADE_SOCKET"):
    raise SystemExit(
        "PALISADE_SOCKET is not set: these tests run against a real daemon, "
        "from tests/tests/python_adapters.rs (cargo xtask test)"
    )


def usd(amount: float, customer: str = "cus_1") -> dict[str, Any]:
    return {"amount": amount, "currency": "USD", "customer": customer}


class Ledger:
    """A fake payment provider that records what actually ran."""

    def __init__(self) -> None:
        self.paid: list[float] = []
        self.refunded: list[str] = []

    def pay(self, amount: float, currency: str, customer: str) -> str:
        self.paid.append(amount)
        return f"pi_{len(self.paid)}"

    def refund(self, payment: str) -> str:
        self.refunded.append(payment)
        return f"re_{payment}"


def approval_id_in(text: str) -> str:
    """The approval id in an adapter's "approval required" text."""
    marker = "(approval "
    assert marker in text, text
    return text.split(marker, 1)[1].split(";", 1)[0]


def wait_until_approved(client: Client, approval_id: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get_approval(approval_id).state is ApprovalState.APPROVED:
            return
        time.sleep(0.1)
    raise AssertionError(f"approval {approval_id} was not approved within {timeout}s")
