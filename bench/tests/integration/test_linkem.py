"""linkem on real TAP devices: two network namespaces joined only by the
emulator, traffic across it, its stats against the kernel's own counters,
and teardown.

Each test builds namespaces mqbt-<pid>-<n>-a/b, starts linkem with TAP
devices mqbt<pid><n>a/b, moves one TAP into each namespace and addresses
them there (private addresses that never leave these namespaces). IPv6 is
off and neighbour entries are static, so the only frames crossing the link
are the ones a test sends, and counters can be checked exactly.

Needs root, /dev/net/tun, ip, ping and iperf3; skipped otherwise.
"""
import json
import math
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import pytest

BIN = os.environ.get("BENCH_BIN", os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "build", "release", "bin"))
LINKEM = os.path.join(BIN, "linkem")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or
    not all(shutil.which(t) for t in ("ip", "ping", "iperf3")),
    reason="needs root, /dev/net/tun, ip, ping, iperf3")

PID = os.getpid()
_count = [0]


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True,
                          text=True, **kw)


def read_line(proc, timeout):
    """One line of proc's stdout, "" if none comes within timeout s."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def link_stats(ns, dev):
    out = sh("ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev).stdout
    return json.loads(out)[0]["stats64"]


def dev_exists(dev, ns=None):
    cmd = ["ip"] + (["-n", ns] if ns else []) + ["link", "show", "dev", dev]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def our_namespaces():
    out = sh("ip", "netns", "list").stdout
    return [l.split()[0] for l in out.splitlines()
            if l.startswith(f"mqbt-{PID}-")]


class Link:
    """linkem between two namespaces. Use as a context manager: on exit,
    whatever happened, linkem is stopped and the namespaces are deleted."""

    def __init__(self, *args):
        _count[0] += 1
        n = _count[0]
        self.ns_a, self.ns_b = f"mqbt-{PID}-{n}-a", f"mqbt-{PID}-{n}-b"
        self.tap_a, self.tap_b = f"mqbt{PID}{n}a", f"mqbt{PID}{n}b"
        self.ip_a, self.ip_b = f"10.223.{n}.1", f"10.223.{n}.2"
        self.dir = tempfile.mkdtemp(prefix="linkem-test-")
        self.stats_path = os.path.join(self.dir, "stats.json")
        self.args = list(args)
        self.proc = None
        self.helpers = []
        self.rc = None

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self):
        for ns in (self.ns_a, self.ns_b):
            sh("ip", "netns", "add", ns)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw",
               "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
        # linkem starts inside namespace a, so its TAPs are born where
        # IPv6 is off and no stray frame (router solicitation, MLD) of the
        # root namespace crosses the link before the test's own traffic
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_a, LINKEM,
             "--tap-a", self.tap_a, "--tap-b", self.tap_b,
             "--stats", self.stats_path] + self.args,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = read_line(self.proc, 30)
        if line != "ready\n":
            self.proc.kill()
            err = self.proc.stderr.read()
            pytest.fail(f"linkem did not get ready: {line!r} {err}")
        sh("ip", "-n", self.ns_a, "link", "set", self.tap_b, "netns",
           self.ns_b)
        for ns, tap, ip in ((self.ns_a, self.tap_a, self.ip_a),
                            (self.ns_b, self.tap_b, self.ip_b)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", tap)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", tap, "up")
        mac_a = self._mac(self.ns_a, self.tap_a)
        mac_b = self._mac(self.ns_b, self.tap_b)
        sh("ip", "-n", self.ns_a, "neigh", "replace", self.ip_b, "lladdr",
           mac_b, "dev", self.tap_a, "nud", "permanent")
        sh("ip", "-n", self.ns_b, "neigh", "replace", self.ip_a, "lladdr",
           mac_a, "dev", self.tap_b, "nud", "permanent")

    @staticmethod
    def _mac(ns, dev):
        out = sh("ip", "-n", ns, "-j", "link", "show", "dev", dev).stdout
        return json.loads(out)[0]["address"]

    def in_ns(self, ns, *cmd, **kw):
        return sh("ip", "netns", "exec", ns, *cmd, **kw)

    def spawn(self, ns, *cmd):
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        self.helpers.append(p)
        return p

    def stop(self):
        """SIGTERM linkem, wait for it, return the parsed stats."""
        if self.rc is None:
            self.proc.send_signal(signal.SIGTERM)
            self.rc = self.proc.wait(timeout=10)
        with open(self.stats_path) as f:
            return json.load(f)

    def __exit__(self, *exc):
        for p in self.helpers:
            if p.poll() is None:
                p.kill()
            p.wait()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.rc = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.proc.stdout.close()
            self.proc.stderr.close()
        for ns in (self.ns_a, self.ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def ping_times(out):
    return [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]


def check_counters(d):
    """in = out + dropped + write errors + still held, frames and bytes"""
    assert d["frames_in"] == d["frames_out"] + d["dropped_loss"] + \
        d["dropped_queue"] + d["write_errors"] + d["frames_pending"]
    assert d["bytes_in"] == d["bytes_out"] + d["bytes_dropped_loss"] + \
        d["bytes_dropped_queue"] + d["bytes_write_errors"] + \
        d["bytes_pending"]


def test_ping_rtt_and_stats():
    rate, delay_us, n, size = 10_000_000, 5000, 10, 56
    frame = size + 8 + 20 + 14            # ICMP + IPv4 + Ethernet
    with Link("--rate", str(rate), "--delay-us", str(delay_us)) as L:
        out = L.in_ns(L.ns_a, "ping", "-n", "-c", str(n), "-i", "0.1",
                      "-s", str(size), L.ip_b).stdout
        times = ping_times(out)
        assert len(times) == n, out
        want = 2 * (delay_us / 1e3 + frame * 8 / rate * 1e3)   # ms
        tol = max(0.5, 0.03 * want)
        med = sorted(times)[n // 2]
        assert abs(med - want) <= tol, (times, want)
        # the emulated part is a floor: nothing arrives early
        assert min(times) >= want - 0.005, (times, want)

        tx_a = link_stats(L.ns_a, L.tap_a)
        rx_b = link_stats(L.ns_b, L.tap_b)
        st = L.stop()
        assert L.rc == 0
    assert st["tool"] == "linkem"
    assert st["config"]["a2b"]["rate_bps"] == rate
    assert st["config"]["b2a"]["delay_us"] == delay_us
    assert st["config"]["a2b"]["loss"]["model"] == "none"
    for d in ("a2b", "b2a"):
        s = st[d]
        assert s["frames_in"] == n and s["frames_out"] == n, s
        assert s["bytes_in"] == n * frame and s["bytes_out"] == n * frame
        assert s["dropped_loss"] == 0 and s["dropped_queue"] == 0
        assert s["write_errors"] == 0
        assert s["timing_error"]["count"] == n
        assert s["queue_delay"]["max_us"] == 0    # frames 100 ms apart
        assert s["frame_max_bytes"] == frame and s["frames_above_mtu"] == 0
        assert s["read_bursts"]["reads"] == n     # one frame per read
        assert s["read_bursts"]["at_cap"] == 0
        assert s["tap_dropped_in"] == 0 and s["tap_dropped_out"] == 0
        check_counters(s)
    # the kernel saw what linkem counted
    assert tx_a["tx"]["packets"] == st["a2b"]["frames_in"]
    assert rx_b["rx"]["packets"] == st["a2b"]["frames_out"]
    # the TAPs' own counters, read where they are (tap_b was moved into
    # namespace b): the kernel handed linkem every frame, took every one
    assert st["taps"]["a"] == {"name": L.tap_a, "tx_packets": n,
                               "tx_dropped": 0, "rx_packets": n,
                               "rx_dropped": 0}
    assert st["taps"]["b"]["name"] == L.tap_b
    assert st["taps"]["b"]["tx_packets"] == n
    assert st["duration_s"] > 0.9
    # the same names as loadgen's and sink's documents
    assert st["tool"] == "linkem" and st["schema"] >= 1
    assert "linkem" in st["meta"]["versions"]
    r = st["resources"]
    assert r["cpu_total_s"] >= 0 and r["max_rss_kib"] > 0
    assert r["run_queue_delay_us"] >= 0
    assert st["loop"]["busy"]["count"] > 0



def test_rate_saturated_udp():
    """Offer twice the rate: delivered frame bytes per second on tap-b
    (the kernel's counter) match the configured rate."""
    rate = 20_000_000
    with Link("--rate", str(rate), "--delay-us", "2000",
              "--queue-packets", "100") as L:
        srv = L.spawn(L.ns_b, "iperf3", "-s", "-1", "-p", "5201")
        time.sleep(0.3)
        cli = L.spawn(L.ns_a, "iperf3", "-c", L.ip_b, "-p", "5201", "-u",
                      "-b", "40M", "-l", "1400", "-t", "4")
        time.sleep(1.5)                    # queue full, link saturated
        t0, b0 = time.monotonic(), link_stats(L.ns_b, L.tap_b)["rx"]["bytes"]
        time.sleep(2.0)
        t1, b1 = time.monotonic(), link_stats(L.ns_b, L.tap_b)["rx"]["bytes"]
        cli.wait(timeout=15)
        srv.wait(timeout=15)
        got = (b1 - b0) * 8 / (t1 - t0)
        assert abs(got - rate) <= 0.03 * rate, (got, rate)
        time.sleep(0.1)
        rx_b = link_stats(L.ns_b, L.tap_b)["rx"]
        st = L.stop()
        assert L.rc == 0
    a = st["a2b"]
    check_counters(a)
    check_counters(st["b2a"])
    assert a["dropped_queue"] > 1000          # offered 2x for 4 s
    assert a["dropped_loss"] == 0
    assert rx_b["packets"] == a["frames_out"]
    # the kernel counts frames with their Ethernet header, as linkem does
    assert rx_b["bytes"] == a["bytes_out"]
    # a full queue of 100 frames of 1442 bytes at 20 Mb/s waits ~58 ms
    assert 40_000 < a["queue_delay"]["p99_us"] < 70_000, a["queue_delay"]


RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((sys.argv[1], int(sys.argv[2])))
print("bound", flush=True)
n = 0
s.settimeout(5.0)          # the first datagram; then stop when idle
try:
    s.recv(2048)
    n = 1
    s.settimeout(0.5)
    while True:
        s.recv(2048)
        n += 1
except socket.timeout:
    pass
print(n, flush=True)
"""

SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(i.to_bytes(4, "big") * 25, (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.0001)     # stay well inside the TAP's queue
"""


def send_counted(L, n, port):
    """n datagrams a -> b (RECEIVER, SENDER); how many arrived."""
    rcv = L.spawn(L.ns_b, sys.executable, "-c", RECEIVER, L.ip_b, str(port))
    assert read_line(rcv, 10) == "bound\n"
    L.in_ns(L.ns_a, sys.executable, "-c", SENDER, L.ip_b, str(port), str(n))
    return int(rcv.stdout.readline())


def test_bernoulli_loss_end_to_end():
    """Loss on a2b only: what the receiver misses is exactly what linkem
    dropped, and the drop rate lies in the binomial 99.9 % interval."""
    p, n, port = 0.2, 3000, 5301
    frame = 100 + 8 + 20 + 14
    with Link("--a2b-loss", str(p), "--seed", "7") as L:
        got = send_counted(L, n, port)
        st = L.stop()
    a, b = st["a2b"], st["b2a"]
    assert a["frames_in"] == n and a["bytes_in"] == n * frame
    assert a["dropped_loss"] == n - got and a["frames_out"] == got
    assert a["bytes_dropped_loss"] == (n - got) * frame
    assert b["frames_in"] == 0
    sd = math.sqrt(n * p * (1 - p))
    assert abs(a["dropped_loss"] - n * p) <= 3.2905 * sd
    assert st["config"]["a2b"]["loss"] == {"model": "bernoulli", "p": p,
                                           "unit": "frame"}
    assert st["config"]["b2a"]["loss"] == {"model": "none"}


BURST = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(b"", (sys.argv[1], int(sys.argv[2])))
"""


def test_byte_queue_with_small_frames():
    """A byte limit with the largest packet limit (what the topology's
    backend gives a byte queue): 50 empty UDP datagrams (42-byte frames)
    in one burst into a 1000 bit/s link (336 ms per frame, so none leaves
    during the burst): one goes into transmission, 36 wait (1512 of 1514
    bytes), 13 are dropped. A packet limit of bytes // 60 + 1 = 26 would
    have bound first and dropped 23."""
    with Link("--rate", "1000", "--queue-bytes", "1514",
              "--queue-packets", str(2**32 - 1)) as L:
        L.in_ns(L.ns_a, sys.executable, "-c", BURST, L.ip_b, "9", "50")
        st = L.stop()
    a = st["a2b"]
    assert a["frames_in"] == 50 and a["bytes_in"] == 50 * 42
    assert a["dropped_queue"] == 13, a
    assert a["dropped_loss"] == 0
    check_counters(a)
    assert st["config"]["a2b"]["queue_packets"] == 2**32 - 1


def _stats_into(path):
    """Run linkem with --stats path until ready, stop it; its status."""
    a, b = f"mqbt{PID}na", f"mqbt{PID}nb"
    p = subprocess.Popen([LINKEM, "--tap-a", a, "--tap-b", b, "--stats",
                          path], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert read_line(p, 30) == "ready\n", p.stderr.read()
    finally:
        p.terminate()
        p.wait(timeout=10)
        p.stdout.close()
        err = p.stderr.read()
        p.stderr.close()
    return p.returncode, err


def test_stats_to_a_device_writes_through_it():
    """--stats naming a character device writes to the device, never
    renames a file over it. First a private null device (if that were
    replaced, nothing of the system breaks and the test stops here), then
    /dev/null itself."""
    d = tempfile.mkdtemp(prefix="linkem-dev-")
    try:
        dev = os.path.join(d, "null")
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        rc, err = _stats_into(dev)
        assert rc == 0, err
        assert stat.S_ISCHR(os.lstat(dev).st_mode)
        assert os.listdir(d) == ["null"]          # no temporary left
    finally:
        shutil.rmtree(d, ignore_errors=True)
    before = set(os.listdir("/dev"))
    rc, err = _stats_into("/dev/null")
    assert rc == 0, err
    st = os.lstat("/dev/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert set(os.listdir("/dev")) - before == set()


def test_jumbo_frames():
    """Frames up to the largest TAP MTU (65521) pass whole."""
    size = 65000
    frame = size + 8 + 20 + 14
    with Link("--mtu", "65521", "--rate", "100000000") as L:
        out = L.in_ns(L.ns_a, "ping", "-n", "-c", "3", "-i", "0.1", "-s",
                      str(size), "-M", "do", L.ip_b).stdout
        assert len(ping_times(out)) == 3, out
        st = L.stop()
    assert st["config"]["mtu"] == 65521
    assert st["a2b"]["frames_in"] == 3
    assert st["a2b"]["bytes_in"] == 3 * frame


def test_teardown():
    with Link("--delay-us", "1000") as L:
        L.in_ns(L.ns_a, "ping", "-n", "-c", "1", L.ip_b)
        assert dev_exists(L.tap_a, L.ns_a) and dev_exists(L.tap_b, L.ns_b)
        pid = L.proc.pid
        L.stop()
        assert L.rc == 0
        # the TAPs were not persistent: gone with the process
        assert not dev_exists(L.tap_a, L.ns_a)
        assert not dev_exists(L.tap_b, L.ns_b)
        assert not os.path.exists(f"/proc/{pid}")
        assert os.listdir(L.dir) == ["stats.json"]   # no temp file left
        ns = (L.ns_a, L.ns_b)
    assert not set(ns) & set(our_namespaces())


def test_sigkill_removes_taps():
    a, b = f"mqbt{PID}ka", f"mqbt{PID}kb"
    p = subprocess.Popen([LINKEM, "--tap-a", a, "--tap-b", b],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(p, 30) == "ready\n"
        assert dev_exists(a) and dev_exists(b)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    assert not dev_exists(a) and not dev_exists(b)


def test_errors():
    def run(*args):
        r = subprocess.run([LINKEM, *args], capture_output=True, text=True,
                           timeout=10)
        return r.returncode, r.stderr

    a, b = f"mqbt{PID}ea", f"mqbt{PID}eb"
    for args in ([], ["--tap-a", a], ["--tap-a", a, "--tap-b", b,
                                      "--rate", "fast"],
                 ["--tap-a", a, "--tap-b", b, "--loss", "1.5"],
                 ["--tap-a", a, "--tap-b", b, "--loss", "0.1",
                  "--loss-ge", "0.1,0.2,1,0"],
                 ["--tap-a", a, "--tap-b", b, "--a2b-loss-ge", "0.1,0.2"],
                 ["--tap-a", a, "--tap-b", a],
                 ["--tap-a", "x" * 16, "--tap-b", b],
                 ["--tap-a", a, "--tap-b", b, "--nope"],
                 ["--tap-a", a, "--tap-b", b, "--loss-unit", "byte"],
                 ["--tap-a", a, "--tap-b", b, "--loss", "0.1",
                  "--loss-unit", "cell"],
                 ["--tap-a", a, "--tap-b", b, "--cell-overhead", "5"],
                 ["--tap-a", a, "--tap-b", b, "--cell-size", "10",
                  "--b2a-cell-overhead", "-11"],
                 ["--tap-a", a, "--tap-b", b, "--packet-overhead", "--14"],
                 ["--tap-a", a, "--tap-b", b, "--packet-overhead",
                  "-70000"],
                 ["--tap-a", a, "--tap-b", b, "--stats", "/nonexistent/x"]):
        rc, err = run(*args)
        assert rc == 2, (args, rc, err)
        assert len(err.strip().splitlines()) == 1, (args, err)
        assert err.startswith("linkem: error: "), err
    assert not dev_exists(a)
    # a name already taken: runtime error, and nothing left behind
    p = subprocess.Popen([LINKEM, "--tap-a", a, "--tap-b", b],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(p, 30) == "ready\n"
        rc, err = run("--tap-a", f"mqbt{PID}ec", "--tap-b", a)
        assert rc == 1, (rc, err)
        assert len(err.strip().splitlines()) == 1 and a in err, err
        assert not dev_exists(f"mqbt{PID}ec")
    finally:
        p.terminate()
        p.wait()
        p.stdout.close()
    rc, err = run("--version")
    assert rc == 0


def test_config_per_direction_and_priority():
    """Prefixed options win over plain ones in their direction only; the
    stats echo the configuration; --rt-prio switches to SCHED_FIFO."""
    with Link("--rate", "1000000", "--b2a-rate", "250000",
              "--delay-us", "2000.5", "--a2b-jitter-us", "300",
              "--loss-ge", "0.01,0.3,0.9,0.001", "--a2b-loss", "0.05",
              "--queue-packets", "50", "--b2a-queue-bytes", "30000",
              "--seed", "42", "--rt-prio", "3") as L:
        assert os.sched_getscheduler(L.proc.pid) == os.SCHED_FIFO
        assert os.sched_getparam(L.proc.pid).sched_priority == 3
        st = L.stop()
        assert L.rc == 0
    c = st["config"]
    assert c["seed"] == 42 and c["rt_prio"] == 3
    assert c["tap_a"] == L.tap_a and c["tap_b"] == L.tap_b
    a, b = c["a2b"], c["b2a"]
    assert a["rate_bps"] == 1000000 and b["rate_bps"] == 250000
    assert a["delay_us"] == b["delay_us"] == 2000.5
    assert a["jitter_us"] == 300 and b["jitter_us"] == 0
    assert a["loss"] == {"model": "bernoulli", "p": 0.05, "unit": "frame"}
    assert b["loss"] == {"model": "gilbert-elliott", "p": 0.01, "r": 0.3,
                         "lb": 0.9, "lg": 0.001, "unit": "frame"}
    assert a["queue_packets"] == b["queue_packets"] == 50
    assert a["queue_bytes"] == 0 and b["queue_bytes"] == 30000


def test_framing_cells_and_loss_per_cell():
    """802.15.4-like framing on a2b: the Ethernet header off, 104-byte
    cells sent as 146 bytes. A 1000-byte ping (1042-byte frame, 1028
    bytes without the header, 10 cells, 1460 bytes) takes 11.68 ms at
    1 Mbit/s instead of 8.336 ms; the reply (b2a, plain) 8.336 ms. With
    loss per cell, such frames are lost 10 times as often as one-cell
    frames."""
    size = 1000
    frame = size + 8 + 20 + 14
    with Link("--rate", "1000000", "--a2b-packet-overhead", "-14",
              "--a2b-cell-size", "104", "--a2b-cell-overhead", "42") as L:
        out = L.in_ns(L.ns_a, "ping", "-n", "-c", "5", "-i", "0.2", "-s",
                      str(size), L.ip_b).stdout
        times = ping_times(out)
        st = L.stop()
    want = 11.68 + frame * 8 / 1e6 * 1e3
    assert len(times) == 5, out
    assert want - 0.005 <= min(times) <= want + 0.5, (times, want)
    c = st["config"]["a2b"]
    assert (c["packet_overhead"], c["cell_size"], c["cell_overhead"]) == \
        (-14, 104, 42)
    assert st["config"]["b2a"]["cell_size"] == 0

    n, port = 2000, 5302
    with Link("--a2b-loss", "0.02", "--a2b-loss-unit", "cell",
              "--cell-size", "10", "--seed", "3") as L:
        # 100-byte payloads: 142-byte frames, 15 cells: lost with
        # 1 - 0.98^15 = 26 %, not 2 %
        got = send_counted(L, n, port)
        st = L.stop()
    p = 1 - 0.98 ** 15
    assert st["a2b"]["dropped_loss"] == n - got
    sd = math.sqrt(n * p * (1 - p))
    assert abs((n - got) - n * p) <= 3.2905 * sd, (n - got, n * p)
    assert st["config"]["a2b"]["loss"]["unit"] == "cell"


FLOOD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(b"x" * 100, (sys.argv[1], int(sys.argv[2])))
"""


def test_input_side_when_linkem_stalls():
    """linkem stopped (SIGSTOP) while frames arrive: the TAP holds what
    its queue can (500 frames) and drops the rest; linkem, resumed, reads
    the backlog in full bursts. Its stats show the kernel's drops on the
    input TAP (frames linkem never saw, so counted nowhere else) and the
    bursts that stopped at the cap with frames still waiting."""
    n = 3000
    with Link() as L:
        os.kill(L.proc.pid, signal.SIGSTOP)
        try:
            L.in_ns(L.ns_a, sys.executable, "-c", FLOOD, L.ip_b, "9",
                    str(n))
            dropped = link_stats(L.ns_a, L.tap_a)["tx"]["dropped"]
        finally:
            os.kill(L.proc.pid, signal.SIGCONT)
        # wait for linkem to have read the backlog: the receiving TAP
        # counts what it wrote
        deadline = time.monotonic() + 10
        while link_stats(L.ns_b, L.tap_b)["rx"]["packets"] < n - dropped:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        st = L.stop()
    a = st["a2b"]
    assert dropped > 0, "the TAP's queue held every frame"
    assert a["tap_dropped_in"] == dropped
    assert st["taps"]["a"]["tx_dropped"] == dropped
    assert a["frames_in"] == n - dropped
    assert a["read_bursts"]["at_cap"] >= (n - dropped) // 64 - 1
    assert a["read_bursts"]["max_frames"] == a["read_bursts"]["cap"] == 64
    check_counters(a)


def test_taps_carry_nothing_of_their_own():
    """The TAPs come up with IPv6 off, even in a namespace where new
    devices get IPv6: else the host's own stack sends router
    solicitations, MLD reports and DAD probes out of them, frames that
    cross the emulated link as if a host had sent them."""
    ns = f"mqbt-{PID}-v6"
    a, b = f"mqbt{PID}va", f"mqbt{PID}vb"
    sh("ip", "netns", "add", ns)
    p = None
    try:
        sh("ip", "netns", "exec", ns, "sysctl", "-qw",
           "net.ipv6.conf.default.disable_ipv6=0",
           "net.ipv6.conf.all.disable_ipv6=0")
        d = tempfile.mkdtemp(prefix="linkem-v6-")
        stats = os.path.join(d, "stats.json")
        p = subprocess.Popen(["ip", "netns", "exec", ns, LINKEM, "--tap-a",
                              a, "--tap-b", b, "--stats", stats],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        assert read_line(p, 30) == "ready\n", p.stderr.read()
        for tap in (a, b):
            r = sh("ip", "netns", "exec", ns, "cat",
                   f"/proc/sys/net/ipv6/conf/{tap}/disable_ipv6")
            assert r.stdout.strip() == "1", tap
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        with open(stats) as f:
            st = json.load(f)
        assert st["a2b"]["frames_in"] == 0 and st["b2a"]["frames_in"] == 0
        shutil.rmtree(d, ignore_errors=True)
    finally:
        if p is not None:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
