"""What the framework adapters share: ask the daemon about one tool call and
say why it must not run, in words an agent can act on.

A denied call becomes text such as ``denied by policy: no-matching-rule``,
which each adapter hands to its framework the way that framework reports a
tool error (LangChain's ``ToolException``, CrewAI's ``ToolFailure``, the
OpenAI Agents SDK's error string to the model), so the agent reads why
instead of crashing.

A call that needs a human either waits for one (``wait=`` seconds) or
returns at once with the approval id. The gate remembers that id for the
same arguments: when the agent calls the tool again with them, the gate
checks the approval and, once an operator approved it, runs the call with
the override token, exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import _flow
from .aio import AsyncClient
from .client import Client
from .errors import ApprovalRequired, PalisadeDenied, PalisadeError
from .guard import default_async_client, default_client
from .models import Approval, ApprovalState, Decision

#: The parameters sent for a call, from the tool's arguments.
ParamsFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
ResourceFn = str | Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class Refusal:
    """Why a tool call did not run."""

    #: What the agent is told.
    text: str
    #: The reason code (``no-matching-rule``, ``approval-required``, ``rpc-unavailable``…).
    reason: str
    decision: Decision | None = None
    #: Set while a human's approval is pending.
    approval_id: str = ""

    @property
    def pending(self) -> bool:
        return bool(self.approval_id)


def refusal_of(e: PalisadeDenied) -> Refusal:
    """The text an agent sees for a denial."""
    if isinstance(e, ApprovalRequired) and e.approval_id:
        aid = e.approval_id
        text = (
            f"approval required: {e.tool}.{e.action} waits for a human (approval {aid}; an "
            f"operator runs `palisade approve {aid}`). Call the tool again with the same "
            "arguments once it is approved."
        )
        return Refusal(text, "approval-required", e.decision, aid)
    text = f"denied by policy: {e.reason}"
    if e.message:
        text += f": {e.message}"
    return Refusal(text, e.reason, e.decision)


def _local(reason: str, message: str) -> Refusal:
    return Refusal(f"denied by policy: {reason}: {message}", reason)


class Gate:
    """The Palisade check in front of one framework tool.

    ``tool``/``action``: the names the policy knows the call by.
    ``params``: a function of the tool's arguments returning the parameters
    to send (default: the arguments as given). ``wait``: seconds to wait for
    a human approval; None returns the approval id to the agent at once.
    ``client``: a ``Client`` or ``AsyncClient``; None uses the default one.
    """

    def __init__(
        self,
        tool: str,
        action: str,
        *,
        client: Client | AsyncClient | None = None,
        resource: ResourceFn = "",
        params: ParamsFn | None = None,
        context: Mapping[str, Any] | None = None,
        wait: float | None = None,
        on_decision: _flow.OnDecision | None = None,
    ) -> None:
        if not tool or not action:
            raise TypeError("a Palisade tool guard needs tool= and action=")
        self.tool = tool
        self.action = action
        self.client = client
        self.resource = resource
        self.params = params
        self.context = context
        self.wait = wait
        self.on_decision = on_decision
        # Approvals the agent was told about, by the call they cover.
        self._pending: dict[str, str] = {}
        self._lock = threading.Lock()

    def _ask(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        params = self.params(arguments) if self.params is not None else dict(arguments)
        resource = self.resource(arguments) if callable(self.resource) else self.resource
        return dict(tool=self.tool, action=self.action, resource=resource, params=params, context=self.context)

    def _remembered(self, key: str) -> str | None:
        with self._lock:
            return self._pending.get(key)

    def _remember(self, key: str, refusal: Refusal) -> Refusal:
        with self._lock:
            if refusal.approval_id:
                self._pending[key] = refusal.approval_id
            else:
                self._pending.pop(key, None)
        return refusal

    def _forget(self, key: str) -> None:
        with self._lock:
            self._pending.pop(key, None)

    def _after_approval(self, approval: Approval, key: str) -> str | Refusal:
        """The override token of an approval the agent was told about, or
        why there is none (still pending keeps it remembered)."""
        if approval.state is ApprovalState.PENDING:
            text = (
                f"approval required: approval {approval.id} for {self.tool}.{self.action} is still "
                "pending; call again once an operator approved it"
            )
            return Refusal(text, "approval-pending", None, approval.id)
        self._forget(key)
        try:
            return _flow.check_resolved(self.tool, self.action, Decision.local_deny("", ""), approval, 0)
        except PalisadeDenied as e:
            return refusal_of(e)

    def _notify(self, decision: Decision) -> None:
        if self.on_decision is not None:
            self.on_decision(decision)

    # --- blocking ------------------------------------------------------------

    def check(self, arguments: Mapping[str, Any]) -> Refusal | None:
        """None when the call may run now; otherwise why not. Never raises."""
        try:
            return self._check(arguments)
        except Exception as e:  # noqa: BLE001 - fail closed on anything
            return _local("client-error", f"{type(e).__name__}: {e}")

    def _check(self, arguments: Mapping[str, Any]) -> Refusal | None:
        if isinstance(self.client, AsyncClient):
            raise TypeError("a blocking tool call needs a Client, not an AsyncClient")
        client = self.client or default_client()
        ask = self._ask(arguments)
        key = _key(ask)
        approval_id = self._remembered(key)
        if approval_id:
            try:
                approval = client.get_approval(approval_id)
            except PalisadeError as e:
                return _local(_flow.rpc_reason(e.code), str(e))
            token = self._after_approval(approval, key)
            if isinstance(token, Refusal):
                return token
            decision = client.decide(**ask, override_token=token)
            self._notify(decision)
            return None if decision.allowed else refusal_of(PalisadeDenied(self.tool, self.action, decision))
        try:
            client.authorize(**ask, wait=self.wait, on_decision=self.on_decision)
        except PalisadeDenied as e:
            return self._remember(key, refusal_of(e))
        return None

    # --- asyncio -------------------------------------------------------------

    async def acheck(self, arguments: Mapping[str, Any]) -> Refusal | None:
        """``check`` for coroutines: awaits an ``AsyncClient``, or runs a
        ``Client`` in a worker thread. Never raises (but is cancellable)."""
        if isinstance(self.client, Client):
            return await asyncio.to_thread(functools.partial(self.check, arguments))
        try:
            return await self._acheck(arguments)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - fail closed on anything
            return _local("client-error", f"{type(e).__name__}: {e}")

    async def _acheck(self, arguments: Mapping[str, Any]) -> Refusal | None:
        client = self.client if isinstance(self.client, AsyncClient) else default_async_client()
        ask = self._ask(arguments)
        key = _key(ask)
        approval_id = self._remembered(key)
        if approval_id:
            try:
                approval = await client.get_approval(approval_id)
            except PalisadeError as e:
                return _local(_flow.rpc_reason(e.code), str(e))
            token = self._after_approval(approval, key)
            if isinstance(token, Refusal):
                return token
            decision = await client.decide(**ask, override_token=token)
            self._notify(decision)
            return None if decision.allowed else refusal_of(PalisadeDenied(self.tool, self.action, decision))
        try:
            await client.authorize(**ask, wait=self.wait, on_decision=self.on_decision)
        except PalisadeDenied as e:
            return self._remember(key, refusal_of(e))
        return None


def _key(ask: Mapping[str, Any]) -> str:
    """The same call, whatever the order of its arguments. Unencodable
    values get their repr: the daemon refuses those calls anyway."""
    return json.dumps(ask, sort_keys=True, default=repr)
