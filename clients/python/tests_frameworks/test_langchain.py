"""The LangChain / LangGraph adapter against the real daemon and the real
langchain-core and langgraph packages: tools invoked directly and through
LangGraph's ToolNode, no model and no network."""

from __future__ import annotations

import asyncio
import unittest
from typing import Any

from _support import AUTO_APPROVE, AUTO_REJECT, Ledger, approval_id_in, usd, wait_until_approved
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from pydantic import BaseModel

from palisade_client import AsyncClient, Client, Decision
from palisade_client.langchain import guard_tool


class RefundArgs(BaseModel):
    payment: str


class Tools:
    def __init__(self, **options: Any) -> None:
        self.ledger = Ledger()
        self.decisions: list[Decision] = []
        ledger = self.ledger

        @guard_tool(tool="stripe", action="create_payment", on_decision=self.decisions.append, **options)
        @tool
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


def run_graph(tools: list[BaseTool], calls: list[dict[str, Any]]) -> list[ToolMessage]:
    """LangGraph's ToolNode in a one-node graph, fed the tool calls a model
    would have made."""
    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    state = graph.compile().invoke({"messages": [AIMessage(content="", tool_calls=calls)]})
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


class LangChainAdapterTest(unittest.TestCase):
    def test_allowed_call_runs_once(self) -> None:
        t = Tools()
        self.assertEqual(t.create_payment.invoke(usd(800)), "pi_1")
        self.assertEqual(t.ledger.paid, [800])
        self.assertEqual([d.reason for d in t.decisions], ["allowed"])
        self.assertEqual(t.decisions[0].matched_rules, ("payments",))

    def test_same_name_description_and_schema(self) -> None:
        t = Tools()
        self.assertEqual(t.create_payment.name, "create_payment")
        self.assertEqual(t.create_payment.description, "Pay a customer.")
        self.assertEqual(set(t.create_payment.args), {"amount", "currency", "customer"})
        self.assertEqual(t.refund.name, "refund")

    def test_denied_call_is_a_tool_error_and_never_runs(self) -> None:
        t = Tools()
        out = t.create_payment.invoke(usd(250) | {"currency": "EUR"})
        self.assertTrue(out.startswith("denied by policy: no-matching-rule"), out)
        refused = t.refund.invoke({"payment": "pi_9"})
        self.assertTrue(refused.startswith("denied by policy: denied-by-rule"), refused)
        self.assertEqual((t.ledger.paid, t.ledger.refunded), ([], []))

    def test_langgraph_tool_node_reports_the_denial_as_an_error_message(self) -> None:
        t = Tools()
        messages = run_graph(
            [t.create_payment, t.refund],
            [
                {"name": "create_payment", "args": usd(700), "id": "call-1"},
                {"name": "refund", "args": {"payment": "pi_1"}, "id": "call-2"},
            ],
        )
        by_id = {m.tool_call_id: m for m in messages}
        self.assertEqual((by_id["call-1"].status, by_id["call-1"].content), ("success", "pi_1"))
        self.assertEqual(by_id["call-2"].status, "error")
        self.assertTrue(str(by_id["call-2"].content).startswith("denied by policy: denied-by-rule"))
        self.assertEqual((t.ledger.paid, t.ledger.refunded), ([700], []))

    def test_approval_id_returned_then_the_approved_call_runs_once(self) -> None:
        t = Tools(resource=AUTO_APPROVE)
        first = t.create_payment.invoke(usd(4200))
        self.assertTrue(first.startswith("approval required: stripe.create_payment waits for a human"), first)
        approval_id = approval_id_in(first)
        self.assertEqual(t.ledger.paid, [])
        wait_until_approved(Client(), approval_id)
        self.assertEqual(t.create_payment.invoke(usd(4200)), "pi_1")
        self.assertEqual(t.ledger.paid, [4200])
        self.assertEqual(t.decisions[-1].reason, "approved-override")
        # The approval was for one call: the next one asks a human again.
        again = t.create_payment.invoke(usd(4200))
        self.assertTrue(again.startswith("approval required"), again)
        self.assertNotEqual(approval_id_in(again), approval_id)
        self.assertEqual(t.ledger.paid, [4200])

    def test_wait_for_approval(self) -> None:
        t = Tools(resource=AUTO_APPROVE, wait=30)
        self.assertEqual(t.create_payment.invoke(usd(4300)), "pi_1")
        self.assertEqual([d.reason for d in t.decisions], ["approval-condition", "approved-override"])
        rejected = Tools(resource=AUTO_REJECT, wait=30)
        out = rejected.create_payment.invoke(usd(4400))
        self.assertTrue(out.startswith("denied by policy: approval-rejected"), out)
        self.assertIn("test operator", out)
        self.assertEqual(rejected.ledger.paid, [])

    def test_async_invocation_with_both_clients(self) -> None:
        for client in (Client(), AsyncClient()):
            with self.subTest(client=type(client).__name__):
                t = Tools(client=client)

                async def go() -> tuple[str, str]:
                    ok = await t.create_payment.ainvoke(usd(90))
                    no = await t.create_payment.ainvoke(usd(90) | {"currency": "GBP"})
                    return ok, no

                ok, no = asyncio.run(go())
                self.assertEqual(ok, "pi_1")
                self.assertTrue(no.startswith("denied by policy: no-matching-rule"), no)
                self.assertEqual(t.ledger.paid, [90])


if __name__ == "__main__":
    unittest.main()
