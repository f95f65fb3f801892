// The client against the real daemon, enrolled as finance-agent.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import { ApprovalRequired, Client, type Decision, PalisadeDenied, PalisadeError, guard } from "../src/index.js";
import { AUTO_APPROVE, AUTO_REJECT, Ledger, requireDaemon, usd } from "./support.js";

requireDaemon();
const client = new Client();
after(() => client.close());

function payments(options: { resource?: string; waitMs?: number } = {}) {
  const ledger = new Ledger();
  const decisions: Decision[] = [];
  const pay = guard((p: ReturnType<typeof usd>) => ledger.pay(p), {
    tool: "stripe",
    action: "create_payment",
    onDecision: (d) => decisions.push(d),
    ...options,
  });
  return { ledger, decisions, pay };
}

test("an allowed call runs once and carries the daemon's answer", async () => {
  const { ledger, decisions, pay } = payments();
  assert.equal(await pay(usd(800)), "pi_1");
  assert.deepEqual(ledger.paid, [800]);
  const [d] = decisions;
  assert.ok(d);
  assert.equal(d.verdict, "ALLOW");
  assert.equal(d.reason, "allowed");
  assert.equal(d.local, false);
  assert.deepEqual(d.matchedRules, ["payments"]);
  assert.match(d.policyVersion, /^tsclient@/);
  assert.ok(d.decisionId);
  const spend = d.obligations.find((o) => o.budget === "daily-spend");
  assert.equal(spend?.limit, 10_000_000);
  assert.equal(spend?.unit, "USD");
  assert.equal(spend?.window, "day");
});

test("a denied call rejects with the reason and never runs", async () => {
  const { ledger, pay } = payments();
  await assert.rejects(pay({ ...usd(250), currency: "EUR" }), (e: unknown) => {
    assert.ok(e instanceof PalisadeDenied && !(e instanceof ApprovalRequired));
    assert.equal(e.reason, "no-matching-rule");
    assert.ok(e.decisionId);
    return true;
  });
  let refunds = 0;
  const refund = guard((payment: string) => ++refunds, {
    tool: "stripe",
    action: "refund",
    params: (payment) => ({ payment }),
  });
  await assert.rejects(refund("pi_1"), (e: unknown) => {
    assert.ok(e instanceof PalisadeDenied);
    assert.equal(e.reason, "denied-by-rule");
    assert.deepEqual(e.matchedRules, ["no-refunds"]);
    assert.match(e.message, /^stripe\.refund denied \(denied-by-rule\).*rules no-refunds/);
    return true;
  });
  assert.deepEqual(ledger.paid, []);
  assert.equal(refunds, 0);
});

test("approval required rejects with the approval id, which the agent can read", async () => {
  const { ledger, pay } = payments();
  const e = await pay(usd(4200)).then(
    () => assert.fail("a payment that needs approval ran"),
    (e: unknown) => e,
  );
  assert.ok(e instanceof ApprovalRequired);
  assert.equal(e.reason, "approval-condition");
  assert.ok(e.approvalId);
  assert.match(e.message, new RegExp(`palisade approve ${e.approvalId}`));
  const approval = await client.getApproval(e.approvalId);
  assert.equal(approval.state, "PENDING");
  assert.equal(approval.tool, "stripe");
  assert.equal(approval.action, "create_payment");
  assert.deepEqual(ledger.paid, []);
});

test("waiting: an approved call runs exactly once with the override token", async () => {
  const { ledger, decisions, pay } = payments({ resource: AUTO_APPROVE, waitMs: 30000 });
  assert.equal(await pay(usd(4300)), "pi_1");
  assert.deepEqual(ledger.paid, [4300]);
  assert.deepEqual(
    decisions.map((d) => d.reason),
    ["approval-condition", "approved-override"],
  );
  const approval = await client.getApproval(decisions[0]?.approvalId ?? "");
  assert.equal(approval.state, "CONSUMED");
  assert.equal(approval.approver.length > 0, true);
  assert.ok(!JSON.stringify(approval).includes("overrideToken"), "the override token leaks into JSON");
});

test("waiting: a rejected call is denied and never runs", async () => {
  const { ledger, pay } = payments({ resource: AUTO_REJECT, waitMs: 30000 });
  await assert.rejects(pay(usd(4400)), (e: unknown) => {
    assert.ok(e instanceof PalisadeDenied && !(e instanceof ApprovalRequired));
    assert.equal(e.reason, "approval-rejected");
    assert.match(e.detail, /test operator/);
    return true;
  });
  assert.deepEqual(ledger.paid, []);
});

test("an override token allows the approved call once", async () => {
  const ask = { tool: "stripe", action: "create_payment", resource: AUTO_APPROVE, params: usd(4600) };
  const first = await client.decide(ask);
  assert.equal(first.verdict, "APPROVAL_REQUIRED");
  const approval = await client.waitForApproval(first.approvalId, 30000);
  assert.equal(approval.state, "APPROVED");
  assert.ok(approval.overrideToken);
  const approved = await client.decide({ ...ask, overrideToken: approval.overrideToken });
  assert.equal(approved.verdict, "ALLOW");
  assert.equal(approved.reason, "approved-override");
  const replayed = await client.decide({ ...ask, overrideToken: approval.overrideToken });
  assert.equal(replayed.verdict, "DENY", "a replayed override token was accepted");
  // Another call with the token: refused too (it covers exactly one call).
  const other = await client.decide({ ...ask, params: usd(4700), overrideToken: approval.overrideToken });
  assert.equal(other.verdict, "DENY");
  assert.equal((await client.getApproval(first.approvalId)).state, "CONSUMED");
});

test("just-in-time egress: granted where grantable, refused elsewhere", async () => {
  const grant = await client.requestEgress({ destination: "10.50.1.7", ports: [5432], protocol: "tcp", ttlSeconds: 60 });
  assert.equal(grant.granted, true);
  assert.equal(grant.rule, "staging-db");
  assert.ok(grant.expiresAt > Date.now() / 1000);
  await assert.rejects(
    client.requestEgress({ destination: "10.66.0.1", ports: [443] }),
    (e: unknown) => e instanceof PalisadeError && e.code === "PERMISSION_DENIED",
  );
});

test("an agent cannot act as an operator", async () => {
  for (const call of [() => client.listApprovals(), () => client.approve("anything")]) {
    await assert.rejects(call(), (e: unknown) => e instanceof PalisadeError && e.code === "PERMISSION_DENIED");
  }
});

test("no token is needed; a token given must be the caller's own and is spent", async () => {
  const ask = { tool: "stripe", action: "create_payment", params: usd(10) };
  assert.equal((await client.decide(ask)).verdict, "ALLOW");
  const token = await client.issueToken(60);
  assert.equal(token.identity, "finance-agent");
  assert.equal((await client.decide({ ...ask, token: token.token })).verdict, "ALLOW");
  const replayed = await client.decide({ ...ask, token: token.token });
  assert.equal(replayed.verdict, "DENY", "a spent token was accepted");
  assert.equal(replayed.local, true);
  const forged = await client.decide({ ...ask, token: `${token.token.slice(0, -4)}AAAA` });
  assert.equal(forged.verdict, "DENY");
  assert.equal(forged.reason, "rpc-unauthenticated");
});
