"""loadgen -> Mosquitto -> sink on loopback: every message arrives exactly
once and in order, latency figures are plausible, and the documents carry
what the runner reads."""
import pytest

from conftest import check_doc, check_hist

CLIENTS = 3
COUNT = 400  # per client


def deliver(bench, *, qos, mqtt, transport="tcp", extra_lg=(),
            extra_sink=(), env=None):
    """Run a sink (idle timeout: it must see everything, duplicates
    included, not stop at a count; the messages come back to back, so half
    a second of silence means the end) and a loadgen; return both
    results."""
    topic = bench.topic()
    conn = bench.conn_args(transport)
    sink = bench.start("sink", *conn, "--qos", qos, "--mqtt", mqtt,
                       "--topic", topic + "/#", "--idle-timeout", "500ms",
                       *extra_sink, env=env)
    lg = bench.run("loadgen", *conn, "--qos", qos, "--mqtt", mqtt,
                   "--clients", CLIENTS, "--count", COUNT, "--rate", 0,
                   "--topic", topic + "/{n}", *extra_lg, env=env)
    s = sink.result()
    return lg, s


@pytest.mark.parametrize("transport", ["tcp", "tls", "quic"])
@pytest.mark.parametrize("mqtt", ["3.1.1", "5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_exactly_once_in_order(bench, qos, mqtt, transport):
    lg, s = deliver(bench, qos=qos, mqtt=mqtt, transport=transport)
    assert lg.rc == 0, lg
    assert s.rc == 0, s
    check_doc(lg.doc, "loadgen")
    check_doc(s.doc, "sink")
    sent = lg.doc["totals"]["messages_sent"]
    assert sent == CLIENTS * COUNT
    assert lg.doc["totals"]["connected"] == CLIENTS
    assert lg.doc["config"]["connection"]["mqtt_version"] == \
        ("5.0" if mqtt == "5" else "3.1.1")
    if qos > 0:
        assert lg.doc["totals"]["acks"] == sent
        assert lg.doc["totals"]["unacked"] == 0
        assert lg.doc["ack_latency"]["count"] == sent
        assert 0 < lg.doc["ack_latency"]["p50_us"] < 100000
    m, seq = s.doc["messages"], s.doc["sequence"]
    assert s.doc["stop_reason"] == "idle"
    assert m["received"] == sent
    assert m["bench"] == sent and m["foreign"] == 0
    assert m["bytes"] == lg.doc["totals"]["payload_bytes_sent"]
    assert m["clock_errors"] == 0
    assert seq["publishers"] == CLIENTS
    assert seq["lost"] == 0
    assert seq["duplicates"] == 0
    assert seq["reordered"] == 0
    ids = sorted(c["publisher_id"] for c in lg.doc["connections"])
    assert sorted(p["publisher"] for p in seq["per_publisher"]) == ids
    for p in seq["per_publisher"]:
        assert p["received"] == COUNT and p["highest"] == COUNT - 1
        assert p["first"] == 0


def test_latency_plausible(bench):
    lg, s = deliver(bench, qos=1, mqtt="5")
    assert lg.rc == 0 and s.rc == 0, (lg, s)
    lat = s.doc["latency"]
    check_hist(lat, "latency")
    assert lat["count"] == CLIENTS * COUNT
    assert lat["min_us"] > 0
    assert lat["p50_us"] < 100000  # loopback: far below 100 ms
    assert lat["p50_us"] <= lat["p90_us"] <= lat["p99_us"] <= \
        lat["p99_9_us"] <= lat["max_us"]
    assert lat["mean_us"] <= lat["max_us"]
    # one-way latency cannot exceed the time from first publish to the
    # sink's end
    assert lat["max_us"] / 1e6 < s.doc["end"]["unix"] - \
        lg.doc["start"]["unix"] + 1
    tp = s.doc["throughput"]
    assert tp["messages_per_s"] > 0
    assert tp["first_to_last_s"] > 0
    # connection set-up figures of the sink and the load generator
    c = s.doc["connect"]
    # each step is stamped from the clock when it completes, so even on
    # loopback the TCP connect takes a measurable, non-zero time
    assert 0 < c["tcp_us"] <= c["transport_us"] <= c["total_us"]
    assert 0 < c["mqtt_us"] <= c["total_us"] < 10e6
    for conn in lg.doc["connections"]:
        assert conn["state"] == "closed"
        assert 0 < conn["connect"]["total_us"] < 10e6


def test_raw_file_text(bench, tmp_path):
    raw = tmp_path / "raw.txt"
    lg, s = deliver(bench, qos=0, mqtt="3.1.1",
                    extra_sink=("--raw", raw))
    assert lg.rc == 0 and s.rc == 0, (lg, s)
    lines = raw.read_text().splitlines()
    assert lines[0] == "# recv_ns publisher seq latency_ns size kind " \
        "sched_latency_ns"
    recs = [l.split() for l in lines[1:]]
    assert len(recs) == s.doc["messages"]["received"] == CLIENTS * COUNT
    assert s.doc["raw_records"] == len(recs)
    seen = set()
    for recv_ns, pub, seq, lat, size, kind, sched in recs:
        assert int(lat) > 0 and int(recv_ns) > int(lat)
        assert int(size) == 64
        assert kind in ("first", "in_order")
        assert sched == "-"  # --rate 0: no schedule, no due time
        seen.add((int(pub), int(seq)))
    assert len(seen) == CLIENTS * COUNT
    # the raw latencies are the ones the histogram summarises
    lats = sorted(int(r[3]) for r in recs)
    assert abs(lats[-1] / 1e3 - s.doc["latency"]["max_us"]) < 0.01
    assert abs(lats[0] / 1e3 - s.doc["latency"]["min_us"]) < 0.01
    # no temporary file left next to it
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_raw_file_binary(bench, tmp_path):
    raw = tmp_path / "raw.bin"
    lg, s = deliver(bench, qos=0, mqtt="5",
                    extra_sink=("--raw", raw, "--raw-format", "binary"))
    assert lg.rc == 0 and s.rc == 0, (lg, s)
    data = raw.read_bytes()
    assert data[:8] == b"MQTBRAW2"
    n = s.doc["messages"]["received"]
    assert len(data) == 8 + 48 * n
    seqs = set()
    for i in range(n):
        rec = data[8 + 48 * i: 8 + 48 * (i + 1)]
        seq = int.from_bytes(rec[8:16], "little")
        pub = int.from_bytes(rec[24:28], "little")
        assert int.from_bytes(rec[28:32], "little") == 64
        assert rec[32] in (0, 1)  # first, in order
        assert rec[33:40] == bytes(7)
        assert rec[40:48] == b"\xff" * 8  # no due time at --rate 0
        seqs.add((pub, seq))
    assert len(seqs) == CLIENTS * COUNT


def test_total_split_and_sizes(bench):
    """--total spreads messages over clients; a larger payload keeps its
    size; the header-sized minimum works."""
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic + "/#",
                       "--count", 10 + 7)
    a = bench.run("loadgen", *bench.conn_args(), "--clients", 3,
                  "--total", 10, "--rate", 0, "--size", "4k", "--topic",
                  topic + "/a/{client}")
    b = bench.run("loadgen", *bench.conn_args(), "--total", 7, "--rate",
                  0, "--size", 28, "--topic", topic + "/b")
    s = sink.result()
    assert a.rc == 0 and b.rc == 0 and s.rc == 0, (a, b, s)
    assert sorted(c["sent"] for c in a.doc["connections"]) == [3, 3, 4]
    assert s.doc["stop_reason"] == "count"
    assert s.doc["messages"]["bytes"] == 10 * 4096 + 7 * 28
    assert s.doc["sequence"]["publishers"] == 4
    assert s.doc["sequence"]["lost"] == 0


@pytest.mark.parametrize("mqtt", ["3.1.1", "5"])
def test_large_payloads_and_packet_limit(bench, mqtt):
    """Payloads over the engine's 1 MiB default reach a default sink (its
    limit covers loadgen's largest payload); a sink whose --max-packet is
    below the packet size stops with a clear error instead of counting
    loss."""
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--mqtt", mqtt,
                       "--topic", topic, "--count", 3)
    lg = bench.run("loadgen", *bench.conn_args(), "--mqtt", mqtt,
                   "--count", 3, "--rate", 0, "--size", "2m",
                   "--topic", topic)
    s = sink.result()
    assert lg.rc == 0 and s.rc == 0, (lg, s)
    assert s.doc["messages"]["bytes"] == 3 * 2 * 1024 * 1024
    assert s.doc["config"]["max_packet"] == 64 * 1024 * 1024 + 64 * 1024
    if mqtt == "3.1.1":
        # 3.1.1 has no way to tell the broker: the sink sees the packet
        small = bench.start("sink", *bench.conn_args(), "--mqtt", mqtt,
                            "--topic", topic, "--count", 1,
                            "--max-packet", "1m")
        lg = bench.run("loadgen", *bench.conn_args(), "--mqtt", mqtt,
                       "--count", 1, "--rate", 0, "--size", "2m",
                       "--topic", topic)
        r = small.result()
        assert lg.rc == 0 and r.rc == 1, (lg, r)
        assert "maximum packet size" in r.stderr


