"""Remove what a killed dumbbell run left behind (make clean-net).

    /usr/bin/python3 -m topologies.cleanup [--dry-run]

Works from the state files runs keep in /run/mqb/ (topologies/state.py):
for each run whose process is gone it stops the processes it recorded (by
pid *and* start time), the processes still inside its hosts' network
namespaces (by namespace inode, checked against the host's interface
name), deletes the interfaces and bridges it recorded, and restores the
kernel settings it changed (only if they still hold the value the run
set). Then it deletes root-namespace interfaces whose names match the
dumbbell's own naming scheme (mqbs1, mqbs1-l1, mqbbn-a, ...) that no
record covers. It touches nothing else: no process is matched by name.

It refuses to run while a live run holds the network (it would pull the
bridges from under it). Exit status 0 if everything is clean afterwards.
"""
import argparse
import os
import subprocess
import sys
import time

from . import procs, state


def _iface_exists(name):
    return os.path.exists(f"/sys/class/net/{name}")


def _root_ifaces():
    try:
        return sorted(os.listdir("/sys/class/net"))
    except OSError:
        return []


def _our_name(name):
    return bool(state.OUR_NAME_RE.match(name))


def _host_ns_pids(data, host):
    """Pids inside a recorded host's namespace that are provably that
    host's: the namespace still holds the host's interface, or the process
    started after the run did (a recycled namespace inode would hold
    neither)."""
    ns = host.get("netns")
    if not ns:
        return []
    run_start = data.get("starttime") or 0
    out = []
    for pid in procs.pids_in_netns(ns):
        ifaces = procs.netns_ifaces(pid) or set()
        st = procs.starttime(pid)
        if ifaces & set(host.get("ifaces", ())) or \
                (st is not None and st >= run_start):
            out.append((pid, st))
    return out


def restore_sysctls(data, log):
    for key, v in data.get("sysctl", {}).items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path) as f:
                now = f.read().strip()
            if now == v["set"]:
                with open(path, "w") as f:
                    f.write(v["old"])
            elif now != v["old"]:
                log(f"not restoring {key}: it is {now} now, set by someone "
                    f"else after us (was {v['old']})")
        except OSError as e:
            log(f"cannot restore {key} to {v['old']}: {e.strerror}")


def leftovers(data, wait=2.0):
    """What of a run's record still exists: ["process 123 (linkem ...)",
    "interface mqbs1", ...]. Waits up to `wait` s for dying processes."""
    deadline = time.monotonic() + wait
    while True:
        left = []
        for p in data.get("processes", []):
            if procs.alive(p["pid"], p.get("starttime")):
                left.append(f"process {p['pid']} ({p.get('what', '?')})")
        for h in data.get("hosts", []):
            if procs.alive(h["pid"], h.get("starttime")):
                left.append(f"process {h['pid']} (shell of {h['name']})")
            for pid, _ in _host_ns_pids(data, h):
                if pid != h["pid"]:
                    left.append(f"process {pid} (in {h['name']}'s "
                                f"namespace)")
        for name in data.get("interfaces", []) + data.get("bridges", []):
            if _iface_exists(name):
                left.append(f"interface {name}")
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def clean_run(data, log, dry_run=False):
    """Undo one dead run's record. Returns what could not be removed."""
    victims = []
    for p in data.get("processes", []):
        if procs.alive(p["pid"], p.get("starttime")):
            victims.append((p["pid"], p["starttime"], p.get("what", "?")))
    for h in data.get("hosts", []):
        if procs.alive(h["pid"], h.get("starttime")):
            victims.append((h["pid"], h["starttime"],
                            f"shell of {h['name']}"))
        for pid, st in _host_ns_pids(data, h):
            if pid != h["pid"]:
                victims.append((pid, st, f"in {h['name']}'s namespace"))
    for pid, _, what in victims:
        log(f"stopping process {pid} ({what})")
    if not dry_run:
        procs.terminate([(pid, st) for pid, st, _ in victims])

    if data.get("switch") == "ovs":
        for br in data.get("bridges", []):
            if br in ("mqbs1", "mqbs2"):
                log(f"deleting Open vSwitch bridge {br}")
                if not dry_run:
                    subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists",
                                    "del-br", br], capture_output=True)
    names = [n for n in data.get("interfaces", []) +
             data.get("bridges", []) if _iface_exists(n)]
    for n in names:
        log(f"deleting interface {n}")
        if not dry_run:
            subprocess.run(["ip", "link", "del", n], capture_output=True)
    for key, v in data.get("sysctl", {}).items():
        log(f"restoring {key} = {v['old']}")
    if dry_run:
        return []
    restore_sysctls(data, log)
    rd = data.get("run_dir")
    if rd and os.path.basename(rd).endswith(".d") and \
            os.path.dirname(rd) == state.STATE_DIR:
        subprocess.run(["rm", "-rf", "--", rd])
    return leftovers(data)


def sweep(log, dry_run=False, keep=()):
    """Delete unrecorded root-namespace interfaces named like ours."""
    left = []
    for name in _root_ifaces():
        if _our_name(name) and name not in keep:
            log(f"deleting unrecorded interface {name}")
            if not dry_run:
                subprocess.run(["ip", "link", "del", name],
                               capture_output=True)
                if _iface_exists(name):
                    left.append(f"interface {name}")
    return left


def clean_stale(log=print, dry_run=False):
    """Clean every dead run; the caller must hold state.Lock. Returns what
    is left (empty when clean)."""
    left = []
    recorded = set()
    for path, data in state.read_states():
        if data is None:
            log(f"ignoring {path}: not a state file of this version")
            continue
        if state.run_alive(data) and data["pid"] != os.getpid():
            # Only possible if the run lost its lock; leave it alone. (Our
            # own pid: an earlier topology of this process that could not
            # be torn down completely; we hold the lock, so it is over.)
            log(f"run {data['pid']} is alive; not touching it")
            continue
        log(f"cleaning up after run {data['pid']} (started "
            f"{data.get('started_at', '?')}, no longer running)")
        recorded.update(data.get("interfaces", []) + data.get("bridges", []))
        rest = clean_run(data, log, dry_run)
        left += rest
        if not rest and not dry_run:
            os.unlink(path)
    left += sweep(log, dry_run, keep=recorded if dry_run else ())
    return left


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python3 -m topologies.cleanup",
        description="Remove the network leftovers (processes, namespaces, "
        "bridges, veths, TAP devices, kernel settings) of dumbbell runs "
        "that were killed, from their records in " + state.STATE_DIR + ".")
    ap.add_argument("--dry-run", action="store_true",
                    help="say what would be removed, remove nothing")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("error: must run as root (it deletes interfaces and stops "
              "processes)", file=sys.stderr)
        return 1
    lock = state.Lock()
    try:
        lock.acquire()
    except state.Busy as e:
        print(f"error: {e}; its own teardown cleans up (nothing done)",
              file=sys.stderr)
        return 1
    actions = []

    def log(msg):
        actions.append(msg)
        print(msg)
    try:
        left = clean_stale(log, args.dry_run)
    finally:
        lock.release()
    if left:
        print("error: could not remove: " + ", ".join(left), file=sys.stderr)
        return 1
    if not actions:
        print("nothing to clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
