"""Figures that cannot hide what happened (issue 8, items 1, 2 and 10):

- latency from the schedule beside latency from the send, so a backlog
  behind a full window shows in the latency; the old header version still
  read; the send path's settings (output-buffer limit, SO_SNDBUF,
  TCP_NODELAY) in every document;
- loss reconciled against what each publisher wrote (scripts/reconcile.py):
  the tail and silent publishers count; the sink drains before it stops;
  publisher ids are random;
- a run in which clients never connected says so and fails; a duration
  starts once every client is up.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, check_doc

sys.path.insert(0, ROOT)
from scripts import reconcile  # noqa: E402  (the module, as the runner)


def read_raw_text(path):
    """[(recv_ns, publisher, seq, latency_ns, size, kind, sched)]."""
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0] == "# recv_ns publisher seq latency_ns size kind " \
        "sched_latency_ns"
    return [l.split() for l in lines[1:]]


# ---- item 1: latency from the schedule, the header, the send path -----------

def test_backlog_shows_in_latency_from_schedule(bench, tmp_path):
    """QoS 1 with one message in flight cannot keep up with a million
    messages/s: messages wait for the window. From the send the latency is
    an ack's worth; from the schedule it grows with the backlog, by what
    loadgen measured as the schedule lag."""
    topic = bench.topic()
    raw = tmp_path / "raw.txt"
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic,
                       "--qos", 1, "--raw", raw)
    lg = bench.run("loadgen", *bench.conn_args(), "--qos", 1, "--inflight",
                   1, "--rate", 1000000, "--duration", "300ms", "--topic",
                   topic)
    sink.signal(signal.SIGTERM)
    s = sink.result()
    assert lg.rc == 0 and s.rc == 0, (lg, s)
    sent = lg.doc["totals"]["messages_sent"]
    assert s.doc["messages"]["received"] == sent
    check_doc(lg.doc, "loadgen")
    check_doc(s.doc, "sink")
    lat, sched = s.doc["latency"], s.doc["latency_from_schedule"]
    assert lat["count"] == sched["count"] == sent
    assert s.doc["messages"]["unscheduled"] == 0
    assert s.doc["messages"]["header_v1"] == 0
    # the backlog: far behind by the end, in the latency from the
    # schedule only
    lag = lg.doc["schedule_lag"]
    assert lag["max_us"] > 50e3
    assert sched["max_us"] > 50e3 and sched["p50_us"] > 5 * lat["p50_us"]
    assert lat["p99_us"] < lag["max_us"]
    # per message: from the schedule = from the send + the lag (to the us)
    recs = read_raw_text(raw)
    assert len(recs) == sent
    diffs = sorted(int(r[6]) - int(r[3]) for r in recs)
    assert diffs[0] >= 0
    assert abs(diffs[-1] / 1e3 - lag["max_us"]) <= 1.001
    assert abs(diffs[len(diffs) // 2] / 1e3 - lag["p50_us"]) < \
        0.02 * lag["p50_us"] + 2


def test_sink_reads_the_old_header(bench, tmp_path):
    """A version 1 payload (the previous loadgen's) is still a benchmark
    message: latency from its send, tracked in the sequence; it has no due
    time, so no latency from the schedule."""
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic,
                       "--qos", 1, "--count", 1, "--raw", tmp_path / "r")
    v1 = tmp_path / "v1.bin"
    v1.write_bytes(b"MQTB\x01\x00\x00\x00" + (4242).to_bytes(4, "big") +
                   (0).to_bytes(8, "big") +
                   time.monotonic_ns().to_bytes(8, "big") + bytes(20))
    pub = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(bench.broker.tcp),
         "-t", topic, "-q", "1", "-f", str(v1)],
        capture_output=True, timeout=30)
    assert pub.returncode == 0, pub.stderr
    s = sink.result()
    assert s.rc == 0, s
    m = s.doc["messages"]
    assert m["bench"] == 1 and m["foreign"] == 0
    assert m["header_v1"] == 1 and m["unscheduled"] == 1
    assert s.doc["latency"]["count"] == 1
    assert 0 < s.doc["latency"]["max_us"] < 10e6
    assert s.doc["latency_from_schedule"]["count"] == 0
    assert s.doc["sequence"]["per_publisher"][0]["publisher"] == 4242
    rec = read_raw_text(tmp_path / "r")
    assert rec[0][1] == "4242" and rec[0][6] == "-"


@pytest.mark.parametrize("transport", ["tcp", "tls", "quic"])
def test_send_path_settings_recorded(bench, transport):
    """Every document records the engine's output-buffer limit, and
    SO_SNDBUF, SO_RCVBUF and TCP_NODELAY as the kernel holds them on each
    connection's socket (QUIC: the UDP socket, where TCP_NODELAY has no
    meaning: null)."""
    topic = bench.topic()
    conn = bench.conn_args(transport)
    sink = bench.start("sink", *conn, "--topic", topic + "/#", "--expect",
                       20)
    lg = bench.run("loadgen", *conn, "--clients", 2, "--count", 10,
                   "--rate", 0, "--topic", topic + "/{n}")
    s = sink.result()
    assert lg.rc == 0 and s.rc == 0, (lg, s)
    check_doc(lg.doc, "loadgen")
    check_doc(s.doc, "sink")
    for doc, n in ((lg.doc, 2), (s.doc, 1)):
        sock = doc["socket"]
        assert sock["requested"] == {"so_sndbuf_bytes": 0,
                                     "so_rcvbuf_bytes": 0,
                                     "tcp_nodelay": True}
        for when in ("at_connect", "at_close"):
            assert sock[when]["connections"] == n, (when, sock)
            assert sock[when]["so_sndbuf_bytes"]["min"] > 0
            assert sock[when]["so_rcvbuf_bytes"]["min"] > 0
            assert sock[when]["tcp_nodelay"] is \
                (None if transport == "quic" else True)
        assert len(sock["sysctl"]["net.ipv4.tcp_wmem"].split()) == 3


# ---- item 2: written per publisher, the drain, the reconciliation -----------

def test_written_per_publisher(bench):
    """loadgen's per-publisher list: queued, written to the transport,
    first and last sequence number; also with --no-per-connection."""
    topic = bench.topic()
    lg = bench.run("loadgen", *bench.conn_args(), "--clients", 3,
                   "--count", 40, "--rate", 0, "--qos", 1, "--topic",
                   topic + "/{n}", "--no-per-connection")
    assert lg.rc == 0, lg
    assert "connections" not in lg.doc
    pubs = lg.doc["publishers"]
    assert len(pubs) == 3
    for i, p in enumerate(pubs):
        assert p["topic"] == f"{topic}/{i}"
        assert p["state"] == "closed"
        assert p["queued"] == p["written"] == 40
        assert p["first_seq"] == 0 and p["last_seq"] == 39
    t = lg.doc["totals"]
    assert t["messages_written"] == 120 and t["messages_unwritten"] == 0
    assert t["unwritten_connection_lost"] == 0


def test_publisher_ids_are_random(bench):
    """Default publisher ids come from getrandom, not from the pid (pids
    repeat across hosts and collide modulo anything)."""
    docs = []
    for _ in range(2):
        r = bench.run("loadgen", *bench.conn_args(), "--clients", 2,
                      "--count", 1, "--rate", 0, "--topic", bench.topic())
        assert r.rc == 0, r
        docs.append(r.doc)
    bases = [d["config"]["publisher_id_base"] for d in docs]
    for d in docs:
        assert d["config"]["publisher_id_source"] == "random"
        # what the pid rule would have given
        assert d["config"]["publisher_id_base"] != \
            (d["meta"]["pid"] & 0xffff) << 16
    assert bases[0] != bases[1]
    r = bench.run("loadgen", *bench.conn_args(), "--count", 1, "--rate", 0,
                  "--topic", bench.topic(), "--id-base", 77)
    assert r.rc == 0, r
    assert r.doc["config"]["publisher_id_source"] == "option"
    assert r.doc["publishers"][0]["id"] == 77


def test_drain_after_duration_keeps_the_tail(bench):
    """A sink whose --duration ends while a loadgen still publishes goes on
    reading until nothing came for the drain time: every message written
    is received, and the reconciliation finds no loss."""
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic + "/#",
                       "--duration", "200ms", "--qos", 1)
    lg = bench.run("loadgen", *bench.conn_args(), "--clients", 2, "--rate",
                   200, "--count", 150, "--qos", 1, "--topic",
                   topic + "/{n}")
    s = sink.result()
    assert lg.rc == 0 and s.rc == 0, (lg, s)
    assert s.doc["messages"]["received"] == 300
    check_doc(s.doc, "sink")
    assert s.doc["stop_reason"] == "duration"
    d = s.doc["drain"]
    assert d["requested_by"] == "duration" and d["ended_by"] == "quiet"
    assert d["auto"] is True and d["quiet_s"] >= 1.0
    assert d["rto_ms"] > 0
    assert d["messages"] > 100  # what a stop at 200 ms would have dropped
    assert s.doc["messages"]["received"] == 300
    r = reconcile.reconcile([lg.doc], [s.doc])
    assert r["status"] == "ok", r
    t = r["totals"]
    assert t["pairs"] == 2 and t["expected"] == 300
    assert t["received"] == 300 and t["lost"] == 0


def test_signal_drains(bench):
    """SIGTERM while a loadgen publishes: the sink drains, so the messages
    still coming count; it stops once nothing came for the quiet time."""
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic,
                       "--qos", 1)
    lg = bench.start("loadgen", *bench.conn_args(), "--rate", 100,
                     "--count", 100, "--qos", 1, "--topic", topic)
    sink.signal(signal.SIGTERM)  # loadgen is connected and publishing
    g = lg.result(timeout=30)
    s = sink.result(timeout=30)
    assert g.rc == 0 and s.rc == 0, (g, s)
    assert s.doc["messages"]["received"] == 100
    assert s.doc["stop_reason"] == "signal"
    d = s.doc["drain"]
    assert d["requested_by"] == "signal" and d["ended_by"] == "quiet"
    assert d["messages"] > 50


def test_second_signal_ends_the_drain(bench):
    """Two signals (SIGTERM and SIGINT, which cannot merge into one): the
    first begins a 30 s drain, the second ends it at once."""
    sink = bench.start("sink", *bench.conn_args(), "--topic", bench.topic(),
                       "--drain", "30s")
    t0 = time.monotonic()
    sink.signal(signal.SIGTERM)
    sink.signal(signal.SIGINT)
    s = sink.result(timeout=20)
    assert time.monotonic() - t0 < 10
    assert s.rc == 0, s
    assert s.doc["stop_reason"] == "signal"
    d = s.doc["drain"]
    assert d["ended_by"] == "signal" and d["auto"] is False
    assert d["quiet_s"] == 30.0 and d["lasted_s"] < 10


def test_expect_stops_at_the_expected_count(bench):
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic + "/#",
                       "--expect", 60, "--qos", 1)
    lg = bench.run("loadgen", *bench.conn_args(), "--clients", 3, "--count",
                   20, "--rate", 0, "--qos", 1, "--topic", topic + "/{n}")
    s = sink.result()
    assert lg.rc == 0 and s.rc == 0, (lg, s)
    assert s.doc["stop_reason"] == "expected"
    assert s.doc["config"]["expect"] == 60
    assert s.doc["messages"]["unique"] == 60
    assert s.doc["drain"] is None


def test_reconcile_counts_tail_and_silent_publishers(bench, tmp_path):
    """A sink that stopped early misses a publisher's tail, and never hears
    a publisher that came after it: its own figures show no loss at all;
    the reconciliation shows both."""
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic + "/#",
                       "--expect", 30, "--qos", 1)
    a = bench.run("loadgen", *bench.conn_args(), "--count", 50, "--rate", 0,
                  "--qos", 1, "--topic", topic + "/a")
    s = sink.result()
    b = bench.run("loadgen", *bench.conn_args(), "--count", 7, "--rate", 0,
                  "--qos", 1, "--topic", topic + "/b")
    assert a.rc == 0 and b.rc == 0 and s.rc == 0, (a, b, s)
    # the sink alone: 30 of 30, nothing lost
    assert s.doc["sequence"]["lost"] == 0
    assert s.doc["sequence"]["publishers"] == 1
    paths = []
    for doc in (a.doc, b.doc, s.doc):
        p = tmp_path / f"{len(paths)}.json"
        p.write_text(json.dumps(doc))
        paths.append(str(p))
    out = tmp_path / "reconciled.json"
    # as a command, and as a module run with -m: the same result
    cmd = subprocess.run([sys.executable,
                          os.path.join(ROOT, "scripts", "reconcile.py"),
                          "--json", str(out), *paths],
                         capture_output=True, text=True, timeout=60)
    assert cmd.returncode == 0, cmd.stderr
    assert cmd.stdout.startswith("reconcile: 2 sink/publisher pairs")
    r = json.loads(out.read_text())
    mod = subprocess.run([sys.executable, "-m", "scripts.reconcile", *paths],
                         capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert mod.returncode == 0, mod.stderr
    assert json.loads(mod.stdout) == r
    assert r == reconcile.reconcile([a.doc, b.doc], [s.doc])
    t = r["totals"]
    assert t["pairs"] == 2
    assert t["expected"] == 57 and t["received"] == 30
    assert t["lost"] == 27
    assert t["lost_tail"] == 27 and t["lost_head"] == t["lost_middle"] == 0
    assert t["silent_publishers"] == 1
    assert r["by_qos"]["1"]["lost"] == 27
    assert r["silent_publishers"][0]["publisher"] == \
        b.doc["publishers"][0]["id"]
    assert r["silent_publishers"][0]["written"] == 7
    assert {p["publisher"] for p in r["lossy_pairs"]} == \
        {a.doc["publishers"][0]["id"], b.doc["publishers"][0]["id"]}
    assert r["publishers"]["unwritten"] == {"connection_lost": 0,
                                            "other": 0}


def _lg_doc(qos, pubs):
    return {"tool": "loadgen", "config": {"connection": {"qos": qos}},
            "publishers": [{"id": i, "topic": t, "state": st, "queued": q,
                            "written": w, "first_seq": 0,
                            "last_seq": q - 1} for i, t, st, q, w in pubs]}


def _sink_doc(qos, filters, heard):
    per = [{"publisher": i, "first": f, "highest": h, "unique": u,
            "received": u + d, "duplicates": d, "lost": h + 1 - u}
           for i, f, h, u, d in heard]
    return {"tool": "sink", "stop_reason": "duration", "drain": None,
            "config": {"connection": {"qos": qos},
                       "filters": [f for f, _ in filters]},
            "subscription": {"filters": [{"filter": f, "granted_qos": g}
                                         for f, g in filters]},
            "sequence": {"per_publisher": per,
                         "per_publisher_truncated": False}}


def test_reconcile_accounting():
    """The arithmetic on made-up documents: unwritten messages of a lost
    connection apart from loss; head, middle and tail; duplicates; the
    effective QoS; publishers nobody described; id collisions fail."""
    lg = _lg_doc(1, [
        (1, "h/a", "lost", 100, 60),     # died with 40 unwritten
        (2, "h/b", "closed", 50, 50),
        (3, "other/c", "closed", 9, 9),  # no filter matches
        (4, "h/d", "closed", 5, 5),
    ])
    sink = _sink_doc(2, [("h/+", 0), ("h/b", 2)], [
        (1, 3, 59, 50, 2),   # 0-2 missing (head), 7 in the middle
        (2, 0, 44, 45, 0),   # 45-49 missing (tail)
        (99, 0, 9, 10, 0),   # nobody's publisher
    ])
    r = reconcile.reconcile([lg], [sink])
    assert r["status"] == "ok" and r["errors"] == []
    assert r["publishers"]["unwritten"] == {"connection_lost": 40,
                                            "other": 0}
    t = r["totals"]
    assert t["pairs"] == 3
    assert t["expected"] == 60 + 50 + 5
    assert t["received"] == 50 + 45
    assert t["lost"] == 10 + 5 + 5
    assert (t["lost_head"], t["lost_middle"], t["lost_tail"]) == (3, 7, 10)
    assert t["duplicates"] == 2
    assert t["silent_publishers"] == 1
    # h/b matches a QoS 2 filter: effective QoS min(1, 2) = 1; the others
    # only the QoS 0 one
    assert r["by_qos"]["1"]["expected"] == 50
    assert r["by_qos"]["0"]["expected"] == 65
    assert r["unknown_publishers"] == [{"sink": 0, "publisher": 99,
                                        "unique_received": 10}]
    assert r["anomalies"] == []
    # a sink that got a sequence number never written: an anomaly
    odd = _sink_doc(0, [("h/#", 0)], [(4, 0, 5, 6, 0)])
    r = reconcile.reconcile([lg], [odd])
    assert r["anomalies"][0]["publisher"] == 4
    # two loadgens with the same id: the figures cannot be trusted
    r = reconcile.reconcile([lg, _lg_doc(0, [(2, "h/x", "closed", 1, 1)])],
                            [sink])
    assert r["status"] == "failed"
    assert r["publishers"]["id_collisions"] == [2]
    assert "more than one loadgen" in r["errors"][0]


def test_reconcile_command_errors(tmp_path):
    """Usage errors and unreadable documents: one line, non-zero exit;
    id collisions: the document is written, status 1."""
    script = os.path.join(ROOT, "scripts", "reconcile.py")

    def run(*args):
        return subprocess.run([sys.executable, script, *map(str, args)],
                              capture_output=True, text=True, timeout=60)

    r = run()
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run(bad)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert "cannot read" in r.stderr
    other = tmp_path / "other.json"
    other.write_text('{"tool": "gateway"}')
    r = run(other)
    assert r.returncode == 1 and "neither" in r.stderr
    lg = tmp_path / "lg.json"
    lg.write_text(json.dumps(_lg_doc(0, [(1, "a", "closed", 1, 1)])))
    sink = tmp_path / "s.json"
    sink.write_text(json.dumps(_sink_doc(0, [("#", 0)], [])))
    r = run(lg)
    assert r.returncode == 2 and "at least one" in r.stderr
    out = tmp_path / "r.json"
    r = run("--json", out, lg, lg, sink)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert json.loads(out.read_text())["status"] == "failed"


# ---- item 10: a run that did not do what was asked says so ------------------

def test_duration_starts_when_every_client_is_up(bench):
    """300 TLS connections, set up one at a time, then held for 1 ms: the
    duration begins when the last is up, so all of them connect (before,
    the duration ran from the start, most never started, and the run
    still said "ok")."""
    lg = bench.run("loadgen", *bench.conn_args("tls"), "--clients", 300,
                   "--max-pending", 1, "--idle", "--duration", "1ms",
                   timeout=120)
    assert lg.rc == 0, lg
    t = lg.doc["totals"]
    assert t["connected"] == 300 and t["not_started"] == 0
    check_doc(lg.doc, "loadgen")
    c = lg.doc["completeness"]
    assert c["ok"] is True and c["never_connected"] == 0
    start = c["duration_started_after_s"] * 1e6
    assert max(x["connected_at_us"] for x in lg.doc["connections"]) <= start
    assert lg.doc["status"] == "ok"
    assert lg.doc["memory"]["per_connection_kib"] > 0


def fake_broker_listener():
    """A listening socket that plays a broker for one client."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(20)
    return srv


