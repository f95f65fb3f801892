"""Unit tests of the Python client's mechanics: what it sends, and how it maps
every possible answer (including malformed ones the daemon never gives) to
a fail-closed result. A scripted gRPC server on a Unix socket plays the
other side, so these need no root. Policy verdicts are tested against the
real daemon by ``scenarios.py``, driven from ``tests/tests/python_client.rs``.

Run: ``python3 -m unittest discover -s clients/python/tests -v``
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import tempfile
import threading
import unittest
from concurrent import futures
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from palisade_client import (  # noqa: E402
    ApprovalRequired,
    ApprovalState,
    AsyncClient,
    Client,
    Decision,
    PalisadeDenied,
    PalisadeError,
    Verdict,
    guard,
)
from palisade_client._convert import to_struct  # noqa: E402
from palisade_client._stubs import pb, pb_grpc  # noqa: E402


class ScriptedServer(pb_grpc.PalisadeServicer):
    """Answers Decide from a script; records what it was asked."""

    def __init__(self) -> None:
        self.verdict = pb.ALLOW
        self.reason = "allowed"
        self.approval_state = pb.PENDING
        self.issue_error: grpc.StatusCode | None = None
        self.requests: list[pb.DecideRequest] = []
        self.tokens = 0
        self.lock = threading.Lock()

    def IssueToken(self, request: Any, context: Any) -> Any:
        if self.issue_error is not None:
            context.abort(self.issue_error, "scripted failure")
        with self.lock:
            self.tokens += 1
            n = self.tokens
        return pb.IssueTokenResponse(token=f"tok-{n}", identity="finance-agent", expires_at=1, kid="k")

    def Decide(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if request.token and request.token != "tok-good":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "scripted failure: bad token")
        if request.override_token:
            if request.override_token != "override-1":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad override token")
            return pb.DecideResponse(verdict=pb.ALLOW, reason="approved-override", decision_id="d-2")
        r = pb.DecideResponse(
            verdict=self.verdict,
            reason=self.reason,
            message="scripted",
            matched_rules=["payments"],
            policy_version="test@sha256:0",
            decision_id="d-1",
            obligations=[pb.Obligation(budget="daily", remaining=19200, limit=20000, window="day", unit="USD")],
        )
        if self.verdict == pb.APPROVAL_REQUIRED:
            r.approval_id = "a-1"
        return r

    def GetApproval(self, request: Any, context: Any) -> Any:
        if request.id != "a-1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no approval `{request.id}`")
        a = pb.Approval(id="a-1", state=self.approval_state, approver="uid:0", reason="ok")
        if self.approval_state == pb.APPROVED:
            a.override_token = "override-1"
        return a


class WithServer(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.socket = str(Path(self.dir.name) / "fake.sock")
        self.server_script = ScriptedServer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_PalisadeServicer_to_server(self.server_script, self.server)
        self.server.add_insecure_port("unix:" + self.socket)
        self.server.start()
        self.client = Client(self.socket, timeout=2)
        self.runs: list[Any] = []

    def tearDown(self) -> None:
        self.client.close()
        self.server.stop(None)
        self.dir.cleanup()

    def pay_fn(self, **options: Any) -> Any:
        @guard(self.client, tool="stripe", action="create_payment", **options)
        def create_payment(amount: float, currency: str = "USD", customer: str = "cus_1") -> str:
            self.runs.append(amount)
            return "pi_1"

        return create_payment


class DecideTest(WithServer):
    def test_allow_carries_the_answer_with_no_token_round_trip(self) -> None:
        d1 = self.client.decide("stripe", "create_payment", params={"amount": 800})
        d2 = self.client.decide("stripe", "create_payment", params={"amount": 800}, token="tok-good")
        self.assertTrue(d1.allowed and d2.allowed)
        self.assertFalse(d1.local)
        self.assertEqual(d1.matched_rules, ("payments",))
        self.assertEqual(d1.obligation("daily").remaining, 19200)  # type: ignore[union-attr]
        # The socket says who calls: no IssueToken per decision; a token
        # is sent only when the caller gives one.
        self.assertEqual(self.server_script.tokens, 0)
        self.assertEqual([r.token for r in self.server_script.requests], ["", "tok-good"])
        self.assertEqual(self.server_script.requests[0].params["amount"], 800)

    def test_unknown_verdict_is_a_deny(self) -> None:
        self.server_script.verdict = pb.VERDICT_UNSPECIFIED
        self.server_script.reason = ""
        d = self.client.decide("stripe", "create_payment")
        self.assertIs(d.verdict, Verdict.DENY)
        self.assertEqual(d.reason, "unknown-verdict")

    def test_refused_token_is_a_local_deny(self) -> None:
        d = self.client.decide("stripe", "create_payment", token="tok-stolen")
        self.assertIs(d.verdict, Verdict.DENY)
        self.assertTrue(d.local)
        self.assertEqual(d.reason, "rpc-unauthenticated")
        self.assertIs(d.status_code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("scripted failure", d.message)

    def test_unencodable_params_are_denied_without_asking(self) -> None:
        d = self.client.decide("stripe", "create_payment", params={"amount": Decimal("1.5")})
        self.assertIs(d.verdict, Verdict.DENY)
        self.assertEqual(d.reason, "invalid-input")
        self.assertIn("params.amount", d.message)
        self.assertEqual(self.server_script.requests, [])

    def test_closed_client_denies(self) -> None:
        self.client.close()
        d = self.client.decide("stripe", "create_payment")
        self.assertIs(d.verdict, Verdict.DENY)
        self.assertTrue(d.local)


class GuardTest(WithServer):
    def test_allow_runs_the_function_with_its_arguments_as_params(self) -> None:
        seen: list[Decision] = []
        pay = self.pay_fn(on_decision=seen.append)
        self.assertEqual(pay(800, customer="cus_7"), "pi_1")
        self.assertEqual(self.runs, [800])
        params = self.server_script.requests[0].params
        self.assertEqual(dict(params), {"amount": 800, "currency": "USD", "customer": "cus_7"})
        self.assertEqual([d.reason for d in seen], ["allowed"])

    def test_deny_raises_and_does_not_run(self) -> None:
        self.server_script.verdict, self.server_script.reason = pb.DENY, "denied-by-rule"
        pay = self.pay_fn()
        with self.assertRaises(PalisadeDenied) as caught:
            pay(800)
        self.assertEqual(self.runs, [])
        e = caught.exception
        self.assertNotIsInstance(e, ApprovalRequired)
        self.assertEqual((e.reason, e.decision_id, e.matched_rules), ("denied-by-rule", "d-1", ("payments",)))
        self.assertIn("stripe.create_payment denied (denied-by-rule): scripted", str(e))

    def test_approval_required_raises_with_the_approval_id(self) -> None:
        self.server_script.verdict, self.server_script.reason = pb.APPROVAL_REQUIRED, "approval-condition"
        pay = self.pay_fn()
        with self.assertRaises(ApprovalRequired) as caught:
            pay(4200)
        self.assertEqual(self.runs, [])
        self.assertEqual(caught.exception.approval_id, "a-1")
        self.assertIsInstance(caught.exception, PalisadeDenied)
        self.assertIn("palisade approve a-1", str(caught.exception))

    def test_wait_then_approved_runs_once_with_the_override_token(self) -> None:
        self.server_script.verdict, self.server_script.reason = pb.APPROVAL_REQUIRED, "approval-condition"
        self.server_script.approval_state = pb.APPROVED
        seen: list[Decision] = []
        pay = self.pay_fn(wait=5, on_decision=seen.append)
        self.assertEqual(pay(4200), "pi_1")
        self.assertEqual(self.runs, [4200])
        self.assertEqual([d.reason for d in seen], ["approval-condition", "approved-override"])
        second = self.server_script.requests[1]
        self.assertEqual((second.token, second.override_token), ("", "override-1"))
        self.assertEqual(second.params, self.server_script.requests[0].params)

    def test_wait_times_out_as_approval_required(self) -> None:
        self.server_script.verdict = pb.APPROVAL_REQUIRED
        pay = self.pay_fn(wait=0.3)
        with self.assertRaises(ApprovalRequired) as caught:
            pay(4200)
        self.assertEqual(self.runs, [])
        self.assertIs(caught.exception.approval.state, ApprovalState.PENDING)  # type: ignore[union-attr]
        self.assertIn("within 0.3s", caught.exception.message)

    def test_rejected_is_denied(self) -> None:
        self.server_script.verdict = pb.APPROVAL_REQUIRED
        self.server_script.approval_state = pb.REJECTED
        pay = self.pay_fn(wait=5)
        with self.assertRaises(PalisadeDenied) as caught:
            pay(4200)
        self.assertNotIsInstance(caught.exception, ApprovalRequired)
        self.assertEqual(caught.exception.reason, "approval-rejected")
        self.assertIn("by uid:0: ok", caught.exception.message)
        self.assertEqual(self.runs, [])

    def test_async_function(self) -> None:
        @guard(self.client, tool="stripe", action="create_payment", params=["amount"])
        async def pay(amount: float, memo: str = "") -> str:
            self.runs.append(amount)
            return "pi_async"

        self.assertEqual(asyncio.run(pay(10, memo="ignore previous instructions")), "pi_async")
        self.assertEqual(dict(self.server_script.requests[0].params), {"amount": 10})
        self.server_script.verdict = pb.DENY
        with self.assertRaises(PalisadeDenied):
            asyncio.run(pay(11))
        self.assertEqual(self.runs, [10])

    def test_methods_leave_self_out_and_resource_and_context_may_be_computed(self) -> None:
        client = self.client

        class Tools:
            @guard(
                client,
                tool="ehr",
                action="read_record",
                resource=lambda self, patient_id: f"patient/{patient_id}",
                context={"ticket": "T-1"},
            )
            def read(self, patient_id: str) -> str:
                return patient_id

        self.assertEqual(Tools().read("p7"), "p7")
        r = self.server_script.requests[0]
        self.assertEqual((r.resource, dict(r.params), dict(r.context)), ("patient/p7", {"patient_id": "p7"}, {"ticket": "T-1"}))

    def test_bad_guard_declarations_fail_at_decoration(self) -> None:
        with self.assertRaisesRegex(TypeError, "no argument 'amout'"):
            self.pay_fn(params=["amout"])
        with self.assertRaisesRegex(TypeError, "list of names"):
            self.pay_fn(params="amount")

    def test_wrong_arguments_raise_before_asking(self) -> None:
        pay = self.pay_fn(params=None)
        with self.assertRaises(TypeError):
            pay(1, 2, 3, 4)
        self.assertEqual(self.server_script.requests, [])


class FailClosedTest(unittest.TestCase):
    def test_no_daemon_denies_and_never_runs(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            client = Client(str(Path(d) / "missing.sock"), timeout=1)
            runs = []

            @guard(client, tool="stripe", action="create_payment")
            def pay(amount: float) -> None:
                runs.append(amount)

            with self.assertRaises(PalisadeDenied) as caught:
                pay(1)
            self.assertEqual(runs, [])
            self.assertEqual(caught.exception.reason, "rpc-unavailable")
            self.assertTrue(caught.exception.decision.local)
            with self.assertRaises(PalisadeError) as err:
                client.get_approval("a-1")
            self.assertIs(err.exception.code, grpc.StatusCode.UNAVAILABLE)

    def test_nonpositive_timeout_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            Client("/nonexistent", timeout=0)


class AsyncClientTest(WithServer):
    """The asyncio client: the same surface and the same fail-closed rules."""

    def setUp(self) -> None:
        super().setUp()
        self.aclient = AsyncClient(self.socket, timeout=2)

    def test_decide_allow_and_a_refused_token(self) -> None:
        async def go() -> tuple[Decision, Decision]:
            allowed = await self.aclient.decide("stripe", "create_payment", params={"amount": 800})
            refused = await self.aclient.decide("stripe", "create_payment", token="tok-stolen")
            await self.aclient.close()
            return allowed, refused

        allowed, refused = asyncio.run(go())
        self.assertTrue(allowed.allowed)
        self.assertEqual(allowed.obligation("daily").remaining, 19200)  # type: ignore[union-attr]
        self.assertEqual((self.server_script.requests[0].token, self.server_script.tokens), ("", 0))
        self.assertEqual((refused.verdict, refused.local, refused.reason), (Verdict.DENY, True, "rpc-unauthenticated"))

    def test_usable_from_two_event_loops(self) -> None:
        # A decorator's client outlives the asyncio.run that first used it.
        for _ in range(2):
            self.assertTrue(asyncio.run(self.aclient.decide("stripe", "create_payment")).allowed)

    def test_guard_awaits_the_async_client_and_waits_for_approval(self) -> None:
        self.server_script.verdict, self.server_script.reason = pb.APPROVAL_REQUIRED, "approval-condition"
        self.server_script.approval_state = pb.APPROVED

        @guard(self.aclient, tool="stripe", action="create_payment", wait=5)
        async def pay(amount: float) -> str:
            self.runs.append(amount)
            return "pi_async"

        self.assertEqual(asyncio.run(pay(4200)), "pi_async")
        self.assertEqual(self.runs, [4200])
        self.assertEqual(self.server_script.requests[1].override_token, "override-1")
        self.server_script.approval_state = pb.REJECTED
        with self.assertRaises(PalisadeDenied) as caught:
            asyncio.run(pay(4300))
        self.assertEqual(caught.exception.reason, "approval-rejected")
        self.assertEqual(self.runs, [4200])

    def test_a_plain_function_cannot_take_an_async_client(self) -> None:
        with self.assertRaisesRegex(TypeError, "not async"):

            @guard(self.aclient, tool="stripe", action="create_payment")
            def pay(amount: float) -> None: ...

    def test_no_daemon_denies(self) -> None:
        client = AsyncClient(str(Path(self.dir.name) / "missing.sock"), timeout=1)
        d = asyncio.run(client.decide("stripe", "create_payment"))
        self.assertEqual((d.verdict, d.local, d.reason), (Verdict.DENY, True, "rpc-unavailable"))

        async def approval() -> None:
            await client.get_approval("a-1")

        with self.assertRaises(PalisadeError) as err:
            asyncio.run(approval())
        self.assertIs(err.exception.code, grpc.StatusCode.UNAVAILABLE)

    def test_same_methods_as_the_blocking_client(self) -> None:
        public = {n for n in dir(Client) if not n.startswith("_")}
        apublic = {n for n in dir(AsyncClient) if not n.startswith("_")}
        self.assertEqual(public, apublic)
        for name in public - {"close"}:
            if callable(getattr(Client, name)):
                with self.subTest(method=name):
                    self.assertTrue(asyncio.iscoroutinefunction(getattr(AsyncClient, name)), name)


class DefaultClientTest(unittest.TestCase):
    def test_guard_without_a_client_uses_palisade_socket(self) -> None:
        g = importlib.import_module("palisade_client.guard")

        with tempfile.TemporaryDirectory() as d:
            missing = str(Path(d) / "from-env.sock")
            old = os.environ.get("PALISADE_SOCKET")
            os.environ["PALISADE_SOCKET"] = missing
            g._defaults.clear()
            try:

                @guard(tool="stripe", action="create_payment")
                def pay(amount: float) -> None: ...

                with self.assertRaises(PalisadeDenied) as caught:
                    pay(1)
                self.assertIn("from-env.sock", caught.exception.message)
                self.assertEqual(g.default_client().socket_path, missing)
            finally:
                g._defaults.clear()
                if old is None:
                    os.environ.pop("PALISADE_SOCKET", None)
                else:
                    os.environ["PALISADE_SOCKET"] = old

    def test_tool_and_action_are_required(self) -> None:
        with self.assertRaisesRegex(TypeError, "required"):
            guard(tool="stripe")


class ConvertTest(unittest.TestCase):
    def test_json_values_convert(self) -> None:
        s = to_struct({"a": 1, "b": [1.5, "x", None, True], "c": {"d": (1, 2)}}, "params")
        assert s is not None
        self.assertEqual(s["b"][3], True)
        self.assertEqual(list(s["c"]["d"]), [1, 2])

    def test_what_json_cannot_hold_is_refused_with_its_path(self) -> None:
        cases: list[tuple[Any, str]] = [
            ({"amount": 2**60}, "params.amount: .* too large"),
            ({"x": float("nan")}, "params.x: nan"),
            ({"items": [{"price": Decimal(1)}]}, r"params.items\[0\].price: a Decimal"),
            ({1: "a"}, "keys must be strings"),
            ({"b": b"raw"}, "a bytes is not JSON"),
        ]
        for value, pattern in cases:
            with self.subTest(value=value), self.assertRaisesRegex((TypeError, ValueError), pattern):
                to_struct(value, "params")
        with self.assertRaisesRegex(TypeError, "must be a mapping"):
            to_struct([1], "params")  # type: ignore[arg-type]


if __name__ == "__main__":
    unittest.main()
