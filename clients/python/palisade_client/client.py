"""A client of the daemon's decision API on its Unix socket.

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
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc

from ._convert import to_struct
from ._stubs import pb, pb_grpc
from .errors import ApprovalRequired, PalisadeDenied, PalisadeError
from .models import Approval, ApprovalState, Decision, EgressGrant, Token, Verdict

#: Where the daemon listens unless told otherwise.
DEFAULT_SOCKET = "/run/palisade/palisade.sock"
#: Environment variable naming the socket (used when no path is given).
SOCKET_ENV = "PALISADE_SOCKET"
#: Seconds each RPC may take before it is abandoned (and the call denied).
DEFAULT_TIMEOUT = 2.0
#: Lifetime asked for each single-use access token: it is used at once.
DEFAULT_TOKEN_TTL = 30

OnDecision = Callable[[Decision], None]


def rpc_reason(code: grpc.StatusCode | None) -> str:
    """The reason code of a local denial: ``rpc-unavailable``,
    ``rpc-deadline-exceeded``, ``rpc-unauthenticated``…"""
    name = code.name if code is not None else "error"
    return "rpc-" + name.lower().replace("_", "-")


def _status(e: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    # Errors raised by stubs are also grpc.Call objects with code()/details().
    code = e.code() if isinstance(e, grpc.Call) else None
    details = e.details() if isinstance(e, grpc.Call) else str(e)
    return code, details or ""


class Client:
    """The decision API of one daemon.

    ``socket_path`` defaults to ``$PALISADE_SOCKET``, then
    ``/run/palisade/palisade.sock``. ``timeout`` is the deadline of each RPC,
    in seconds. The client is thread-safe; close it (or use it as a context
    manager) when done.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token_ttl: int = DEFAULT_TOKEN_TTL,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        path = os.fspath(socket_path) if socket_path is not None else None
        self.socket_path: str = path or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
        self.timeout = timeout
        self.token_ttl = token_ttl
        # The channel connects lazily, on the first RPC: building a Client
        # (e.g. at import time, for decorators) needs no daemon.
        # gRPC would send the socket path as the HTTP/2 :authority, which
        # the daemon's HTTP/2 server rightly refuses as malformed.
        self._channel = grpc.insecure_channel(
            "unix:" + os.path.abspath(self.socket_path),
            options=[("grpc.default_authority", "localhost")],
        )
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
            code, details = _status(e)
            raise PalisadeError(name, code, details) from e

    # --- the agent's side ---------------------------------------------------

    def issue_token(self, ttl_seconds: int | None = None) -> Token:
        """A single-use access token for this process's identity. ``decide``
        gets one per call by itself; this is for callers that need one."""
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
        agent: str = "",
    ) -> Decision:
        """May this process call ``tool.action`` on ``resource`` with
        ``params``? Never raises: without an answer from the daemon the
        decision is a local DENY saying why.

        ``params`` and ``context`` are JSON-like dicts. ``override_token``
        (from an approved ``Approval``) replaces the access token and allows
        exactly the approved call, once. ``agent``, if given, must be this
        process's identity.
        """
        try:
            request = pb.DecideRequest(
                agent=agent,
                tool=tool,
                action=action,
                resource=resource,
                params=to_struct(params, "params"),
                context=to_struct(context, "context"),
            )
        except (TypeError, ValueError) as e:
            return Decision.local_deny("invalid-input", f"not sent to the daemon: {e}")
        try:
            if override_token:
                request.override_token = override_token
            else:
                request.token = self.issue_token().token
            return Decision.from_proto(self._call("Decide", request))
        except PalisadeError as e:
            return Decision.local_deny(rpc_reason(e.code), str(e), e.code)
        except Exception as e:  # noqa: BLE001 - fail closed on anything
            return Decision.local_deny("client-error", f"{type(e).__name__}: {e}")

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
        ask = dict(tool=tool, action=action, resource=resource, params=params, context=context)
        decision = self.decide(**ask)
        if on_decision is not None:
            on_decision(decision)
        if decision.verdict is Verdict.ALLOW:
            return decision
        if decision.verdict is not Verdict.APPROVAL_REQUIRED:
            raise PalisadeDenied(tool, action, decision)
        if not wait or not decision.approval_id:
            raise ApprovalRequired(tool, action, decision)

        try:
            approval = self.wait_for_approval(decision.approval_id, wait)
        except PalisadeError as e:
            raise PalisadeDenied(
                tool, action, decision, reason=rpc_reason(e.code), message=str(e)
            ) from e
        if approval.state is ApprovalState.PENDING:
            raise ApprovalRequired(
                tool,
                action,
                decision,
                approval=approval,
                message=f"no operator decided within {wait:g}s",
            )
        if approval.state is not ApprovalState.APPROVED or not approval.override_token:
            by = f" by {approval.approver}" if approval.approver else ""
            why = f": {approval.reason}" if approval.reason else ""
            raise PalisadeDenied(
                tool,
                action,
                decision,
                approval=approval,
                reason=f"approval-{approval.state.name.lower()}",
                message=f"approval {approval.id} {approval.state.name.lower()}{by}{why}",
            )

        approved = self.decide(**ask, override_token=approval.override_token)
        if on_decision is not None:
            on_decision(approved)
        if approved.verdict is not Verdict.ALLOW:
            raise PalisadeDenied(tool, action, approved, approval=approval)
        return approved

    def get_approval(self, approval_id: str) -> Approval:
        """One of this identity's approvals. Raises ``PalisadeError``."""
        return Approval.from_proto(self._call("GetApproval", pb.GetApprovalRequest(id=approval_id)))

    def wait_for_approval(
        self, approval_id: str, timeout: float, *, poll_interval: float = 0.25
    ) -> Approval:
        """Poll the approval until an operator resolves it (or it expires),
        at most ``timeout`` seconds; returns its last state, which is still
        PENDING after a timeout. Raises ``PalisadeError`` if the daemon
        cannot be asked."""
        deadline = time.monotonic() + timeout
        while True:
            approval = self.get_approval(approval_id)
            left = deadline - time.monotonic()
            if approval.state is not ApprovalState.PENDING or left <= 0:
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
    ) -> EgressGrant:
        """Ask for a temporary kernel allow rule to ``destination`` (an
        address or CIDR): granted at once where the policy marks it
        ``grantable``, or sent to approval (``approval_id``) where it says
        ``require_approval``. Raises ``PalisadeError`` when refused (e.g.
        PERMISSION_DENIED for a destination no rule offers)."""
        r = self._call(
            "RequestEgress",
            pb.RequestEgressRequest(
                destination=destination,
                ports=list(ports),
                protocol=protocol,
                ttl_seconds=ttl_seconds,
                reason=reason,
            ),
        )
        return EgressGrant(
            granted=r.granted, expires_at=r.expires_at, approval_id=r.approval_id, rule=r.rule
        )

    # --- operators' side (root or the socket group; never an agent) ----------

    def list_approvals(self, all: bool = False) -> list[Approval]:
        """Pending approvals (with ``all``, recently resolved ones too)."""
        r = self._call("ListApprovals", pb.ListApprovalsRequest(all=all))
        return [Approval.from_proto(a) for a in r.approvals]

    def approve(self, approval_id: str, reason: str = "") -> Approval:
        return Approval.from_proto(
            self._call(
                "ResolveApproval",
                pb.ResolveApprovalRequest(id=approval_id, approve=True, reason=reason),
            )
        )

    def reject(self, approval_id: str, reason: str = "") -> Approval:
        return Approval.from_proto(
            self._call(
                "ResolveApproval",
                pb.ResolveApprovalRequest(id=approval_id, approve=False, reason=reason),
            )
        )
