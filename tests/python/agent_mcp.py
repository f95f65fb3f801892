"""An agent using the official MCP client (`mcp` SDK, streamable HTTP):
lists the tools, then calls the ones given, printing one JSON line each.

    agent_mcp.py URL '[["get_weather", {"city": "Oslo"}], ...]'
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


def text_of(content):
    return [c.text for c in content if getattr(c, "text", None) is not None]


async def main(url, calls):
    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as s:
            await s.initialize()
            tools = await s.list_tools()
            print(json.dumps({"tools": sorted(t.name for t in tools.tools)}), flush=True)
            for name, arguments in calls:
                try:
                    r = await s.call_tool(name, arguments)
                    print(json.dumps({"tool": name, "is_error": r.isError,
                                      "text": text_of(r.content),
                                      "structured": r.structuredContent}), flush=True)
                except Exception as e:  # a JSON-RPC error: what the client shows
                    print(json.dumps({"tool": name, "error": str(e),
                                      "type": type(e).__name__}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
