"""The OpenAI Agents SDK adapter against the real daemon and the real
openai-agents package: function tools invoked directly, and once through the
SDK's Runner driven by its own ScriptedModel (no model, no network)."""

from __future__ import annotations

import asyncio
import json
import unittest
from typing import Any

from _support import AUTO_APPROVE, AUTO_REJECT, Ledger, approval_id_in, usd, wait_until_approved
from agents import Agent, FunctionTool, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from agents.tool_context import ToolContext

from palisade_client import AsyncClient, Client, Decision
from palisade_client.openai_agents import guard_tool

set_tracing_disabled(True)


class Tools:
    def __init__(self, **options: Any) -> None:
        self.ledger = Ledger()
        self.decisions: list[Decision] = []
        ledger = self.ledger

        @guard_tool(tool="stripe", action="create_payment", on_decision=self.decisions.append, **options)
        @function_tool
        def create_payment(amount: float, currency: str, customer: str) -> str:
            """Pay a customer."""
            return ledger.pay(amount, currency, customer)

        @function_tool
        async def refund(payment: str) -> str:
            """Refund a payment."""
            return ledger.refund(payment)

        self.create_payment: FunctionTool = create_payment
        self.refund: FunctionTool = guard_tool(refund, tool="stripe", action="refund")


def invoke(tool: FunctionTool, arguments: dict[str, Any]) -> Any:
    raw = json.dumps(arguments)
    ctx = ToolContext(context=None, tool_name=tool.name, tool_call_id="call-1", tool_arguments=raw)
    return asyncio.run(tool.on_invoke_tool(ctx, raw))


class OpenAIAgentsAdapterTest(unittest.TestCase):
    def test_allowed_call_runs_once(self) -> None:
        t = Tools()
        self.assertEqual(invoke(t.create_payment, usd(800)), "pi_1")
        self.assertEqual(t.ledger.paid, [800])
        self.assertEqual([d.reason for d in t.decisions], ["allowed"])
        self.assertEqual(t.create_payment.name, "create_payment")
        self.assertEqual(set(t.create_payment.params_json_schema["properties"]), {"amount", "currency", "customer"})

    def test_denied_call_returns_the_reason_to_the_model_and_never_runs(self) -> None:
        t = Tools()
        out = invoke(t.create_payment, usd(250) | {"currency": "EUR"})
        self.assertTrue(out.startswith("denied by policy: no-matching-rule"), out)
        refused = invoke(t.refund, {"payment": "pi_9"})
        self.assertTrue(refused.startswith("denied by policy: denied-by-rule"), refused)
        self.assertEqual((t.ledger.paid, t.ledger.refunded), ([], []))

    def test_through_the_runner(self) -> None:
        t = Tools()
        model = ScriptedModel(
            [
                [function_call("create_payment", usd(300), call_id="c1")],
                [function_call("refund", {"payment": "pi_1"}, call_id="c2")],
                [assistant_message("done")],
            ]
        )
        agent = Agent(name="payments", instructions="Pay.", model=model, tools=[t.create_payment, t.refund])
        result = asyncio.run(Runner.run(agent, "pay and refund", run_config=RunConfig(tracing_disabled=True)))
        outputs = [item.output for item in result.new_items if item.type == "tool_call_output_item"]
        self.assertEqual(outputs[0], "pi_1")
        self.assertTrue(str(outputs[1]).startswith("denied by policy: denied-by-rule"), outputs)
        self.assertEqual(result.final_output, "done")
        # The model was shown the denial as the tool's output.
        self.assertIn("denied by policy: denied-by-rule", json.dumps(model.last_call.input, default=str))
        self.assertEqual((t.ledger.paid, t.ledger.refunded), ([300], []))

    def test_approval_id_returned_then_the_approved_call_runs_once(self) -> None:
        t = Tools(resource=AUTO_APPROVE)
        first = invoke(t.create_payment, usd(4200))
        self.assertTrue(first.startswith("approval required"), first)
        wait_until_approved(Client(), approval_id_in(first))
        self.assertEqual(invoke(t.create_payment, usd(4200)), "pi_1")
        self.assertEqual(t.ledger.paid, [4200])

    def test_wait_for_approval_with_both_clients(self) -> None:
        for client in (Client(), AsyncClient()):
            with self.subTest(client=type(client).__name__):
                t = Tools(resource=AUTO_APPROVE, wait=30, client=client)
                self.assertEqual(invoke(t.create_payment, usd(4300)), "pi_1")
                self.assertEqual([d.reason for d in t.decisions], ["approval-condition", "approved-override"])
        rejected = Tools(resource=AUTO_REJECT, wait=30)
        out = invoke(rejected.create_payment, usd(4400))
        self.assertTrue(out.startswith("denied by policy: approval-rejected"), out)
        self.assertEqual(rejected.ledger.paid, [])


if __name__ == "__main__":
    unittest.main()
