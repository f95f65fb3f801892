"""OpenAI Agents SDK: a function tool that asks Palisade before it runs.

``pip install 'palisade-client[openai-agents]'``::

    from agents import function_tool
    from palisade_client.openai_agents import guard_tool

    @guard_tool(tool="stripe", action="create_payment")
    @function_tool
    def create_payment(amount: float, currency: str, customer: str) -> str:
        \"\"\"Pay a customer.\"\"\"
        ...

or ``guard_tool(some_function_tool, tool=..., action=...)``. The guarded
tool is the same ``FunctionTool`` (name, schema, guardrails, failure
handling) with its invocation behind the check. A refused call does not run;
its output to the model is ``denied by policy: <reason>…``, as the SDK
reports a tool that failed (an error string in place of the result). A call
that needs a human returns the approval id the same way, or waits ``wait=``
seconds for it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from agents import FunctionTool
from agents.tool_context import ToolContext

from ._flow import OnDecision
from ._gate import Gate, ParamsFn, ResourceFn
from .aio import AsyncClient
from .client import Client

__all__ = ["guard_tool"]


def guard_tool(
    inner: FunctionTool | None = None,
    *,
    tool: str | None = None,
    action: str = "call",
    client: Client | AsyncClient | None = None,
    resource: ResourceFn = "",
    params: ParamsFn | None = None,
    context: Mapping[str, Any] | None = None,
    wait: float | None = None,
    on_decision: OnDecision | None = None,
) -> FunctionTool | Callable[[FunctionTool], FunctionTool]:
    """``inner`` guarded by Palisade, or a decorator doing that when
    ``inner`` is omitted. ``tool`` defaults to the tool's name and
    ``action`` to ``"call"``: name them as the policy does."""

    def wrap(inner: FunctionTool) -> FunctionTool:
        if not isinstance(inner, FunctionTool):
            raise TypeError(f"guard_tool: expected an Agents SDK FunctionTool, got {type(inner).__name__}")
        gate = Gate(
            tool or inner.name,
            action,
            client=client,
            resource=resource,
            params=params,
            context=context,
            wait=wait,
            on_decision=on_decision,
        )
        invoke = inner.on_invoke_tool

        async def on_invoke_tool(ctx: ToolContext[Any], input_json: str) -> Any:
            try:
                arguments = json.loads(input_json) if input_json else {}
            except json.JSONDecodeError as e:
                return f"denied by policy: invalid-input: the arguments are not JSON ({e})"
            if not isinstance(arguments, dict):
                return "denied by policy: invalid-input: the arguments are not a JSON object"
            refusal = await gate.acheck(arguments)
            if refusal is not None:
                return refusal.text
            return await invoke(ctx, input_json)

        return dataclasses.replace(inner, on_invoke_tool=on_invoke_tool)

    return wrap(inner) if inner is not None else wrap
