"""Backend choice, and the exact commands each backend gets for a profile.

The netem backend cannot run on a kernel without sch_netem (like the
project's CI machines), so its commands are checked here as data, and its
live test skips with the reason.
"""
import os

import pytest

from topologies import backends, profiles, tolerance
from topologies import dumbbell as dumbbell_mod
from topologies.dumbbell import Dumbbell, dumbbell


def prof(text, name="t", tmp_path=None):
    return profiles.parse_profile(text, f"/x/{name}.toml", name)


def direction(name):
    return profiles.load_profile(name).left_to_right


# ---- netem: command construction -------------------------------------------

ROOT = ["tc", "qdisc", "replace", "dev", "mqbs1-bn", "root", "handle", "1:",
        "netem"]
CHILD = ["tc", "qdisc", "replace", "dev", "mqbs1-bn", "parent", "1:1",
         "handle", "10:", "netem"]


def test_netem_command_zigbee():
    # The delay stage (root): loss at arrival, the delay, a limit no
    # delay line reaches. The rate stage (its child): the transmitter
    # and its queue, limit = queue 20 + the frame in transmission.
    cmds = backends.netem_commands("mqbs1-bn", direction("zigbee"))
    assert cmds == [
        ROOT + ["limit", "1000000", "delay", "5000us", "loss", "random",
                "1%"],
        CHILD + ["limit", "21", "rate", "250000bit"]]


def test_netem_command_wifi():
    root, child = backends.netem_commands("mqbs1-bn", direction("wifi"))
    assert root == ROOT + ["limit", "1000000", "delay", "10000us", "loss",
                           "random", "2%"]
    assert child == CHILD + ["limit", "101", "rate", "30000000bit"]


@pytest.mark.parametrize("name", ["wifi", "zigbee", "4g", "3g", "ethernet"])
def test_netem_queue_limit_is_linkems_queue(name):
    """The rate stage's limit is the queue plus the frame being sent,
    nothing for the delay line: the old single qdisc's limit also counted
    every frame in flight, so small frames filled it and capped the rate
    below the link's (e.g. 4g: 38 frames per 20 ms = 1900 frames/s at
    most, 1.6 Mbit/s of 106-byte frames on a 4 Mbit/s link)."""
    d = direction(name)
    cmds = backends.netem_commands("x", d)
    rate_stage = cmds[1][cmds[1].index("netem") + 1:]
    assert rate_stage[:2] == ["limit", str(d.queue_packets + 1)]
    delay_stage = cmds[0][cmds[0].index("netem") + 1:]
    assert delay_stage[:2] == ["limit", str(backends.NETEM_DELAY_LIMIT)]
    # how many frames the delay line holds at the rate, for the smallest
    # frames: far below the delay stage's limit, and not in the queue's
    smallest = 60
    inflight = d.rate_bps * d.delay_us / 1e6 / (8 * smallest)
    assert inflight < backends.NETEM_DELAY_LIMIT / 100
    assert "rate" not in delay_stage


def test_netem_no_token_bucket():
    # netem's own rate serialises every frame; an htb/tbf bucket would
    # let an isolated frame skip its serialisation time (module comment).
    for name in profiles.profile_names():
        d = direction(name)
        if d.loss_per_cell:
            continue
        for cmd in backends.netem_commands("x", d):
            assert "htb" not in cmd and "tbf" not in cmd and \
                "burst" not in cmd
        if d.rate_bps:
            cmd = backends.netem_commands("x", d)[1]
            assert cmd[cmd.index("rate") + 1] == f"{d.rate_bps}bit"


def test_netem_jitter_gemodel_and_bytes():
    p = prof('rate = "4Mbit"\ndelay = "20ms"\njitter = "5ms"\n'
             'loss_model = "gilbert-elliott"\nqueue = "15140B"\n'
             '[gilbert_elliott]\np = "1%"\nr = "30%"\nloss_bad = "90%"\n'
             'loss_good = "0.1%"\n')
    root, child = backends.netem_commands("mqbs1-bn", p.left_to_right)
    args = root[root.index("netem") + 1:]
    # jitter, and a rate no link has, which keeps the delay line in order
    assert args[args.index("delay"):args.index("delay") + 5] == \
        ["delay", "20000us", "5000us", "rate", backends.NETEM_ORDER_RATE]
    assert "distribution" not in args          # kernel's uniform draw
    assert args[args.index("loss"):] == \
        ["loss", "gemodel", "1%", "30%", "90%", "0.1%"]
    # 10 frames of bytes, +1 in transmission; loss only at arrival
    assert child[child.index("netem") + 1:] == \
        ["limit", "11", "rate", "4000000bit"]


