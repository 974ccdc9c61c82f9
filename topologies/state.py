"""What a run has created, on disk, so a killed run can be cleaned up.

Each run writes /run/mqb/<pid>.json (MQB_STATE_DIR overrides the folder)
and keeps it current: names are recorded *before* the thing is created,
so a run killed at any instant leaves a record that covers everything it
made (a record of something never made costs nothing at cleanup). The
run's own pid and start time say whether the run is still alive.

Only one run at a time may own the network names (mqbs1, mqbs2, ...):
/run/mqb/lock is held with flock for the whole run, and the kernel drops
the lock when the holder dies, however it dies. A run that finds it held
says so in one line and waits for it (LOCK_TIMEOUT_S by default, or
MQB_LOCK_TIMEOUT seconds), then gives up with one line.
"""
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import time

from . import procs

STATE_DIR = os.environ.get("MQB_STATE_DIR", "/run/mqb")
FORMAT = "mqb-run-state/1"
LOCK_TIMEOUT_S = 600.0
LOCK_POLL_S = 0.1


def lock_timeout_default():
    """MQB_LOCK_TIMEOUT (seconds) if set and valid, else LOCK_TIMEOUT_S."""
    try:
        v = float(os.environ.get("MQB_LOCK_TIMEOUT", ""))
    except ValueError:
        return LOCK_TIMEOUT_S
    return v if v >= 0 else LOCK_TIMEOUT_S

# Every name the dumbbell may create in the root namespace (cleanup's
# sweep deletes only names that match).
OUR_NAME_RE = re.compile(
    r"^mqb(s[12]|s[12]-(bn|[lr]\d{1,2})|bn-[ab]|x-[lr]\d{1,2}|"
    r"[lr]\d{1,2}-[ab])$")


# A state folder's own files: <pid>.json, its temporaries
# <pid>.json.tmp<writer pid>, and the run folder <pid>.d.
TMP_RE = re.compile(r"^(\d+)\.json\.tmp(\d+)$")
RUN_DIR_RE = re.compile(r"^(\d+)\.d$")

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def signals_held():
    """Hold off SIGINT, SIGTERM and SIGHUP in this thread for a short
    critical section; they are delivered (and their handlers run) when it
    ends. (Python runs handlers in the main thread: a signal that another
    thread takes can still raise inside the section, which is why
    atomic_write also cleans up on any exception.)"""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def atomic_write(path, text):
    """Write text to path through a temp file and rename. Neither an
    error nor a signal leaves the temp file behind."""
    tmp = f"{path}.tmp{os.getpid()}"
    with signals_held():
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class Busy(Exception):
    """Another live run holds the network names."""


class Lock:
    """The network's lock: one run at a time builds and uses it."""

    def __init__(self, directory=None):
        self.dir = directory or STATE_DIR
        self.path = os.path.join(self.dir, "lock")
        self.fd = None

    def _try(self):
        """One attempt: True if taken (self.fd set), else the holder's
        pid as it wrote it ("" if unknown). Signals wait meanwhile, so a
        lock taken is always a lock recorded in self.fd."""
        with signals_held():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace")
                os.close(fd)
                return holder.strip()
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd = fd
            return True

    def acquire(self, timeout=0.0, log=None):
        """Take the lock. If another run holds it, say so once through
        log (one line) and wait up to `timeout` seconds for it; then raise
        Busy. timeout 0: do not wait. Ctrl-C and other signals interrupt
        the wait as usual."""
        os.makedirs(self.dir, exist_ok=True)
        deadline = time.monotonic() + timeout
        holder = self._try()
        if holder is True:
            return
        if timeout > 0 and log:
            log(f"waiting: another run (pid {holder or '?'}) holds the "
                f"test network ({self.path}); waiting up to "
                f"{timeout:g} s for it")
        while time.monotonic() < deadline:
            time.sleep(min(LOCK_POLL_S, max(0.0, deadline -
                                            time.monotonic())))
            got = self._try()
            if got is True:
                return
            holder = got or holder
        if timeout > 0:
            raise Busy(f"another run (pid {holder or '?'}) held the test "
                       f"network for {timeout:g} s; try again when it has "
                       f"ended (or wait longer: --lock-timeout, "
                       f"MQB_LOCK_TIMEOUT)")
        raise Busy(f"another run (pid {holder or '?'}) is using the test "
                   f"network; wait for it to end")

    def release(self):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)   # closing drops the flock
            self.fd = None


class RunState:
    """The state file of this process's run."""

    def __init__(self, directory=None, argv=None):
        self.dir = directory or STATE_DIR
        os.makedirs(self.dir, exist_ok=True)
        pid = os.getpid()
        self.path = os.path.join(self.dir, f"{pid}.json")
        self.run_dir = os.path.join(self.dir, f"{pid}.d")
        self.data = {
            "format": FORMAT, "pid": pid, "starttime": procs.starttime(pid),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": list(argv or []), "run_dir": self.run_dir,
            "interfaces": [], "bridges": [], "processes": [], "hosts": [],
            "sysctl": {},
        }
        # The record first, then the folder it names (a run killed in
        # between leaves a record of a folder that does not exist, which
        # cleanup shrugs at; the reverse would leave an orphan folder).
        self.save()
        os.makedirs(self.run_dir, exist_ok=True)

    def save(self):
        atomic_write(self.path, json.dumps(self.data, indent=1) + "\n")

    def add_interfaces(self, names, bridge=False):
        key = "bridges" if bridge else "interfaces"
        for n in names:
            if n not in self.data[key]:
                self.data[key].append(n)
        self.save()

    def add_process(self, pid, what):
        self.data["processes"].append(
            {"pid": pid, "starttime": procs.starttime(pid), "what": what})
        self.save()

    def add_host(self, name, pid, ifaces, macs=None):
        """A host's shell and namespace; ifaces: its interface names,
        macs: {name: MAC} they will carry (what cleanup checks before it
        trusts that a namespace with that inode is still the host's)."""
        self.data["hosts"].append(
            {"name": name, "pid": pid, "starttime": procs.starttime(pid),
             "netns": procs.netns_inode(pid), "ifaces": list(ifaces),
             "macs": dict(macs or {})})
        self.save()

    def add_sysctl(self, name, old, new):
        self.data["sysctl"][name] = {"old": old, "set": new}
        self.save()

    def remove(self):
        shutil.rmtree(self.run_dir, ignore_errors=True)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def read_states(directory=None):
    """[(path, data or None)] for every state file; None if unreadable."""
    d = directory or STATE_DIR
    out = []
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return out
    for n in names:
        if not (n.endswith(".json") and n[:-5].isdigit()):
            continue
        path = os.path.join(d, n)
        try:
            with open(path) as f:
                data = json.load(f)
            if data.get("format") != FORMAT:
                data = None
        except (OSError, ValueError):
            data = None
        out.append((path, data))
    return out


def run_alive(data):
    return procs.alive(data.get("pid", -1), data.get("starttime"))
