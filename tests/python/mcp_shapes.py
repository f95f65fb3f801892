"""A real MCP server (official `mcp` SDK, FastMCP) that returns one record
holding a card number in each shape servers use: JSON text, structured
content, embedded resources (text and base64 blob), `_meta`, a log
notification, text with a prefix, JSON Lines, a JSON-RPC error's data, a
resource read, text that is not JSON at all (Python, YAML, XML, CSV,
Markdown, key=value, JS literals, JSON with a comment, prose), blobs in
UTF-16 and of a text type, and text too large to check.

    mcp_shapes.py --http 127.170.5.3 8000     # streamable HTTP
    mcp_shapes.py --stdio                     # stdio
"""

import argparse
import base64
import json

from mcp.server.fastmcp import Context, FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import UrlElicitationRequiredError
from mcp.types import (BlobResourceContents, CallToolResult, ElicitRequestURLParams,
                       EmbeddedResource, TextContent, TextResourceContents)

ap = argparse.ArgumentParser()
ap.add_argument("--http", nargs=2, metavar=("HOST", "PORT"))
ap.add_argument("--stdio", action="store_true")
args = ap.parse_args()

host, port = (args.http[0], int(args.http[1])) if args.http else ("127.0.0.1", 0)
mcp = FastMCP("palisade-shapes", host=host, port=port, log_level="WARNING",
              transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

RECORD = {"holder": "Jane Roe", "card": {"number": "4242424242424242", "exp": "12/30"}}
TEXT = json.dumps(RECORD)
NOT_JSON = {
    "yaml": "holder: Jane Roe\ncard:\n  number: \"{num}\"\n",
    "yamlflow": "{{holder: Jane Roe, card: {{number: {num}}}}}",
    "xml": "<card><holder>Jane Roe</holder><number>{num}</number></card>",
    "kv": "holder=Jane Roe\ncard.number={num}",
    "csv": "holder,number\nJane Roe,{num}\n",
    "md": "| holder | number |\n|---|---|\n| Jane Roe | {num} |",
    "js": "{{holder: 'Jane Roe', card: {{number: \"{num}\"}}}}",
    "jsoncomment": '{{"holder": "Jane Roe", "card": {{"number" /*c*/ : "{num}"}}}}',
    "prose": "Jane Roe pays with {num}",
}
# Member names that read as `number`: letter case (databases answer
# upper case), an invisible character, surrounding whitespace.
RENAMED = {"upper": "NUMBER", "mixedcase": "Number", "zwsp": "num\u200bber",
           "trailspace": "number "}


def text(t):
    return [TextContent(type="text", text=t)]


@mcp.tool()
async def card(fmt: str, ctx: Context):
    """The card on file, in the shape asked for."""
    if fmt == "text":
        return CallToolResult(content=text(TEXT))
    if fmt == "structured":
        return CallToolResult(content=text("see structured content"), structuredContent=RECORD)
    if fmt == "resource":
        return CallToolResult(content=[EmbeddedResource(type="resource", resource=TextResourceContents(
            uri="file:///card.json", mimeType="application/json", text=TEXT))])
    if fmt == "blob":
        return CallToolResult(content=[EmbeddedResource(type="resource", resource=BlobResourceContents(
            uri="file:///card.bin", mimeType="application/octet-stream",
            blob=base64.b64encode(TEXT.encode()).decode()))])
    if fmt == "meta":
        return CallToolResult(content=text("Jane Roe: details in _meta"), **{"_meta": RECORD})
    if fmt == "log":
        await ctx.info(TEXT)
        return CallToolResult(content=text("Jane Roe: logged"))
    if fmt == "pretty":
        return CallToolResult(content=text("Result:\n" + json.dumps(RECORD, indent=2)))
    if fmt == "jsonl":
        return CallToolResult(content=text(TEXT + "\n" + TEXT + "\n"))
    if fmt == "rpcerror":
        raise UrlElicitationRequiredError([ElicitRequestURLParams(
            mode="url", message=TEXT, url="https://example.invalid/", elicitationId="e1")])
    if fmt == "huge":  # larger than the gateway's max_mask_bytes in the test
        return CallToolResult(content=text("Jane Roe " + "\n".join([TEXT] * 2000)))
    # Text that is not JSON, in the formats servers print (an agent may
    # pick the format, or the query that shapes a table).
    num = RECORD["card"]["number"]
    if fmt in NOT_JSON:
        return CallToolResult(content=text(NOT_JSON[fmt].format(num=num)))
    if fmt in ("utf16", "utf16le", "yamlblob"):
        raw, mime = {
            "utf16": (TEXT.encode("utf-16"), "application/json"),
            "utf16le": (TEXT.encode("utf-16-le"), "application/json; charset=utf-16le"),
            "yamlblob": (NOT_JSON["yaml"].format(num=num).encode(), "text/yaml"),
        }[fmt]
        return CallToolResult(content=[EmbeddedResource(type="resource", resource=BlobResourceContents(
            uri="file:///card", mimeType=mime, blob=base64.b64encode(raw).decode()))])
    if fmt in RENAMED:  # JSON whose member name a reader takes for `number`
        return CallToolResult(content=text(json.dumps(
            {"holder": "Jane Roe", "card": {RENAMED[fmt]: num, "exp": "12/30"}})))
    if fmt == "python":  # not JSON: a masked field the gateway cannot parse
        return CallToolResult(content=text("Jane Roe " + repr(RECORD)))
    return CallToolResult(content=text("unknown shape"), isError=True)


@mcp.resource("card://current", mime_type="application/json")
def current_card() -> str:
    return TEXT


if args.stdio:
    mcp.run(transport="stdio")
else:
    mcp.run(transport="streamable-http")
