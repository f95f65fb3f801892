// The MCP TypeScript SDK (@modelcontextprotocol/sdk): a server whose tools
// ask Palisade before they run.
//
//   const server = guardMcpServer(new McpServer({ name: "payments", version: "1.0.0" }), { tool: "stripe" });
//   server.registerTool("create_payment", { inputSchema: {...} }, async (args) => {...});
//
// Every tools/call of a tool registered on the guarded server is checked
// with Decide after the SDK validated its arguments and before the tool's
// callback runs: Palisade tool `options.tool`, action the MCP tool's name
// (or `options.action(name)`), params the call's arguments. A refused call
// does not run; the client gets the result MCP uses for a tool error,
// `isError: true` with the text "denied by policy: <reason>…", so the model
// reads why. A call that needs a human returns the approval id the same way
// (call again once approved), or waits `waitMs` for it.

import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";

import type { Client, OnDecision } from "./client.js";
import { Gate } from "./gate.js";

export interface McpGuardOptions {
  /** The Palisade tool name of this server's tools, e.g. "stripe". */
  tool: string;
  /** The Palisade action of an MCP tool; default: the MCP tool's name. */
  action?: (mcpTool: string) => string;
  /** The params sent for a call; default: its arguments. */
  params?: (mcpTool: string, args: Record<string, unknown>) => Record<string, unknown>;
  resource?: string;
  context?: Record<string, unknown>;
  client?: Client;
  /** Wait this long for an operator's approval; without it the approval id is returned at once. */
  waitMs?: number;
  onDecision?: OnDecision;
}

type Callback = (...args: unknown[]) => unknown;
interface RegisteredToolLike {
  handler?: Callback;
  callback?: Callback;
  inputSchema?: unknown;
  update(updates: Record<string, unknown>): void;
}

const GUARDED = Symbol.for("palisade.guarded");

/** Guard every tool registered on `server` from now on (registerTool and the
 * older tool()). Throws if tools were registered before: guard the server
 * first. Returns the same server. */
export function guardMcpServer<S extends McpServer>(server: S, options: McpGuardOptions): S {
  if (!options.tool) throw new TypeError("guardMcpServer: options.tool is required");
  const target = server as unknown as Record<string | symbol, unknown>;
  if (target[GUARDED]) return server;
  const existing = Object.keys((target._registeredTools as object | undefined) ?? {});
  if (existing.length) {
    throw new Error(
      `guardMcpServer: tools ${existing.join(", ")} were registered before the server was guarded; guard it first`,
    );
  }
  for (const method of ["registerTool", "tool"] as const) {
    const original = target[method] as (...args: unknown[]) => RegisteredToolLike;
    target[method] = (name: string, ...rest: unknown[]) => {
      const registered = original.call(server, name, ...rest);
      protect(registered, name, options);
      return registered;
    };
  }
  target[GUARDED] = true;
  return server;
}

function protect(registered: RegisteredToolLike, name: string, options: McpGuardOptions): void {
  const gate = new Gate({
    tool: options.tool,
    action: options.action ? options.action(name) : name,
    client: options.client,
    resource: options.resource,
    context: options.context,
    waitMs: options.waitMs,
    onDecision: options.onDecision,
  });
  const update = registered.update.bind(registered);
  const wrap = (callback: Callback): Callback => {
    return async (...callArgs: unknown[]) => {
      // With an input schema the SDK calls (args, extra); without, (extra).
      const args = registered.inputSchema !== undefined ? ((callArgs[0] as Record<string, unknown>) ?? {}) : {};
      const params = options.params ? options.params(name, args) : args;
      const refusal = await gate.check(params);
      if (refusal) return { content: [{ type: "text", text: refusal.text }], isError: true };
      return await callback(...callArgs);
    };
  };
  const callback = registered.handler ?? registered.callback;
  if (typeof callback !== "function") throw new Error(`guardMcpServer: tool ${name} has no callback to guard`);
  update({ callback: wrap(callback) });
  // A callback replaced later is guarded too.
  registered.update = (updates: Record<string, unknown>) => {
    if (typeof updates.callback === "function") updates = { ...updates, callback: wrap(updates.callback as Callback) };
    update(updates);
  };
}
