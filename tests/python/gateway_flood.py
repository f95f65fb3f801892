"""Flood the gateway: `conns` keep-alive connections, each writing batches
of 50 pipelined requests (refused ones: unknown routes with distinct paths,
and payments over the rule's limit) for `secs` seconds, reading every
answer before the next batch. Prints one JSON line: the answers read, by
status."""

import json
import os
import socket
import sys
import threading
import time

host, port, secs, conns = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
BATCH = 50
lock = threading.Lock()
statuses = {}


def batch(k, n):
    out = []
    for i in range(BATCH):
        if i % 2:
            body = b"amount=9000&currency=usd&customer=cus_1"
            out.append(
                b"POST /v1/payment_intents HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        else:
            out.append(f"GET /v1/admin/x{k}-{n}-{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return b"".join(out)


def worker(k):
    s = socket.create_connection((host, port))
    s.settimeout(10)
    mine = {}
    start = time.time()
    n = 0
    buf = b""
    while time.time() - start < secs:
        s.sendall(batch(k, n))
        n += 1
        got = 0
        while got < BATCH:
            d = s.recv(1 << 20)
            if not d:
                sys.stderr.write("the gateway closed a connection\n")
                os._exit(2)
            buf += d
            # Status lines (each answer's body is a small JSON document
            # without one); a line split across reads waits for the rest.
            while True:
                i = buf.find(b"HTTP/1.1 ")
                if i < 0 or len(buf) < i + 12:
                    buf = buf[-8:] if i < 0 else buf[i:]
                    break
                code = buf[i + 9 : i + 12].decode()
                mine[code] = mine.get(code, 0) + 1
                got += 1
                buf = buf[i + 12 :]
    s.close()
    with lock:
        for c, v in mine.items():
            statuses[c] = statuses.get(c, 0) + v


threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"responses": sum(statuses.values()), "statuses": statuses}))
