#!/usr/bin/env python3
"""Writes the committed seed inputs of the fuzz targets (fuzz/seeds/TARGET/).

Seeds are well-formed inputs the fuzzer mutates from: the example policies
(YAML and the same as JSON), suites, the shipped daemon config, DNS queries
and answers as on the wire, kernel records in the layout of agent-common,
Decide requests as protobuf, and audit trails a real daemon wrote
(fuzz/seeds/audit_verify/*.jsonl are kept as they are, not generated).

Run from anywhere: python3 fuzz/seeds/make_seeds.py
"""

import json
import pathlib
import struct

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEEDS = ROOT / "fuzz" / "seeds"


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def policies():
    files = sorted((ROOT / "examples" / "policies").glob("*.yaml"))
    files += [ROOT / "examples" / "demo" / "policy.yaml", ROOT / "fuzz" / "policies" / "cel.yaml"]
    for f in files:
        text = f.read_text()
        stem = f.parent.name + "-" + f.stem if f.stem == "policy" else f.stem
        write("policy_load", stem + ".yaml", text)
        write("policy_load", stem + ".json", json.dumps(yaml.safe_load(text), indent=1))
    for f in sorted((ROOT / "examples" / "policies" / "tests").glob("*.yaml")):
        write("policy_suite", f.name, f.read_text())
    cfg = ROOT / "deploy" / "kubernetes" / "configmap-config.yaml"
    doc = yaml.safe_load(cfg.read_text())
    for key, text in (doc.get("data") or {}).items():
        write("daemon_config", key, text)
    write("daemon_config", "minimal.yaml", "policy: policy.yaml\n")


# --- DNS ---------------------------------------------------------------


