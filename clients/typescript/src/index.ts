// @palisade/client: the TypeScript client of Palisade's local decision API.
//
//   import { guard } from "@palisade/client";
//   const createPayment = guard(pay, { tool: "stripe", action: "create_payment" });
//
// Fail closed: the function runs only on the daemon's ALLOW; anything else
// rejects with PalisadeDenied (ApprovalRequired for a pending approval).

export {
  Client,
  DEFAULT_SOCKET,
  DEFAULT_TIMEOUT_MS,
  SOCKET_ENV,
  rpcReason,
  type AuthorizeOptions,
  type ClientOptions,
  type DecideInput,
  type EgressInput,
  type OnDecision,
} from "./client.js";
export { InvalidInput, toStruct } from "./convert.js";
export { ApprovalRequired, PalisadeDenied, PalisadeError } from "./errors.js";
export { Gate, refusalOf, type GateOptions, type Refusal } from "./gate.js";
export { defaultClient, guard, type GuardOptions } from "./guard.js";
export type { Approval, ApprovalState, Decision, EgressGrant, Obligation, Token, Verdict } from "./models.js";
export { VERSION } from "./version.js";
