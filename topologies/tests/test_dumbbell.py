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
import threading
import time

import pytest

from topologies import cleanup, measure, procs, profiles, state, tolerance
from topologies.dumbbell import (BN_TAPS, S1, S2, Terminated, TopologyError,
                                 dumbbell)

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


def _cmdlines():
    """{pid: argv} of every process."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out[int(pid)] = f.read().split(b"\0")
        except OSError:
            pass
    return out


def assert_no_trace(pid, data=None):
    """Nothing of run `pid` anywhere: no Mininet shell, no linkem on our
    TAPs, no interface named like ours, no file of it in the state
    folder; and nothing in the namespaces `data` (its last record seen)
    names."""
    deadline = time.monotonic() + 3
    while True:
        shells = [p for p, argv in _cmdlines().items()
                  if any(a.startswith(b"mininet:") for a in argv)]
        linkems = [p for p, argv in _cmdlines().items()
                   if argv[0].endswith(b"linkem") and
                   any(a.startswith(b"mqb") and not a.startswith(b"mqbt")
                       for a in argv)]
        if not (shells or linkems) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert shells == [], "Mininet shells left"
    assert linkems == [], "linkem left"
    assert our_ifaces() == []
    files = [n for n in os.listdir(state.STATE_DIR)
             if n.startswith(f"{pid}.")]
    assert files == [], files
    for h in (data or {}).get("hosts", []):
        assert procs.pids_in_netns(h["netns"]) == [], \
            f"{h['name']}'s namespace still has processes"


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
        seeds = db.describe()["link_seeds"]
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
    # Every emulator its own loss stream, derived from the run's seed, and
    # linkem says it used it.
    assert seeds == {"bottleneck": 1000, "access-l1": 1001,
                     "access-l2": 1002, "access-r1": 1101,
                     "access-r2": 1102}
    for label, seed in seeds.items():
        assert db.link_stats["links"][label]["config"]["seed"] == seed


def test_rate_with_loss_on_later_hops(linkem, quiet_mininet, clean_before,
                                      tmp_path):
    """Overloaded, a path of three 5 % lossy hops delivers the first
    hop's rate less the two later hops' losses: 9.025 Mbit/s of 10 (the
    rate alone would be 10 % off), which is what the tolerance's
    expected rate must say. The way back is lossless: iperf3's own
    control connection fails now and then when both ways lose."""
    p = tmp_path / "lossy.toml"
    p.write_text('rate = "10Mbit"\ndelay = "2ms"\nloss = "5%"\n'
                 'queue = "10000 packets"\n'
                 'applies = ["bottleneck", "access"]\n'
                 '[right_to_left]\nloss = "0%"\n')
    prof = profiles.load_file(p)
    model = tolerance.PathModel(prof)
    assert model.delivered_rate_bps() == pytest.approx(10e6 * 0.95 * 0.95)
    with dumbbell(prof, backend="userspace", hosts=1, seed=3) as db:
        data = json.loads(json.dumps(db._state.data))
        udp = measure.udp(db, "l1", "r1", 1.2 * model.rate_bps(), 1358, 3)
    assert tolerance.within_rate(udp["delivered_frame_bps"],
                                 model.delivered_rate_bps()), udp
    assert not tolerance.within_rate(udp["delivered_frame_bps"],
                                     model.rate_bps())
    assert db.problems == []
    assert_nothing_left(data)


def _start_cli(*args, stdin=None):
    return subprocess.Popen(
        [sys.executable, "-m", "topologies.dumbbell", *args], cwd=REPO,
        stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


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
    proc = _start_cli("--profile", "3g", "--hosts", "2", "--backend",
                      "userspace", *extra, "--cmd", "l1",
                      "sleep 1001 & sleep 1000")
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
    try:
        # While it lives, nobody else may touch the network: cleanup
        # refuses at once, a second run waits (one line), then gives up.
        r = subprocess.run([sys.executable, "-m", "topologies.cleanup"],
                           cwd=REPO, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and "is using the test network" in r.stderr
        assert os.path.exists(f"/sys/class/net/{S1}")
        r = subprocess.run([sys.executable, "-m", "topologies.dumbbell",
                            "--profile", "3g", "--hosts", "1",
                            "--lock-timeout", "1"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert r.stderr.splitlines() == [
            f"waiting: another run (pid {proc.pid}) holds the test network "
            f"({state.STATE_DIR}/lock); waiting up to 1 s for it",
            f"error: another run (pid {proc.pid}) held the test network for "
            f"1 s; try again when it has ended (or wait longer: "
            f"--lock-timeout, MQB_LOCK_TIMEOUT)"]
    finally:
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


def test_a_second_run_waits_for_the_first(linkem, clean_before):
    """Only one topology at a time: a run started while another holds the
    network says so in one line, waits, and builds once the first has
    torn down."""
    first = _start_cli("--profile", "3g", "--hosts", "1", "--backend",
                       "userspace", "--cmd", "l1", "sleep 2")
    try:
        _wait_for(first, "backend: userspace")
        second = subprocess.Popen(
            [sys.executable, "-m", "topologies.dumbbell", "--profile",
             "zigbee", "--hosts", "1", "--backend", "userspace",
             "--lock-timeout", "60"], cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        err = _wait_for(second, "waiting: another run")
        assert f"(pid {first.pid}) holds the test network" in err
        assert first.wait(timeout=60) == 0
        err += second.communicate(timeout=60)[1].decode()
        assert second.returncode == 0, err
        assert err.count("waiting:") == 1 and "l1 -> r1:" in err
    finally:
        for p in (first, locals().get("second")):
            if p and p.poll() is None:
                p.kill()
                p.wait()
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
    # a long --cmd: the signal comes while the run waits for it
    proc = _start_cli("--profile", "wifi", "--hosts", "1", "--backend",
                      "userspace", "--cmd", "r1", "sleep 1000")
    _wait_for(proc, "backend: userspace")
    data = state_of(proc.pid)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated by SIGTERM; topology torn down" in err
    assert "warning" not in err and "Traceback" not in err, err
    assert_nothing_left(data)
    assert_no_trace(proc.pid, data)
    assert sysctls() == clean_before


def test_sigterm_during_build_leaves_nothing(linkem, clean_before):
    """SIGTERM at several moments of the build (counted from the state
    file's appearance, which is where the build starts recording): the
    shells Mininet started, the ones it is talking to, the linkem it
    started, all go. At least one signal must land inside the build."""
    inside = 0
    for offset in (0.0, 0.08, 0.16, 0.25):
        proc = _start_cli("--profile", "3g", "--hosts", "2", "--backend",
                          "userspace", "--cmd", "l1", "sleep 100")
        path = os.path.join(state.STATE_DIR, f"{proc.pid}.json")
        deadline = time.monotonic() + 20
        while not os.path.exists(path):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.002)
        time.sleep(offset)
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = None
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1].decode()
        assert proc.returncode == 128 + signal.SIGTERM, (offset, err)
        assert "terminated by SIGTERM; topology torn down" in err, err
        assert "warning" not in err and "Traceback" not in err, err
        inside += "backend: userspace" not in err    # summary not printed
        assert_no_trace(proc.pid, data)
        assert sysctls() == clean_before
    assert inside >= 1


def test_sigterm_during_a_cli_command(linkem, clean_before):
    """A command typed into the Mininet CLI is running in l1's shell when
    SIGTERM comes: Mininet's stop would refuse that shell (it is still
    "waiting"); teardown must get it back or stop it directly."""
    proc = _start_cli("--profile", "3g", "--hosts", "1", "--backend",
                      "userspace", "--cli", stdin=subprocess.PIPE)
    proc.stdin.write(b"l1 sleep 100\n")
    proc.stdin.flush()
    data = state_of(proc.pid)
    deadline = time.monotonic() + 20
    while True:
        data = state_of(proc.pid)
        l1 = [h for h in data["hosts"] if h["name"] == "l1"]
        if l1 and len(procs.pids_in_netns(l1[0]["netns"])) >= 2:
            break                               # its shell and the sleep
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=30)[1].decode()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "warning" not in err and "Traceback" not in err, err
    assert_nothing_left(data)
    assert_no_trace(proc.pid, data)


def test_sigterm_during_db_cmd(linkem, quiet_mininet, clean_before):
    """The library: a runner's db.cmd() is cut short by SIGTERM. The
    signal is sent only while l1's sleep runs, so it cannot reach the
    test process outside the topology's handler."""
    seen = {}

    def killer(ns):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if len(procs.pids_in_netns(ns)) >= 2:
                seen["sent"] = True
                signal.pthread_kill(threading.main_thread().ident,
                                    signal.SIGTERM)
                return
            time.sleep(0.02)

    with pytest.raises(Terminated):
        with dumbbell("3g", backend="userspace", hosts=1) as db:
            data = json.loads(json.dumps(db._state.data))
            l1 = next(h for h in data["hosts"] if h["name"] == "l1")
            t = threading.Thread(target=killer, args=(l1["netns"],))
            t.start()
            try:
                db.cmd("l1", "sleep 30")
            finally:
                t.join()
    assert seen.get("sent")
    assert db.problems == []
    assert_nothing_left(data)
    assert_no_trace(os.getpid(), data)
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


