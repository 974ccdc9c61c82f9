"""What the emulated links see and do, checked on real topologies: no
frame above the MTU anywhere, the calibration's checks catching a broken
link from real measurements, a late emulator reported."""
import importlib.util
import os
import subprocess
import signal
import sys
import threading

import pytest

from topologies import backends, measure, profiles, state, tolerance
from topologies.dumbbell import dumbbell

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Mirror every packet leaving l1-eth0, as the egress hook sees it (just
# before the root qdisc, where a netem qdisc would take it), to a capture
# veth inside l1; count what is longer than a full Ethernet frame.
CAPTURE = r'''
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.bind(("mqbcap1", 0))
s.settimeout(0.2)
print("ready", flush=True)
n = big = mx = 0
sys.stdin.readline()              # until the traffic is over
s.setblocking(False)
while True:
    try:
        d = s.recv(70000)
    except BlockingIOError:
        break
    n += 1
    mx = max(mx, len(d))
    big += len(d) > 1514
print(n, big, mx, flush=True)
'''
UDP_GSO = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_UDP, 103, 1400)      # UDP_SEGMENT
for i in range(20):
    s.sendto(b"x" * 14000, (sys.argv[1], 9))
'''


def _mirror(db):
    for argv in (["ip", "link", "add", "mqbcap0", "type", "veth", "peer",
                  "name", "mqbcap1"],
                 ["ip", "link", "set", "mqbcap0", "up"],
                 ["ip", "link", "set", "mqbcap1", "up"],
                 ["tc", "qdisc", "add", "dev", "l1-eth0", "clsact"],
                 ["tc", "filter", "add", "dev", "l1-eth0", "egress", "u32",
                  "match", "u32", "0", "0", "action", "mirred", "egress",
                  "mirror", "dev", "mqbcap0"]):
        r = db.run("l1", argv, timeout=10, text=True)
        assert r.returncode == 0, (argv, r.stderr)


def _egress(db, traffic):
    """(packets, longer than 1514, longest) leaving l1-eth0 while
    traffic() runs."""
    cap = db.popen("l1", [sys.executable, "-c", CAPTURE],
                   stdin=subprocess.PIPE)
    assert cap.stdout.readline().strip() == b"ready"
    traffic()
    out, _ = cap.communicate(b"\n", timeout=30)
    return tuple(int(x) for x in out.split())


def test_no_frame_above_the_mtu(linkem, quiet_mininet):
    """A TCP bulk flow and UDP sent with UDP_SEGMENT (one 14000-byte
    write, ten datagrams): with the dumbbell's settings no packet longer
    than a wire frame leaves a host's interface (where a netem qdisc
    would count it as one frame), and the link's counters show none. The
    old settings (GSO and TSO off only) pass TCP's 64 kB packets and the
    14 kB UDP one to that point: the check bites."""
    def flows(db):
        def run():
            measure.tcp(db, "l1", "r1", 2, omit=0)
            r = db.run("l1", [sys.executable, "-c", UDP_GSO, db.ip("r1")],
                       timeout=30)
            assert r.returncode == 0, r.stderr
        return run

    with dumbbell("ethernet", backend="userspace", hosts=1) as db:
        _mirror(db)
        n, big, longest = _egress(db, flows(db))
        assert n > 1000 and big == 0 and longest <= 1514, (n, big, longest)
        # the old settings: transmit checksumming on, segments unbounded
        db.run("l1", ["ethtool", "-K", "l1-eth0", "tx", "on"], timeout=10)
        db.run("l1", ["ip", "link", "set", "dev", "l1-eth0", "gso_max_segs",
                      "65535"], timeout=10)
        n, big, longest = _egress(db, flows(db))
        assert big > 0 and longest > 10000, (n, big, longest)
        off = db.describe()["offloads"]
        assert "l1-eth0" in off["interfaces"] and "mqbbn-a" in \
            off["interfaces"] and "mqbs1" in off["interfaces"]
        assert {"tso", "gso", "gro", "tx-udp-segmentation", "rx-gro-list",
                "tx"} <= set(off["off"])
    a2b = db.link_stats["links"]["bottleneck"]["a2b"]
    # the TAP segments whatever reaches it: the link itself never saw a
    # frame above the MTU, in either phase
    assert a2b["frames_in"] > 2000
    assert a2b["frame_max_bytes"] == 1514 and a2b["frames_above_mtu"] == 0
    assert a2b["bytes_in"] <= 1514 * a2b["frames_in"]
    assert db.problems == []


def _calibrate():
    spec = importlib.util.spec_from_file_location(
        "calibrate", os.path.join(REPO, "scripts", "calibrate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def prof(text, name):
    return profiles.parse_profile(text, f"/x/{name}.toml", name)


def test_calibration_checks_catch_a_broken_link(linkem, quiet_mininet):
    """Real measurements of a link built wrong, judged against the profile
    it should have been: its queue is twice as deep and it loses nothing
    from right to left. The queue and loss checks fail where the link is
    wrong, and pass against what was built."""
    cal = _calibrate()
    want = prof('rate = "10Mbit"\ndelay = "2ms"\nloss = "5%"\n'
                'queue = "20 packets"\n', "intended")
    built = prof('rate = "10Mbit"\ndelay = "2ms"\nloss = "5%"\n'
                 'queue = "40 packets"\n[right_to_left]\nloss = "0%"\n',
                 "broken")
    mw, mb = tolerance.PathModel(want), tolerance.PathModel(built)
    with dumbbell(built, backend="userspace", hosts=2, seed=4) as db:
        queue = cal.measure_queue(db, mb)
    counted = db.link_stats["links"]["bottleneck"]
    for dname, key in (("left_to_right", "a2b"), ("right_to_left", "b2a")):
        c = {x: counted[key][x] for x in ("dropped_queue", "dropped_loss")}
        ok = tolerance.judge_queue(mb.queue_link(dname), queue[dname],
                                   counted=c)
        assert ok["pass"], ok
        bad = tolerance.judge_queue(mw.queue_link(dname), queue[dname],
                                    counted=c)
        assert not bad["pass"] and "for a queue of 20 frames" in bad["why"]
    with dumbbell(cal.deep_queue(built), backend="userspace", hosts=2,
                  seed=4) as db:
        loss = cal.measure_loss(db, mw)
    for dname in tolerance.DIRECTIONS:
        pr = loss[dname]
        n, k, frame = pr["count"], pr["lost"], pr["frame_bytes"]
        assert pr["received"] == n - k
        for m, passes in ((mb, True), (mw, dname == "left_to_right")):
            r = tolerance.judge_loss(n, k, m.loss_interval(n, dname, frame),
                                     m.loss(dname, frame))
            assert r["pass"] == passes, (dname, r)


def test_a_late_emulator_is_reported(linkem, quiet_mininet):
    """linkem stopped for 100 ms three times while frames flow: many
    frames leave far behind their schedule, and the run says so in one
    line and in its link statistics."""
    lines = []
    with dumbbell("4g", backend="userspace", hosts=1, log=lines.append,
                  timing_error_limit_us=250) as db:
        pid = db.linkems["bottleneck"].proc.pid
        stalls = threading.Event()

        def stall():
            for _ in range(3):
                if stalls.wait(0.3):
                    return
                os.kill(pid, signal.SIGSTOP)
                stalls.wait(0.1)
                os.kill(pid, signal.SIGCONT)
        t = threading.Thread(target=stall)
        t.start()
        try:
            measure.probe(db, "l1", "r1", 1000, 400, pps=800)
        finally:
            stalls.set()
            t.join()
            os.kill(pid, signal.SIGCONT)
    rec = db.link_stats["contention"]
    assert rec["emulator_late"] is True
    assert rec["late"][0]["link"] == "bottleneck"
    assert rec["late"][0]["p99_us"] > 10000
    assert db.contention_warning in lines
    assert db.contention_warning.startswith(
        "warning: the link emulator kept its schedule badly: timing error "
        "p99 ")
    assert rec["cpu"]["ticks"] > 0 and 0 <= rec["cpu"]["steal"] < 1
    assert rec["linkem_run_queue_delay_us"]["bottleneck"] >= 0
    # the emulator's input side saw the stalls too: the TAP held frames
    # while linkem was stopped, read back in bursts
    a2b = db.link_stats["links"]["bottleneck"]["a2b"]
    assert a2b["read_bursts"]["max_frames"] > 1


def test_netem_refuses_what_it_cannot_do_before_building(root, monkeypatch):
    monkeypatch.setattr(backends, "_probe_cache",
                        (True, "this kernel has sch_netem"))
    with pytest.raises(backends.BackendError) as ei:
        with dumbbell("zigbee-6lowpan", backend="netem", hosts=1):
            pass
    assert str(ei.value) == (
        'profile zigbee-6lowpan: loss per cell (loss_unit = "cell") has no '
        'netem equivalent; use --backend userspace')
    assert state.read_states() == []


def test_the_link_carries_only_what_hosts_send(linkem, quiet_mininet):
    """200 pings over the null profile, two seconds of a topology's life:
    the emulated link carries the 200 requests and 200 replies and not
    one frame more (no IGMP report of a snooping bridge, no MLD or router
    solicitation of a bridge's or a TAP's own IPv6), so the emulator's
    counters can be checked exactly."""
    with dumbbell("null", backend="userspace", hosts=2) as db:
        r = db.run("l1", ["ping", "-n", "-q", "-c", "200", "-i", "0.01",
                          db.ip("r1")], timeout=60, text=True)
        assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout
    st = db.link_stats["links"]["bottleneck"]
    assert (st["a2b"]["frames_in"], st["b2a"]["frames_in"]) == (200, 200)
