"""Exceptions. Everything that means "do not run the call" derives from
``PalisadeDenied``, so one ``except PalisadeDenied`` covers denials, pending
approvals and an unreachable daemon alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from .models import Approval, Decision


class PalisadeError(Exception):
    """A Palisade API call failed (a gRPC error), for calls that have no
    verdict to fall back on: ``get_approval``, ``request_egress``, operator
    calls. ``code`` is the gRPC status code."""

    def __init__(self, rpc: str, code: grpc.StatusCode | None, details: str) -> None:
        self.rpc = rpc
        self.code = code
        self.details = details
        name = code.name if code is not None else "ERROR"
        super().__init__(f"{rpc} failed: {name}: {details}")


class PalisadeDenied(Exception):
    """The tool call must not run: the daemon denied it, or the client got no
    answer (``decision.local``). Carries the why."""

    def __init__(
        self,
        tool: str,
        action: str,
        decision: "Decision",
        approval: "Approval | None" = None,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        self.tool = tool
        self.action = action
        self.decision = decision
        #: The approval this denial concerns (rejected, expired…), if any.
        self.approval = approval
        self.reason = reason if reason is not None else decision.reason
        self.message = message if message is not None else decision.message
        super().__init__(self._describe())

    @property
    def decision_id(self) -> str:
        return self.decision.decision_id

    @property
    def matched_rules(self) -> tuple[str, ...]:
        return self.decision.matched_rules

    @property
    def policy_version(self) -> str:
        return self.decision.policy_version

    def _describe(self) -> str:
        text = f"{self.tool}.{self.action} denied ({self.reason})"
        if self.message:
            text += f": {self.message}"
        notes = []
        if self.matched_rules:
            notes.append("rules " + ", ".join(self.matched_rules))
        if self.decision_id:
            notes.append(f"decision {self.decision_id}")
        if self.policy_version:
            notes.append(f"policy {self.policy_version}")
        if notes:
            text += f" [{'; '.join(notes)}]"
        return text


class ApprovalRequired(PalisadeDenied):
    """The call needs a human's approval, which has not been given (yet).

    An operator approves it with ``palisade approve <approval_id>``; then
    ``Client.wait_for_approval`` and a decision with the override token run it
    once (the ``guard`` does this with ``wait=``)."""

    @property
    def approval_id(self) -> str:
        return self.decision.approval_id

    def _describe(self) -> str:
        text = super()._describe().replace(" denied (", " needs approval (", 1)
        if self.approval_id:
            text += (
                f"; approval {self.approval_id} "
                f"(an operator runs `palisade approve {self.approval_id}`)"
            )
        return text
