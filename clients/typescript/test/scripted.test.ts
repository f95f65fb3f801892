// Fail-closed answers the real daemon never gives: a scripted gRPC server
// (grpc-js, the same service definition) and a socket that never answers.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server as NetServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import { Client, PalisadeDenied, guard } from "../src/index.js";
import type { ProtoGrpcType } from "../src/gen/palisade.js";

const dir = mkdtempSync(join(tmpdir(), "palisade-ts-"));
const scripted = join(dir, "scripted.sock");
const silent = join(dir, "silent.sock");
let server: grpc.Server;
let quiet: NetServer;
let verdict = "VERDICT_UNSPECIFIED";
const sockets: Socket[] = [];

before(async () => {
  const root = resolve(fileURLToPath(new URL("../../proto", import.meta.url)));
  const def = protoLoader.loadSync("palisade/v1/palisade.proto", { includeDirs: [root], enums: String, defaults: true });
  const api = grpc.loadPackageDefinition(def) as unknown as ProtoGrpcType;
  server = new grpc.Server();
  server.addService(api.palisade.v1.Palisade.service, {
    Decide: (_call: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { verdict, reason: "", decisionId: "d-1" }),
  });
  await new Promise<void>((ok, fail) =>
    server.bindAsync(`unix:${scripted}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? fail(e) : ok())),
  );
  quiet = createServer((socket) => sockets.push(socket)); // accepts, never answers
  await new Promise<void>((ok) => quiet.listen(silent, ok));
});

after(() => {
  server.forceShutdown();
  for (const s of sockets) s.destroy();
  quiet.close();
  rmSync(dir, { recursive: true, force: true });
});

test("a verdict the client does not know is a deny", async () => {
  const client = new Client({ socketPath: scripted });
  for (const v of ["VERDICT_UNSPECIFIED", 7]) {
    verdict = v as string;
    const d = await client.decide({ tool: "stripe", action: "create_payment" });
    assert.equal(d.verdict, "DENY");
    assert.equal(d.reason, "unknown-verdict");
  }
  let ran = 0;
  const pay = guard(async () => ++ran, { tool: "stripe", action: "create_payment", client });
  await assert.rejects(pay(), PalisadeDenied);
  assert.equal(ran, 0);
  client.close();
});

test("a daemon that never answers is a deny at the deadline", async () => {
  const client = new Client({ socketPath: silent, timeoutMs: 300 });
  const started = Date.now();
  const d = await client.decide({ tool: "stripe", action: "create_payment" });
  assert.equal(d.verdict, "DENY");
  assert.equal(d.local, true);
  assert.equal(d.reason, "rpc-deadline-exceeded");
  assert.ok(Date.now() - started < 5000, "the 300 ms deadline took too long");
  client.close();
});
