"""A connection to the gateway made by one agent and used by another: the
maker connects, hands the socket over a Unix socket (SCM_RIGHTS) and
exits; the receiver then sends a payment on it, and one more on a
connection of its own (the control). Prints one JSON line per request.

    handover.py give UNIX_PATH GATEWAY_HOST PORT
    handover.py receive UNIX_PATH GATEWAY_HOST PORT
"""

import array
import json
import os
import socket
import sys

BODY = b"amount=100&currency=usd&customer=cus_1"


def payment(sock, host, port):
    head = (
        f"POST /v1/payment_intents HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sock.sendall(head + BODY)
    reply = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0
    return {"status": status, "body": reply.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")}


def give(path, host, port):
    conn = socket.create_connection((host, port))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.connect(path)
    fds = array.array("i", [conn.fileno()])
    unix.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    # Exit with both descriptors closed: from now on only the receiver
    # holds the connection.


def receive(path, host, port):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(1)
    print(json.dumps({"ready": True}), flush=True)
    unix, _ = server.accept()
    _, ancillary, _, _ = unix.recvmsg(1, socket.CMSG_SPACE(4))
    fd = array.array("i", ancillary[0][2][:4])[0]
    # The maker has exited once its end of the Unix socket reads EOF.
    while unix.recv(1):
        pass
    handed = socket.socket(fileno=fd)
    print(json.dumps(payment(handed, host, port)), flush=True)
    own = socket.create_connection((host, port))
    print(json.dumps(payment(own, host, port)), flush=True)


if __name__ == "__main__":
    mode, path, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    {"give": give, "receive": receive}[mode](path, host, port)