def test_netem_framing_and_what_it_cannot_do():
    p = prof('rate = "250kbit"\ndelay = "5ms"\nloss = "1%"\n'
             'packet_overhead = "-14B"\ncell_size = "104B"\n'
             'cell_overhead = "42B"\n')
    _, child = backends.netem_commands("x", p.left_to_right)
    # netem's rate takes overhead, cell size and cell overhead in order
    assert child[child.index("rate"):] == \
        ["rate", "250000bit", "-14", "104", "42"]
    p = prof('rate = "1Mbit"\ndelay = "5ms"\nloss = "1%"\n'
             'packet_overhead = "24B"\n')
    _, child = backends.netem_commands("x", p.left_to_right)
    assert child[child.index("rate"):] == ["rate", "1000000bit", "24"]
    # loss per cell has no netem equivalent: refused, in one line
    d = direction("zigbee-6lowpan")
    assert d.loss_per_cell
    with pytest.raises(backends.BackendError) as ei:
        backends.netem_commands("x", d)
    assert str(ei.value) == ('loss per cell (loss_unit = "cell") has no '
                             'netem equivalent; use --backend userspace')


def test_netem_unlimited_rate_has_no_rate_stage():
    (root,) = backends.netem_commands("x", direction("null"))
    assert root[root.index("netem") + 1:] == \
        ["limit", str(backends.NETEM_DELAY_LIMIT), "delay", "0us"]


def test_netem_zero_loss_has_no_loss_clause():
    p = prof('rate = "1Mbit"\ndelay = "0ms"\nloss = "0%"\n')
    cmds = backends.netem_commands("x", p.left_to_right)
    assert cmds
    for cmd in cmds:
        assert "loss" not in cmd


