"""How runs start and end: signals, durations, idle connections, ramp-up,
persistent sessions, lost connections, and where the documents go."""
import json
import os
import signal
import stat
import subprocess
import time

import pytest

from conftest import check_doc


def test_sink_sigterm_writes_document(bench):
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic)
    lg = bench.run("loadgen", *bench.conn_args(), "--count", 30, "--rate",
                   0, "--topic", topic)
    assert lg.rc == 0, lg
    time.sleep(0.3)
    sink.signal(signal.SIGTERM)
    s = sink.result(timeout=15)
    assert s.rc == 0, s
    assert s.doc["stop_reason"] == "signal"
    assert s.doc["messages"]["received"] == 30
    assert s.doc["status"] == "ok"


def test_sink_duration_without_messages(bench):
    r = bench.run("sink", *bench.conn_args(), "--topic", bench.topic(),
                  "--duration", "300ms", timeout=15)
    assert r.rc == 0, r
    assert r.doc["stop_reason"] == "duration"
    assert r.doc["messages"]["received"] == 0
    assert r.doc["throughput"]["messages_per_s"] is None


def test_loadgen_sigint_stops_unbounded_run(bench):
    """No count, no duration: publishes until SIGINT, then every message it
    counted as sent has reached the sink."""
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic + "/#",
                       "--idle-timeout", "1", "--qos", 1)
    lg = bench.start("loadgen", *bench.conn_args(), "--clients", 2,
                     "--rate", 200, "--qos", 1, "--topic", topic + "/{n}")
    time.sleep(0.5)
    lg.signal(signal.SIGINT)
    g = lg.result(timeout=20)
    s = sink.result(timeout=20)
    assert g.rc == 0, g
    assert g.doc["stop_reason"] == "signal"
    sent = g.doc["totals"]["messages_sent"]
    assert sent > 50
    assert g.doc["totals"]["acks"] == sent
    assert s.doc["messages"]["received"] == sent
    assert s.doc["sequence"]["lost"] == 0


def test_idle_connections(bench):
    """--idle: connect, keep alive, publish nothing; the document records
    the connections and the memory they took."""
    lg = bench.start("loadgen", *bench.conn_args(), "--idle", "--clients",
                     200, "--keepalive", 5)
    time.sleep(0.2)
    lg.signal(signal.SIGTERM)
    g = lg.result(timeout=20)
    assert g.rc == 0, g
    t = g.doc["totals"]
    assert t["connected"] == 200 and t["failed"] == 0
    assert t["messages_sent"] == 0
    assert all(c["state"] == "closed" for c in g.doc["connections"])
    mem = g.doc["memory"]
    assert mem["rss_connected_kib"] >= mem["rss_start_kib"] > 0
    assert mem["per_connection_kib"] is not None
    assert g.doc["connect"]["total"]["count"] == 200


def test_idle_duration_and_ramp_up(bench):
    r = bench.run("loadgen", *bench.conn_args(), "--idle", "--clients", 10,
                  "--ramp-up", "500ms", "--duration", "200ms", timeout=20)
    assert r.rc == 0, r
    assert r.doc["stop_reason"] == "duration"
    at = sorted(c["connected_at_us"] for c in r.doc["connections"])
    # client i starts at i * 50 ms
    assert at[0] < 40e3
    assert 400e3 < at[-1] < 700e3
    gaps = [b - a for a, b in zip(at, at[1:])]
    assert min(gaps) > 20e3


def test_persistent_session(bench):
    """A persistent subscriber gets what was published while it was away,
    and sees session_present on its return."""
    topic = bench.topic()
    cid = "persist-" + topic.replace("/", "-")
    args = [*bench.conn_args(), "--topic", topic, "--qos", 1, "--mqtt", "5",
            "--persistent", "--client-id", cid, "--session-expiry", 60]
    r = bench.run("sink", *args, "--duration", "100ms", timeout=15)
    assert r.rc == 0, r
    assert r.doc["connect"]["session_present"] is False
    lg = bench.run("loadgen", *bench.conn_args(), "--count", 50, "--rate",
                   0, "--qos", 1, "--topic", topic)
    assert lg.rc == 0, lg
    r = bench.run("sink", *args, "--count", 50, timeout=15)
    assert r.rc == 0, r
    assert r.doc["connect"]["session_present"] is True
    assert r.doc["messages"]["received"] == 50
    assert r.doc["sequence"]["lost"] == 0
    # clean up the session on the broker
    bench.run("sink", *bench.conn_args(), "--topic", topic, "--client-id",
              cid, "--duration", "50ms", timeout=15)


