"""Processes and network namespaces, read from /proc.

A pid alone does not name a process for long: pids are reused. Everything
here names a process by (pid, start time in clock ticks since boot, field
22 of /proc/PID/stat), and a network namespace by the inode of
/proc/PID/ns/net, so cleanup never signals a stranger.
"""
import ctypes
import json
import os
import signal
import subprocess
import threading
import time

PR_SET_PDEATHSIG = 1


def starttime(pid):
    """Start time of pid in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the
    # fields after the last ')' are plain.
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[19])   # field 22 overall
    except (IndexError, ValueError):
        return None


def alive(pid, start):
    """True if pid still runs and is the process that started at start."""
    st = starttime(pid)
    if st is None or st != start:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def netns_inode(pid):
    """Inode of pid's network namespace, or None."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def pids_in_netns(inode, exclude=()):
    """Pids whose network namespace is `inode`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in exclude or pid == os.getpid():
            continue
        if netns_inode(pid) == inode:
            found.append(pid)
    return found


def netns_links(pid, inode):
    """{interface name: MAC address} in network namespace `inode`, entered
    through process pid, or None (pid gone, or no longer in that
    namespace). The namespace is opened once and its inode checked on the
    open file, so a pid reused in between cannot mislead."""
    try:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_ino != inode:
            return None
        r = subprocess.run(["nsenter", f"--net=/proc/self/fd/{fd}", "ip",
                            "-j", "link", "show"], pass_fds=(fd,),
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        os.close(fd)
    if r.returncode != 0:
        return None
    try:
        return {ln["ifname"]: ln.get("address", "")
                for ln in json.loads(r.stdout)}
    except (ValueError, KeyError, TypeError):
        return None


def terminate(procs, timeout=3.0):
    """SIGTERM each (pid, start), wait up to timeout, then SIGKILL.

    Returns the (pid, start) pairs that were still alive after SIGKILL
    (normally none). Processes that are our children are reaped."""
    live = [(p, s) for p, s in procs if alive(p, s)]
    for p, _ in live:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        _reap(p for p, _ in live)
        live = [(p, s) for p, s in live if alive(p, s)]
        if live:
            time.sleep(0.02)
    for p, s in live:
        if alive(p, s):
            _signal(p, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while live and time.monotonic() < deadline:
        _reap(p for p, _ in live)
        live = [(p, s) for p, s in live if alive(p, s)]
        if live:
            time.sleep(0.02)
    return live


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pids):
    """Collect those of pids that are our own exited children, so they do
    not linger as zombies (which alive() already counts as dead)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig=signal.SIGTERM, rt_priority=None):
    """A preexec_fn for Popen: the child gets sig when this process dies,
    even by SIGKILL, so nothing we start outlives a killed run. (The
    signal follows the death of the thread that forked: start children
    from a thread that lives as long as the run, e.g. the main one.)

    rt_priority: also ask for SCHED_FIFO at that priority (best effort;
    check the result with scheduling(pid)).

    Outside the main thread the death signal is not armed (the thread's
    exit would fire it); teardown and cleanup still stop the process."""
    parent = os.getpid()
    armed = threading.current_thread() is threading.main_thread()

    def preexec():
        if armed:
            _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
            if os.getppid() != parent:   # the parent died before prctl
                os._exit(1)
        if rt_priority:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO,
                                      os.sched_param(rt_priority))
            except OSError:
                pass
    return preexec


def scheduling(pid):
    """"SCHED_FIFO 10", "SCHED_OTHER", ... for pid, or None."""
    try:
        pol = os.sched_getscheduler(pid)
        prio = os.sched_getparam(pid).sched_priority
    except OSError:
        return None
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO",
             os.SCHED_RR: "SCHED_RR", os.SCHED_BATCH: "SCHED_BATCH",
             os.SCHED_IDLE: "SCHED_IDLE"}
    name = names.get(pol, str(pol))
    return f"{name} {prio}" if prio else name
