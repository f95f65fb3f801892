"""What a root agent could reach of the host's other stores. Prints one JSON
object, each attempt and its outcome ("ok: …" or the errno name):

- "userns": a child unshares a user namespace, the parent maps every id
  into it (root keeps CAP_SETUID), and the child, holding every capability
  there, reads FILE (0600, another user's);
- "clone-userns": clone(CLONE_NEWUSER) straight;
- "clone3": clone3 at all;
- "keyring": look KEY up in the user keyring and read it;
- "add-key": put a key of its own in the user keyring;
- "fork": an ordinary child process (the control: still works).

    host_stores.py FILE KEY
"""

import ctypes
import errno
import json
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
NR = {"unshare": 272, "clone": 56, "clone3": 435, "add_key": 248, "keyctl": 250}
KEY_SPEC_USER_KEYRING = -4
KEYCTL_SEARCH = 10
KEYCTL_READ = 11
KEYCTL_UNLINK = 9


def err(e):
    return errno.errorcode.get(e, str(e))


def syscall(name, *args):
    r = libc.syscall(NR[name], *args)
    if r < 0:
        raise OSError(ctypes.get_errno(), name)
    return r


def attempt(results, name, f):
    try:
        results[name] = "ok: " + str(f())
    except OSError as e:
        results[name] = err(e.errno)


def userns_read(path):
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            syscall("unshare", CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(go_r, 1)
            with open(path) as f:
                os.write(out_w, ("ok: " + f.read().strip()).encode())
        except OSError as e:
            os.write(ready_w, b"e")
            os.write(out_w, err(e.errno).encode())
        os._exit(0)
    state = os.read(ready_r, 1)
    if state == b"u":
        for f, text in (("uid_map", "0 0 65536"), ("setgroups", "allow"), ("gid_map", "0 0 65536")):
            try:
                with open(f"/proc/{pid}/{f}", "w") as out:
                    out.write(text)
            except OSError:
                pass
        os.write(go_w, b"g")
    os.close(out_w)
    os.waitpid(pid, 0)
    got = os.read(out_r, 4096).decode()
    if got.startswith("ok: "):
        return got[4:]
    raise OSError(getattr(errno, got, errno.EIO), "userns")


def clone_userns():
    pid = syscall("clone", CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return "child"


def clone3():
    args = (ctypes.c_uint64 * 11)()
    args[4] = SIGCHLD  # exit_signal
    pid = syscall("clone3", ctypes.byref(args), ctypes.sizeof(args))
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return "child"


def keyring_read(desc):
    key = syscall("keyctl", KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, b"user", desc.encode(), 0)
    buf = ctypes.create_string_buffer(256)
    n = syscall("keyctl", KEYCTL_READ, key, buf, 256)
    return buf.raw[:n].decode()


def add_key():
    key = syscall("add_key", b"user", b"palisade-agent-planted", b"x", 1, KEY_SPEC_USER_KEYRING)
    syscall("keyctl", KEYCTL_UNLINK, key, KEY_SPEC_USER_KEYRING)
    return key


def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main():
    path, key = sys.argv[1], sys.argv[2]
    r = {}
    attempt(r, "userns", lambda: userns_read(path))
    attempt(r, "clone-userns", clone_userns)
    attempt(r, "clone3", clone3)
    attempt(r, "keyring", lambda: keyring_read(key))
    attempt(r, "add-key", add_key)
    attempt(r, "fork", fork)
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
