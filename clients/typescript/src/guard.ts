// guard(fn, {tool, action}): ask the daemon before a tool function runs.

import { type AuthorizeOptions, Client, type OnDecision } from "./client.js";

let shared: Client | undefined;

/** The process-wide Client ($PALISADE_SOCKET), made on first use. */
export function defaultClient(): Client {
  shared ??= new Client();
  return shared;
}

export interface GuardOptions<A extends unknown[]> {
  /** The names the policy knows the call by. */
  tool: string;
  action: string;
  client?: Client;
  /** The call's parameters from the function's arguments. Default: the
   * argument itself when the function takes one plain object, else
   * `{ args: [...] }`. */
  params?: (...args: A) => Record<string, unknown>;
  resource?: string | ((...args: A) => string);
  context?: Record<string, unknown> | ((...args: A) => Record<string, unknown>);
  /** Wait this long for an operator's approval; without it APPROVAL_REQUIRED throws at once. */
  waitMs?: number;
  onDecision?: OnDecision;
}

/** `fn` wrapped so that it runs only when Palisade allows the call: it
 * resolves with fn's result, or rejects with PalisadeDenied (ApprovalRequired
 * for a pending approval) and fn does not run. */
export function guard<A extends unknown[], R>(
  fn: (...args: A) => R | Promise<R>,
  options: GuardOptions<A>,
): (...args: A) => Promise<Awaited<R>> {
  const { tool, action } = options;
  if (!tool || !action) throw new TypeError("guard: tool and action are required");
  const guarded = async (...args: A): Promise<Awaited<R>> => {
    const client = options.client ?? defaultClient();
    const authorize: AuthorizeOptions = { waitMs: options.waitMs, onDecision: options.onDecision };
    await client.authorize(
      {
        tool,
        action,
        resource: typeof options.resource === "function" ? options.resource(...args) : (options.resource ?? ""),
        params: options.params ? options.params(...args) : defaultParams(args),
        context: typeof options.context === "function" ? options.context(...args) : options.context,
      },
      authorize,
    );
    return await fn(...args);
  };
  Object.defineProperty(guarded, "name", { value: fn.name || "guarded" });
  return guarded;
}

function defaultParams(args: unknown[]): Record<string, unknown> {
  const [only] = args;
  if (args.length === 1 && typeof only === "object" && only !== null && !Array.isArray(only)) {
    return only as Record<string, unknown>;
  }
  return { args };
}
