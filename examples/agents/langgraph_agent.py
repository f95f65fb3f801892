#!/usr/bin/env python3
"""A LangGraph payments agent whose tools are guarded by Palisade.

The graph is the usual agent loop (a model node deciding tool calls, then
LangGraph's ToolNode running them, until the model answers); the model here
is a fixed plan standing in for an LLM, so this runs with no API key and no
network. The tools are fake, the guard is real. With the daemon running the
finance policy (examples/policies/finance.yaml), as root:

    pip install './clients/python[langgraph]'
    palisade exec --identity finance-agent -- python3 examples/agents/langgraph_agent.py

What happens: 800 USD is paid; 250 EUR and a refund come back to the model
as tool errors ("denied by policy: …"); 4,200 USD needs a human: the model
is told the approval id, and (with ``--wait``) the guard waits for
``palisade approve <id>`` and pays exactly once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

try:
    import palisade_client  # noqa: F401
except ImportError:  # not installed: use the copy in this repository
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from palisade_client.langchain import guard_tool

PLAN: list[tuple[str, dict[str, Any]]] = [
    ("create_payment", {"amount": 800, "currency": "USD", "customer": "cus_alice"}),
    ("create_payment", {"amount": 250, "currency": "EUR", "customer": "cus_bob"}),
    ("refund", {"payment": "pi_1"}),
    ("create_payment", {"amount": 4200, "currency": "USD", "customer": "cus_carol"}),
]


def build(wait: float | None) -> Any:
    ledger: list[str] = []

    @guard_tool(tool="stripe", action="create_payment", wait=wait, context={"ticket": "INV-2041"})
    @tool
    def create_payment(amount: float, currency: str, customer: str) -> str:
        """Pay a customer."""
        ledger.append(f"pi_{len(ledger) + 1}")
        return ledger[-1]

    @guard_tool(tool="stripe", action="refund")
    @tool
    def refund(payment: str) -> str:
        """Refund a payment."""
        return f"re_{payment}"

    def model(state: MessagesState) -> dict[str, list[AIMessage]]:
        """Stands in for an LLM: the next call of the plan, then an answer."""
        done = sum(isinstance(m, ToolMessage) for m in state["messages"])
        if done < len(PLAN):
            name, args = PLAN[done]
            print(f"agent: {name}({args})")
            return {"messages": [AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call-{done}"}])]}
        return {"messages": [AIMessage(content=f"payments made: {', '.join(ledger) or 'none'}")]}

    def report(state: MessagesState) -> dict[str, list[Any]]:
        last = state["messages"][-1]
        if isinstance(last, ToolMessage):
            print(f"  tool {last.status}: {last.content}")
        return {"messages": []}

    graph = StateGraph(MessagesState)
    graph.add_node("model", model)
    graph.add_node("tools", ToolNode([create_payment, refund]))
    graph.add_node("report", report)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", lambda s: "tools" if s["messages"][-1].tool_calls else END)
    graph.add_edge("tools", "report")
    graph.add_edge("report", "model")
    return graph.compile()


def main() -> None:
    parser = argparse.ArgumentParser(description="A LangGraph payments agent guarded by Palisade.")
    parser.add_argument("--wait", type=float, default=None, help="seconds to wait for a human's approval")
    args = parser.parse_args()
    final = build(args.wait).invoke({"messages": []}, {"recursion_limit": 50})
    print(f"agent: {final['messages'][-1].content}")


if __name__ == "__main__":
    main()
