// A client of the daemon's decision API on its Unix socket.
//
// The daemon knows who is calling from the socket itself (the kernel reports
// the peer's pid, which the daemon maps to a cgroup and an identity), so the
// client sends no credentials of its own: the process must run enrolled
// (`palisade exec --identity finance-agent -- node agent.js`).
//
// Fail closed: decide() never rejects and never answers ALLOW unless the
// daemon did; authorize() and guard() turn every other outcome into a
// PalisadeDenied.

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { fileURLToPath } from "node:url";
import { resolve } from "node:path";

import { InvalidInput, toStruct } from "./convert.js";
import { ApprovalRequired, PalisadeDenied, PalisadeError } from "./errors.js";
import type { ProtoGrpcType } from "./gen/palisade.js";
import type { DecideRequest } from "./gen/palisade/v1/DecideRequest.js";
import type { PalisadeClient } from "./gen/palisade/v1/Palisade.js";
import {
  type Approval,
  type Decision,
  type EgressGrant,
  type Token,
  approvalFrom,
  decisionFrom,
  localDeny,
} from "./models.js";

/** Where the daemon listens unless told otherwise. */
export const DEFAULT_SOCKET = "/run/palisade/palisade.sock";
/** Environment variable naming the socket. */
export const SOCKET_ENV = "PALISADE_SOCKET";
/** Milliseconds each RPC may take before it is abandoned (and the call denied). */
export const DEFAULT_TIMEOUT_MS = 2000;

export interface ClientOptions {
  /** Default: $PALISADE_SOCKET, then /run/palisade/palisade.sock. */
  socketPath?: string;
  /** Deadline of each RPC. */
  timeoutMs?: number;
  /** Lifetime issueToken() asks for unless told otherwise. */
  tokenTtlSeconds?: number;
}

export interface DecideInput {
  tool: string;
  action: string;
  resource?: string;
  /** JSON-like; what the policy's conditions see as `params`. */
  params?: Record<string, unknown>;
  context?: Record<string, unknown>;
  /** From an approved Approval: allows exactly that call, once. */
  overrideToken?: string;
  /** Not needed (the daemon knows the caller from the socket); if given,
   * it must verify and be this process's own, and it is spent. */
  token?: string;
  /** If given, must be this process's identity. */
  agent?: string;
}

export type OnDecision = (decision: Decision) => void;

export interface AuthorizeOptions {
  /** Wait this long for an operator's approval; without it APPROVAL_REQUIRED throws at once. */
  waitMs?: number;
  /** Sees every decision (budgets left are in `obligations`). */
  onDecision?: OnDecision;
  /** Poll interval while waiting. */
  pollMs?: number;
}

export interface EgressInput {
  /** An address or CIDR. */
  destination: string;
  ports?: number[];
  /** "tcp", "udp" or "any" (default). */
  protocol?: string;
  ttlSeconds?: number;
  reason?: string;
  /** As for decide(). */
  token?: string;
}

const PROTO_ROOT = resolve(fileURLToPath(new URL("../../proto", import.meta.url)));
let loaded: ProtoGrpcType | undefined;

