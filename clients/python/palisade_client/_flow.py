"""What the sync and asyncio clients share: where the socket is, how a
request is built, how a failed RPC becomes a local denial, and the steps of
``authorize`` (decide, maybe wait for a human, decide again with the
override token). The clients only add the I/O."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc

from ._convert import to_struct
from ._stubs import pb
from .errors import ApprovalRequired, PalisadeDenied
from .models import Approval, ApprovalState, Decision, EgressGrant, Verdict

#: Where the daemon listens unless told otherwise.
DEFAULT_SOCKET = "/run/palisade/palisade.sock"
#: Environment variable naming the socket (used when no path is given).
SOCKET_ENV = "PALISADE_SOCKET"
#: Seconds each RPC may take before it is abandoned (and the call denied).
DEFAULT_TIMEOUT = 2.0
#: Lifetime ``issue_token`` asks for unless told otherwise.
DEFAULT_TOKEN_TTL = 30

OnDecision = Callable[[Decision], None]

# gRPC would send the socket path as the HTTP/2 :authority, which the
# daemon's HTTP/2 server rightly refuses as malformed.
CHANNEL_OPTIONS = [("grpc.default_authority", "localhost")]


def socket_path(given: str | os.PathLike[str] | None) -> str:
    path = os.fspath(given) if given is not None else None
    return path or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def target(path: str) -> str:
    return "unix:" + os.path.abspath(path)


def check_timeout(timeout: float) -> float:
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    return timeout


def rpc_reason(code: grpc.StatusCode | None) -> str:
    """The reason code of a local denial: ``rpc-unavailable``,
    ``rpc-deadline-exceeded``, ``rpc-unauthenticated``…"""
    name = code.name if code is not None else "error"
    return "rpc-" + name.lower().replace("_", "-")


def status_of(e: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    # Errors raised by stubs (sync and aio) are also calls with code()/details().
    code = getattr(e, "code", None)
    details = getattr(e, "details", None)
    code_value = code() if callable(code) else None
    text = details() if callable(details) else str(e)
    return code_value if isinstance(code_value, grpc.StatusCode) else None, text or ""


def decide_request(
    tool: str,
    action: str,
    resource: str,
    params: Mapping[str, Any] | None,
    context: Mapping[str, Any] | None,
    agent: str,
) -> pb.DecideRequest:
    """Raises ``TypeError``/``ValueError`` for parameters that are not JSON."""
    return pb.DecideRequest(
        agent=agent,
        tool=tool,
        action=action,
        resource=resource,
        params=to_struct(params, "params"),
        context=to_struct(context, "context"),
    )


def invalid_input(e: Exception) -> Decision:
    return Decision.local_deny("invalid-input", f"not sent to the daemon: {e}")


def client_error(e: BaseException) -> Decision:
    return Decision.local_deny("client-error", f"{type(e).__name__}: {e}")


def must_wait(tool: str, action: str, decision: Decision, wait: float | None) -> bool:
    """After the first decision: False when the call may run now, True when
    the caller should wait for an operator; raises otherwise."""
    if decision.verdict is Verdict.ALLOW:
        return False
    if decision.verdict is not Verdict.APPROVAL_REQUIRED:
        raise PalisadeDenied(tool, action, decision)
    if not wait or not decision.approval_id:
        raise ApprovalRequired(tool, action, decision)
    return True


def check_resolved(
    tool: str, action: str, decision: Decision, approval: Approval, wait: float
) -> str:
    """After waiting: the override token of an approved request; raises for
    one still pending, rejected or expired."""
    if approval.state is ApprovalState.PENDING:
        raise ApprovalRequired(
            tool, action, decision, approval=approval, message=f"no operator decided within {wait:g}s"
        )
    if approval.state is not ApprovalState.APPROVED or not approval.override_token:
        by = f" by {approval.approver}" if approval.approver else ""
        why = f": {approval.reason}" if approval.reason else ""
        state = approval.state.name.lower()
        raise PalisadeDenied(
            tool,
            action,
            decision,
            approval=approval,
            reason=f"approval-{state}",
            message=f"approval {approval.id} {state}{by}{why}",
        )
    return approval.override_token


def check_approved(tool: str, action: str, approved: Decision, approval: Approval) -> Decision:
    if approved.verdict is not Verdict.ALLOW:
        raise PalisadeDenied(tool, action, approved, approval=approval)
    return approved


def egress_request(
    destination: str, ports: Iterable[int], protocol: str, ttl_seconds: int, reason: str, token: str
) -> pb.RequestEgressRequest:
    return pb.RequestEgressRequest(
        destination=destination,
        ports=list(ports),
        protocol=protocol,
        ttl_seconds=ttl_seconds,
        reason=reason,
        token=token,
    )


def egress_grant(r: pb.RequestEgressResponse) -> EgressGrant:
    return EgressGrant(granted=r.granted, expires_at=r.expires_at, approval_id=r.approval_id, rule=r.rule)


def resolve_request(approval_id: str, approve: bool, reason: str) -> pb.ResolveApprovalRequest:
    return pb.ResolveApprovalRequest(id=approval_id, approve=approve, reason=reason)


def pending(approval: Approval) -> bool:
    return approval.state is ApprovalState.PENDING
