"""How runs start and end: signals, durations, idle connections, ramp-up,
persistent sessions, and where the document goes."""
import json
import os
import signal
import time


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
