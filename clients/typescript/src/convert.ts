// JavaScript values to google.protobuf.Struct, strictly: a Struct holds
// JSON, and a policy condition such as `params.amount <= 5000` must see the
// value the tool will use. Anything JSON cannot hold exactly (a bigint, a
// Date, NaN, a function, an integer beyond 2^53) is refused with its path
// rather than converted by a guess.

import type { Struct } from "./gen/google/protobuf/Struct.js";
import type { Value } from "./gen/google/protobuf/Value.js";

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: unknown };

export class InvalidInput extends Error {
  override name = "InvalidInput";
}

export function toStruct(value: unknown, what: string): Struct | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isPlainObject(value)) {
    throw new InvalidInput(`${what} must be a plain object, not ${describe(value)}`);
  }
  return object(value, what);
}

function object(value: Record<string, unknown>, path: string): Struct {
  const fields: Record<string, Value> = {};
  for (const [key, item] of Object.entries(value)) {
    if (item === undefined) continue; // as JSON.stringify does
    fields[key] = toValue(item, `${path}.${key}`);
  }
  return { fields };
}

function toValue(value: unknown, path: string): Value {
  if (value === null) return { nullValue: "NULL_VALUE", kind: "nullValue" } as Value;
  switch (typeof value) {
    case "boolean":
      return { boolValue: value, kind: "boolValue" };
    case "string":
      return { stringValue: value, kind: "stringValue" };
    case "number":
      if (!Number.isFinite(value)) throw new InvalidInput(`${path}: ${value} is not a JSON number`);
      if (Number.isInteger(value) && Math.abs(value) > 2 ** 53) {
        throw new InvalidInput(`${path}: ${value} is too large to send exactly (JSON numbers are doubles)`);
      }
      return { numberValue: value, kind: "numberValue" };
    case "object":
      if (Array.isArray(value)) {
        return { listValue: { values: value.map((v, i) => toValue(v, `${path}[${i}]`)) }, kind: "listValue" };
      }
      if (isPlainObject(value)) return { structValue: object(value, path), kind: "structValue" };
      break;
  }
  throw new InvalidInput(
    `${path}: ${describe(value)} is not JSON; convert it first (e.g. a bigint to a string, a Date to an ISO string)`,
  );
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "object") return `a ${value.constructor?.name ?? "object"}`;
  return `a ${typeof value}`;
}