function api(): ProtoGrpcType {
  if (!loaded) {
    const definition = protoLoader.loadSync("palisade/v1/palisade.proto", {
      includeDirs: [PROTO_ROOT],
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    loaded = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return loaded;
}

/** The reason code of a local denial: rpc-unavailable, rpc-deadline-exceeded… */
export function rpcReason(code: string): string {
  return `rpc-${(code || "error").toLowerCase().replaceAll("_", "-")}`;
}

function statusName(code: number | undefined): string {
  return code === undefined ? "UNKNOWN" : (grpc.status[code] ?? `CODE_${code}`);
}

export class Client {
  readonly socketPath: string;
  readonly timeoutMs: number;
  readonly tokenTtlSeconds: number;
  private readonly stub: PalisadeClient;

  constructor(options: ClientOptions = {}) {
    this.socketPath = options.socketPath || process.env[SOCKET_ENV] || DEFAULT_SOCKET;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!(this.timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, got ${this.timeoutMs}`);
    this.tokenTtlSeconds = options.tokenTtlSeconds ?? 30;
    // The channel connects lazily, on the first RPC. The socket path would
    // otherwise be sent as the HTTP/2 :authority, which the daemon refuses.
    this.stub = new (api().palisade.v1.Palisade)(
      `unix:${resolve(this.socketPath)}`,
      grpc.credentials.createInsecure(),
      { "grpc.default_authority": "localhost" },
    );
  }

  close(): void {
    this.stub.close();
  }

  /** One RPC with the deadline; gRPC errors become PalisadeError. */
  private call<Req, Res>(name: string, request: Req): Promise<Res> {
    return new Promise((resolvePromise, reject) => {
      const method = (this.stub as unknown as Record<string, Function>)[name];
      if (typeof method !== "function") {
        reject(new PalisadeError(name, "UNIMPLEMENTED", "no such method in the client"));
        return;
      }
      method.call(
        this.stub,
        request,
        { deadline: Date.now() + this.timeoutMs },
        (err: grpc.ServiceError | null, response: Res) => {
          if (err) reject(new PalisadeError(name, statusName(err.code), err.details || err.message));
          else resolvePromise(response);
        },
      );
    });
  }

  // --- the agent's side ----------------------------------------------------

  /** An empty call; rejects with PalisadeError when the daemon does not answer. */
  async ping(): Promise<void> {
    await this.call("Ping", {});
  }

  /** A single-use token for this process's identity, to prove it to another
   * service (verified with the daemon's JWKS). Calls to this daemon need none. */
  async issueToken(ttlSeconds?: number): Promise<Token> {
    const r = await this.call<object, { token: string; identity: string; expiresAt: number; kid: string }>(
      "IssueToken",
      { ttlSeconds: ttlSeconds ?? this.tokenTtlSeconds },
    );
    return Object.freeze({ token: r.token, identity: r.identity, expiresAt: Number(r.expiresAt), kid: r.kid });
  }

  /** May this process make this call? Never rejects: without an answer the
   * decision is a local DENY saying why. */
  async decide(input: DecideInput): Promise<Decision> {
    let request: DecideRequest;
    try {
      request = {
        agent: input.agent ?? "",
        tool: input.tool,
        action: input.action,
        resource: input.resource ?? "",
        params: toStruct(input.params, "params") ?? null,
        context: toStruct(input.context, "context") ?? null,
      };
    } catch (e) {
      if (e instanceof InvalidInput) return localDeny("invalid-input", `not sent to the daemon: ${e.message}`);
      return localDeny("client-error", String(e));
    }
    try {
      if (input.overrideToken) request.overrideToken = input.overrideToken;
      else if (input.token) request.token = input.token;
      return decisionFrom(await this.call("Decide", request));
    } catch (e) {
      if (e instanceof PalisadeError) return localDeny(rpcReason(e.code), e.message, e.code);
      return localDeny("client-error", e instanceof Error ? `${e.name}: ${e.message}` : String(e));
    }
  }

  /** decide(), then resolve only if the call may run now. Throws
   * PalisadeDenied on DENY (and on any failure), ApprovalRequired on
   * APPROVAL_REQUIRED unless `waitMs` is given: then it waits for an
   * operator and, once approved, decides again with the override token,
   * which allows exactly this call once. */
  async authorize(input: DecideInput, options: AuthorizeOptions = {}): Promise<Decision> {
    const { waitMs, onDecision } = options;
    const ask: DecideInput = { ...input, overrideToken: undefined };
    const decision = await this.decide(ask);
    onDecision?.(decision);
    if (decision.verdict === "ALLOW") return decision;
    if (decision.verdict !== "APPROVAL_REQUIRED") throw new PalisadeDenied(input.tool, input.action, decision);
    if (!waitMs || !decision.approvalId) throw new ApprovalRequired(input.tool, input.action, decision);

    let approval: Approval;
    try {
      approval = await this.waitForApproval(decision.approvalId, waitMs, options.pollMs);
    } catch (e) {
      const code = e instanceof PalisadeError ? e.code : "";
      throw new PalisadeDenied(input.tool, input.action, decision, { reason: rpcReason(code), message: String(e) });
    }
    const overrideToken = checkResolved(input.tool, input.action, decision, approval, waitMs);
    const approved = await this.decide({ ...ask, overrideToken });
    onDecision?.(approved);
    if (approved.verdict !== "ALLOW") throw new PalisadeDenied(input.tool, input.action, approved, { approval });
    return approved;
  }

  /** One of this identity's approvals. Rejects with PalisadeError. */
  async getApproval(id: string): Promise<Approval> {
    return approvalFrom(await this.call("GetApproval", { id }));
  }

  /** Poll until an operator resolves the approval (or it expires), at most
   * `timeoutMs`; resolves with its last state (still PENDING after a timeout). */
  async waitForApproval(id: string, timeoutMs: number, pollMs = 250): Promise<Approval> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const approval = await this.getApproval(id);
      const left = deadline - Date.now();
      if (approval.state !== "PENDING" || left <= 0) return approval;
      await new Promise((r) => setTimeout(r, Math.min(pollMs, left)));
    }
  }

  /** A temporary kernel allow rule to `destination`: granted at once where
   * the policy marks it grantable, or sent to approval (`approvalId`).
   * Rejects with PalisadeError when refused (PERMISSION_DENIED…). */
  async requestEgress(input: EgressInput): Promise<EgressGrant> {
    const r = await this.call<object, { granted: boolean; expiresAt: number; approvalId: string; rule: string }>(
      "RequestEgress",
      {
        destination: input.destination,
        ports: input.ports ?? [],
        protocol: input.protocol ?? "any",
        ttlSeconds: input.ttlSeconds ?? 0,
        reason: input.reason ?? "",
        token: input.token ?? "",
      },
    );
    return Object.freeze({ granted: r.granted, expiresAt: Number(r.expiresAt), approvalId: r.approvalId, rule: r.rule });
  }

  // --- operators' side (root or the socket group; never an agent) ------------

  /** Pending approvals (with `all`, recently resolved ones too). */
  async listApprovals(all = false): Promise<Approval[]> {
    const r = await this.call<object, { approvals: Parameters<typeof approvalFrom>[0][] }>("ListApprovals", { all });
    return r.approvals.map(approvalFrom);
  }

  async approve(id: string, reason = ""): Promise<Approval> {
    return approvalFrom(await this.call("ResolveApproval", { id, approve: true, reason }));
  }

  async reject(id: string, reason = ""): Promise<Approval> {
    return approvalFrom(await this.call("ResolveApproval", { id, approve: false, reason }));
  }
}

/** After waiting: the override token of an approved request; throws for one
 * still pending, rejected or expired. */
export function checkResolved(
  tool: string,
  action: string,
  decision: Decision,
  approval: Approval,
  waitMs: number,
): string {
  if (approval.state === "PENDING") {
    throw new ApprovalRequired(tool, action, decision, {
      approval,
      message: `no operator decided within ${waitMs / 1000}s`,
    });
  }
  if (approval.state !== "APPROVED" || !approval.overrideToken) {
    const state = approval.state.toLowerCase();
    const by = approval.approver ? ` by ${approval.approver}` : "";
    const why = approval.reason ? `: ${approval.reason}` : "";
    throw new PalisadeDenied(tool, action, decision, {
      approval,
      reason: `approval-${state}`,
      message: `approval ${approval.id} ${state}${by}${why}`,
    });
  }
  return approval.overrideToken;
}