def test_json_to_stdout(bench):
    topic = bench.topic()
    r = bench.run("loadgen", *bench.conn_args(), "--count", 3, "--rate", 0,
                  "--topic", topic, json_out=False, timeout=15)
    assert r.rc == 0, r
    doc = json.loads(r.stdout)
    assert doc["tool"] == "loadgen"
    assert doc["totals"]["messages_sent"] == 3


def test_json_file_atomic_and_unwritable(bench, tmp_path):
    out = tmp_path / "sub" / "lg.json"
    r = bench.run("loadgen", *bench.conn_args(), "--count", 1, "--rate",
                  0, "--topic", bench.topic(), "--json", out,
                  json_out=False, timeout=15)
    assert r.rc == 1, r
    lines = r.err_lines
    assert len(lines) == 1 and "cannot write" in lines[0], r.stderr
    os.mkdir(tmp_path / "sub")
    r = bench.run("loadgen", *bench.conn_args(), "--count", 1, "--rate",
                  0, "--topic", bench.topic(), "--json", out,
                  json_out=False, timeout=15)
    assert r.rc == 0, r
    assert json.loads(out.read_text())["status"] == "ok"
    assert os.listdir(tmp_path / "sub") == ["lg.json"]


def idle_memory(bench, qos, n=500):
    lg = bench.start("loadgen", *bench.conn_args(), "--idle", "--clients",
                     n, "--qos", qos, "--no-per-connection")
    lg.signal(signal.SIGTERM)
    g = lg.result(timeout=20)
    assert g.rc == 0, g
    assert g.doc["totals"]["connected"] == n
    return g.doc["memory"]


def test_idle_memory_does_not_depend_on_qos(bench):
    """The QoS changes nothing an idle connection holds: the per-connection
    figure must not carry the load generator's ack histograms (31 KiB
    each), which only a connection that receives acks gets."""
    m0 = idle_memory(bench, 0)
    m1 = idle_memory(bench, 1)
    assert m0["per_connection_kib"] > 0 and m1["per_connection_kib"] > 0
    assert abs(m1["per_connection_kib"] - m0["per_connection_kib"]) < 4, \
        (m0, m1)
    assert m1["ack_histograms_kib"] == 0


def test_byte_counts_of_lost_connections(bench):
    """Connections the broker drops (a client with the same id takes the
    session over) still report the bytes they moved."""
    topic = bench.topic()
    cid = "lost-" + topic.replace("/", "-")
    conn = bench.conn_args()
    sink = bench.start("sink", *conn, "--client-id", cid + "-s", "--topic",
                       topic)
    lg = bench.start("loadgen", *conn, "--client-id", cid, "--rate", 200,
                     "--qos", 1, "--topic", topic)
    time.sleep(0.2)
    for c in (cid, cid + "-s"):
        subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p",
                        str(bench.broker.tcp), "-i", c, "-t", topic + "/x",
                        "-E"], capture_output=True, timeout=10, check=True)
    g = lg.result(timeout=20)
    s = sink.result(timeout=20)
    assert g.rc == 1, g
    assert s.rc == 1, s
    c = g.doc["connections"][0]
    assert c["state"] == "lost"
    assert c["sent"] > 10
    # what the dead connection never wrote is counted apart from loss
    p = g.doc["publishers"][0]
    assert p["state"] == "lost" and p["queued"] == c["sent"]
    assert 0 < p["written"] == c["written"] <= p["queued"]
    assert g.doc["totals"]["unwritten_connection_lost"] == \
        p["queued"] - p["written"]
    assert g.doc["completeness"]["ok"] is False
    assert g.doc["completeness"]["lost"] == 1
    assert c["wire_bytes_out"] >= c["mqtt_bytes_out"] > c["payload_bytes"]
    assert c["wire_bytes_in"] > 0
    assert g.doc["totals"]["wire_bytes_out"] == c["wire_bytes_out"]
    t = s.doc["transfer"]
    assert s.doc["messages"]["bytes"] > 0
    assert t["wire_bytes_in"] >= t["mqtt_bytes_in"] > \
        s.doc["messages"]["bytes"]
    assert t["wire_bytes_out"] > 0


def test_outputs_to_dev_null(bench):
    """A device is written to, never replaced by a regular file (as root,
    a rename over /dev/null would break the machine)."""
    topic = bench.topic()
    r = bench.run("loadgen", *bench.conn_args(), "--count", 3, "--rate", 0,
                  "--topic", topic, "--json", "/dev/null", json_out=False,
                  timeout=15)
    assert r.rc == 0, r
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    r = bench.run("sink", *bench.conn_args(), "--topic", topic,
                  "--duration", "50ms", "--json", "/dev/null", "--raw",
                  "/dev/null", "--ready-file", "/dev/null", json_out=False,
                  timeout=15)
    assert r.rc == 0, r
    assert r.stdout == ""
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not [n for n in os.listdir("/dev") if n.startswith("null.tmp")]


