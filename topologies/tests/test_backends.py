"""Backend choice, and the exact commands each backend gets for a profile.

The netem backend cannot run on a kernel without sch_netem (like the
project's CI machines), so its commands are checked here as data, and its
live test skips with the reason.
"""
import math
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

def test_netem_command_zigbee():
    cmds = backends.netem_commands("mqbs1-bn", direction("zigbee"))
    # queue 20 + 1 in transmission + ceil(250k * 5ms / 12112 bit) = 1 in
    # flight, no margin
    assert cmds == [["tc", "qdisc", "replace", "dev", "mqbs1-bn", "root",
                     "handle", "1:", "netem", "limit", "22",
                     "delay", "5000us", "rate", "250000bit",
                     "loss", "random", "1%"]]


def test_netem_command_wifi():
    (cmd,) = backends.netem_commands("mqbs2-bn", direction("wifi"))
    args = cmd[cmd.index("netem") + 1:]
    inflight = math.ceil(30e6 * 0.010 / (8 * 1514))        # 25 frames
    assert inflight == 25
    assert args == ["limit", str(100 + 1 + 25), "delay", "10000us",
                    "rate", "30000000bit", "loss", "random", "2%"]


@pytest.mark.parametrize("name", ["wifi", "zigbee", "4g", "3g", "ethernet"])
def test_netem_limit_holds_queue_and_delay_line(name):
    # The queue, the frame in transmission and the full-size frames on the
    # delay line, rounded up, nothing more: a saturated link of full-size
    # frames then keeps as many waiting as linkem's queue.
    d = direction(name)
    inflight = d.rate_bps * d.delay_us / 1e6 / (8 * 1514)
    assert backends.netem_limit(d) == \
        d.queue_packets + 1 + math.ceil(inflight)


def test_netem_no_token_bucket():
    # netem's own rate serialises every frame; an htb/tbf bucket would
    # let an isolated frame skip its serialisation time (module comment).
    for name in profiles.profile_names():
        for cmd in backends.netem_commands("x", direction(name)):
            assert "htb" not in cmd and "tbf" not in cmd and \
                "burst" not in cmd
            assert cmd[cmd.index("rate") + 1] == \
                f"{direction(name).rate_bps}bit"


def test_netem_jitter_gemodel_and_bytes():
    p = prof('rate = "4Mbit"\ndelay = "20ms"\njitter = "5ms"\n'
             'loss_model = "gilbert-elliott"\nqueue = "15140B"\n'
             '[gilbert_elliott]\np = "1%"\nr = "30%"\nloss_bad = "90%"\n'
             'loss_good = "0.1%"\n')
    args = backends.netem_args(p.left_to_right)
    assert args[args.index("delay"):args.index("delay") + 3] == \
        ["delay", "20000us", "5000us"]
    assert "distribution" not in args          # kernel's uniform draw
    assert args[args.index("loss"):] == \
        ["loss", "gemodel", "1%", "30%", "90%", "0.1%"]
    # 10 frames of bytes, +1, in flight over 25 ms at 4 Mbit/s: 9
    assert args[1] == str(10 + 1 + 9)


def test_netem_zero_loss_has_no_loss_clause():
    p = prof('rate = "1Mbit"\ndelay = "0ms"\nloss = "0%"\n')
    assert "loss" not in backends.netem_args(p.left_to_right)


def test_tc_accepts_our_netem_commands(root):
    """Feed every command to the real tc on a veth in a throwaway
    namespace: tc parses netem's options itself before asking the kernel,
    so a kernel without sch_netem still proves the syntax (its answer is
    then "qdisc kind is unknown", never a parse error)."""
    import subprocess
    variants = [profiles.load_profile(n) for n in profiles.profile_names()]
    variants.append(prof('rate = "4Mbit"\ndelay = "20ms"\njitter = "5ms"\n'
                         'loss_model = "gilbert-elliott"\n'
                         'queue = "64KiB"\n[gilbert_elliott]\np = "1%"\n'
                         'r = "30%"\nloss_bad = "90%"\nloss_good = "0.1%"\n'))
    variants.append(prof('rate = "1kbit"\ndelay = "0ms"\nloss = "0%"\n'))
    script = ["ip link add mqbp0 type veth peer name mqbp1 || exit 99"]
    for p in variants:
        for d in profiles.DIRECTIONS:
            for cmd in backends.netem_commands("mqbp0", p.direction(d)):
                script.append(" ".join(cmd) + " 2>&1; echo rc=$?")
    r = subprocess.run(["unshare", "--net", "sh", "-c", "\n".join(script)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    results = [ln for ln in r.stdout.splitlines() if ln]
    ok = 0
    for i, line in enumerate(results):
        if line.startswith("rc="):
            if line == "rc=0":
                ok += 1
            else:
                assert results[i - 1] == \
                    "Error: Specified qdisc kind is unknown.", results[i - 1]
                ok += 1
    assert ok == 2 * len(variants)


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
    l2r = " ".join(backends.netem_args(p.left_to_right))
    r2l = " ".join(backends.netem_args(p.right_to_left))
    assert "1000000bit" in l2r and "2000000bit" in r2l
    want = {
        (ns["root"], "mqbs1-bn", l2r), (ns["root"], "mqbs2-bn", r2l),
        (ns["l1"], "l1-eth0", l2r), (ns["root"], "mqbs1-l1", r2l),
        (ns["root"], "mqbs2-r1", l2r), (ns["r1"], "r1-eth0", r2l),
    }
    got = set()
    for line in log.read_text().splitlines():
        where, rest = line.split(" ", 1)
        if rest.startswith("qdisc replace"):
            dev = rest.split()[3]
            assert rest.startswith(f"qdisc replace dev {dev} root handle 1: "
                                   f"netem "), rest
            got.add((where, dev, rest.split(" netem ", 1)[1]))
    assert got == want
    assert len(log.read_text().splitlines()) == 12   # 6 shaped, 6 read back
    assert db.link_stats["links"]["bottleneck"]["left_to_right"] == \
        {"interface": "mqbs1-bn", "tc": []}
    assert db.problems == []
