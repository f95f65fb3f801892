"""An agent using the official MCP client (streamable HTTP) that asks the
`mcp_shapes.py` server for its record in every shape and prints, one JSON
line each, everything the client received: whole results (`_meta`
included), errors with their data, blobs decoded, log notifications.

    agent_mcp_shapes.py URL [SHAPE,SHAPE...]
"""

import asyncio
import base64
import json
import sys
from datetime import timedelta

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

SHAPES = ["text", "structured", "resource", "blob", "meta", "log", "pretty", "jsonl",
          "rpcerror", "python", "huge"]


def decoded(dump):
    for c in dump.get("content") or []:
        r = c.get("resource") or {}
        if r.get("blob"):
            raw = base64.b64decode(r["blob"])
            utf16 = raw[:2] in (b"\xff\xfe", b"\xfe\xff") or "utf-16" in (r.get("mimeType") or "")
            enc = ("utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-le") if utf16 else "utf-8"
            r["blob_decoded"] = raw.decode(enc, "replace")
    return dump


async def main(url):
    logs = []

    async def on_log(params):
        logs.append(params.model_dump(mode="json", by_alias=True))

    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write, logging_callback=on_log) as s:
            await s.initialize()
            for fmt in SHAPES:
                try:
                    r = await s.call_tool("card", {"fmt": fmt},
                                          read_timeout_seconds=timedelta(seconds=15))
                    out = {"shape": fmt, "result": decoded(r.model_dump(mode="json", by_alias=True))}
                except McpError as e:
                    out = {"shape": fmt, "error": e.error.model_dump(mode="json", by_alias=True)}
                print(json.dumps(out), flush=True)
            try:
                r = await s.read_resource("card://current")
                out = {"shape": "resources/read", "result": r.model_dump(mode="json", by_alias=True)}
            except McpError as e:
                out = {"shape": "resources/read", "error": e.error.model_dump(mode="json", by_alias=True)}
            print(json.dumps(out), flush=True)
            await asyncio.sleep(0.5)
    print(json.dumps({"shape": "logs", "logs": logs}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 2:
        SHAPES = sys.argv[2].split(",")
    asyncio.run(main(sys.argv[1]))