def test_tc_accepts_our_netem_commands(root):
    """Feed every command to the real tc on a veth in a throwaway
    namespace: tc parses netem's options itself before asking the kernel,
    so a kernel without sch_netem still proves the syntax: tc exits 1
    on a parse error before it sends anything, 2 with the kernel's
    "Error: ..." once it has sent a message built from every option.
    The rate stage needs a parent with class 1:1: where netem itself
    cannot be made, an htb root stands in for the delay stage."""
    import subprocess
    variants = [profiles.load_profile(n) for n in profiles.profile_names()
                if n != "zigbee-6lowpan"]
    variants.append(prof('rate = "4Mbit"\ndelay = "20ms"\njitter = "5ms"\n'
                         'loss_model = "gilbert-elliott"\n'
                         'queue = "64KiB"\n[gilbert_elliott]\np = "1%"\n'
                         'r = "30%"\nloss_bad = "90%"\nloss_good = "0.1%"\n'))
    variants.append(prof('rate = "1kbit"\ndelay = "0ms"\nloss = "0%"\n'))
    variants.append(prof('rate = "250kbit"\ndelay = "5ms"\nloss = "1%"\n'
                         'packet_overhead = "-14B"\ncell_size = "104B"\n'
                         'cell_overhead = "42B"\n'))
    variants.append(prof('rate = "10Gbit"\ndelay = "1ms"\nloss = "0%"\n'
                         'packet_overhead = "24B"\n'))
    script = ["ip link add mqbp0 type veth peer name mqbp1 || exit 99"]
    n = 0
    for p in variants:
        for d in profiles.DIRECTIONS:
            for cmd in backends.netem_commands("mqbp0", p.direction(d)):
                if "parent" not in cmd:
                    script.append("tc qdisc del dev mqbp0 root 2>/dev/null")
                else:
                    script.append(
                        "tc qdisc show dev mqbp0 | grep -q 'netem 1:' || "
                        "{ tc qdisc add dev mqbp0 root handle 1: htb && "
                        "tc class add dev mqbp0 parent 1: classid 1:1 htb "
                        "rate 1gbit; } >/dev/null 2>&1 || exit 98")
                script.append(" ".join(cmd) + " 2>&1; echo rc=$?")
                n += 1
    r = subprocess.run(["unshare", "--net", "sh", "-c", "\n".join(script)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    results = [ln for ln in r.stdout.splitlines() if ln]
    ok = 0
    for i, line in enumerate(results):
        if line.startswith("rc="):
            if line != "rc=0":
                assert line == "rc=2" and \
                    results[i - 1].startswith("Error: "), results[i - 1]
            ok += 1
    assert ok == n and n >= 2 * len(variants)
    # and a mistake is a parse error, not "unknown kind": the check bites
    r = subprocess.run(["unshare", "--net", "sh", "-c", script[0] + "\n" +
                        "tc qdisc add dev mqbp0 root netem rate 1mbit -14 "
                        "104 42 bogus"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1 and "What is \"bogus\"?" in r.stderr


def test_netem_each_direction_shaped_once_where_it_leaves():
    db = Dumbbell("wifi", hosts=2)
    links = {lab: (d1, h1, d2, h2)
             for lab, d1, h1, d2, h2 in db._access_links()}
    # left host: left-to-right leaves the host, right-to-left the switch
    assert links["access-l1"] == ("l1-eth0", "l1", "mqbs1-l1", None)
    # right host: the other way round
    assert links["access-r2"] == ("mqbs2-r2", None, "r2-eth0", "r2")
    assert len(links) == 4


# ---- userspace: linkem options --------------------------------------------

def test_linkem_args_per_direction():
    p = prof('rate = "1Mbit"\ndelay = "40ms"\nloss = "1.5%"\n'
             'queue = "20 packets"\n[right_to_left]\nrate = "250kbit"\n'
             'jitter = "2ms"\nqueue = "3028B"\n')
    args = backends.linkem_link_args(p.left_to_right, p.right_to_left)
    assert args == [
        "--a2b-rate=1000000", "--a2b-delay-us=40000", "--a2b-loss=0.015",
        "--a2b-queue-packets=20",
        "--b2a-rate=250000", "--b2a-delay-us=40000", "--b2a-jitter-us=2000",
        "--b2a-loss=0.015", "--b2a-queue-packets=4294967295",
        "--b2a-queue-bytes=3028"]


@pytest.mark.parametrize("queue", ["1514B", "3028B", "64KiB", "100MB"])
def test_linkem_byte_queue_is_never_bound_by_packets(queue):
    # The bridge hands linkem frames as small as the 14-byte header: the
    # packet limit that goes with a byte limit must exceed what the bytes
    # allow even then (the old bytes // 60 + 1 let 42-byte frames hit the
    # packet limit first), and be one linkem accepts (below).
    p = prof(f'rate = "1Mbit"\ndelay = "1ms"\nloss = "0%"\n'
             f'queue = "{queue}"\n')
    args = backends.linkem_link_args(p.left_to_right, p.right_to_left)
    qb = p.left_to_right.queue_bytes
    pk = int(next(a for a in args if a.startswith("--a2b-queue-packets="))
             .split("=")[1])
    assert pk > qb // 14
    assert pk == 2**32 - 1


def test_linkem_args_gilbert_elliott():
    p = prof('rate = "1Mbit"\ndelay = "1ms"\nloss_model = "gilbert-elliott"'
             '\n[gilbert_elliott]\np = "1%"\nr = "25%"\nloss_bad = "100%"\n'
             'loss_good = "0%"\n')
    args = backends.linkem_link_args(p.left_to_right, p.right_to_left)
    assert "--a2b-loss-ge=0.01,0.25,1.0,0.0" in args
    assert not any(a.startswith("--a2b-loss=") for a in args)


def test_linkem_args_framing():
    d = direction("zigbee-6lowpan")
    args = backends.linkem_link_args(d, d)
    for pre in ("a2b", "b2a"):
        assert [a for a in args if a.startswith(f"--{pre}-")] == [
            f"--{pre}-rate=250000", f"--{pre}-delay-us=5000",
            f"--{pre}-loss=0.01", f"--{pre}-packet-overhead=-14",
            f"--{pre}-cell-size=104", f"--{pre}-cell-overhead=42",
            f"--{pre}-loss-unit=cell", f"--{pre}-queue-packets=20"]
    d = direction("null")
    assert backends.linkem_link_args(d, d)[:2] == \
        ["--a2b-rate=0", "--a2b-delay-us=0"]


def test_linkem_accepts_our_options(linkem, tmp_path):
    # The real binary parses every option we generate (no TAPs made:
    # --help after them stops it early) ... and rejects a bad one.
    import subprocess
    p = prof('rate = "1Mbit"\ndelay = "1ms"\njitter = "1ms"\n'
             'loss_model = "gilbert-elliott"\nqueue = "3028B"\n'
             '[gilbert_elliott]\np = "1%"\nr = "25%"\nloss_bad = "100%"\n'
             'loss_good = "0%"\n')
    args = backends.linkem_link_args(p.left_to_right, p.right_to_left)
    assert "--a2b-queue-packets=4294967295" in args
    r = subprocess.run([linkem, "--tap-a", "mqbt-x", "--tap-b", "mqbt-y"] +
                       args + ["--seed", str(dumbbell_mod.link_seed(
                           dumbbell_mod.MAX_SEED, "access-r99")),
                               "--help"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    d = direction("zigbee-6lowpan")
    r = subprocess.run([linkem, "--tap-a", "mqbt-x", "--tap-b", "mqbt-y"] +
                       backends.linkem_link_args(d, d) + ["--help"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([linkem, "--tap-a", "a", "--tap-b", "b",
                        "--a2b-rate=fast"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2


# ---- choosing a backend ----------------------------------------------------

def test_choose_backend(root):
    ok, why = backends.probe_netem()
    name, note = backends.choose_backend("auto")
    assert name == ("netem" if ok else "userspace")
    assert note.startswith(name) and "auto" in note
    assert backends.choose_backend("userspace")[0] == "userspace"
    with pytest.raises(backends.BackendError):
        backends.choose_backend("tc")


def test_explicit_netem_fails_in_one_line_without_sch_netem(root):
    ok, why = backends.probe_netem()
    if ok:
        pytest.skip("this kernel has sch_netem")
    with pytest.raises(backends.BackendError) as ei:
        backends.choose_backend("netem")
    assert str(ei.value) == \
        "this kernel has no sch_netem; use --backend userspace"


def test_netem_backend_live(root, quiet_mininet):
    ok, why = backends.probe_netem()
    if not ok:
        pytest.skip(f"netem backend not testable here: {why} "
                    f"(the userspace backend is tested instead)")
    from topologies import measure
    with dumbbell("4g", backend="netem", hosts=2) as db:
        assert db.backend == "netem"
        ping = measure.ping(db, "l1", "r1", count=30, interval=0.02)
        model = tolerance.PathModel(db.profile)
        assert tolerance.within_rtt(ping["median_ms"], model.rtt_ms(98))
        udp = measure.udp(db, "l1", "r1", 1.2 * model.rate_bps(), 958, 3)
        assert tolerance.within_rate(udp["delivered_frame_bps"],
                                     model.rate_bps())
    assert db.link_stats["links"]["bottleneck"]["left_to_right"]["tc"]


def test_netem_wiring_with_a_recording_tc(root, quiet_mininet, tmp_path,
                                          monkeypatch):
    """The netem backend end to end on this kernel: a stand-in `tc`
    records what it is asked and where (its network namespace); each
    direction of each shaped link must be shaped once, where its frames
    leave, with that direction's parameters."""
    log = tmp_path / "tc.log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "tc").write_text(
        "#!/bin/sh\n"
        f'echo "$(readlink /proc/self/ns/net) $*" >> {log}\n'
        'case "$*" in *show*) echo "[]";; esac\n')
    (bindir / "tc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(backends, "_probe_cache",
                        (True, "this kernel has sch_netem"))
    p = prof('rate = "2Mbit"\ndelay = "3ms"\nloss = "1%"\n'
             'applies = ["bottleneck", "access"]\n'
             '[left_to_right]\nrate = "1Mbit"\n')
    with dumbbell(p, backend="netem", hosts=1) as db:
        assert db.backend == "netem"
        ns = {"root": os.readlink("/proc/self/ns/net"),
              "l1": os.readlink(f"/proc/{db.host('l1').pid}/ns/net"),
              "r1": os.readlink(f"/proc/{db.host('r1').pid}/ns/net")}
    def stages(d):
        return {" ".join(c[c.index("netem") + 1:]): c[5]
                for c in backends.netem_commands("x", d)}
    l2r, r2l = stages(p.left_to_right), stages(p.right_to_left)
    assert any("1000000bit" in a for a in l2r)
    assert any("2000000bit" in a for a in r2l)
    places = {(ns["root"], "mqbs1-bn", "l2r"), (ns["root"], "mqbs2-bn", "r2l"),
              (ns["l1"], "l1-eth0", "l2r"), (ns["root"], "mqbs1-l1", "r2l"),
              (ns["root"], "mqbs2-r1", "l2r"), (ns["r1"], "r1-eth0", "r2l")}
    want = set()
    for where, dev, d in places:
        for args, parent in (l2r if d == "l2r" else r2l).items():
            want.add((where, dev, parent, args))
    got = set()
    for line in log.read_text().splitlines():
        where, rest = line.split(" ", 1)
        if rest.startswith("qdisc replace"):
            w = rest.split()
            dev, parent = w[3], w[4]
            head = f"qdisc replace dev {dev} " + (
                "root handle 1: netem " if parent == "root" else
                "parent 1:1 handle 10: netem ")
            assert rest.startswith(head), rest
            got.add((where, dev, parent, rest[len(head):]))
    assert got == want
    # 6 shaped directions, a delay and a rate stage each; 6 read back
    assert len(log.read_text().splitlines()) == 6 * 2 + 6
    assert db.link_stats["links"]["bottleneck"]["left_to_right"] == \
        {"interface": "mqbs1-bn", "tc": []}
    assert db.problems == []
