"""The dumbbell on the userspace backend: fidelity, teardown, kill -9.

Each test builds real namespaces, bridges and TAPs (root, linkem needed)
and checks afterwards that nothing of it is left.
"""
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from topologies import cleanup, measure, procs, profiles, state, tolerance
from topologies.dumbbell import BN_TAPS, S1, S2, dumbbell

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BRIDGE_NF = [f"/proc/sys/net/bridge/bridge-nf-call-{t}"
             for t in ("arptables", "iptables", "ip6tables")]


def sysctls():
    out = {}
    for p in BRIDGE_NF:
        if os.path.exists(p):
            with open(p) as f:
                out[p] = f.read().strip()
    return out


def our_ifaces():
    return [n for n in os.listdir("/sys/class/net")
            if state.OUR_NAME_RE.match(n)]


def assert_nothing_left(data):
    """No process, namespace, interface of the recorded run; no
    interface named like ours at all; no state file."""
    assert cleanup.leftovers(data, wait=3.0) == []
    for h in data["hosts"]:
        assert procs.pids_in_netns(h["netns"]) == [], \
            f"{h['name']}'s namespace still has processes"
    assert our_ifaces() == []
    assert not os.path.exists(os.path.join(state.STATE_DIR,
                                           f"{data['pid']}.json"))


