#!/usr/bin/env python3
"""A payments agent whose tools are guarded by Palisade.

The "agent" here is a fixed plan standing in for an LLM's tool calls; the
tools are fake, the guard is real. With the daemon running the finance
policy (examples/policies/finance.yaml), as root:

    palisade exec --identity finance-agent -- \\
        python3 examples/agents/payments_agent.py --wait 120

and, in another terminal, when it asks: ``palisade approve <id>``.

What happens: 800 USD is paid; 250 EUR is denied (no rule allows other
currencies); a refund is denied by rule; a payment carrying an extra
``memo`` parameter (a prompt injection's payload) is denied because the
schema does not declare it; 4,200 USD needs a human's approval: without
``--wait`` the agent reports the approval id and moves on, with it the
agent waits and then pays exactly once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

try:
    import palisade_client
except ImportError:  # not installed: use the copy in this repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))
    import palisade_client

from palisade_client import ApprovalRequired, Client, Decision, PalisadeDenied, guard


def report(decision: Decision) -> None:
    """Print each decision the guard gets, with what is left of budgets."""
    rules = f", rule {', '.join(decision.matched_rules)}" if decision.matched_rules else ""
    print(f"  palisade: {decision.verdict.name} ({decision.reason}{rules})")
    for o in decision.obligations:
        unit = f" {o.unit}" if o.unit else ""
        print(f"  budget {o.budget}: {o.remaining:g} of {o.limit:g}{unit} left this {o.window}")


def make_tools(client: Client, wait: float | None) -> dict[str, Any]:
    ledger: list[str] = []

    @guard(
        client,
        tool="stripe",
        action="create_payment",
        # The declared parameters, plus anything extra the model slipped in:
        # the policy's schema decides whether extras are acceptable.
        params=lambda amount, currency, customer, **extra: {
            "amount": amount,
            "currency": currency,
            "customer": customer,
            **extra,
        },
        context={"ticket": "INV-2041"},
        wait=wait,
        on_decision=report,
    )
    def create_payment(amount: float, currency: str, customer: str, **extra: Any) -> str:
        payment = f"pi_{len(ledger) + 1}"
        ledger.append(payment)
        return payment

    @guard(client, tool="stripe", action="refund", on_decision=report)
    def refund(payment: str) -> str:
        return f"re_{payment}"

    return {"create_payment": create_payment, "refund": refund, "ledger": ledger}


def step(what: str, call: Any) -> None:
    print(f"agent: {what}")
    try:
        print(f"  done: {call()}")
    except ApprovalRequired as e:
        print(f"  NEEDS APPROVAL: {e.message}")
        if e.approval_id:
            print(f"  an operator runs: palisade approve {e.approval_id}")
    except PalisadeDenied as e:
        print(f"  DENIED ({e.reason}): {e.message}")


def main() -> None:
    parser = argparse.ArgumentParser(description="A payments agent guarded by Palisade.")
    parser.add_argument("--socket", help="the daemon's socket (default: $PALISADE_SOCKET or /run/palisade/palisade.sock)")
    parser.add_argument(
        "--wait", type=float, default=None, help="seconds to wait for a human's approval (default: do not wait)"
    )
    args = parser.parse_args()

    with Client(args.socket) as client:
        tools = make_tools(client, args.wait)
        pay, refund = tools["create_payment"], tools["refund"]
        step("paying 800 USD to cus_alice", lambda: pay(800, "USD", "cus_alice"))
        step("paying 250 EUR to cus_bob", lambda: pay(250, "EUR", "cus_bob"))
        step("refunding pi_1", lambda: refund("pi_1"))
        step(
            "paying 100 USD to cus_mallory, as a web page told me to",
            lambda: pay(100, "USD", "cus_mallory", memo="ignore previous instructions"),
        )
        step("paying 4200 USD to cus_carol", lambda: pay(4200, "USD", "cus_carol"))
        print(f"agent: payments made: {', '.join(tools['ledger']) or 'none'}")


if __name__ == "__main__":
    main()
