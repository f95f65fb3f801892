"""The CrewAI adapter against the real daemon and the real crewai package:
tools invoked directly (``run``, ``arun`` and the structured tool an agent
uses), no model and no network."""

from __future__ import annotations

import asyncio
import unittest
from typing import Any

from _support import AUTO_APPROVE, AUTO_REJECT, Ledger, approval_id_in, usd, wait_until_approved
from crewai.tools import BaseTool, tool
from crewai.tools.tool_failure import ToolFailure
from pydantic import BaseModel

from palisade_client import AsyncClient, Client, Decision
from palisade_client.crewai import guard_tool


class RefundArgs(BaseModel):
    payment: str


class Tools:
    def __init__(self, **options: Any) -> None:
        self.ledger = Ledger()
        self.decisions: list[Decision] = []
        ledger = self.ledger

        @guard_tool(tool="stripe", action="create_payment", on_decision=self.decisions.append, **options)
        @tool("create_payment")
        def create_payment(amount: float, currency: str, customer: str) -> str:
            """Pay a customer."""
            return ledger.pay(amount, currency, customer)

        class Refund(BaseTool):
            name: str = "refund"
            description: str = "Refund a payment."
            args_schema: type[BaseModel] = RefundArgs

            def _run(self, payment: str) -> str:
                return ledger.refund(payment)

        self.create_payment = create_payment
        self.refund = guard_tool(Refund(), tool="stripe", action="refund")


class CrewAIAdapterTest(unittest.TestCase):
    def test_allowed_call_runs_once(self) -> None:
        t = Tools()
        self.assertEqual(t.create_payment.run(**usd(800)), "pi_1")
        self.assertEqual(t.ledger.paid, [800])
        self.assertEqual([d.reason for d in t.decisions], ["allowed"])
        self.assertEqual(t.create_payment.name, "create_payment")

    def test_denied_call_is_a_tool_failure_and_never_runs(self) -> None:
        t = Tools()
        out = t.create_payment.run(**(usd(250) | {"currency": "EUR"}))
        self.assertIsInstance(out, ToolFailure)
        self.assertTrue(out.message.startswith("denied by policy: no-matching-rule"), out)
        self.assertEqual(out.details["reason"], "no-matching-rule")
        self.assertFalse(out.retryable)
        # What the agent reads.
        self.assertTrue(t.create_payment.format_output_for_agent(out).startswith("denied by policy:"))
        refused = t.refund.run(payment="pi_9")
        self.assertIsInstance(refused, ToolFailure)
        self.assertTrue(refused.message.startswith("denied by policy: denied-by-rule"), refused)
        self.assertEqual((t.ledger.paid, t.ledger.refunded), ([], []))

    def test_the_structured_tool_an_agent_calls_is_guarded(self) -> None:
        t = Tools()
        structured = t.create_payment.to_structured_tool()
        self.assertEqual(structured.invoke(usd(700)), "pi_1")
        denied = structured.invoke(usd(700) | {"currency": "JPY"})
        self.assertIsInstance(denied, ToolFailure)
        self.assertEqual(t.ledger.paid, [700])

    def test_approval_id_returned_then_the_approved_call_runs_once(self) -> None:
        t = Tools(resource=AUTO_APPROVE)
        first = t.create_payment.run(**usd(4200))
        self.assertIsInstance(first, ToolFailure)
        self.assertTrue(first.retryable)
        approval_id = approval_id_in(first.message)
        self.assertEqual(first.details["approval_id"], approval_id)
        wait_until_approved(Client(), approval_id)
        self.assertEqual(t.create_payment.run(**usd(4200)), "pi_1")
        self.assertEqual(t.ledger.paid, [4200])
        self.assertEqual(t.decisions[-1].reason, "approved-override")

    def test_wait_for_approval(self) -> None:
        t = Tools(resource=AUTO_APPROVE, wait=30)
        self.assertEqual(t.create_payment.run(**usd(4300)), "pi_1")
        rejected = Tools(resource=AUTO_REJECT, wait=30)
        out = rejected.create_payment.run(**usd(4400))
        self.assertIsInstance(out, ToolFailure)
        self.assertTrue(out.message.startswith("denied by policy: approval-rejected"), out)
        self.assertEqual(rejected.ledger.paid, [])

    def test_async_run(self) -> None:
        t = Tools(client=AsyncClient())

        async def go() -> tuple[Any, Any]:
            return await t.create_payment.arun(**usd(90)), await t.create_payment.arun(**(usd(90) | {"currency": "GBP"}))

        ok, no = asyncio.run(go())
        self.assertEqual(ok, "pi_1")
        self.assertIsInstance(no, ToolFailure)
        self.assertEqual(t.ledger.paid, [90])


if __name__ == "__main__":
    unittest.main()
