"""Cleanup's rules of evidence, and the state folder's own files.

No dumbbell here: namespaces are made with `unshare --net` (they die
with their one process), records are written by hand.
"""
import os
import signal
import subprocess
import time

import pytest

from topologies import cleanup, procs, state

MAC = "02:00:00:00:01:01"     # what the dumbbell gives l1-eth0


@pytest.fixture
def netns_proc(root):
    """Start a process alone in a new network namespace, optionally with
    an interface l1-eth0 carrying a given MAC; yields a starter."""
    started = []

    def start(mac=None):
        make = (f"ip link add l1-eth0 address {mac} type veth peer name p0"
                f" && " if mac else "")
        p = subprocess.Popen(["unshare", "--net", "sh", "-c",
                              make + "exec sleep 60"])
        started.append(p)
        mine = procs.netns_inode(os.getpid())
        deadline = time.monotonic() + 10
        while True:
            ns = procs.netns_inode(p.pid)
            links = procs.netns_links(p.pid, ns) if ns != mine else None
            if links is not None and (not mac or "l1-eth0" in links):
                with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                    if f.read().startswith(b"sleep"):
                        return p, ns
            assert time.monotonic() < deadline, "namespace not ready"
            time.sleep(0.02)
    yield start
    for p in started:
        p.kill()
        p.wait()


def record(ns, macs=True):
    """A dead run's record whose host l1 had namespace `ns`; the run
    started at boot, so every process is younger than it."""
    host = {"name": "l1", "pid": 999999999, "starttime": 1, "netns": ns,
            "ifaces": ["l1-eth0"]}
    if macs:
        host["macs"] = {"l1-eth0": MAC}
    return {"format": state.FORMAT, "pid": 999999998, "starttime": 0,
            "interfaces": [], "bridges": [], "processes": [],
            "hosts": [host], "sysctl": {}, "run_dir": None}


def test_namespace_with_our_interface_and_mac_is_ours(netns_proc):
    p, ns = netns_proc(MAC)
    data = record(ns)
    ours, unproven = cleanup._host_ns_pids(data, data["hosts"][0])
    assert [pid for pid, _ in ours] == [p.pid] and unproven == []
    assert cleanup.leftovers(data, wait=0) == \
        [f"process {p.pid} (in l1's namespace)"]


def test_record_without_macs_goes_by_the_name(netns_proc):
    p, ns = netns_proc("02:00:00:00:99:99")
    data = record(ns, macs=False)
    ours, _ = cleanup._host_ns_pids(data, data["hosts"][0])
    assert [pid for pid, _ in ours] == [p.pid]


@pytest.mark.parametrize("mac", [None, "02:00:00:00:99:99"])
def test_recycled_namespace_inode_is_left_alone(netns_proc, mac):
    """The inode matches the record, the process is younger than the run
    (the old rule took that as proof), but the namespace does not hold
    l1-eth0 with the run's MAC: somebody else's; not touched."""
    p, ns = netns_proc(mac)
    data = record(ns)
    ours, unproven = cleanup._host_ns_pids(data, data["hosts"][0])
    assert ours == [] and [pid for pid, _ in unproven] == [p.pid]
    assert cleanup.leftovers(data, wait=0) == []
    said = []
    assert cleanup.clean_run(data, said.append) == []
    assert p.poll() is None                     # still running
    assert any(f"not touching process(es) {p.pid}" in s for s in said), said


def test_netns_links_checks_the_inode(netns_proc):
    p, ns = netns_proc(MAC)
    assert procs.netns_links(p.pid, ns)["l1-eth0"] == MAC
    assert procs.netns_links(p.pid, ns + 1) is None
    assert procs.netns_links(999999999, ns) is None


# ---- the state folder's files ----------------------------------------------

def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_temp_files_and_run_folders_are_removed(root, tmp_path,
                                                       monkeypatch):
    monkeypatch.setattr(state, "STATE_DIR", str(tmp_path))
    dead, me = _dead_pid(), os.getpid()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        files = {
            f"{dead}.json.tmp{dead}": True,     # a run killed mid-write
            f"{dead}.d": True,                  # ... during its first save
            f"{me}.json.tmp{me}": False,        # ours, being written
            f"{alive.pid}.d": False,            # its writer still runs
            "lock": False, "notes.txt": False,  # not ours to judge
        }
        for name in files:
            path = tmp_path / name
            if name.endswith(".d"):
                path.mkdir()
                (path / "linkem-bottleneck.log").write_text("x")
            else:
                path.write_text("{")
        said = []
        left, _ = cleanup.clean_stale(log=said.append)
        assert left == []
        for name, removed in files.items():
            assert (tmp_path / name).exists() != removed, name
        assert sum("its writer is gone" in s for s in said) == 2, said
    finally:
        alive.kill()
        alive.wait()


def test_atomic_write_holds_signals_and_leaves_no_temp(tmp_path, monkeypatch):
    """A signal that arrives while the file is written is held until the
    file is in place; an error leaves no temp file either."""
    class Hup(Exception):
        pass

    def on_hup(signum, frame):
        raise Hup()
    old = signal.signal(signal.SIGHUP, on_hup)
    real_fsync = os.fsync

    def fsync_and_signal(fd):
        real_fsync(fd)
        os.kill(os.getpid(), signal.SIGHUP)
    target = tmp_path / "x.json"
    try:
        monkeypatch.setattr(os, "fsync", fsync_and_signal)
        with pytest.raises(Hup):
            state.atomic_write(str(target), "complete\n")
    finally:
        signal.signal(signal.SIGHUP, old)
        monkeypatch.undo()
    assert target.read_text() == "complete\n"
    assert os.listdir(tmp_path) == ["x.json"]

    def replace_fails(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(OSError):
        state.atomic_write(str(target), "new\n")
    monkeypatch.undo()
    assert target.read_text() == "complete\n"
    assert os.listdir(tmp_path) == ["x.json"]


def test_run_state_records_before_it_makes_its_folder(tmp_path, monkeypatch):
    made = []
    real = os.makedirs

    def spy(path, *a, **kw):
        made.append((path, os.path.exists(tmp_path / f"{os.getpid()}.json")))
        return real(path, *a, **kw)
    monkeypatch.setattr(os, "makedirs", spy)
    rs = state.RunState(directory=str(tmp_path))
    assert (rs.run_dir, True) in made
    rs.remove()
    assert os.listdir(tmp_path) == []