@pytest.mark.parametrize("arrival", ["constant", "poisson"])
def test_rate_and_duration(bench, arrival):
    """2 clients at 50/s for 1 s: about 100 messages, all delivered."""
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic + "/#",
                       "--idle-timeout", "500ms")
    lg = bench.run("loadgen", *bench.conn_args(), "--clients", 2, "--rate",
                   50, "--duration", "1s", "--arrival", arrival, "--seed",
                   7, "--qos", 1, "--topic", topic + "/{n}")
    s = sink.result()
    assert lg.rc == 0 and s.rc == 0, (lg, s)
    sent = lg.doc["totals"]["messages_sent"]
    lo, hi = (80, 122) if arrival == "constant" else (50, 160)
    assert lo <= sent <= hi
    assert lg.doc["stop_reason"] == "duration"
    assert s.doc["messages"]["received"] == sent
    assert s.doc["sequence"]["lost"] == 0
    # the achieved rate beside the configured one; every message's lag
    check_doc(lg.doc, "loadgen")
    tp = lg.doc["throughput"]
    assert tp["configured_messages_per_s"] == 100.0
    assert lo <= tp["steady_state"]["messages_per_s"] <= hi
    assert lg.doc["schedule_lag"]["count"] == sent


def test_falling_behind_is_visible(bench):
    """QoS 1 with one message in flight cannot keep up with a million
    messages/s: the window closes the loop. The schedule lag, the late
    messages and the achieved rate say so (the sink's latency cannot: it
    starts at the actual send)."""
    lg = bench.run("loadgen", *bench.conn_args(), "--qos", 1, "--inflight",
                   1, "--rate", 1000000, "--duration", "300ms", "--topic",
                   bench.topic())
    assert lg.rc == 0, lg
    check_doc(lg.doc, "loadgen")
    sent = lg.doc["totals"]["messages_sent"]
    assert sent > 10
    lag = lg.doc["schedule_lag"]
    assert lag["count"] == sent
    assert lag["late_messages"] > sent / 2
    assert lg.doc["connections"][0]["late_messages"] == lag["late_messages"]
    # due times run ahead of the sends all along: by the end far behind
    assert lag["max_us"] > 100e3
    assert lag["p50_us"] > 1e3
    tp = lg.doc["throughput"]
    assert tp["configured_messages_per_s"] == 1e6
    assert tp["steady_state"]["messages_per_s"] < 0.5e6


