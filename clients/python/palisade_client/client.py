"""A client of the daemon's decision API on its Unix socket (blocking).

The daemon knows who is calling from the socket itself (the kernel reports
the peer's pid, which the daemon maps to a cgroup and an identity), so this
client sends no credentials of its own: the process must run enrolled, e.g.
``palisade exec --identity finance-agent -- python3 agent.py``.

**Fail closed.** ``decide`` never raises and never answers ALLOW unless the
daemon did: an unreachable daemon, a deadline exceeded, a refused token, an
unencodable parameter all come back as a ``Decision`` with verdict DENY
(``local=True``, ``reason`` ``rpc-<status>`` or ``invalid-input``).
``authorize`` and ``guard`` turn every verdict other than ALLOW into an
exception.

``AsyncClient`` (``palisade_client.aio``) has the same methods as
coroutines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from . import _flow
from ._flow import (  # noqa: F401 - re-exported
    DEFAULT_SOCKET,
    DEFAULT_TIMEOUT,
    DEFAULT_TOKEN_TTL,
    SOCKET_ENV,
    OnDecision,
    rpc_reason,
)
from ._stubs import pb, pb_grpc
from .errors import PalisadeDenied, PalisadeError
from .models import Approval, Decision, EgressGrant, Token


class Client:
    """The decision API of one daemon.

    ``socket_path`` defaults to ``$PALISADE_SOCKET``, then
    ``/run/palisade/palisade.sock``. ``timeout`` is the deadline of each RPC,
    in seconds; ``token_ttl`` the lifetime ``issue_token`` asks for. The
    client is thread-safe; close it (or use it as a context manager) when
    done.
    """

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
        # The channel connects lazily, on the first RPC: building a Client
        # (e.g. at import time, for decorators) needs no daemon.
        self._channel = grpc.insecure_channel(_flow.target(self.socket_path), options=_flow.CHANNEL_OPTIONS)
        self._stub = pb_grpc.PalisadeStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(socket_path={self.socket_path!r}, timeout={self.timeout})"

    def _call(self, name: str, request: Any) -> Any:
        """One RPC with the deadline; gRPC errors become ``PalisadeError``."""
        try:
            return getattr(self._stub, name)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code, details = _flow.status_of(e)
            raise PalisadeError(name, code, details) from e

    # --- the agent's side ---------------------------------------------------

    def ping(self) -> None:
        """An empty call: raises ``PalisadeError`` when the daemon does not answer."""
        self._call("Ping", pb.PingRequest())

    def issue_token(self, ttl_seconds: int | None = None) -> Token:
        """A single-use access token for this process's identity, to prove
        it to another service (verified with the daemon's JWKS). Calls to
        this daemon need none: it knows the caller from the socket."""
        ttl = self.token_ttl if ttl_seconds is None else ttl_seconds
        r = self._call("IssueToken", pb.IssueTokenRequest(ttl_seconds=ttl))
        return Token(token=r.token, identity=r.identity, expires_at=r.expires_at, kid=r.kid)

    def decide(
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
        """May this process call ``tool.action`` on ``resource`` with
        ``params``? Never raises: without an answer from the daemon the
        decision is a local DENY saying why.

        ``params`` and ``context`` are JSON-like dicts. ``override_token``
        (from an approved ``Approval``) allows exactly the approved call,
        once. No token is needed: the daemon knows the caller from the
        socket; ``token``, if given, must verify and be this process's own
        (it is spent). ``agent``, if given, must be this process's identity.
        """
        try:
            request = _flow.decide_request(tool, action, resource, params, context, agent)
        except (TypeError, ValueError) as e:
            return _flow.invalid_input(e)
        try:
            if override_token:
                request.override_token = override_token
            elif token:
                request.token = token
            return Decision.from_proto(self._call("Decide", request))
        except PalisadeError as e:
            return Decision.local_deny(rpc_reason(e.code), str(e), e.code)
        except Exception as e:  # noqa: BLE001 - fail closed on anything
            return _flow.client_error(e)

    def authorize(
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
        """``decide``, then return the decision only if the call may run now.

        Raises ``PalisadeDenied`` on DENY (and on any failure), and
        ``ApprovalRequired`` on APPROVAL_REQUIRED, unless ``wait`` is given:
        then it waits up to ``wait`` seconds for an operator, and once the
        approval is granted it decides again with the override token, which
        allows exactly this call once. ``on_decision`` sees every decision
        (for budgets in ``Decision.obligations``, logging…).
        """
        ask: dict[str, Any] = dict(tool=tool, action=action, resource=resource, params=params, context=context)
        decision = self.decide(**ask)
        if on_decision is not None:
            on_decision(decision)
        if not _flow.must_wait(tool, action, decision, wait):
            return decision
        assert wait is not None
        try:
            approval = self.wait_for_approval(decision.approval_id, wait)
        except PalisadeError as e:
            raise PalisadeDenied(tool, action, decision, reason=rpc_reason(e.code), message=str(e)) from e
        override = _flow.check_resolved(tool, action, decision, approval, wait)
        approved = self.decide(**ask, override_token=override)
        if on_decision is not None:
            on_decision(approved)
        return _flow.check_approved(tool, action, approved, approval)

    def get_approval(self, approval_id: str) -> Approval:
        """One of this identity's approvals. Raises ``PalisadeError``."""
        return Approval.from_proto(self._call("GetApproval", pb.GetApprovalRequest(id=approval_id)))

    def wait_for_approval(self, approval_id: str, timeout: float, *, poll_interval: float = 0.25) -> Approval:
        """Poll the approval until an operator resolves it (or it expires),
        at most ``timeout`` seconds; returns its last state, which is still
        PENDING after a timeout. Raises ``PalisadeError`` if the daemon
        cannot be asked."""
        deadline = time.monotonic() + timeout
        while True:
            approval = self.get_approval(approval_id)
            left = deadline - time.monotonic()
            if not _flow.pending(approval) or left <= 0:
                return approval
            time.sleep(min(poll_interval, left))

    def request_egress(
        self,
        destination: str,
        ports: Iterable[int] = (),
        *,
        protocol: str = "any",
        ttl_seconds: int = 0,
        reason: str = "",
        token: str = "",
    ) -> EgressGrant:
        """Ask for a temporary kernel allow rule to ``destination`` (an
        address or CIDR): granted at once where the policy marks it
        ``grantable``, or sent to approval (``approval_id``) where it says
        ``require_approval``. Raises ``PalisadeError`` when refused (e.g.
        PERMISSION_DENIED for a destination no rule offers). ``token`` as
        for ``decide``."""
        request = _flow.egress_request(destination, ports, protocol, ttl_seconds, reason, token)
        return _flow.egress_grant(self._call("RequestEgress", request))

    # --- operators' side (root or the socket group; never an agent) ----------

    def list_approvals(self, all: bool = False) -> list[Approval]:
        """Pending approvals (with ``all``, recently resolved ones too)."""
        r = self._call("ListApprovals", pb.ListApprovalsRequest(all=all))
        return [Approval.from_proto(a) for a in r.approvals]

    def approve(self, approval_id: str, reason: str = "") -> Approval:
        return Approval.from_proto(self._call("ResolveApproval", _flow.resolve_request(approval_id, True, reason)))

    def reject(self, approval_id: str, reason: str = "") -> Approval:
        return Approval.from_proto(self._call("ResolveApproval", _flow.resolve_request(approval_id, False, reason)))