def state_of(pid, timeout=10.0):
    path = os.path.join(state.STATE_DIR, f"{pid}.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        time.sleep(0.05)
    raise AssertionError(f"no state file {path}")


@pytest.fixture
def clean_before(root):
    """Start from a clean slate (a previous crashed test must not make
    this one fail for the wrong reason) and remember the sysctls."""
    r = subprocess.run([sys.executable, "-m", "topologies.cleanup"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert our_ifaces() == []
    return sysctls()


def test_userspace_fidelity_and_teardown(linkem, quiet_mininet,
                                         clean_before):
    before = clean_before
    with dumbbell("4g", backend="userspace", hosts=2) as db:
        assert db.backend == "userspace"
        data = json.loads(json.dumps(db._state.data))
        model = tolerance.PathModel(db.profile)

        ping = measure.ping(db, "l1", "r1", count=30, interval=0.02)
        assert ping["received"] >= 25
        assert tolerance.within_rtt(ping["median_ms"], model.rtt_ms(98)), \
            (ping["median_ms"], model.rtt_ms(98))
        udp = measure.udp(db, "l1", "r1", 1.2 * model.rate_bps(), 958, 3)
        assert tolerance.within_rate(udp["delivered_frame_bps"],
                                     model.rate_bps()), udp

        # What a runner might leave running on hosts: through the shell,
        # through popen ignoring SIGTERM, and behind our back.
        db.cmd("l2", "sleep 1000 &")
        db.popen("r2", ["sh", "-c", "trap '' TERM; sleep 1000"])
        sneaky = subprocess.Popen(["mnexec", "-a", str(db.host("r1").pid),
                                   "sleep", "1000"])
        time.sleep(0.3)
        ns = {h["name"]: h["netns"] for h in data["hosts"]}
        assert len(procs.pids_in_netns(ns["l2"])) >= 2
        for name in (S1, S2) + BN_TAPS + ("mqbs1-l1", "mqbs2-r2"):
            assert os.path.exists(f"/sys/class/net/{name}"), name
        assert not os.path.exists("/sys/class/net/mqbs1-bn")
        assert all(v == "0" for v in sysctls().values())
        data = json.loads(json.dumps(db._state.data))
    sneaky.wait(timeout=5)

    assert db.problems == []
    assert_nothing_left(data)
    assert sysctls() == before
    st = db.link_stats["links"]["bottleneck"]
    assert st["tool"] == "linkem"
    assert st["a2b"]["frames_out"] > 0
    assert st["a2b"]["dropped_queue"] > 0      # the rate test overloaded it
    assert st["config"]["a2b"]["rate_bps"] == 4_000_000


def test_userspace_access_links(linkem, quiet_mininet, clean_before,
                                tmp_path):
    # 10 ms per hop: a path that missed a hop would be 20 ms short, while
    # the 3 % tolerance (1.8 ms) covers what each userspace hop adds on a
    # VM (0.1-0.2 ms of wake-up latency per hop and round trip).
    p = tmp_path / "acc.toml"
    p.write_text('rate = "10Mbit"\ndelay = "10ms"\nloss = "0%"\n'
                 'applies = ["bottleneck", "access"]\n')
    prof = profiles.load_file(p)
    with dumbbell(prof, backend="userspace", hosts=2) as db:
        data = json.loads(json.dumps(db._state.data))
        assert sorted(db.linkems) == ["access-l1", "access-l2", "access-r1",
                                      "access-r2", "bottleneck"]
        assert os.path.exists("/sys/class/net/mqbx-l1")
        model = tolerance.PathModel(db.profile)
        assert model.hops == ["access-l1", "bottleneck", "access-r1"]
        ping = measure.ping(db, "l1", "r1", count=20, interval=0.02)
        assert ping["received"] == 20
        assert tolerance.within_rtt(ping["median_ms"], model.rtt_ms(98)), \
            (ping["median_ms"], model.rtt_ms(98))
        assert tolerance.within_rtt(model.rtt_ms(98), 60.0)   # 3 hops
        r = db.run("l2", ["ping", "-c", "1", "-W", "2", db.ip("r2")])
        assert r.returncode == 0
    assert db.problems == []
    assert_nothing_left(data)


def _start_cli(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "topologies.dumbbell", *args], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(proc, text, timeout=30.0):
    """Read proc's stderr until `text` appears; return what was read."""
    buf = b""
    fd = proc.stderr.fileno()
    deadline = time.monotonic() + timeout
    while text.encode() not in buf:
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, \
            f"no {text!r} from the run: {buf.decode(errors='replace')}"
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                continue
            buf += chunk
    return buf.decode(errors="replace")


def _up_with_orphan(*extra):
    """A CLI run whose l1 holds a background process that survives the
    run's death (it does not inherit the parent-death signal)."""
    proc = _start_cli("--profile", "3g", "--hosts", "2", *extra, "--cmd",
                      "l1", "sleep 1001 & sleep 1000")
    _wait_for(proc, "backend: userspace")
    data = state_of(proc.pid)
    l1 = next(h for h in data["hosts"] if h["name"] == "l1")
    deadline = time.monotonic() + 10
    while len(procs.pids_in_netns(l1["netns"])) < 4:   # shell, sh, 2 sleeps
        assert time.monotonic() < deadline, "the command did not start"
        time.sleep(0.05)
    return proc, state_of(proc.pid), l1


def test_sigkill_then_cleanup_then_second_run(linkem, clean_before):
    before = clean_before
    proc, data, l1 = _up_with_orphan()

    # While it lives, nobody else may touch the network.
    r = subprocess.run([sys.executable, "-m", "topologies.cleanup"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "is using the test network" in r.stderr
    assert os.path.exists(f"/sys/class/net/{S1}")
    r = subprocess.run([sys.executable, "-m", "topologies.dumbbell",
                        "--profile", "3g", "--hosts", "1"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "another run" in r.stderr

    proc.kill()
    proc.wait()
    # Left behind: the bridges, the orphan keeping l1's namespace (and
    # its veth) alive, the state file, the changed sysctls.
    assert os.path.exists(f"/sys/class/net/{S1}")
    assert os.path.exists("/sys/class/net/mqbs1-l1")
    assert len(procs.pids_in_netns(l1["netns"])) >= 1
    assert os.path.exists(os.path.join(state.STATE_DIR, f"{proc.pid}.json"))
    assert sysctls() != before or all(v == "0" for v in before.values())

    r = subprocess.run([sys.executable, "-m", "topologies.cleanup"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"cleaning up after run {proc.pid}" in r.stdout
    assert_nothing_left(data)
    assert sysctls() == before

    r = subprocess.run([sys.executable, "-m", "topologies.dumbbell",
                        "--profile", "3g", "--hosts", "2"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "l1 -> r1:" in r.stderr
    assert our_ifaces() == []


def test_next_run_cleans_a_killed_one_by_itself(linkem, clean_before):
    proc, data, l1 = _up_with_orphan()
    proc.kill()
    proc.wait()
    r = subprocess.run([sys.executable, "-m", "topologies.dumbbell",
                        "--profile", "zigbee", "--hosts", "1"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"cleaning up after run {proc.pid}" in r.stderr
    assert_nothing_left(data)
    assert sysctls() == clean_before


def test_sigterm_tears_down(linkem, clean_before):
    proc = _start_cli("--profile", "wifi", "--hosts", "1", "--cmd", "r1",
                      "sleep 1000")
    _wait_for(proc, "backend: userspace")
    data = state_of(proc.pid)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated by SIGTERM; topology torn down" in err
    assert_nothing_left(data)
    assert sysctls() == clean_before


def test_emulator_crash_is_reported_and_cleaned(linkem, quiet_mininet,
                                                clean_before):
    from topologies import backends
    with pytest.raises(backends.BackendError) as ei:
        with dumbbell("3g", backend="userspace", hosts=1) as db:
            data = json.loads(json.dumps(db._state.data))
            lk = db.linkems["bottleneck"]
            os.kill(lk.proc.pid, signal.SIGKILL)
            lk.proc.wait()
            db.check()              # a runner's periodic check
    assert "linkem (bottleneck) died" in str(ei.value)
    assert any("had died" in p for p in db.problems)
    assert db.link_stats["links"]["bottleneck"] is None
    assert_nothing_left(data)
    assert sysctls() == clean_before


def test_emulator_that_never_gets_ready(root, quiet_mininet, clean_before,
                                        tmp_path, monkeypatch):
    fake = tmp_path / "linkem"
    fake.write_text("#!/bin/sh\necho 'linkem: cannot create TAP: "
                    "Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BENCH_BIN", str(tmp_path))
    from topologies import backends
    with pytest.raises(backends.BackendError) as ei:
        with dumbbell("3g", backend="userspace", hosts=1):
            pass
    msg = str(ei.value)
    assert msg == ("linkem (bottleneck) exited with status 1 before it was "
                   "ready: linkem: cannot create TAP: Operation not "
                   "permitted")
    assert state.read_states() == []   # teardown removed the state file
    assert our_ifaces() == []
    shells = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.endswith(b"\0mininet:r1\0") or \
                cmd.endswith(b"\0mininet:mqbs1\0"):
            shells.append(pid)
    assert shells == []
    assert sysctls() == clean_before
