"""The check every framework adapter shares (``palisade_client._gate``),
against the scripted server of ``test_client``: what the agent is told, and
how an approval the agent was told about is used on its next call."""

from __future__ import annotations

import asyncio
import unittest

from test_client import WithServer

from palisade_client import AsyncClient
from palisade_client._gate import Gate
from palisade_client._stubs import pb

CALL = {"amount": 4200, "currency": "USD", "customer": "cus_1"}


class GateTest(WithServer):
    def gate(self, **options: object) -> Gate:
        return Gate("stripe", "create_payment", client=self.client, **options)  # type: ignore[arg-type]

    def test_allow_is_none_and_sends_the_arguments_as_params(self) -> None:
        self.assertIsNone(self.gate().check(CALL))
        self.assertEqual(dict(self.server_script.requests[0].params), CALL)

    def test_deny_is_text_for_the_agent(self) -> None:
        self.server_script.verdict, self.server_script.reason = pb.DENY, "denied-by-rule"
        refusal = self.gate().check(CALL)
        assert refusal is not None
        self.assertEqual(refusal.text, "denied by policy: denied-by-rule: scripted")
        self.assertEqual((refusal.reason, refusal.pending), ("denied-by-rule", False))

    def test_approval_id_returned_then_used_once_approved(self) -> None:
        self.server_script.verdict, self.server_script.reason = pb.APPROVAL_REQUIRED, "approval-condition"
        gate = self.gate()
        first = gate.check(CALL)
        assert first is not None
        self.assertEqual((first.reason, first.approval_id), ("approval-required", "a-1"))
        self.assertIn("palisade approve a-1", first.text)
        # Asked again while pending: no new approval request.
        again = gate.check(dict(reversed(list(CALL.items()))))
        assert again is not None
        self.assertEqual((again.reason, again.approval_id), ("approval-pending", "a-1"))
        self.assertEqual(len(self.server_script.requests), 1)
        # Approved: the same call runs with the override token, once.
        self.server_script.approval_state = pb.APPROVED
        self.assertIsNone(gate.check(CALL))
        self.assertEqual(self.server_script.requests[1].override_token, "override-1")
        self.assertEqual(dict(self.server_script.requests[1].params), CALL)
        # Forgotten after use: the next call asks afresh.
        self.assertIsNotNone(gate.check(CALL))
        self.assertEqual(self.server_script.requests[2].override_token, "")

    def test_other_arguments_are_not_covered_by_the_approval(self) -> None:
        self.server_script.verdict = pb.APPROVAL_REQUIRED
        gate = self.gate()
        gate.check(CALL)
        self.server_script.approval_state = pb.APPROVED
        other = gate.check({**CALL, "amount": 4999})
        assert other is not None
        self.assertEqual(other.reason, "approval-required")
        self.assertEqual(self.server_script.requests[-1].override_token, "")

    def test_rejected_approval_is_a_denial(self) -> None:
        self.server_script.verdict = pb.APPROVAL_REQUIRED
        gate = self.gate()
        gate.check(CALL)
        self.server_script.approval_state = pb.REJECTED
        refusal = gate.check(CALL)
        assert refusal is not None
        self.assertEqual(refusal.reason, "approval-rejected")
        self.assertTrue(refusal.text.startswith("denied by policy: approval-rejected"), refusal.text)

    def test_wait_runs_after_approval(self) -> None:
        self.server_script.verdict = pb.APPROVAL_REQUIRED
        self.server_script.approval_state = pb.APPROVED
        self.assertIsNone(self.gate(wait=5).check(CALL))

    def test_errors_in_the_params_function_fail_closed(self) -> None:
        def broken(arguments: object) -> dict[str, object]:
            raise KeyError("amount")

        refusal = self.gate(params=broken).check(CALL)
        assert refusal is not None
        self.assertEqual(refusal.reason, "client-error")
        self.assertEqual(self.server_script.requests, [])

    def test_async_with_both_clients(self) -> None:
        self.assertIsNone(asyncio.run(self.gate().acheck(CALL)))
        agate = Gate("stripe", "create_payment", client=AsyncClient(self.socket))
        self.assertIsNone(asyncio.run(agate.acheck(CALL)))
        self.server_script.verdict, self.server_script.reason = pb.DENY, "no-matching-rule"
        refusal = asyncio.run(agate.acheck(CALL))
        assert refusal is not None
        self.assertEqual(refusal.reason, "no-matching-rule")
        # A blocking check cannot use an AsyncClient: refused, not run.
        blocked = agate.check(CALL)
        assert blocked is not None
        self.assertEqual(blocked.reason, "client-error")


if __name__ == "__main__":
    unittest.main()
