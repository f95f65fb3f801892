// Everything that means "do not run the call" is a PalisadeDenied, so one
// `catch (e) { if (e instanceof PalisadeDenied) … }` covers denials,
// pending approvals and an unreachable daemon alike.

import type { Approval, Decision } from "./models.js";

/** A Palisade API call failed (a gRPC error), for calls with no verdict to fall back on. */
export class PalisadeError extends Error {
  override name = "PalisadeError";
  constructor(
    readonly rpc: string,
    /** The gRPC status name, e.g. "UNAVAILABLE", "PERMISSION_DENIED". */
    readonly code: string,
    readonly details: string,
  ) {
    super(`${rpc} failed: ${code}: ${details}`);
  }
}

export interface DeniedOptions {
  approval?: Approval;
  reason?: string;
  message?: string;
}

/** The tool call must not run: the daemon denied it, or the client got no answer. */
export class PalisadeDenied extends Error {
  override name = "PalisadeDenied";
  readonly reason: string;
  readonly detail: string;
  /** The approval this denial concerns (rejected, expired…), if any. */
  readonly approval: Approval | undefined;

  constructor(
    readonly tool: string,
    readonly action: string,
    readonly decision: Decision,
    options: DeniedOptions = {},
  ) {
    super("");
    this.reason = options.reason ?? decision.reason;
    this.detail = options.message ?? decision.message;
    this.approval = options.approval;
    this.message = this.describe();
  }

  get decisionId(): string {
    return this.decision.decisionId;
  }

  get matchedRules(): readonly string[] {
    return this.decision.matchedRules;
  }

  protected describe(): string {
    let text = `${this.tool}.${this.action} denied (${this.reason})`;
    if (this.detail) text += `: ${this.detail}`;
    const notes: string[] = [];
    if (this.decision.matchedRules.length) notes.push(`rules ${this.decision.matchedRules.join(", ")}`);
    if (this.decision.decisionId) notes.push(`decision ${this.decision.decisionId}`);
    if (this.decision.policyVersion) notes.push(`policy ${this.decision.policyVersion}`);
    if (notes.length) text += ` [${notes.join("; ")}]`;
    return text;
  }
}

/** The call needs a human's approval, which has not been given (yet). */
export class ApprovalRequired extends PalisadeDenied {
  override name = "ApprovalRequired";

  get approvalId(): string {
    return this.decision.approvalId;
  }

  protected override describe(): string {
    let text = super.describe().replace(" denied (", " needs approval (");
    const id = this.decision.approvalId;
    if (id) text += `; approval ${id} (an operator runs \`palisade approve ${id}\`)`;
    return text;
  }
}
