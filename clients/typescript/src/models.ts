// What the daemon answers, as plain readonly objects.

import type { Approval__Output } from "./gen/palisade/v1/Approval.js";
import type { DecideResponse__Output } from "./gen/palisade/v1/DecideResponse.js";

export type Verdict = "ALLOW" | "DENY" | "APPROVAL_REQUIRED";
export type ApprovalState = "UNSPECIFIED" | "PENDING" | "APPROVED" | "REJECTED" | "EXPIRED" | "CONSUMED";

/** A budget the decision counted against, and what is left of it. */
export interface Obligation {
  readonly budget: string;
  readonly remaining: number;
  readonly limit: number;
  /** "second", "minute", "hour" or "day". */
  readonly window: string;
  readonly unit: string;
}

/** The daemon's answer to Decide, or the client's own DENY when it got none (`local`). */
export interface Decision {
  readonly verdict: Verdict;
  /** allowed, denied-by-rule, no-matching-rule, approval-condition, budget-exceeded…;
   * for local denials rpc-<status> (rpc-unavailable…), invalid-input or client-error. */
  readonly reason: string;
  readonly message: string;
  readonly matchedRules: readonly string[];
  readonly policyVersion: string;
  readonly decisionId: string;
  readonly obligations: readonly Obligation[];
  /** Set with APPROVAL_REQUIRED. */
  readonly approvalId: string;
  /** True when the client decided (DENY) because the daemon did not. */
  readonly local: boolean;
  /** The gRPC status name of the failed call, for local denials. */
  readonly statusCode: string;
}

export interface Approval {
  readonly id: string;
  readonly state: ApprovalState;
  readonly identity: string;
  /** "tool" or "egress". */
  readonly kind: string;
  readonly tool: string;
  readonly action: string;
  readonly resource: string;
  readonly paramsDigest: string;
  readonly policyVersion: string;
  readonly matchedRules: readonly string[];
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly approver: string;
  readonly reason: string;
  /** Once approved, to the requesting identity only: allows the approved call once. */
  readonly overrideToken: string;
  readonly destination: string;
  readonly ports: readonly number[];
  readonly ttlSeconds: number;
}

export interface EgressGrant {
  /** True when the kernel allows the destination now. */
  readonly granted: boolean;
  /** Unix seconds. */
  readonly expiresAt: number;
  /** Set when the request went to a human for approval. */
  readonly approvalId: string;
  readonly rule: string;
}

export interface Token {
  readonly token: string;
  readonly identity: string;
  readonly expiresAt: number;
  readonly kid: string;
}

const VERDICTS: ReadonlySet<string> = new Set(["ALLOW", "DENY", "APPROVAL_REQUIRED"]);
const STATES: ReadonlySet<string> = new Set(["PENDING", "APPROVED", "REJECTED", "EXPIRED", "CONSUMED"]);

export function decisionFrom(r: DecideResponse__Output): Decision {
  // Anything the client does not know (UNSPECIFIED, a future value) is a
  // deny: the client never guesses in favour of running a call.
  const known = VERDICTS.has(r.verdict);
  return Object.freeze({
    verdict: (known ? r.verdict : "DENY") as Verdict,
    reason: r.reason || (known ? "" : "unknown-verdict"),
    message: r.message,
    matchedRules: Object.freeze([...r.matchedRules]),
    policyVersion: r.policyVersion,
    decisionId: r.decisionId,
    obligations: Object.freeze(
      r.obligations.map((o) =>
        Object.freeze({ budget: o.budget, remaining: o.remaining, limit: o.limit, window: o.window, unit: o.unit }),
      ),
    ),
    approvalId: r.approvalId,
    local: false,
    statusCode: "",
  });
}

export function localDeny(reason: string, message: string, statusCode = ""): Decision {
  return Object.freeze({
    verdict: "DENY" as const,
    reason,
    message,
    matchedRules: Object.freeze([]),
    policyVersion: "",
    decisionId: "",
    obligations: Object.freeze([]),
    approvalId: "",
    local: true,
    statusCode,
  });
}

export function approvalFrom(a: Approval__Output): Approval {
  const approval = {
    id: a.id,
    state: (STATES.has(a.state) ? a.state : "UNSPECIFIED") as ApprovalState,
    identity: a.identity,
    kind: a.kind,
    tool: a.tool,
    action: a.action,
    resource: a.resource,
    paramsDigest: a.paramsDigest,
    policyVersion: a.policyVersion,
    matchedRules: Object.freeze([...a.matchedRules]),
    createdAt: Number(a.createdAt),
    expiresAt: Number(a.expiresAt),
    approver: a.approver,
    reason: a.reason,
    destination: a.destination,
    ports: Object.freeze([...a.ports]),
    ttlSeconds: a.ttlSeconds,
  };
  // A credential: kept out of JSON.stringify and console.log.
  Object.defineProperty(approval, "overrideToken", { value: a.overrideToken, enumerable: false });
  return Object.freeze(approval) as Approval;
}
