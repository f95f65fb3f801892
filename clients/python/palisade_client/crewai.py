"""CrewAI: a tool that asks Palisade before it runs.

``pip install 'palisade-client[crewai]'``::

    from crewai.tools import tool
    from palisade_client.crewai import guard_tool

    @guard_tool(tool="stripe", action="create_payment")
    @tool("create_payment")
    def create_payment(amount: float, currency: str, customer: str) -> str:
        \"\"\"Pay a customer.\"\"\"
        ...

or ``guard_tool(some_tool, tool="stripe", action="create_payment")`` for any
CrewAI ``BaseTool``. A refused call does not run and returns a CrewAI
``ToolFailure`` (``denied by policy: <reason>…``): the agent reads the text
and the crew records the failure (``TaskOutput.tool_failures``, the tool
failure policy). A call that needs a human returns the approval id the same
way (marked retryable), or waits ``wait=`` seconds for it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from crewai.tools import BaseTool
from crewai.tools.tool_failure import ToolFailure
from pydantic import PrivateAttr

from ._flow import OnDecision
from ._gate import Gate, ParamsFn, Refusal, ResourceFn
from .aio import AsyncClient
from .client import Client

__all__ = ["GuardedTool", "guard_tool"]


def failure(refusal: Refusal) -> ToolFailure:
    details: dict[str, Any] = {"reason": refusal.reason}
    if refusal.decision is not None and refusal.decision.decision_id:
        details["decision_id"] = refusal.decision.decision_id
    if refusal.approval_id:
        details["approval_id"] = refusal.approval_id
    return ToolFailure(message=refusal.text, retryable=refusal.pending, details=details)


class GuardedTool(BaseTool):
    """A CrewAI tool that runs its inner tool only when Palisade allows the call."""

    _inner: BaseTool = PrivateAttr()
    _gate: Gate = PrivateAttr()

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        refusal = self._gate.check(_arguments(args, kwargs))
        if refusal is not None:
            return failure(refusal)
        return self._inner.run(*args, **kwargs)

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        refusal = await self._gate.acheck(_arguments(args, kwargs))
        if refusal is not None:
            return failure(refusal)
        if _has_async(self._inner):
            return await self._inner.arun(*args, **kwargs)
        # CrewAI refuses arun() on a tool with no async body; run it in a thread.
        return await asyncio.to_thread(functools.partial(self._inner.run, *args, **kwargs))


def _has_async(inner: BaseTool) -> bool:
    func = getattr(inner, "func", None)
    if func is not None:
        return inspect.iscoroutinefunction(func)
    return type(inner)._arun is not BaseTool._arun


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    # CrewAI calls tools with keyword arguments; a positional call is sent
    # as its values in order, so nothing is dropped from the check.
    return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}


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
            raise TypeError(f"guard_tool: expected a CrewAI BaseTool, got {type(inner).__name__}")
        guarded = GuardedTool(
            name=inner.name,
            description=inner.description,
            args_schema=inner.args_schema,
            result_schema=inner.result_schema,
            result_as_answer=inner.result_as_answer,
            max_usage_count=inner.max_usage_count,
            tool_failure_policy=inner.tool_failure_policy,
        )
        guarded._inner = inner
        guarded._gate = Gate(
            tool or inner.name,
            action,
            client=client,
            resource=resource,
            params=params,
            context=context,
            wait=wait,
            on_decision=on_decision,
        )
        return guarded

    return wrap(inner) if inner is not None else wrap
