"""The asyncio client: ``Client``'s surface as coroutines, on ``grpc.aio``.

::

    from palisade_client.aio import AsyncClient

    palisade = AsyncClient()
    decision = await palisade.decide("stripe", "create_payment", params={...})

The same fail-closed rules hold: ``decide`` never raises and answers ALLOW
only when the daemon did; ``authorize`` raises ``PalisadeDenied`` for
anything else. A ``grpc.aio`` channel belongs to one event loop, so the
client opens its channel on first use in the running loop, and opens a new
one if it is later used from another loop (e.g. a second ``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
import grpc.aio

from . import _flow
from ._flow import DEFAULT_TIMEOUT, DEFAULT_TOKEN_TTL, OnDecision, rpc_reason
from ._stubs import pb, pb_grpc
from .errors import PalisadeDenied, PalisadeError
from .models import Approval, Decision, EgressGrant, Token


class AsyncClient:
    """The decision API of one daemon, for asyncio code. Arguments as for
    ``Client``. Close it with ``await client.close()`` (or ``async with``)."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token_ttl: int = DEFAULT_TOKEN_TTL,
    ) -> None:
        self.socket_path: str = _flow.socket_path(socket_path)
        self.timeout = _flow.check_timeout(timeout)
        self.token_ttl = token_ttl
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _stub_for_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            # A channel of a finished loop cannot be closed from this one;
            # dropping it frees it with that loop.
            self._channel = grpc.aio.insecure_channel(
                _flow.target(self.socket_path), options=_flow.CHANNEL_OPTIONS
            )
            self._stub = pb_grpc.PalisadeStub(self._channel)
            self._loop = loop
        return self._stub

    async def close(self) -> None:
        if self._channel is not None and self._loop is asyncio.get_running_loop():
            await self._channel.close()
        self._channel = None
        self._stub = None
        self._loop = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(socket_path={self.socket_path!r}, timeout={self.timeout})"

    async def _call(self, name: str, request: Any) -> Any:
        try:
            return await getattr(self._stub_for_loop(), name)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code, details = _flow.status_of(e)
            raise PalisadeError(name, code, details) from e

    # --- the agent's side ---------------------------------------------------

    async def ping(self) -> None:
        await self._call("Ping", pb.PingRequest())

    async def issue_token(self, ttl_seconds: int | None = None) -> Token:
        ttl = self.token_ttl if ttl_seconds is None else ttl_seconds
        r = await self._call("IssueToken", pb.IssueTokenRequest(ttl_seconds=ttl))
        return Token(token=r.token, identity=r.identity, expires_at=r.expires_at, kid=r.kid)

    async def decide(
        self,
        tool: str,
        action: str,
        resource: str = "",
        params: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        override_token: str | None = None,
        token: str | None = None,
        agent: str = "",
    ) -> Decision:
        """As ``Client.decide``: never raises; a local DENY without an answer."""
        try:
            request = _flow.decide_request(tool, action, resource, params, context, agent)
        except (TypeError, ValueError) as e:
            return _flow.invalid_input(e)
        try:
            if override_token:
                request.override_token = override_token
            elif token:
                request.token = token
            return Decision.from_proto(await self._call("Decide", request))
        except PalisadeError as e:
            return Decision.local_deny(rpc_reason(e.code), str(e), e.code)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - fail closed on anything
            return _flow.client_error(e)

    async def authorize(
        self,
        tool: str,
        action: str,
        resource: str = "",
        params: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        wait: float | None = None,
        on_decision: OnDecision | None = None,
    ) -> Decision:
        """As ``Client.authorize``: the decision if the call may run now;
        raises ``PalisadeDenied`` / ``ApprovalRequired`` otherwise."""
        ask: dict[str, Any] = dict(tool=tool, action=action, resource=resource, params=params, context=context)
        decision = await self.decide(**ask)
        if on_decision is not None:
            on_decision(decision)
        if not _flow.must_wait(tool, action, decision, wait):
            return decision
        assert wait is not None
        try:
            approval = await self.wait_for_approval(decision.approval_id, wait)
        except PalisadeError as e:
            raise PalisadeDenied(tool, action, decision, reason=rpc_reason(e.code), message=str(e)) from e
        override = _flow.check_resolved(tool, action, decision, approval, wait)
        approved = await self.decide(**ask, override_token=override)
        if on_decision is not None:
            on_decision(approved)
        return _flow.check_approved(tool, action, approved, approval)

    async def get_approval(self, approval_id: str) -> Approval:
        return Approval.from_proto(await self._call("GetApproval", pb.GetApprovalRequest(id=approval_id)))

    async def wait_for_approval(
        self, approval_id: str, timeout: float, *, poll_interval: float = 0.25
    ) -> Approval:
        deadline = time.monotonic() + timeout
        while True:
            approval = await self.get_approval(approval_id)
            left = deadline - time.monotonic()
            if not _flow.pending(approval) or left <= 0:
                return approval
            await asyncio.sleep(min(poll_interval, left))

    async def request_egress(
        self,
        destination: str,
        ports: Iterable[int] = (),
        *,
        protocol: str = "any",
        ttl_seconds: int = 0,
        reason: str = "",
        token: str = "",
    ) -> EgressGrant:
        request = _flow.egress_request(destination, ports, protocol, ttl_seconds, reason, token)
        return _flow.egress_grant(await self._call("RequestEgress", request))

    # --- operators' side ----------------------------------------------------

    async def list_approvals(self, all: bool = False) -> list[Approval]:
        r = await self._call("ListApprovals", pb.ListApprovalsRequest(all=all))
        return [Approval.from_proto(a) for a in r.approvals]

    async def approve(self, approval_id: str, reason: str = "") -> Approval:
        return Approval.from_proto(
            await self._call("ResolveApproval", _flow.resolve_request(approval_id, True, reason))
        )

    async def reject(self, approval_id: str, reason: str = "") -> Approval:
        return Approval.from_proto(
            await self._call("ResolveApproval", _flow.resolve_request(approval_id, False, reason))
        )
