"""Misbehaving clients for the gateway tests, speaking raw TCP so nothing
tidies their bytes up: each prints one JSON line saying what the gateway
did.

    abuse.py garbage HOST PORT           # bytes that are not HTTP
    abuse.py proxy HOST PORT TARGET      # absolute-form and CONNECT to TARGET
    abuse.py slowloris HOST PORT SECS    # a request head, one byte at a time
    abuse.py slowbody HOST PORT          # a body that stops halfway
    abuse.py hold HOST PORT N SECS       # N idle connections held open
"""

import json
import socket
import sys
import time


def connect(host, port):
    s = socket.create_connection((host, int(port)), timeout=30)
    return s


def read_all(s, limit=10.0):
    s.settimeout(limit)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def status_of(data):
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def main():
    mode, host, port = sys.argv[1], sys.argv[2], sys.argv[3]
    t0 = time.monotonic()
    if mode == "garbage":
        s = connect(host, port)
        s.sendall(b"GARBAGE\x01 /\x00 NOT-HTTP\r\n\r\n")
        data = read_all(s)
        print(json.dumps({"status": status_of(data), "secs": time.monotonic() - t0,
                          "raw": data[:200].decode("latin-1")}))
    elif mode == "proxy":
        # Aim the gateway at TARGET (host:port): absolute-form over http and
        # https, then CONNECT, each on a fresh connection.
        t = sys.argv[4].encode()
        out = []
        for req in (b"GET http://" + t + b"/v1/customers/x HTTP/1.1\r\nHost: " + t + b"\r\nConnection: close\r\n\r\n",
                    b"GET https://" + t + b"/v1/customers/x HTTP/1.1\r\nHost: " + t + b"\r\nConnection: close\r\n\r\n",
                    b"CONNECT " + t + b" HTTP/1.1\r\nHost: " + t + b"\r\nConnection: close\r\n\r\n"):
            s = connect(host, port)
            s.sendall(req)
            data = read_all(s, 5.0)
            out.append({"status": status_of(data),
                        "body": data.split(b"\r\n\r\n", 1)[-1].decode("utf-8", "replace")})
        print(json.dumps(out))
    elif mode == "slowloris":
        secs = float(sys.argv[4])
        s = connect(host, port)
        head = b"POST /v1/payment_intents HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 1000
        closed_after = None
        for b in head:
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed_after = time.monotonic() - t0
                break
            time.sleep(secs)
            s.setblocking(False)
            try:
                if s.recv(65536) == b"":
                    closed_after = time.monotonic() - t0
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed_after = time.monotonic() - t0
                break
            finally:
                s.setblocking(True)
            if time.monotonic() - t0 > 30:
                break
        print(json.dumps({"closed_after": closed_after}))
    elif mode == "slowbody":
        s = connect(host, port)
        s.sendall(b"POST /v1/payment_intents HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"amount\"")
        data = read_all(s)
        print(json.dumps({"status": status_of(data), "secs": time.monotonic() - t0,
                          "body": data.split(b"\r\n\r\n", 1)[-1].decode("utf-8", "replace")}))
    elif mode == "hold":
        n, secs = int(sys.argv[4]), float(sys.argv[5])
        socks = []
        for _ in range(n):
            try:
                socks.append(connect(host, port))
            except OSError:
                break
        time.sleep(secs)
        open_now = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) != b"":
                    open_now += 1
            except BlockingIOError:
                open_now += 1
            except OSError:
                pass
        print(json.dumps({"opened": len(socks), "still_open": open_now}))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
