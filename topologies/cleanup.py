"""Remove what a killed dumbbell run left behind (make clean-net).

    /usr/bin/python3 -m topologies.cleanup [--dry-run]

Works from the state files runs keep in /run/mqb/ (topologies/state.py):
for each run whose process is gone it stops the processes it recorded (by
pid *and* start time), the processes still inside its hosts' network
namespaces (by namespace inode, and only while that namespace still holds
the host's interface under its name and MAC: a namespace inode is reused
once the namespace is gone), deletes the interfaces and bridges it
recorded, and restores the kernel settings it changed (only if they still
hold the value the run set). It removes the temporary files and run
folders of writers that are gone. It touches nothing else: no process is
matched by name, and an interface named like the dumbbell's that no record
covers is reported (with the command that would delete it), not deleted.

It refuses to run while a live run holds the network (it would pull the
bridges from under it). Exit status 0 if everything is clean afterwards.
"""
import argparse
import contextlib
import os
import shutil
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
    """(ours, unproven): the pids inside a recorded host's namespace, as
    (pid, starttime), split by whether the namespace is provably still
    the host's: it holds one of the host's interfaces by name, with the
    MAC the run gave it (when the record has MACs). A start time after
    the run's is no proof: after the namespace died, the kernel may give
    its inode to a namespace of somebody else's."""
    ns = host.get("netns")
    if not ns:
        return [], []
    pids = procs.pids_in_netns(ns)
    if not pids:
        return [], []
    links = None
    for pid in pids:
        links = procs.netns_links(pid, ns)
        if links is not None:
            break
    found = [(pid, procs.starttime(pid)) for pid in pids]
    if links is None:       # they all left in the meantime
        return [], []
    macs = host.get("macs") or {}
    for name in host.get("ifaces", ()):
        if name not in links:
            continue
        want = macs.get(name)
        if want is None or links[name].lower() == want.lower():
            return found, []
    return [], found


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
            for pid, _ in _host_ns_pids(data, h)[0]:
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
        ours, unproven = _host_ns_pids(data, h)
        for pid, st in ours:
            if pid != h["pid"]:
                victims.append((pid, st, f"in {h['name']}'s namespace"))
        if unproven:
            log(f"not touching process(es) "
                f"{', '.join(str(p) for p, _ in unproven)}: their network "
                f"namespace has the inode {h['name']}'s had, but not its "
                f"interface {'/'.join(h.get('ifaces', ()))} with the run's "
                f"MAC, so they may not be the run's")
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


def unrecorded_ifaces(recorded):
    """Root-namespace interfaces named like the dumbbell's that are not in
    `recorded`. Nothing proves they are ours, so they are reported, never
    deleted."""
    return [n for n in _root_ifaces() if _our_name(n) and n not in recorded]


def unrecorded_line(names):
    """One line about interfaces no record covers, with the command that
    deletes them for a user who knows they are leftovers."""
    return (f"interface{'s' if len(names) > 1 else ''} "
            f"{', '.join(names)} named like the dumbbell's but recorded by "
            f"no run, left alone; if nothing else uses "
            f"{'them' if len(names) > 1 else 'it'}, delete with: " +
            "; ".join(f"ip link del {n}" for n in names))


def _pid_gone(pid):
    return not os.path.exists(f"/proc/{pid}")


def stale_files(live, directory=None):
    """Paths in the state folder that a writer which is gone left: temp
    files of atomic_write (<pid>.json.tmp<writer>, a run killed while it
    wrote) and run folders (<pid>.d) with no state file (killed during
    its first save). `live`: pids of live runs, never touched."""
    d = directory or state.STATE_DIR
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    out = []
    for n in names:
        m = state.TMP_RE.match(n)
        if m:
            writer = int(m.group(2))
            if writer != os.getpid() and writer not in live and \
                    _pid_gone(writer):
                out.append(os.path.join(d, n))
            continue
        m = state.RUN_DIR_RE.match(n)
        if m:
            pid = int(m.group(1))
            if pid != os.getpid() and pid not in live and \
                    _pid_gone(pid) and \
                    not os.path.exists(os.path.join(d, f"{pid}.json")):
                out.append(os.path.join(d, n))
    return out


def clean_stale(log=print, dry_run=False):
    """Clean every dead run; the caller must hold state.Lock.

    Returns (left, unrecorded): what of the records could not be removed
    (empty when clean), and interfaces named like the dumbbell's that no
    record covers (not deleted; unrecorded_line() says so to a user)."""
    left = []
    recorded = set()
    live = set()
    for path, data in state.read_states():
        if data is None:
            log(f"ignoring {path}: not a state file of this version")
            continue
        recorded.update(data.get("interfaces", []) + data.get("bridges", []))
        if state.run_alive(data) and data["pid"] != os.getpid():
            # Only possible if the run lost its lock; leave it alone. (Our
            # own pid: an earlier topology of this process that could not
            # be torn down completely; we hold the lock, so it is over.)
            log(f"run {data['pid']} is alive; not touching it")
            live.add(data["pid"])
            continue
        log(f"cleaning up after run {data['pid']} (started "
            f"{data.get('started_at', '?')}, no longer running)")
        rest = clean_run(data, log, dry_run)
        left += rest
        if not rest and not dry_run:
            os.unlink(path)
    for path in stale_files(live):
        log(f"removing {path} (its writer is gone)")
        if not dry_run:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    return left, unrecorded_ifaces(recorded)


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
        left, unrecorded = clean_stale(log, args.dry_run)
    except KeyboardInterrupt:
        print("error: interrupted; run it again to finish", file=sys.stderr)
        return 130
    finally:
        lock.release()
    status = 0
    if left:
        print("error: could not remove: " + ", ".join(left), file=sys.stderr)
        status = 1
    if unrecorded:
        print(f"error: {unrecorded_line(unrecorded)}", file=sys.stderr)
        status = 1
    if not actions and not unrecorded:
        print("nothing to clean")
    return status


if __name__ == "__main__":
    sys.exit(main())
