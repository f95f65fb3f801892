"""Many HTTP/2 uploads that never finish: C connections (h2c, prior
knowledge) with S streams each, every stream a POST declaring LENGTH bytes
and sending all but the last, as fast as flow control lets it, for HOLD
seconds. Prints one JSON object: the responses by status, streams reset,
and the bytes sent.

    h2_uploads.py HOST PORT PATH C S LENGTH HOLD
"""

import json
import select
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events


def main():
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    conns, streams, length, hold = (int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]))
    body = (b'{"amount": 1, "currency": "usd", "customer": "' + b"A" * length)[: length - 1]
    open_ = []
    for _ in range(conns):
        sock = socket.create_connection((host, port))
        sock.setblocking(False)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        c.initiate_connection()
        sent = {}
        for _ in range(streams):
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                 (":authority", f"{host}:{port}"), ("content-type", "application/json"),
                                 ("content-length", str(length))])
            sent[sid] = 0
        open_.append((sock, c, sent))
    statuses, resets, total = {}, 0, 0
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        for sock, c, sent in open_:
            for sid in list(sent):
                while sent[sid] < len(body):
                    try:
                        room = min(c.local_flow_control_window(sid), c.max_outbound_frame_size)
                    except Exception:
                        sent.pop(sid)
                        break
                    if room <= 0:
                        break
                    chunk = body[sent[sid]: sent[sid] + room]
                    c.send_data(sid, chunk)
                    sent[sid] += len(chunk)
                    total += len(chunk)
            data = c.data_to_send()
            while data:
                try:
                    n = sock.send(data)
                    data = data[n:]
                except BlockingIOError:
                    select.select([], [sock], [], 0.05)
                except OSError:
                    data = b""
        ready, _, _ = select.select([s for s, _, _ in open_], [], [], 0.05)
        for sock, c, sent in open_:
            if sock not in ready:
                continue
            try:
                got = sock.recv(65536)
            except (BlockingIOError, OSError):
                continue
            if not got:
                continue
            for ev in c.receive_data(got):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers).get(":status", "?")
                    statuses[status] = statuses.get(status, 0) + 1
                    sent.pop(ev.stream_id, None)
                elif isinstance(ev, h2.events.StreamReset):
                    resets += 1
                    sent.pop(ev.stream_id, None)
                elif isinstance(ev, h2.events.DataReceived):
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
    print(json.dumps({"statuses": statuses, "resets": resets, "sent": total}), flush=True)


if __name__ == "__main__":
    main()