def test_outputs_through_symlinks(bench, tmp_path):
    """A symbolic link is followed: its target gets the new file, the link
    stays a link (JSON, raw file and ready file alike)."""
    links = {}
    for name in ("lg.json", "sink.json", "raw.txt", "ready"):
        target = tmp_path / ("real-" + name)
        target.write_text("old\n")
        link = tmp_path / name
        link.symlink_to(target)
        links[name] = (link, target)
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic,
                       "--count", 3, "--raw", links["raw.txt"][0])
    r = bench.run("loadgen", *bench.conn_args(), "--count", 3, "--rate", 0,
                  "--topic", topic, "--json", links["lg.json"][0],
                  "--ready-file", links["ready"][0], json_out=False,
                  timeout=15)
    assert r.rc == 0, r
    s = sink.result()
    assert s.rc == 0, s
    # the sink's own document, through a link as well
    r2 = bench.run("sink", *bench.conn_args(), "--topic", topic,
                   "--duration", "50ms", "--json", links["sink.json"][0],
                   json_out=False, timeout=15)
    assert r2.rc == 0, r2
    for link, target in links.values():
        assert link.is_symlink(), link
        assert os.readlink(link) == str(target)
        assert stat.S_ISREG(os.lstat(target).st_mode)
    assert json.loads(links["lg.json"][1].read_text())["tool"] == "loadgen"
    assert json.loads(links["sink.json"][1].read_text())["tool"] == "sink"
    assert links["ready"][1].read_text() == "ready\n"
    raw = links["raw.txt"][1].read_text().splitlines()
    assert raw[0].startswith("#") and len(raw) == 1 + 3
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_json_to_fifo(bench, tmp_path):
    """A named pipe (what /dev/stdout is under a shell pipe) is written to
    directly: the reader gets the document, the pipe stays a pipe."""
    fifo = tmp_path / "doc.fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE,
                              text=True)
    try:
        r = bench.run("loadgen", *bench.conn_args(), "--count", 2, "--rate",
                      0, "--topic", bench.topic(), "--json", fifo,
                      json_out=False, timeout=15)
        assert r.rc == 0, r
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        out, _ = reader.communicate(timeout=10)
        doc = json.loads(out)
        check_doc(doc, "loadgen")
        assert doc["totals"]["messages_sent"] == 2
    finally:
        reader.kill()
        reader.wait()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_cycles_reconnect_and_keep_sequence(bench, transport):
    """--cycles: every client connects, publishes, disconnects, three
    times, starting one at a time (--max-pending 1); sequence numbers go on
    across cycles, so the sink sees every publisher whole; TLS resumes."""
    topic = bench.topic()
    conn = bench.conn_args(transport)
    sink = bench.start("sink", *conn, "--topic", topic + "/#", "--qos", 1,
                       "--count", 18)
    lg = bench.run("loadgen", *conn, "--clients", 3, "--max-pending", 1,
                   "--cycles", 3, "--count", 2, "--qos", 1, "--rate", 0,
                   "--topic", topic + "/{n}")
    assert lg.rc == 0, lg
    cyc = lg.doc["cycles"]
    assert cyc["done"] == 9
    assert cyc["wake_to_done"]["count"] == 9
    assert cyc["wire_bytes"]["count"] == 9
    assert cyc["wire_bytes"]["min"] > 0
    assert lg.doc["totals"]["acks"] == 18
    assert len(lg.doc["connections"]) == 3
    for c in lg.doc["connections"]:
        assert c["cycles_begun"] == 3 and c["state"] == "closed"
    # every connection of every cycle in each part's histogram, with
    # buckets, so that medians over cycles merge across processes
    cn = lg.doc["connect"]
    for part in ("tcp", "transport", "handshake", "mqtt", "total"):
        h = cn[part]
        assert h["count"] == 9, part
        assert sum(n for _, n in h["buckets"]) == 9, part
    if transport == "tcp":
        assert cn["handshake"]["max_us"] < 1000    # no handshake after TCP
    else:
        assert cn["handshake"]["min_us"] > 0
        assert cn["transport"]["mean_us"] == pytest.approx(
            cn["tcp"]["mean_us"] + cn["handshake"]["mean_us"], rel=1e-6)
    s = sink.result()
    assert s.rc == 0, s
    assert s.doc["sequence"]["lost"] == 0
    assert len(s.doc["sequence"]["per_publisher"]) == 3
    for p in s.doc["sequence"]["per_publisher"]:
        assert p["received"] == 6 and p["highest"] == 5
