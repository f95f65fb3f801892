"""A real MCP server built with the official `mcp` SDK (FastMCP), standing
in for a protected MCP service in the gateway tests. Every tool call is
appended to a JSON-lines log with the credential it came with, so a test
sees exactly what reached the server.

    mcp_server.py --http 127.170.5.3 8000 --log calls.jsonl   # streamable HTTP
    mcp_server.py --stdio --log calls.jsonl                   # stdio
"""

import argparse
import json
import os

from mcp.server.fastmcp import Context, FastMCP
from mcp.server.transport_security import TransportSecuritySettings

ap = argparse.ArgumentParser()
ap.add_argument("--http", nargs=2, metavar=("HOST", "PORT"))
ap.add_argument("--stdio", action="store_true")
ap.add_argument("--log", required=True)
args = ap.parse_args()

host, port = (args.http[0], int(args.http[1])) if args.http else ("127.0.0.1", 0)
mcp = FastMCP(
    "palisade-test",
    host=host,
    port=port,
    log_level="WARNING",
    # The gateway sends the upstream's own Host; nothing to rebind here.
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)


def record(ctx: Context, tool: str, **kw):
    auth = ""
    try:
        req = ctx.request_context.request
        if req is not None:
            auth = req.headers.get("authorization", "")
    except Exception:
        pass
    with open(args.log, "a") as f:
        f.write(json.dumps({"tool": tool, "args": kw, "authorization": auth,
                            "env_token": os.environ.get("SERVICE_TOKEN", ""),
                            "uid": os.getuid(),
                            "cgroup": [l.strip()[3:] for l in open("/proc/self/cgroup")
                                       if l.startswith("0::")][0]}) + "\n")


@mcp.tool()
def get_weather(city: str, ctx: Context) -> dict:
    """The weather in a city."""
    record(ctx, "get_weather", city=city)
    return {"city": city, "temp_c": 21}


@mcp.tool()
def create_issue(title: str, ctx: Context, body: str = "") -> dict:
    """Open an issue."""
    record(ctx, "create_issue", title=title, body=body)
    return {"number": 7, "title": title}


@mcp.tool()
def delete_repo(name: str, ctx: Context) -> str:
    """Delete a repository."""
    record(ctx, "delete_repo", name=name)
    return f"deleted {name}"


@mcp.tool()
def lookup_patient(patient_id: str, ctx: Context) -> dict:
    """A patient record."""
    record(ctx, "lookup_patient", patient_id=patient_id)
    return {"patient_id": patient_id, "name": "Jane Roe", "ssn": "078-05-1120",
            "token_echo": os.environ.get("SERVICE_TOKEN", "")}


if args.stdio:
    mcp.run(transport="stdio")
else:
    mcp.run(transport="streamable-http")