def test_unrecorded_interface_is_reported_not_deleted(root, quiet_mininet,
                                                       clean_before):
    """An interface named like ours that no run recorded may be someone
    else's: cleanup names it (with the command to delete it) and leaves
    it; a build that needs the name stops with one line, having made
    nothing."""
    subprocess.run(["ip", "link", "add", "mqbs2", "type", "bridge"],
                   check=True)
    try:
        r = subprocess.run([sys.executable, "-m", "topologies.cleanup"],
                           cwd=REPO, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1
        assert r.stderr == (
            "error: interface mqbs2 named like the dumbbell's but recorded "
            "by no run, left alone; if nothing else uses it, delete with: "
            "ip link del mqbs2\n")
        assert os.path.exists("/sys/class/net/mqbs2")

        with pytest.raises(TopologyError) as ei:
            with dumbbell("3g", backend="userspace", hosts=1):
                pass
        assert str(ei.value) == (
            "cannot build: mqbs2 already exists (no run recorded it, so it "
            "may not be ours; if nothing else uses it, delete with: ip link "
            "del mqbs2)")
        assert os.path.exists("/sys/class/net/mqbs2")
        assert our_ifaces() == ["mqbs2"]
        assert state.read_states() == []
        lock = state.Lock()
        lock.acquire()             # released by the failed build
        lock.release()
    finally:
        subprocess.run(["ip", "link", "del", "mqbs2"], capture_output=True)
    assert sysctls() == clean_before


def test_missing_tool_fails_before_building(root, clean_before, tmp_path):
    """Without bridge-utils, Mininet would print three lines and exit the
    process half way through the build; the check comes first and names
    the package."""
    import shutil
    from topologies.dumbbell import REQUIRED_TOOLS
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in REQUIRED_TOOLS:
        if tool != "brctl":
            (bindir / tool).symlink_to(shutil.which(tool))
    r = subprocess.run([sys.executable, "-m", "topologies.dumbbell",
                        "--profile", "3g", "--hosts", "1", "--backend",
                        "userspace"], cwd=REPO, capture_output=True,
                       text=True, timeout=60,
                       env=dict(os.environ, PATH=str(bindir)))
    assert r.returncode == 1
    assert r.stderr == ("error: missing command brctl: install the Debian "
                        "package bridge-utils (apt-get install "
                        "bridge-utils, or make deps)\n")
    assert state.read_states() == [] and our_ifaces() == []
