"""A remote MCP server written by hand, for the framings no SDK server
writes: `tools/call` answers with the same result (a card number in
`structuredContent`) as JSON or as an event stream framed the way the
argument `fmt` names (LF, CRLF, CR alone, a leading byte-order mark, no
space after `data:`, data over two lines). Every request line it receives
is appended to a log.

    mcp_raw.py ADDR PORT LOG
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NUMBER = "4242424242424242"


def framed(fmt, msg):
    doc = json.dumps(msg)
    half = doc.index(", \"structuredContent\"") + 1  # between two members
    return {
        "lf": f"event: message\ndata: {doc}\n\n",
        "crlf": f"event: message\r\ndata: {doc}\r\n\r\n",
        "cr": f"event: message\rdata: {doc}\r\r",
        "bom": f"\ufeffdata: {doc}\n\n",
        "bomcr": f"\ufeffevent: message\rdata: {doc}\r\r",
        "nospace": f"data:{doc}\n\n",
        "split": f"data: {doc[:half]}\ndata: {doc[half:]}\n\n",
    }[fmt].encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with open(sys.argv[3], "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path}) + "\n")
        req = json.loads(body or b"{}")
        fmt = ((req.get("params") or {}).get("arguments") or {}).get("fmt", "json")
        msg = {"jsonrpc": "2.0", "id": req.get("id"), "result": {
            "content": [{"type": "text", "text": json.dumps({"holder": "Jane Roe"})}],
            "structuredContent": {"holder": "Jane Roe", "card": {"number": NUMBER}}}}
        if fmt == "json":
            data, ctype = json.dumps(msg).encode(), "application/json"
        else:
            data, ctype = framed(fmt, msg), "text/event-stream"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
