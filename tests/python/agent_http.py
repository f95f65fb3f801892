"""An agent's HTTP calls, made with an ordinary client: the gateway tests
run it under `palisade exec` and read one JSON line per request.

    agent_http.py requests|httpx|httpx-h2 BASE_URL '[{"method": "POST",
        "path": "/v1/payment_intents", "form": {"amount": "800"}}, ...]'

Each request may carry `form`, `json`, `content` (raw text), `headers`,
`timeout`, `content_bytes` (a body of N bytes). `{"wait_file": PATH}` waits until PATH exists (the test's cue);
`{"stream": true, "path": P}` reads a streamed response and reports when
its first and last bytes came. `{"env": "NAME"}` prints whether the process environment holds
a value containing the string in NAME's place (`{"env": "sk_test"}`).
"""

import json
import os
import sys


def main():
    client, base, reqs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if client == "requests":
        import requests

        session = requests.Session()

        def send(r):
            resp = session.request(
                r["method"], base + r["path"], data=r.get("content", r.get("form")),
                json=r.get("json"), headers=r.get("headers"), timeout=r.get("timeout", 30),
            )
            return resp.status_code, dict(resp.headers), resp.text, "HTTP/1.1"
    else:
        import httpx

        session = httpx.Client(http1=client == "httpx", http2=client == "httpx-h2", timeout=30)

        def send(r):
            resp = session.request(
                r["method"], base + r["path"], data=r.get("form"), json=r.get("json"),
                headers=r.get("headers"), timeout=r.get("timeout", 30),
                **({"content": r["content"]} if "content" in r else {}),
            )
            return resp.status_code, dict(resp.headers), resp.text, resp.http_version

    for r in reqs:
        if "wait_file" in r:
            import time
            for _ in range(600):
                if os.path.exists(r["wait_file"]):
                    break
                time.sleep(0.05)
            continue
        if "stream" in r:
            import time
            import requests as rq
            t0 = time.monotonic()
            first = None
            chunks = []
            with rq.get(base + r["path"], stream=True, timeout=30) as resp:
                for chunk in resp.iter_content(chunk_size=None):
                    if first is None:
                        first = time.monotonic() - t0
                    chunks.append(chunk.decode())
            print(json.dumps({"status": resp.status_code, "first": first,
                              "total": time.monotonic() - t0, "body": "".join(chunks)}), flush=True)
            continue
        if "env" in r:
            environ = open("/proc/self/environ", "rb").read()
            print(json.dumps({"env_has": r["env"].encode() in environ
                              or any(r["env"] in v for v in os.environ.values())}), flush=True)
            continue
        if "content_bytes" in r:
            r["content"] = "x" * r["content_bytes"]
        try:
            status, headers, text, version = send(r)
            try:
                body = json.loads(text)
            except ValueError:
                body = text
            print(json.dumps({"status": status, "headers": headers, "body": body,
                              "version": version}), flush=True)
        except Exception as e:  # the test reads what went wrong
            print(json.dumps({"status": 0, "error": f"{type(e).__name__}: {e}"}), flush=True)


if __name__ == "__main__":
    main()
