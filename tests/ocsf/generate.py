"""Regenerate the vendored OCSF class schemas (JSON Schema, draft 2020-12).

The schemas in ./1.8.0/ were produced by this script from the OCSF 1.8.0
schema as exported by the OCSF schema server, which the `ocsf-json-schema`
package (PyPI, version 1.2.0) ships, with the profiles Palisade's events
declare (`security_control`, `host`). Run it in any virtualenv:

    pip install ocsf-json-schema==1.2.0
    python tests/ocsf/generate.py
"""

import json
import pathlib

from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

VERSION = "1.8.0"
PROFILES = ["security_control", "host"]
CLASSES = ["network_activity", "api_activity", "dns_activity", "user_access", "base_event"]

schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(VERSION))
out = pathlib.Path(__file__).parent / VERSION
out.mkdir(exist_ok=True)
for name in CLASSES:
    doc = schema.get_class_schema(name, PROFILES)
    (out / f"{name}.schema.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"{name}: {doc['$id']}")
