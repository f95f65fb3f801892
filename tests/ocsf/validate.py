"""Validate OCSF events (JSON lines) against the vendored class schemas.

Usage: validate.py EVENTS.jsonl
Each event is checked against the schema of its class_uid; prints one
JSON object per event ({"line", "class_uid", "ok", "errors"}) and exits 1
if any event fails or names a class without a vendored schema.
"""

import json
import pathlib
import sys

import jsonschema

HERE = pathlib.Path(__file__).parent / "1.8.0"
BY_UID = {}
for path in HERE.glob("*.schema.json"):
    doc = json.loads(path.read_text())
    uid = doc["properties"]["class_uid"]["const"]
    BY_UID[uid] = jsonschema.Draft202012Validator(doc)

failed = False
with open(sys.argv[1], encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        event = json.loads(line)
        uid = event.get("class_uid")
        validator = BY_UID.get(uid)
        if validator is None:
            errors = [f"no vendored schema for class_uid {uid}"]
        else:
            errors = [
                f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
                for e in validator.iter_errors(event)
            ]
        failed |= bool(errors)
        print(json.dumps({"line": n, "class_uid": uid, "ok": not errors, "errors": errors}))
sys.exit(1 if failed else 0)
