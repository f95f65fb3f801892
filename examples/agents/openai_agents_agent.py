#!/usr/bin/env python3
"""An OpenAI Agents SDK payments agent whose tools are guarded by Palisade.

The agent runs in the SDK's Runner. Without ``--live`` its model is the
SDK's own ScriptedModel playing a fixed plan (no API key, no network); with
``--live`` it uses the default OpenAI model, which needs ``OPENAI_API_KEY``
and a policy that lets the agent reach the API. The tools are fake, the
guard is real. With the daemon running the finance policy
(examples/policies/finance.yaml), as root:

    pip install './clients/python[openai-agents]'
    palisade exec --identity finance-agent -- python3 examples/agents/openai_agents_agent.py

What happens: 800 USD is paid; the model is shown "denied by policy: …" as
the output of the 250 EUR payment and of the refund; 4,200 USD needs a
human: the model is told the approval id, and (with ``--wait``) the guard
waits for ``palisade approve <id>`` and pays exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

try:
    import palisade_client  # noqa: F401
except ImportError:  # not installed: use the copy in this repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))

from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call

from palisade_client import AsyncClient
from palisade_client.openai_agents import guard_tool

PLAN: list[tuple[str, dict[str, Any]]] = [
    ("create_payment", {"amount": 800, "currency": "USD", "customer": "cus_alice"}),
    ("create_payment", {"amount": 250, "currency": "EUR", "customer": "cus_bob"}),
    ("refund", {"payment": "pi_1"}),
    ("create_payment", {"amount": 4200, "currency": "USD", "customer": "cus_carol"}),
]


async def main(wait: float | None, live: bool) -> None:
    palisade = AsyncClient()
    ledger: list[str] = []

    @guard_tool(tool="stripe", action="create_payment", client=palisade, wait=wait)
    @function_tool
    def create_payment(amount: float, currency: str, customer: str) -> str:
        """Pay a customer."""
        ledger.append(f"pi_{len(ledger) + 1}")
        return ledger[-1]

    @guard_tool(tool="stripe", action="refund", client=palisade)
    @function_tool
    def refund(payment: str) -> str:
        """Refund a payment."""
        return f"re_{payment}"

    if live:
        model: Any = None
    else:
        set_tracing_disabled(True)
        steps: list[Any] = [[function_call(name, args, call_id=f"call-{i}")] for i, (name, args) in enumerate(PLAN)]
        model = ScriptedModel([*steps, [assistant_message("done")]])
    agent = Agent(
        name="payments",
        instructions="Make the payments the billing team asked for.",
        tools=[create_payment, refund],
        **({"model": model} if model is not None else {}),
    )
    result = await Runner.run(agent, "Pay the invoices.", run_config=RunConfig(tracing_disabled=not live))
    for item in result.new_items:
        if item.type == "tool_call_item":
            print(f"agent: {item.raw_item.name}({item.raw_item.arguments})")
        elif item.type == "tool_call_output_item":
            print(f"  tool output: {item.output}")
    print(f"agent: payments made: {', '.join(ledger) or 'none'}")
    await palisade.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="An OpenAI Agents SDK payments agent guarded by Palisade.")
    parser.add_argument("--wait", type=float, default=None, help="seconds to wait for a human's approval")
    parser.add_argument("--live", action="store_true", help="use a real OpenAI model (needs OPENAI_API_KEY)")
    args = parser.parse_args()
    asyncio.run(main(args.wait, args.live))