def test_clients_that_never_connected_fail_the_run(bench, tmp_path):
    """3 clients over a 60 s ramp-up, stopped by SIGTERM once the first is
    connected: 2 never connected. One line on stderr says how many, the
    exit status is 1, and the document says why."""
    srv = fake_broker_listener()
    port = srv.getsockname()[1]
    js = tmp_path / "lg.json"
    p = subprocess.Popen(
        [bench.exe("loadgen"), "--port", str(port), "--clients", "3",
         "--ramp-up", "60s", "--idle", "--keepalive", "1", "--json",
         str(js)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        conn, _ = srv.accept()
        conn.settimeout(20)
        connect = conn.recv(4096)
        assert connect[:1] == b"\x10", connect  # CONNECT
        conn.sendall(b"\x20\x02\x00\x00")       # CONNACK, accepted
        # its first PINGREQ (keepalive 1 s) proves CONNACK was taken
        assert conn.recv(2) == b"\xc0\x00"
        conn.sendall(b"\xd0\x00")
        p.send_signal(signal.SIGTERM)
        got = b""
        while True:  # DISCONNECT, then its end of the stream
            b = conn.recv(4096)
            if not b:
                break
            got += b
        conn.close()
        out, err = p.communicate(timeout=30)
    finally:
        srv.close()
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert got == b"\xe0\x00", got
    assert p.returncode == 1, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("loadgen: error: ")
    assert "2 of 3 clients never connected" in lines[0]
    doc = json.loads(js.read_text())
    assert doc["status"] == "failed"
    c = doc["completeness"]
    assert c["ok"] is False and c["never_connected"] == 2
    assert c["not_started"] == 2 and c["connected"] == 1
    assert "2 of 3 clients never connected" in c["why"]
    assert any("never connected" in e["message"] for e in doc["errors"])
