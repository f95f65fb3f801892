"""Requests no ordinary client sends, for the gateway's smuggling tests:
repeated headers, exact bytes. Prints one JSON line with what came back.

    smuggle.py h1 HOST PORT RAW       # RAW: the request bytes, as text
    smuggle.py h2 HOST PORT SPEC      # SPEC: {"headers": [[k, v], ...], "body": "..."}
                                      # over h2c (prior knowledge); the
                                      # headers may repeat a name
"""

import json
import socket
import sys


def h1(host, port, raw):
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(raw.encode("latin-1"))
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    text = body.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    return {"status": status, "head": head.decode("latin-1"), "body": body}


def h2(host, port, spec):
    import h2.config
    import h2.connection
    import h2.events

    s = socket.create_connection((host, int(port)), timeout=30)
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
    c.initiate_connection()
    body = spec.get("body", "").encode()
    c.send_headers(1, [tuple(h) for h in spec["headers"]], end_stream=not body)
    if body:
        c.send_data(1, body, end_stream=True)
    s.sendall(c.data_to_send())
    out = {"status": 0, "headers": [], "trailers": [], "body": ""}
    data = b""
    done = False
    while not done:
        chunk = s.recv(65536)
        if not chunk:
            break
        for ev in c.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                out["headers"] = [list(h) for h in ev.headers]
                out["status"] = int(dict(ev.headers).get(":status", 0))
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                out["trailers"] = [list(h) for h in ev.headers]
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        s.sendall(c.data_to_send())
    text = data.decode("utf-8", "replace")
    try:
        out["body"] = json.loads(text)
    except ValueError:
        out["body"] = text
    return out


def main():
    mode, host, port, arg = sys.argv[1:5]
    if mode == "h1":
        print(json.dumps(h1(host, port, arg)), flush=True)
    else:
        print(json.dumps(h2(host, port, json.loads(arg))), flush=True)


if __name__ == "__main__":
    main()
