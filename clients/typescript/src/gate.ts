// What framework adapters share: ask the daemon about one tool call and say
// why it must not run, in words an agent can act on ("denied by policy:
// <reason>…"). A call that needs a human waits for one (`waitMs`) or returns
// at once with the approval id; the gate remembers that id for the same
// arguments, and when the agent calls again once an operator approved, the
// call runs with the override token, exactly once.

import { Client, checkResolved, rpcReason, type OnDecision } from "./client.js";
import { ApprovalRequired, PalisadeDenied, PalisadeError } from "./errors.js";
import { defaultClient } from "./guard.js";
import { type Decision, localDeny } from "./models.js";

export interface Refusal {
  /** What the agent is told. */
  readonly text: string;
  readonly reason: string;
  readonly decision?: Decision;
  /** Set while a human's approval is pending. */
  readonly approvalId: string;
}

export interface GateOptions {
  tool: string;
  action: string;
  client?: Client;
  resource?: string;
  context?: Record<string, unknown>;
  waitMs?: number;
  onDecision?: OnDecision;
}

export function refusalOf(e: PalisadeDenied): Refusal {
  if (e instanceof ApprovalRequired && e.approvalId) {
    const id = e.approvalId;
    return {
      text:
        `approval required: ${e.tool}.${e.action} waits for a human (approval ${id}; an operator runs ` +
        `\`palisade approve ${id}\`). Call the tool again with the same arguments once it is approved.`,
      reason: "approval-required",
      decision: e.decision,
      approvalId: id,
    };
  }
  return {
    text: `denied by policy: ${e.reason}${e.detail ? `: ${e.detail}` : ""}`,
    reason: e.reason,
    decision: e.decision,
    approvalId: "",
  };
}

function local(reason: string, message: string): Refusal {
  return { text: `denied by policy: ${reason}: ${message}`, reason, approvalId: "" };
}

export class Gate {
  private readonly pending = new Map<string, string>();

  constructor(readonly options: GateOptions) {
    if (!options.tool || !options.action) throw new TypeError("a Palisade tool guard needs tool and action");
  }

  /** null when the call may run now; otherwise why not. Never rejects. */
  async check(params: Record<string, unknown>): Promise<Refusal | null> {
    try {
      return await this.checkOrThrow(params);
    } catch (e) {
      return local("client-error", e instanceof Error ? `${e.name}: ${e.message}` : String(e));
    }
  }

  private async checkOrThrow(params: Record<string, unknown>): Promise<Refusal | null> {
    const { tool, action } = this.options;
    const client = this.options.client ?? defaultClient();
    const ask = { tool, action, resource: this.options.resource ?? "", params, context: this.options.context };
    const key = canonical(ask);
    const remembered = this.pending.get(key);
    if (remembered) {
      let approval;
      try {
        approval = await client.getApproval(remembered);
      } catch (e) {
        return e instanceof PalisadeError ? local(rpcReason(e.code), e.message) : local("client-error", String(e));
      }
      if (approval.state === "PENDING") {
        return {
          text: `approval required: approval ${approval.id} for ${tool}.${action} is still pending; call again once an operator approved it`,
          reason: "approval-pending",
          approvalId: approval.id,
        };
      }
      this.pending.delete(key);
      let overrideToken: string;
      try {
        overrideToken = checkResolved(tool, action, localDeny("", ""), approval, 0);
      } catch (e) {
        if (e instanceof PalisadeDenied) return refusalOf(e);
        throw e;
      }
      const decision = await client.decide({ ...ask, overrideToken });
      this.options.onDecision?.(decision);
      return decision.verdict === "ALLOW" ? null : refusalOf(new PalisadeDenied(tool, action, decision));
    }
    try {
      await client.authorize(ask, { waitMs: this.options.waitMs, onDecision: this.options.onDecision });
      return null;
    } catch (e) {
      if (!(e instanceof PalisadeDenied)) throw e;
      const refusal = refusalOf(e);
      if (refusal.approvalId) this.pending.set(key, refusal.approvalId);
      return refusal;
    }
  }
}

/** The same call whatever the order of its keys. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}
