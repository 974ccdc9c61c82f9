"""Interoperation with Mosquitto's own clients, both ways: mosquitto_sub
receives exactly what loadgen publishes; sink counts what mosquitto_pub
sends as foreign messages, beside benchmark ones."""
import subprocess

import pytest


def start_mosquitto_sub(bench, topic, count, *extra):
    """mosquitto_sub printing '<length> <hex payload>' per message; returns
    once its SUBACK has arrived (seen in its -d debug output)."""
    # stdbuf: line-buffered stdout, else the SUBACK line sits in its
    # buffer while we wait for it
    p = subprocess.Popen(
        ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(bench.broker.tcp),
         "-t", topic, "-C", str(count), "-W", "30", "-d", "-F", "%l %x",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if "received SUBACK" in line:
            break
    else:
        p.wait()
        pytest.fail(f"mosquitto_sub did not subscribe: {p.stderr.read()}")
    return p


# mosquitto_sub speaks 3.1.1 in the QoS 2 case: with -V 5 -q 2, Mosquitto
# 2.0.11 and mosquitto_sub end in "A network protocol error occurred" as
# soon as QoS 2 messages arrive in a burst, with mosquitto_pub publishers
# just as with ours (10 parallel 'mosquitto_pub -q 2 -V 5 -l': the same).
@pytest.mark.parametrize("qos,mqtt,sub_v", [(0, "3.1.1", "311"),
                                           (1, "5", "5"),
                                           (2, "5", "311")])
def test_mosquitto_sub_receives_loadgen(bench, qos, mqtt, sub_v):
    topic = bench.topic()
    n_clients, count, size = 2, 150, 100
    total = n_clients * count
    sub = start_mosquitto_sub(bench, topic + "/#", total, "-q", str(qos),
                              "-V", sub_v)
    lg = bench.run("loadgen", *bench.conn_args(), "--clients", n_clients,
                   "--count", count, "--rate", 0, "--size", size, "--qos",
                   qos, "--mqtt", mqtt, "--topic", topic + "/{n}")
    out, err = sub.communicate(timeout=30)
    assert lg.rc == 0, lg
    assert sub.returncode == 0, err
    msgs = [l.split() for l in out.splitlines()
            if l and l[0].isdigit()]
    assert len(msgs) == total == lg.doc["totals"]["messages_sent"]
    ids = {c["publisher_id"] for c in lg.doc["connections"]}
    seen = set()
    for length, hexpayload in msgs:
        assert int(length) == size
        b = bytes.fromhex(hexpayload)
        assert len(b) == size
        assert b[:5] == b"MQTB\x02"  # magic and version
        assert b[5] == 0  # no schedule at --rate 0: no due time
        pub = int.from_bytes(b[6:10], "big")
        seq = int.from_bytes(b[10:16], "big")
        assert pub in ids and 0 <= seq < count
        seen.add((pub, seq))
    assert len(seen) == total  # each message once


def test_sink_counts_mosquitto_pub(bench, tmp_path):
    """Foreign payloads are counted (messages and bytes), not errors and
    not in the latency; benchmark messages beside them are unaffected."""
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic + "/#",
                       "--idle-timeout", "1", "--qos", 1)
    lines = [f"line {i:03d} " + "x" * (i % 40) for i in range(60)]
    pub = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(bench.broker.tcp),
         "-t", topic + "/mp", "-q", "1", "-l"],
        input="\n".join(lines) + "\n", text=True, capture_output=True,
        timeout=30)
    assert pub.returncode == 0, pub.stderr
    # a payload that carries our magic but a version we do not know
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"MQTB\x09" + bytes(40))
    pub2 = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(bench.broker.tcp),
         "-t", topic + "/odd", "-q", "1", "-f", str(odd)],
        capture_output=True, timeout=30)
    assert pub2.returncode == 0, pub2.stderr
    # a stray that carries the magic and version, but a header no load
    # generator writes: sequence 2^64 - 1, send time 1 ns after boot. It
    # once made the loss -2 and the latency max the machine's uptime.
    stray = tmp_path / "stray.bin"
    stray.write_bytes(b"MQTB\x01\x00\x00\x00" + (7).to_bytes(4, "big") +
                      b"\xff" * 8 + (1).to_bytes(8, "big"))
    pub3 = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(bench.broker.tcp),
         "-t", topic + "/stray", "-q", "1", "-f", str(stray)],
        capture_output=True, timeout=30)
    assert pub3.returncode == 0, pub3.stderr
    lg = bench.run("loadgen", *bench.conn_args(), "--count", 40, "--rate",
                   0, "--qos", 1, "--topic", topic + "/lg")
    assert lg.rc == 0, lg
    s = sink.result()
    assert s.rc == 0, s
    m = s.doc["messages"]
    assert m["foreign"] == len(lines) + 2
    assert m["foreign_bytes"] == sum(len(l) for l in lines) + 45 + 28
    assert m["bad_version"] == 1
    assert m["invalid"] == 1
    assert m["bench"] == 40
    assert m["received"] == len(lines) + 2 + 40
    assert s.doc["latency"]["count"] == 40
    assert s.doc["latency"]["max_us"] < 10e6
    assert s.doc["sequence"]["publishers"] == 1
    assert s.doc["sequence"]["lost"] == 0
    assert s.doc["status"] == "ok" and s.doc["errors"] == []


def test_count_reached_with_foreign_only(bench):
    """--count counts all messages: mosquitto_pub alone can satisfy it."""
    topic = bench.topic()
    sink = bench.start("sink", *bench.conn_args(), "--topic", topic,
                       "--count", 25, "--qos", 1)
    pub = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(bench.broker.tcp),
         "-t", topic, "-q", "1", "-l"],
        input="".join(f"m{i}\n" for i in range(25)), text=True,
        capture_output=True, timeout=30)
    assert pub.returncode == 0, pub.stderr
    s = sink.result(timeout=30)
    assert s.rc == 0, s
    assert s.doc["stop_reason"] == "count"
    assert s.doc["messages"]["received"] == 25
    assert s.doc["messages"]["foreign"] == 25
    assert s.doc["latency"]["count"] == 0
    assert s.doc["latency"]["p50_us"] is None
