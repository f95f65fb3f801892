// What the tests that talk to a real daemon share. They run enrolled as
// finance-agent with PALISADE_SOCKET set, against the policy in
// tests/tests/typescript_client.rs, with a stand-in operator that approves
// approvals whose resource is "auto-approve" and rejects "auto-reject"
// ones (cargo xtask test runs them so). Without a daemon they fail.

import { Client } from "../src/index.js";

export const AUTO_APPROVE = "auto-approve";
export const AUTO_REJECT = "auto-reject";

export function requireDaemon(): void {
  if (!process.env.PALISADE_SOCKET) {
    throw new Error(
      "PALISADE_SOCKET is not set: these tests run against a real daemon, from tests/tests/typescript_client.rs (cargo xtask test)",
    );
  }
}

export function usd(amount: number, customer = "cus_1"): { amount: number; currency: string; customer: string } {
  return { amount, currency: "USD", customer };
}

/** A fake payment provider that records what actually ran. */
export class Ledger {
  readonly paid: number[] = [];
  readonly refunded: string[] = [];

  pay(p: { amount: number }): string {
    this.paid.push(p.amount);
    return `pi_${this.paid.length}`;
  }

  refund(payment: string): string {
    this.refunded.push(payment);
    return `re_${payment}`;
  }
}

/** The approval id in a gate's "approval required" text. */
export function approvalIdIn(text: string): string {
  const m = /\(approval ([^;]+);/.exec(text);
  if (!m?.[1]) throw new Error(`no approval id in ${JSON.stringify(text)}`);
  return m[1];
}

export async function waitUntilApproved(client: Client, id: string, timeoutMs = 20000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await client.getApproval(id)).state === "APPROVED") return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`approval ${id} was not approved within ${timeoutMs} ms`);
}
