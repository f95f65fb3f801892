"""A small HTTPS API standing in for a protected upstream (a payments API)
in the gateway tests. Every request it receives is appended to a JSON-lines
log, so a test can see exactly what arrived (and what did not).

    upstream.py --addr 127.170.3.2 --port 8443 --cert c.pem --key k.pem --log reqs.jsonl
"""

import argparse
import json
import re
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
COUNT = [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self, body):
        with LOCK:
            COUNT[0] += 1
            with open(self.server.log, "a") as f:
                f.write(json.dumps({
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    # Every header line as received, repeats included.
                    "hlist": [[k.lower(), v] for k, v in self.headers.items()],
                    "body": body.decode("utf-8", "replace"),
                }) + "\n")
            return COUNT[0]

    def send_json(self, status, obj, ctype="application/json", extra=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_DELETE(self):
        self.handle_any()

    def handle_any(self):
        body = self.body()
        path = urllib.parse.urlparse(self.path).path
        # A job runner's scripts are large: their size is what is logged.
        n = self.record(body if path != "/v1/run" else b"%d bytes" % len(body))
        auth = self.headers.get("Authorization", "")
        if self.command == "POST" and path == "/v1/payment_intents":
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/json"):
                params = json.loads(body or b"{}")
            else:
                params = dict(urllib.parse.parse_qsl(body.decode()))
            self.send_json(200, {
                "id": f"pi_{n}",
                "object": "payment_intent",
                "amount": params.get("amount"),
                "currency": params.get("currency"),
                "card": {"number": "4242424242424242", "last4": "4242"},
                # An upstream that echoes what it was sent: the gateway must
                # not let the credential come back this way.
                "authorization_seen": auth,
            })
        elif self.command == "GET" and path.startswith("/v1/customers/nested"):
            # The record as a JSON document carried in a string (an event
            # payload, a metadata blob); `-nojson`: as text naming a field.
            inner = {"email": "jane@example.com", "ssn": "078-05-1120",
                     "cards": [{"number": "4000056655665556", "brand": "visa"}]}
            payload = json.dumps(inner)
            if path.endswith("-nojson"):
                payload = "record: " + repr(inner)
            self.send_json(200, {"id": path.rsplit("/", 1)[1], "name": "Jane Roe",
                                 "payload": payload, "deep": {"x": json.dumps({"p": payload})}})
        elif self.command == "GET" and path.startswith("/v1/customers/"):
            self.send_json(200, {
                "id": path.rsplit("/", 1)[1],
                "name": "Jane Roe",
                "email": "jane@example.com",
                "ssn": "078-05-1120",
                "cards": [{"number": "4000056655665556", "brand": "visa"}],
            })
        elif path == "/v1/big":
            self.send_json(200, {"rows": ["x" * 1000] * 3000})
        elif path == "/v1/text":
            data = f"plain text, auth={auth}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/v1/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                chunk = f"data: event {i}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/v1/trailer":
            # An upstream that echoes the credential in a trailer, and in
            # the name of another trailer.
            token = auth.split()[-1] if auth else "none"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Auth")
            self.end_headers()
            self.wfile.write(b"2\r\nok\r\n0\r\nX-Auth: %s\r\nX-%s: named\r\n\r\n"
                             % (auth.encode(), token.encode()))
        elif path == "/v1/reason":
            # ... in the status line's reason phrase, and a header's name.
            token = auth.split()[-1] if auth else "none"
            data = b"ok"
            self.send_response(200, auth)
            self.send_header("X-" + token, "named")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/mcp":
            # A remote MCP server in miniature: `initialize` opens a session
            # (`Mcp-Session-Id`), anything else is answered with the session
            # it came with, which is all the server knows of its caller.
            try:
                msg = json.loads(body or b"{}")
            except ValueError:
                msg = {}
            msg = msg if isinstance(msg, dict) else {}
            extra = {}
            if self.command == "POST" and msg.get("method") == "initialize":
                extra["Mcp-Session-Id"] = f"sess-{n}"
            self.send_json(200, {"jsonrpc": "2.0", "id": msg.get("id"),
                                 "result": {"session": self.headers.get("Mcp-Session-Id"),
                                            "tools": []}},
                           extra=extra)
        elif path == "/v1/escaped":
            # An upstream that echoes the credential the ways servers
            # write text: JSON with `/` escaped (PHP), percent-encoded in a
            # redirect, as HTML character references.
            import html
            data = json.dumps({
                "auth": auth,
                "html": "".join(f"&#{ord(c)};" if not c.isalnum() else c for c in auth),
                # Encoders that escape only some marks: .NET's `+`, Gson's
                # `=`, Go templates' `+`.
                "dotnet": auth.replace("+", "\\u002B"),
                "gson": auth.replace("=", "\\u003d"),
                "gotmpl": auth.replace("+", "&#43;"),
                # Escapes of escapes, and backslash quoting.
                "twice_pct": urllib.parse.quote(urllib.parse.quote(auth, safe=""), safe=""),
                "twice_html": "".join(f"&amp;#{ord(c)};" if not c.isalnum() else c for c in auth),
                "json_in_json": json.dumps({"k": auth}),
                "regex": __import__("re").escape(auth),
            }).replace("/", "\\/").replace("\\\\u", "\\u").encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Location", "/cb?auth=" + urllib.parse.quote(auth, safe=""))
            self.send_header("X-Quoted", urllib.parse.quote(auth))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/v1/utf16":
            data = json.dumps({"auth": auth}).encode("utf-16")
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-16")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path in ("/v1/gzip-twice", "/v1/gzip-te"):
            # Compression the gateway did not ask for, declared in ways a
            # single-header check misses.
            import gzip
            data = gzip.compress(f"auth={auth}".encode())
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if path == "/v1/gzip-twice":
                self.send_header("Content-Encoding", "identity")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_header("Transfer-Encoding", "gzip, chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        elif path == "/v1/gzip":
            # An upstream that compresses whatever it was asked for, and
            # echoes the credential inside.
            import gzip
            data = gzip.compress(f"auth={auth}".encode())
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/v1/log":
            # A log tail: a line with text the caller chose, a pause, then
            # the end (what an agent uses to echo its guesses).
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk, pause in ((f"log: {q.get('text', [''])[0]}".encode(), float(q.get("pause", ["2"])[0])),
                                 (b"\ndone\n", 0)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(pause)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/v1/run":
            # A job runner: streams back the job's output, here the script
            # itself (`cat`), 64 KiB at a time. What an agent uses to have
            # a large text of its choosing come back through the scrubber.
            body = json.loads(body).get("script", "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 65536):
                chunk = body[i:i + 65536]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        elif path == "/v1/blob":
            # A stored log of `mib` MiB answered with a Content-Length:
            # scrubbed whole by the gateway before the agent gets any of it.
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            size = int(float(q.get("mib", ["1"])[0]) * (1 << 20))
            line = b"log line 0123456789 abcdefghij\n"
            data = (line * (size // len(line) + 1))[:size]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/v1/trickle":
            # A streaming answer that repeats the credential header it was
            # sent, a few bytes at a time with short pauses (a token
            # stream, a log tail written as it goes).
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            gap, piece = float(q.get("gap", ["0.05"])[0]), int(q.get("piece", ["4"])[0])
            text = f"auth: {auth}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(text), piece):
                chunk = text[i:i + piece]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(gap)
            self.wfile.write(b"5\r\ndone\n\r\n0\r\n\r\n")
            self.wfile.flush()
        elif path.startswith("/v1/accounts/"):
            # Read as Django REST framework's format_suffix_patterns (and
            # Rails, Grape) read it: a last `.json`-like suffix is the
            # response format, not part of the id; and the id looked up
            # ignoring case, as a database's default collation does.
            m = re.match(r"^(?P<id>[^/]+?)(\.(?P<format>[a-z0-9]+))?/?$",
                         urllib.parse.unquote(path[len("/v1/accounts/"):]))
            if not m:
                self.send_json(404, {"error": "no such account"})
            elif self.command == "DELETE":
                self.send_json(200, {"closed": m.group("id").lower(), "format": m.group("format")})
            else:
                self.send_json(200, {"account": m.group("id").lower(), "format": m.group("format")})
        elif path.startswith("/v1/ops/"):
            self.send_json(200, {"op": self.command, "path": path})
        elif path == "/v1/slow":
            time.sleep(float(urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("s", ["1"])[0]))
            self.send_json(200, {"slow": True})
        else:
            self.send_json(404, {"error": "no such route", "path": path})


class Server(ThreadingHTTPServer):
    # A client that goes away mid-answer (the gateway refusing a response
    # too large to mask) is expected here, not an error to print.
    def handle_error(self, request, client_address):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    srv = Server((a.addr, a.port), Handler)
    srv.daemon_threads = True
    srv.log = a.log
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