def test_steady_state_after_ramp_up(bench):
    """4 clients at 100/s, started over 600 ms, then 400 ms more: the whole
    run's rate is diluted by the ramp-up; the steady state (all connected,
    ramp-up over) is the configured 400/s."""
    lg = bench.run("loadgen", *bench.conn_args(), "--clients", 4, "--rate",
                   100, "--ramp-up", "600ms", "--duration", "400ms",
                   "--topic", bench.topic() + "/{n}")
    assert lg.rc == 0, lg
    check_doc(lg.doc, "loadgen")
    tp = lg.doc["throughput"]
    st = tp["steady_state"]
    assert tp["configured_messages_per_s"] == 400.0
    assert 0.59 < st["start_after_s"] < 0.9
    assert 0.1 < st["span_s"] <= 0.41
    assert 340 <= st["messages_per_s"] <= 460
    # about 310 messages over about 1 s
    assert tp["messages_per_s"] < 0.9 * st["messages_per_s"]
    assert st["messages"] < lg.doc["totals"]["messages_sent"]


@pytest.mark.parametrize("transport,qos", [("tcp", 2), ("tls", 1)])
def test_hostile_io(bench, transport, qos):
    """Short reads and writes and would-blocks at random in both binaries
    (the transports' MQB_HOSTILE_IO switch): still every message once, in
    order."""
    env = {"MQB_HOSTILE_IO": "1", "MQB_HOSTILE_SEED": "7"}
    lg, s = deliver(bench, qos=qos, mqtt="5", transport=transport, env=env)
    assert lg.rc == 0, lg
    assert s.rc == 0, s
    sent = lg.doc["totals"]["messages_sent"]
    assert sent == CLIENTS * COUNT
    assert s.doc["messages"]["received"] == sent
    seq = s.doc["sequence"]
    assert seq["lost"] == 0 and seq["duplicates"] == 0
    assert seq["reordered"] == 0


def test_coalescing_sink(bench):
    """--coalesce (for throughput runs) changes when the sink reads, not
    what it counts."""
    lg, s = deliver(bench, qos=0, mqtt="3.1.1",
                    extra_sink=("--coalesce", "200us"))
    assert lg.rc == 0 and s.rc == 0, (lg, s)
    assert s.doc["config"]["coalesce_us"] == 200.0
    assert s.doc["messages"]["received"] == CLIENTS * COUNT
    seq = s.doc["sequence"]
    assert seq["lost"] == 0 and seq["duplicates"] == 0
    assert seq["reordered"] == 0
