"""LangChain and LangGraph: a tool that asks Palisade before it runs.

``pip install 'palisade-client[langchain]'`` (or ``[langgraph]``)::

    from langchain_core.tools import tool
    from palisade_client.langchain import guard_tool

    @guard_tool(tool="stripe", action="create_payment")
    @tool
    def create_payment(amount: float, currency: str, customer: str) -> str:
        \"\"\"Pay a customer.\"\"\"
        ...

or ``guard_tool(some_tool, tool="stripe", action="create_payment")`` for any
``BaseTool``. The guarded tool has the same name, description and argument
schema. Its arguments are the call's ``params`` (or what ``params=`` makes
of them). A refused call raises ``ToolException("denied by policy:
<reason>…")``, which the tool hands back as its output
(``handle_tool_error``): LangGraph's ``ToolNode`` turns it into a
``ToolMessage`` with ``status="error"``, so the model reads why. A call
that needs a human returns the approval id the same way, or waits
``wait=`` seconds for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, overload

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from ._flow import OnDecision
from ._gate import Gate, ParamsFn, ResourceFn
from .aio import AsyncClient
from .client import Client

__all__ = ["guard_tool"]


@overload
def guard_tool(
    inner: BaseTool,
    *,
    tool: str | None = ...,
    action: str = ...,
    client: Client | AsyncClient | None = ...,
    resource: ResourceFn = ...,
    params: ParamsFn | None = ...,
    context: Mapping[str, Any] | None = ...,
    wait: float | None = ...,
    on_decision: OnDecision | None = ...,
) -> BaseTool: ...


@overload
def guard_tool(
    inner: None = ...,
    *,
    tool: str | None = ...,
    action: str = ...,
    client: Client | AsyncClient | None = ...,
    resource: ResourceFn = ...,
    params: ParamsFn | None = ...,
    context: Mapping[str, Any] | None = ...,
    wait: float | None = ...,
    on_decision: OnDecision | None = ...,
) -> Callable[[BaseTool], BaseTool]: ...


def guard_tool(
    inner: BaseTool | None = None,
    *,
    tool: str | None = None,
    action: str = "call",
    client: Client | AsyncClient | None = None,
    resource: ResourceFn = "",
    params: ParamsFn | None = None,
    context: Mapping[str, Any] | None = None,
    wait: float | None = None,
    on_decision: OnDecision | None = None,
) -> BaseTool | Callable[[BaseTool], BaseTool]:
    """``inner`` guarded by Palisade, or a decorator doing that when
    ``inner`` is omitted. ``tool`` defaults to the tool's name and
    ``action`` to ``"call"``: name them as the policy does."""

    def wrap(inner: BaseTool) -> BaseTool:
        if not isinstance(inner, BaseTool):
            raise TypeError(f"guard_tool: expected a LangChain BaseTool, got {type(inner).__name__}")
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

        def run(**arguments: Any) -> Any:
            refusal = gate.check(arguments)
            if refusal is not None:
                raise ToolException(refusal.text)
            return inner.invoke(arguments)

        async def arun(**arguments: Any) -> Any:
            refusal = await gate.acheck(arguments)
            if refusal is not None:
                raise ToolException(refusal.text)
            return await inner.ainvoke(arguments)

        return StructuredTool.from_function(
            func=run,
            coroutine=arun,
            name=inner.name,
            description=inner.description,
            args_schema=inner.args_schema,
            infer_schema=False,
            return_direct=inner.return_direct,
            handle_tool_error=True,
            metadata={**(inner.metadata or {}), "palisade": {"tool": gate.tool, "action": gate.action}},
            tags=inner.tags,
        )

    return wrap(inner) if inner is not None else wrap