def qname(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(id_, flags, qd, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", id_, flags, qd, an, ns, ar)


def question(name, qtype=1):
    return qname(name) + struct.pack(">HH", qtype, 1)


def opt():
    # EDNS(0), 1232-byte payload, no options.
    return b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)


def rr(name_bytes, rtype, ttl, rdata):
    return name_bytes + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def dns():
    for i, (name, qtype) in enumerate(
        [
            ("api.stripe.com", 1),
            ("API.Stripe.COM.", 28),
            ("help.zendesk.com", 1),
            ("crm.internal.myorg", 1),
            ("exfil-" + "a" * 50 + ".attacker.example", 16),
            ("x.y", 65),
        ]
    ):
        write("dns_query", f"query{i}", header(0x1000 + i, 0x0100, 1, ar=1) + question(name, qtype) + opt())
    write("dns_query", "two-questions", header(7, 0x0100, 2) + question("a.com") + question("b.com"))
    write("dns_query", "no-question", header(8, 0x0100, 0))

    # Answers: the question at offset 12, compressed names point to it.
    def answer(id_, name, records, rcode=0):
        q = question(name)
        body = b"".join(records)
        return header(id_, 0x8180 | rcode, 1, an=len(records)) + q + body

    ptr = b"\xc0\x0c"
    write("dns_answer", "a", answer(1, "api.stripe.com", [rr(ptr, 1, 60, bytes([54, 187, 216, 72]))]))
    write(
        "dns_answer",
        "cname-chain",
        answer(
            2,
            "api.stripe.com",
            [
                rr(ptr, 5, 300, qname("edge.stripe.com")),
                rr(qname("edge.stripe.com"), 5, 300, qname("lb.cdn.example")),
                rr(qname("lb.cdn.example"), 1, 30, bytes([93, 184, 216, 34])),
                rr(qname("lb.cdn.example"), 28, 30, bytes(15) + b"\x01"),
            ],
        ),
    )
    write(
        "dns_answer",
        "inside",
        answer(3, "help.zendesk.com", [rr(ptr, 1, 86400, bytes([10, 0, 0, 1])), rr(ptr, 1, 5, bytes([127, 0, 0, 1]))]),
    )
    write("dns_answer", "cname-loop", answer(4, "a.zendesk.com", [rr(ptr, 5, 60, ptr)]))
    write("dns_answer", "nxdomain", answer(5, "nope.myorg", [], rcode=3))


# --- kernel records ----------------------------------------------------

AF_INET, AF_INET6 = 2, 10


def event(hook, verdict, reason, addr, port, family, protocol=6, sock_type=1, identity=1, generation=2, rule=0):
    # agent_common::Event, 88 bytes.
    return struct.pack(
        "<QQIIIIII16sHHHBBBB6s16s",
        10_000_000_000,
        4242,
        1001,
        1000,
        1000,
        identity,
        generation,
        rule,
        addr,
        port,
        family,
        protocol,
        sock_type,
        hook,
        verdict,
        reason,
        b"\0" * 6,
        b"curl\0".ljust(16, b"\0"),
    )


def v4(a, b, c, d):
    # NormAddr: IPv4 in the first four bytes.
    return bytes([a, b, c, d]) + bytes(12)


def cgroup(path, kind=1, level=3):
    return struct.pack("<QiiII480s", 777, 0, level, kind, 0, path.encode().ljust(480, b"\0"))


def kernel():
    write("kernel_event", "connect4-deny", event(1, 1, 1, v4(203, 0, 113, 9), 443, AF_INET))
    write("kernel_event", "connect6-deny-rule", event(2, 1, 2, bytes(15) + b"\x01", 53, AF_INET6, protocol=17))
    write("kernel_event", "sendmsg4-audit", event(3, 2, 1, v4(10, 40, 1, 2), 5432, AF_INET, identity=2))
    write("kernel_event", "sock-create", event(5, 1, 5, bytes(16), 0, 17, protocol=0, sock_type=3, rule=0xFFFFFFFF))
    write("kernel_event", "old-generation", event(1, 1, 3, v4(1, 1, 1, 1), 80, AF_INET, generation=9, identity=77))
    write("kernel_event", "cgroup-created", cgroup("palisade.slice/agents/finance-agent/task-1"))
    write("kernel_event", "cgroup-removed", cgroup("system.slice/x.service", kind=2, level=2))

    def key(identity, hook, verdict, reason, addr, port, family):
        # agent_common::aggregate::AggKey, 32 bytes.
        return struct.pack("<IBBBB16sHHHBB", identity, 0, hook, verdict, reason, addr, port, family, 6, 1, 0)

    def value(count, emitted=1, generation=2):
        # AggValue, 80 bytes.
        return struct.pack(
            "<QQQQIIIIII16s",
            count,
            9_000_000_000,
            10_000_000_000,
            4242,
            1000,
            1001,
            1000,
            generation,
            0,
            emitted,
            b"python3".ljust(16, b"\0"),
        )

    n_reasons = 16  # AGG_REASONS
    overflow = struct.pack("<I", 1) + struct.pack(f"<{n_reasons}Q", 0, 500, 3, *([0] * (n_reasons - 3))) + struct.pack(
        f"<{n_reasons}Q", *([0] * n_reasons)
    )
    pairs = [
        key(1, 1, 1, 1, v4(203, 0, 113, d), 443, AF_INET) + value(10 + d, emitted=d % 2) for d in range(12)
    ]
    write("kernel_aggregate", "kinds", bytes([len(pairs)]) + b"".join(pairs))
    write("kernel_aggregate", "kinds-overflow", bytes([2]) + b"".join(pairs[:2]) + overflow + b"!")
    write("kernel_aggregate", "overflow-only", bytes([0]) + overflow)


# --- Decide ------------------------------------------------------------


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    tag = varint(num << 3 | wire)
    if wire == 2:
        return tag + varint(len(payload)) + payload
    return tag + payload


def pb_value(v):
    # google.protobuf.Value
    if v is None:
        return field(1, 0, varint(0))
    if isinstance(v, bool):
        return field(4, 0, varint(int(v)))
    if isinstance(v, (int, float)):
        return field(2, 1, struct.pack("<d", float(v)))
    if isinstance(v, str):
        return field(3, 2, v.encode())
    if isinstance(v, dict):
        return field(5, 2, pb_struct(v))
    return field(6, 2, b"".join(field(1, 2, pb_value(x)) for x in v))


def pb_struct(d):
    return b"".join(field(1, 2, field(1, 2, k.encode()) + field(2, 2, pb_value(v))) for k, v in d.items())


def decide(pick, tool, action, resource, params, context=None):
    msg = field(3, 2, tool.encode()) + field(4, 2, action.encode())
    if resource:
        msg += field(5, 2, resource.encode())
    msg += field(6, 2, pb_struct(params))
    if context:
        msg += field(7, 2, pb_struct(context))
    return bytes([pick]) + msg


def decide_seeds():
    # pick: even = the conditions policy (fuzz/policies/cel.yaml); odd bytes
    # pick an example policy by pick >> 1 (finance is index 2).
    cases = {
        "arith": decide(0, "calc", "add", "", {"a": 3, "b": 4}),
        "doubles": decide(0, "calc", "float", "", {"x": 2.5, "y": 1, "z": 3}),
        "strings": decide(0, "text", "say", "", {"s": "abc123", "b": "\u0000"}),
        "regex": decide(0, "text", "grep", "", {"subject": "aaaa", "pattern": "(a+)+$"}),
        "lists": decide(
            0,
            "batch",
            "sum",
            "",
            {"items": [{"price": 5, "sku": "x", "qty": 11}, {"price": 1, "sku": "y", "qty": 1}], "m": {"k": 1}},
        ),
        "nested": decide(0, "batch", "nested", "", {"items": [1, 2, 3, [4], {"a": None}]}),
        "approve-maps": decide(0, "batch", "x", "", {"m": {"admin1": 1, "b": 2, "c": 3, "d": 4}}),
        "time": decide(
            0,
            "clock",
            "now",
            "",
            {"ttl": "2h"},
            {"hour": 10, "weekday": 1, "date": "2026-11-23", "time": "2026-11-23T10:00:00Z"},
        ),
        "context": decide(0, "ctx", "x", "", {}, {"region": "eu-1", "ticket": "T-1234", "tags": ["a"], "extra": 2}),
        "who": decide(0, "who", "x", "", {}),
        "names": decide(0, "docs", "read_all", "doc/1", {"q": "s", "amount": 2000000}),
        "finance-pay": decide(5, "stripe", "create_payment", "", {"currency": "USD", "amount": 1500}),
        "finance-refund": decide(5, "stripe", "refund", "", {"amount": -1}),
    }
    for name, data in cases.items():
        write("decide_input", name, data)


def trail_seeds():
    # The first byte picks the policy (finance = 2, 8 with the current
    # policy given) and the identity; the rest is a trail file.
    for f in sorted((SEEDS / "audit_verify").glob("*.jsonl")):
        text = f.read_bytes().replace(b'"identity":"agent"', b'"identity":"finance-agent"')
        write("trail_suggest", f.stem, b"\x02" + text)
        write("trail_suggest", f.stem + "-current", b"\x08" + text)


if __name__ == "__main__":
    policies()
    dns()
    kernel()
    decide_seeds()
    trail_seeds()
