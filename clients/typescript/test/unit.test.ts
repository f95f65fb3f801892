// The client's mechanics that need no daemon: what it refuses to send, how
// it fails closed, the package's version and generated types.

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { Client, InvalidInput, PalisadeDenied, PalisadeError, VERSION, guard, toStruct } from "../src/index.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const repo = fileURLToPath(new URL("../../../../", import.meta.url));

test("version is the project's", () => {
  const pkg = JSON.parse(readFileSync(`${root}package.json`, "utf8")) as { version: string };
  const cargo = readFileSync(`${repo}Cargo.toml`, "utf8");
  const workspace = /\[workspace\.package\][^[]*?\nversion = "([^"]+)"/.exec(cargo);
  assert.ok(workspace?.[1], "no workspace version in Cargo.toml");
  assert.equal(pkg.version, workspace[1]);
  assert.equal(VERSION, workspace[1]);
});

test("types and the proto are generated from the repository's proto/ at build time", () => {
  const shipped = readFileSync(`${root}proto/palisade/v1/palisade.proto`, "utf8");
  assert.equal(shipped, readFileSync(`${repo}proto/palisade/v1/palisade.proto`, "utf8"));
  assert.ok(existsSync(`${root}dist/src/gen/palisade/v1/DecideRequest.d.ts`));
  assert.ok(existsSync(`${root}dist/src/index.d.ts`));
});

test("JSON converts; what JSON cannot hold is refused with its path", () => {
  const s = toStruct({ a: 1, b: [1.5, "x", null, true], c: { d: [1, 2] }, skipped: undefined }, "params");
  assert.deepEqual(Object.keys(s?.fields ?? {}), ["a", "b", "c"]);
  const cases: [unknown, RegExp][] = [
    [{ amount: 2 ** 60 }, /params\.amount: .* too large/],
    [{ x: Number.NaN }, /params\.x: NaN/],
    [{ items: [{ price: 1n }] }, /params\.items\[0\]\.price: a bigint/],
    [{ when: new Date(0) }, /params\.when: a Date/],
    [[1], /must be a plain object/],
  ];
  for (const [value, pattern] of cases) {
    assert.throws(() => toStruct(value, "params"), (e: unknown) => e instanceof InvalidInput && pattern.test(e.message));
  }
});

test("no daemon: decide is a local deny, guard never runs the function", async () => {
  const client = new Client({ socketPath: "/nonexistent/palisade.sock", timeoutMs: 1000 });
  try {
    const d = await client.decide({ tool: "stripe", action: "create_payment", params: { amount: 1 } });
    assert.equal(d.verdict, "DENY");
    assert.equal(d.local, true);
    assert.equal(d.reason, "rpc-unavailable");
    let ran = 0;
    const pay = guard(async (p: { amount: number }) => ++ran, { tool: "stripe", action: "create_payment", client });
    await assert.rejects(pay({ amount: 1 }), (e: unknown) => e instanceof PalisadeDenied && e.reason === "rpc-unavailable");
    assert.equal(ran, 0);
    await assert.rejects(client.getApproval("a-1"), (e: unknown) => e instanceof PalisadeError && e.code === "UNAVAILABLE");
  } finally {
    client.close();
  }
});

test("unencodable params are denied without asking", async () => {
  const client = new Client({ socketPath: "/nonexistent/palisade.sock" });
  const d = await client.decide({ tool: "stripe", action: "create_payment", params: { amount: 10n } });
  assert.equal(d.reason, "invalid-input");
  client.close();
});

test("guard needs tool and action; the socket comes from PALISADE_SOCKET", () => {
  assert.throws(() => guard(() => 1, { tool: "", action: "x" }), TypeError);
  const saved = process.env.PALISADE_SOCKET;
  process.env.PALISADE_SOCKET = "/tmp/from-env.sock";
  try {
    const c = new Client();
    assert.equal(c.socketPath, "/tmp/from-env.sock");
    c.close();
  } finally {
    if (saved === undefined) delete process.env.PALISADE_SOCKET;
    else process.env.PALISADE_SOCKET = saved;
  }
  assert.throws(() => new Client({ timeoutMs: 0 }), RangeError);
});
