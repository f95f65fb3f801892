"""What the daemon answers, as plain immutable Python objects."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
import grpc

from ._stubs import pb


class Verdict(enum.Enum):
    """The answer to "may this tool call happen?"."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"

    @classmethod
    def from_proto(cls, value: int) -> "Verdict":
        # Anything the client does not know (UNSPECIFIED, a future value) is
        # a deny: the client never guesses in favour of running a call.
        return {
            pb.ALLOW: cls.ALLOW,
            pb.DENY: cls.DENY,
            pb.APPROVAL_REQUIRED: cls.APPROVAL_REQUIRED,
        }.get(value, cls.DENY)


class ApprovalState(enum.Enum):
    UNSPECIFIED = "UNSPECIFIED"
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    #: The override token was used.
    CONSUMED = "CONSUMED"

    @classmethod
    def from_proto(cls, value: int) -> "ApprovalState":
        try:
            return cls(pb.ApprovalState.Name(value))
        except ValueError:
            return cls.UNSPECIFIED


@dataclass(frozen=True)
class Obligation:
    """A budget the decision counted against, and what is left of it."""

    budget: str
    #: What is left in the current window after this call.
    remaining: float
    limit: float
    #: "second", "minute", "hour" or "day".
    window: str
    unit: str = ""


@dataclass(frozen=True)
class Decision:
    """The daemon's answer to ``Decide``, or the client's own DENY when it got
    no answer (then ``local`` is true and ``status_code`` says why)."""

    verdict: Verdict
    #: A stable code: ``allowed``, ``denied-by-rule``, ``no-matching-rule``,
    #: ``approval-condition``, ``budget-exceeded``, ``approved-override``…
    #: For local denials ``rpc-<status>`` (``rpc-unavailable``,
    #: ``rpc-unauthenticated``…) or ``invalid-input``.
    reason: str
    message: str = ""
    matched_rules: tuple[str, ...] = ()
    policy_version: str = ""
    decision_id: str = ""
    obligations: tuple[Obligation, ...] = ()
    #: Set with APPROVAL_REQUIRED: wait for it with ``Client.wait_for_approval``.
    approval_id: str = ""
    #: True when the client decided (DENY) because the daemon did not.
    local: bool = False
    #: The gRPC status of the failed call, for local denials.
    status_code: grpc.StatusCode | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    def obligation(self, budget: str) -> Obligation | None:
        """The obligation of budget ``budget``, if the decision has one."""
        return next((o for o in self.obligations if o.budget == budget), None)

    @classmethod
    def from_proto(cls, r: "pb.DecideResponse") -> "Decision":
        return cls(
            verdict=Verdict.from_proto(r.verdict),
            reason=r.reason or ("unknown-verdict" if r.verdict == pb.VERDICT_UNSPECIFIED else ""),
            message=r.message,
            matched_rules=tuple(r.matched_rules),
            policy_version=r.policy_version,
            decision_id=r.decision_id,
            obligations=tuple(
                Obligation(o.budget, o.remaining, o.limit, o.window, o.unit) for o in r.obligations
            ),
            approval_id=r.approval_id,
        )

    @classmethod
    def local_deny(
        cls, reason: str, message: str, status_code: grpc.StatusCode | None = None
    ) -> "Decision":
        return cls(
            verdict=Verdict.DENY,
            reason=reason,
            message=message,
            local=True,
            status_code=status_code,
        )


@dataclass(frozen=True)
class Approval:
    """A human approval the caller asked for (``GetApproval``)."""

    id: str
    state: ApprovalState
    identity: str = ""
    #: "tool" or "egress".
    kind: str = ""
    tool: str = ""
    action: str = ""
    resource: str = ""
    #: SHA-256 of the canonical JSON of the parameters.
    params_digest: str = ""
    policy_version: str = ""
    matched_rules: tuple[str, ...] = ()
    #: Unix seconds.
    created_at: int = 0
    expires_at: int = 0
    #: Who resolved it, and why.
    approver: str = ""
    reason: str = ""
    #: Once approved, to the requesting identity only: allows the approved
    #: call exactly once. Kept out of ``repr`` (it is a credential).
    override_token: str = field(default="", repr=False)
    destination: str = ""
    ports: tuple[int, ...] = ()
    ttl_seconds: int = 0

    @classmethod
    def from_proto(cls, a: "pb.Approval") -> "Approval":
        return cls(
            id=a.id,
            state=ApprovalState.from_proto(a.state),
            identity=a.identity,
            kind=a.kind,
            tool=a.tool,
            action=a.action,
            resource=a.resource,
            params_digest=a.params_digest,
            policy_version=a.policy_version,
            matched_rules=tuple(a.matched_rules),
            created_at=a.created_at,
            expires_at=a.expires_at,
            approver=a.approver,
            reason=a.reason,
            override_token=a.override_token,
            destination=a.destination,
            ports=tuple(a.ports),
            ttl_seconds=a.ttl_seconds,
        )


@dataclass(frozen=True)
class EgressGrant:
    """The answer to ``RequestEgress``."""

    #: True when the kernel allows the destination now.
    granted: bool
    #: Unix seconds.
    expires_at: int
    #: Set when the request went to a human for approval.
    approval_id: str
    rule: str


@dataclass(frozen=True)
class Token:
    """A single-use access token for the caller's own identity."""

    token: str = field(repr=False)
    identity: str
    #: Unix seconds.
    expires_at: int
    kid: str
