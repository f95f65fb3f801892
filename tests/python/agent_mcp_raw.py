"""An agent speaking MCP over HTTP with a plain HTTP client: each request
(`{"path": "/mcp", "fmt": "cr"}`) posts a `tools/call` of `card` with that
framing asked for, and prints one JSON line with the status and the raw
body as received (nothing parsed away).

    agent_mcp_raw.py HOST PORT '[{"path": "/mcp", "fmt": "cr"}, ...]'
"""

import http.client
import json
import sys

host, port, reqs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
for i, r in enumerate(reqs):
    c = http.client.HTTPConnection(host, port, timeout=15)
    msg = {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
           "params": {"name": "card", "arguments": {"fmt": r["fmt"]}}}
    c.request("POST", r["path"], body=json.dumps(msg), headers={
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"})
    resp = c.getresponse()
    body = resp.read()
    print(json.dumps({"path": r["path"], "fmt": r["fmt"], "status": resp.status,
                      "body": body.decode("utf-8", "replace")}), flush=True)
    c.close()
