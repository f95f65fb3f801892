"""An agent trying to starve the daemon: re-schedule each of its threads
(SCHED_IDLE, nice 19, pinned to one CPU), renice every process of its user,
make the daemon the OOM killer's first choice, lower its whole session's
CPU share (its autogroup's nice), change what a crash of it dumps, and make
itself real-time.
Then the same on itself (allowed). Prints one JSON object: each attempt
and its outcome ("ok" or the errno name).

    standing.py DAEMON_PID [OTHER_PROC_MOUNT]
"""

import errno
import json
import os
import sys


def attempt(results, name, f):
    try:
        f()
        results[name] = "ok"
    except OSError as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))


def main():
    pid = int(sys.argv[1])
    r = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError as e:
        # Its /proc directory out of sight: the main thread by its pid.
        r["see-daemon"] = errno.errorcode.get(e.errno, str(e.errno))
        tids = [pid]
    for i, tid in enumerate(tids[:3]):
        attempt(r, f"idle-{i}", lambda: os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0)))
        attempt(r, f"nice-{i}", lambda: os.setpriority(os.PRIO_PROCESS, tid, 19))
        attempt(r, f"pin-{i}", lambda: os.sched_setaffinity(tid, {0}))
    attempt(r, "nice-user", lambda: os.setpriority(os.PRIO_USER, 0, 19))
    attempt(r, "nice-pgrp", lambda: os.setpriority(os.PRIO_PGRP, os.getpgid(pid), 19))

    def oom():
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write("1000")

    attempt(r, "oom", oom)

    def write(name, text):
        def f():
            with open(f"/proc/{pid}/{name}", "w") as out:
                out.write(text)
        return f

    attempt(r, "autogroup", write("autogroup", "19"))
    attempt(r, "coredump", write("coredump_filter", "0xff"))
    if len(sys.argv) > 2:
        # Another procfs mounted on the host (a chroot's): the same files.
        other = sys.argv[2]

        def other_autogroup():
            with open(f"{other}/{pid}/autogroup", "w") as out:
                out.write("19")

        attempt(r, "other-proc-autogroup", other_autogroup)
    attempt(r, "fifo-self", lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10)))
    # Lower its own priority a step (raising it needs CAP_SYS_NICE).
    own = os.getpriority(os.PRIO_PROCESS, 0)
    attempt(r, "nice-self", lambda: os.setpriority(os.PRIO_PROCESS, 0, min(19, own + 1)))
    attempt(r, "pin-self", lambda: os.sched_setaffinity(0, {0}))
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
