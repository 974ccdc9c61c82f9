"""How a run behaves when things go wrong or are asked for: Ctrl-C tears
everything down and RESUME= finishes the run keeping its ok cells; a
failing cell is recorded with its error and logs and the run goes on;
CAPTURE=1 keeps a pcap of the bottleneck that matches the link's own
counters, with the TLS key log beside it (QUIC's too) and QLOG=1 a qlog
file per QUIC connection at every endpoint; make footprint."""
import json
import os
import signal
import subprocess
import textwrap
import time


from runner.tests.conftest import BIN, PY, REPO, run_runner, runner_env

TINY_CONNECT = """
# a test scenario: two connections from l1
name = "{name}"
hosts = 2
{extra}
[[publisher]]
name = "device"
host = "l1"
clients = 2
topic = "t/{{n}}"
idle = true
max_pending = 1
{pub_extra}
"""


def scenario(tmp_path, name, extra="", pub_extra=""):
    p = tmp_path / f"{name}.toml"
    p.write_text(textwrap.dedent(TINY_CONNECT.format(
        name=name, extra=extra, pub_extra=pub_extra)))
    return str(p)


def our_ifaces():
    return sorted(n for n in os.listdir("/sys/class/net")
                  if n.startswith("mqb"))


def load(path):
    with open(path) as f:
        return json.load(f)


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_ctrl_c_tears_down_and_resume_finishes(root, tmp_path):
    sc = scenario(tmp_path, "tiny")
    res = str(tmp_path / "results")
    before = our_ifaces()
    p = subprocess.Popen([PY, "-m", "runner", "bench", "--scenarios", sc,
                          "--profiles", "3g", "--transports", "tcp",
                          "--reps", "3", "--results", res], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=runner_env())
    log = None
    try:
        wait_for(lambda: os.path.exists(os.path.join(res, "latest")), 60,
                 "the run folder")
        run_dir = os.path.realpath(os.path.join(res, "latest"))
        log = os.path.join(run_dir, "run.log")

        def second_running():
            if not os.path.exists(log):
                return False
            text = open(log).read()
            return "cell 2/3 start" in text
        wait_for(second_running, 120, "cell 2 to start")
        # let it get into the topology and its processes
        cell2 = os.path.join(run_dir, "cells", "tiny__3g__tcp__r2")
        wait_for(lambda: os.path.exists(os.path.join(cell2, "broker",
                                                     "mosquitto.conf")),
                 60, "cell 2's broker")
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, out
    assert "RESUME=" in out
    assert our_ifaces() == before          # nothing of ours left
    # no process of the run survived
    ps = subprocess.run(["pgrep", "-f", run_dir], capture_output=True,
                        text=True)
    assert ps.stdout.strip() == "", ps.stdout
    run = load(os.path.join(run_dir, "run.json"))
    assert run["status"] == "interrupted"
    c1 = load(os.path.join(run_dir, "cells", "tiny__3g__tcp__r1",
                           "cell.json"))
    assert c1["status"] == "ok"
    c2 = load(os.path.join(cell2, "cell.json"))
    assert c2["status"] == "interrupted"
    assert load(os.path.join(run_dir, "summary.json"))["not_run"] == 1

    r = run_runner(["bench"], timeout=300, RESUME=run_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 of 3 cells ended ok and are kept" in r.stdout
    run = load(os.path.join(run_dir, "run.json"))
    assert run["status"] == "done" and len(run["resumed"]) == 1
    again = load(os.path.join(run_dir, "cells", "tiny__3g__tcp__r1",
                              "cell.json"))
    assert again["started"] == c1["started"]        # kept, not rerun
    s = load(os.path.join(run_dir, "summary.json"))
    assert s["counts"] == {"ok": 3} and s["not_run"] == 0


def test_failed_cells_are_recorded_and_the_run_goes_on(root, tmp_path):
    bad_broker = scenario(tmp_path, "badbroker",
                          extra='[broker]\nno_such_setting = "1"')
    bad_option = scenario(tmp_path, "badoption",
                          pub_extra='options = ["--no-such-option", "1"]')
    good = scenario(tmp_path, "good")
    res = str(tmp_path / "results")
    r = run_runner(["bench", "--scenarios",
                    f"{bad_broker},{bad_option},{good}", "--profiles",
                    "3g", "--transports", "tcp", "--reps", "1",
                    "--results", res], timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    run_dir = os.path.realpath(os.path.join(res, "latest"))
    cells = {c: load(os.path.join(run_dir, "cells", f"{c}__3g__tcp__r1",
                                  "cell.json"))
             for c in ("badbroker", "badoption", "good")}
    b = cells["badbroker"]
    assert b["status"] == "failed" and b["failure_kind"] == "error"
    assert "mosquitto" in b["error"] and "\n" not in b["error"]
    assert "no_such_setting" in open(os.path.join(
        run_dir, "cells", "badbroker__3g__tcp__r1", "broker",
        "mosquitto.conf")).read()
    o = cells["badoption"]
    assert o["failure_kind"] == "not-built"
    assert "--no-such-option" in o["error"]
    assert cells["good"]["status"] == "ok"
    assert "failed: badbroker__3g__tcp__r1" in r.stdout


def run_tiny(tmp_path, name, transports, **env):
    """The tiny scenario on 3g, one repetition, on these transports:
    the run's folder (it must have ended with status 0)."""
    res = str(tmp_path / "results")
    sc = scenario(tmp_path, name)
    r = run_runner(["bench", "--scenarios", sc, "--profiles", "3g",
                    "--transports", transports, "--reps", "1",
                    "--results", res], timeout=300, **env)
    assert r.returncode == 0, r.stdout + r.stderr
    return os.path.realpath(os.path.join(res, "latest")), sc, res


def test_capture_matches_link_counters(root, tmp_path):
    run, _, _ = run_tiny(tmp_path, "cap", "tls", CAPTURE="1")
    d = os.path.join(run, "cells", "cap__3g__tls__r1")
    cell = load(os.path.join(d, "cell.json"))
    assert cell["capture"]["interface"]
    pcap = os.path.join(d, "capture.pcap")
    n = subprocess.run(["tcpdump", "-r", pcap, "-n"], capture_output=True,
                       text=True)
    packets = len(n.stdout.splitlines())
    tcp = sum(1 for l in n.stdout.splitlines() if ".8883" in l)
    bn = cell["link"]["links"]["bottleneck"]
    # the left end sees frames going into the link and those coming out;
    # the link also carried the IGMP reports its own TAP devices sent when
    # they were created, before the capture began (at most two each way)
    want = bn["left_to_right"]["frames_in"] + \
        bn["right_to_left"]["frames_out"]
    assert want - 4 <= packets <= want, (packets, want)
    # two TLS connections: handshakes, CONNECT/CONNACK, closes
    assert tcp >= packets - 4 and tcp >= 2 * 10
    keys = open(os.path.join(d, "keylog.txt")).read()
    # one TLS 1.3 session per connection, each with its secrets
    assert keys.count("CLIENT_HANDSHAKE_TRAFFIC_SECRET") == 2


def qlog_events(path):
    """The records of a JSON-SEQ qlog file (RFC 7464: each record after
    an RS byte) and the names of its events."""
    text = open(path, encoding="utf-8").read()
    recs = [json.loads(r) for r in text.split("\x1e") if r.strip()]
    names = set()
    for r in recs[1:]:
        n = r.get("name")
        if n:
            names.add(n.split(":")[-1])
    return recs, names


def test_capture_and_qlog_on_quic(root, tmp_path):
    """QUIC with CAPTURE=1 QLOG=1: the pcap holds the UDP datagrams the
    link carried, the key log each connection's QUIC secrets, and every
    QUIC endpoint (loadgen, gateway) a qlog file per connection."""
    run, _, _ = run_tiny(tmp_path, "capq", "quic", CAPTURE="1", QLOG="1")
    d = os.path.join(run, "cells", "capq__3g__quic__r1")
    cell = load(os.path.join(d, "cell.json"))
    n = subprocess.run(["tcpdump", "-r", os.path.join(d, "capture.pcap"),
                        "-n"], capture_output=True, text=True)
    lines = n.stdout.splitlines()
    quic = sum(1 for line in lines if ".14567" in line and "UDP" in line)
    bn = cell["link"]["links"]["bottleneck"]
    want = bn["left_to_right"]["frames_in"] + \
        bn["right_to_left"]["frames_out"]
    assert want - 4 <= len(lines) <= want, (len(lines), want)
    # besides QUIC: a closed port's ICMP answers to datagrams still in
    # flight when an endpoint exited (the link carries them too)
    icmp = sum(1 for line in lines if "ICMP" in line and
               "unreachable" in line)
    assert quic + icmp >= len(lines) - 4 and quic >= 2 * 4, lines
    keys = open(os.path.join(d, "keylog.txt")).read()
    assert keys.count("CLIENT_HANDSHAKE_TRAFFIC_SECRET") == 2
    assert keys.count("CLIENT_TRAFFIC_SECRET_0") == 2
    files = cell["qlog"]["files"]
    assert sorted(files) == ["device", "gateway"], files
    # two connections: a file each, at the client and at the gateway
    for who in ("device", "gateway"):
        assert len(files[who]) == 2, (who, files[who])
        for f in files[who]:
            recs, names = qlog_events(os.path.join(d, f))
            assert "qlog_version" in recs[0] or "qlog_format" in recs[0]
            assert {"packet_sent", "packet_received"} <= names, (f, names)


def test_congestion_control_chosen_for_the_run(root, tmp_path):
    """CCA=reno: every route of every host namespace carries congctl reno
    and the publisher's TCP sockets run it; every QUIC endpoint gets --cc
    reno; a CCA this kernel or our QUIC lacks is one line and exit 2,
    before anything is built."""
    run, sc, res = run_tiny(tmp_path, "cc", "tcp,quic", CCA="reno")
    assert load(os.path.join(run, "run.json"))["options"]["cc"] == "reno"
    for t in ("tcp", "quic"):
        d = os.path.join(run, "cells", f"cc__3g__{t}__r1")
        cell = load(os.path.join(d, "cell.json"))
        assert cell["congestion_control"]["name"] == "reno"
        routes = cell["congestion_control"]["routes"]
        assert sorted(routes) == ["l1", "l2", "r1", "r2"]
        assert all(rs and all("congctl reno" in r for r in rs)
                   for rs in routes.values()), routes
        lg = load(os.path.join(d, "device.json"))
        if t == "tcp":
            assert lg["transport"]["congestion_control"] == "reno"
        else:
            assert lg["config"]["connection"]["congestion_control"] == \
                "reno"
            assert cell["gateway"]["stats"]["config"][
                "congestion_control"] == "reno"
    from runner import transports as tr
    lacking = [c for c in tr.QUIC_CC if c not in tr.tcp_cc_available()]
    cases = [("vegas", "not a congestion control QUIC offers")] + \
        [(c, "this kernel's TCP does not offer it") for c in lacking[:1]]
    for bad, words in cases:
        r = run_runner(["bench", "--scenarios", sc, "--results", res],
                       timeout=60, CCA=bad)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2, r.stdout + r.stderr
        assert len(lines) == 1 and words in lines[0], lines


def test_footprint(tmp_path):
    r = subprocess.run(["make", "-s", "--no-print-directory", "footprint"],
                       cwd=REPO, capture_output=True, text=True,
                       timeout=300, env=runner_env())
    assert r.returncode == 0, r.stderr
    rows = [l for l in r.stdout.splitlines() if l.startswith("| MQTT over")]
    assert any("| loadgen |" in l for l in rows)
    assert any("| mosquitto |" in l for l in rows)
    assert any("libgnutls" in l for l in rows)
    assert not any("libc.so" in l for l in rows)
    out = r.stdout.strip().splitlines()[-1].split("written: ", 1)[1]
    doc = load(out.replace("{md,json}", "json"))
    tcp = doc["stacks"][0]
    assert tcp["client"]["total_bytes"] > tcp["client"]["binaries"][0][
        "stripped_bytes"] > 0


def test_transport_not_built_is_recorded(root, tmp_path):
    """Where the QUIC gateway is not built, quic cells fail at once with
    "not built yet", the run goes on and exits 0."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for t in ("loadgen", "sink", "linkem"):
        os.symlink(os.path.join(BIN, t), bindir / t)
    res = str(tmp_path / "results")
    r = run_runner(["bench", "--scenarios", scenario(tmp_path, "nb"),
                    "--profiles", "3g", "--transports", "quic", "--reps",
                    "1", "--results", res], timeout=120,
                   BENCH_BIN=str(bindir))
    assert r.returncode == 0, r.stdout + r.stderr
    c = load(os.path.join(os.path.realpath(os.path.join(res, "latest")),
                          "cells", "nb__3g__quic__r1", "cell.json"))
    assert c["status"] == "failed" and c["failure_kind"] == "not-built"
    assert "not built yet" in c["error"] and "gateway" in c["error"]
    assert "1 not built yet" in r.stdout
