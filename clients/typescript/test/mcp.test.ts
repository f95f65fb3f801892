// The MCP adapter against the real daemon: an McpServer guarded with
// guardMcpServer, called by the SDK's own Client over its in-memory
// transport; this process is enrolled as finance-agent, so it is the
// agent's tool server that asks.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client as McpClient } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { z } from "zod";

import type { Decision } from "../src/index.js";
import { guardMcpServer, type McpGuardOptions } from "../src/mcp.js";
import { AUTO_APPROVE, AUTO_REJECT, Ledger, approvalIdIn, requireDaemon, usd, waitUntilApproved } from "./support.js";
import { Client } from "../src/index.js";

requireDaemon();

interface TextResult {
  content: { type: string; text: string }[];
  isError?: boolean;
}

async function serve(options: Partial<McpGuardOptions> = {}) {
  const ledger = new Ledger();
  const decisions: Decision[] = [];
  const server = guardMcpServer(new McpServer({ name: "payments", version: "1.0.0" }), {
    tool: "stripe",
    onDecision: (d) => decisions.push(d),
    ...options,
  });
  server.registerTool(
    "create_payment",
    {
      description: "Pay a customer.",
      inputSchema: { amount: z.number(), currency: z.string(), customer: z.string() },
    },
    async (args) => ({ content: [{ type: "text", text: ledger.pay(args) }] }),
  );
  // A tool without arguments (the SDK calls it with `extra` only).
  server.registerTool("balance", { description: "The account balance." }, async () => {
    ledger.paid.push(-1);
    return { content: [{ type: "text", text: "1000 USD" }] };
  });
  // The older registration API is guarded too.
  server.tool("refund", { payment: z.string() }, async ({ payment }) => ({
    content: [{ type: "text", text: ledger.refund(payment) }],
  }));
  const mcp = new McpClient({ name: "test-agent", version: "1.0.0" });
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await Promise.all([server.connect(serverSide), mcp.connect(clientSide)]);
  const call = async (name: string, args: Record<string, unknown>): Promise<TextResult> =>
    (await mcp.callTool({ name, arguments: args })) as TextResult;
  const close = async () => {
    await mcp.close();
    await server.close();
  };
  return { ledger, decisions, call, close, mcp };
}

function text(r: TextResult): string {
  return r.content.map((c) => c.text).join("");
}

test("an allowed tools/call runs the tool once", async () => {
  const s = await serve();
  try {
    const tools = await s.mcp.listTools();
    assert.deepEqual(tools.tools.map((t) => t.name).sort(), ["balance", "create_payment", "refund"]);
    const r = await s.call("create_payment", usd(800));
    assert.equal(r.isError, undefined);
    assert.equal(text(r), "pi_1");
    assert.deepEqual(s.ledger.paid, [800]);
    assert.deepEqual(
      s.decisions.map((d) => [d.verdict, d.matchedRules.join()]),
      [["ALLOW", "payments"]],
    );
  } finally {
    await s.close();
  }
});

test("a denied tools/call is an MCP tool error and the tool never runs", async () => {
  const s = await serve();
  try {
    const euro = await s.call("create_payment", { ...usd(250), currency: "EUR" });
    assert.equal(euro.isError, true);
    assert.match(text(euro), /^denied by policy: no-matching-rule/);
    const balance = await s.call("balance", {});
    assert.equal(balance.isError, true);
    assert.match(text(balance), /^denied by policy: no-matching-rule/);
    assert.equal(s.decisions.at(-1)?.reason, "no-matching-rule");
    const refund = await s.call("refund", { payment: "pi_1" });
    assert.equal(refund.isError, true);
    assert.match(text(refund), /^denied by policy: denied-by-rule/);
    assert.deepEqual(s.ledger.paid, []);
    assert.deepEqual(s.ledger.refunded, []);
  } finally {
    await s.close();
  }
});

test("arguments the tool's schema refuses never reach Decide or the tool", async () => {
  const s = await serve();
  try {
    const r = await s.call("create_payment", { amount: "lots", currency: "USD", customer: "c" });
    assert.equal(r.isError, true);
    assert.match(text(r), /Input validation error/);
    assert.deepEqual(s.decisions, []);
    assert.deepEqual(s.ledger.paid, []);
  } finally {
    await s.close();
  }
});

test("approval: the id is returned, and once approved the same call runs once", async () => {
  const s = await serve({ resource: AUTO_APPROVE });
  try {
    const first = await s.call("create_payment", usd(4200));
    assert.equal(first.isError, true);
    assert.match(text(first), /^approval required: stripe\.create_payment waits for a human/);
    const id = approvalIdIn(text(first));
    const agent = new Client();
    await waitUntilApproved(agent, id);
    agent.close();
    const second = await s.call("create_payment", usd(4200));
    assert.equal(text(second), "pi_1");
    assert.deepEqual(s.ledger.paid, [4200]);
    assert.equal(s.decisions.at(-1)?.reason, "approved-override");
  } finally {
    await s.close();
  }
});

test("approval: waiting runs an approved call and refuses a rejected one", async () => {
  const approved = await serve({ resource: AUTO_APPROVE, waitMs: 30000 });
  const rejected = await serve({ resource: AUTO_REJECT, waitMs: 30000 });
  try {
    assert.equal(text(await approved.call("create_payment", usd(4300))), "pi_1");
    const r = await rejected.call("create_payment", usd(4400));
    assert.equal(r.isError, true);
    assert.match(text(r), /^denied by policy: approval-rejected/);
    assert.deepEqual(rejected.ledger.paid, []);
  } finally {
    await approved.close();
    await rejected.close();
  }
});

test("a server with tools registered before guarding is refused", () => {
  const server = new McpServer({ name: "late", version: "1.0.0" });
  server.registerTool("x", { description: "x" }, async () => ({ content: [] }));
  assert.throws(() => guardMcpServer(server, { tool: "stripe" }), /registered before the server was guarded/);
});
