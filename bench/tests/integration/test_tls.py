"""loadgen and sink over TLS to Mosquitto's TLS listener, with the CA and
broker certificate generated for this session."""
import pytest


@pytest.mark.parametrize("tls_version,name", [
    ("1.3", None),          # verify the IP address SAN (--host)
    ("1.2", "localhost"),   # verify the DNS SAN given by --tls-name
])
def test_tls_delivery(bench, tls_version, name):
    topic = bench.topic()
    conn = bench.conn_args("tls") + ["--tls-version", tls_version]
    if name:
        conn += ["--tls-name", name]
    sink = bench.start("sink", *conn, "--qos", 1, "--topic", topic + "/#",
                       "--idle-timeout", "1")
    lg = bench.run("loadgen", *conn, "--qos", 1, "--clients", 2, "--count",
                   200, "--rate", 0, "--topic", topic + "/{n}")
    s = sink.result()
    assert lg.rc == 0, lg
    assert s.rc == 0, s
    want = "TLS" + tls_version
    assert lg.doc["connect"]["tls_version"].replace(" ", "") == want
    assert s.doc["connect"]["tls"]["version"].replace(" ", "") == want
    assert lg.doc["config"]["connection"]["transport"] == "tls"
    assert s.doc["messages"]["received"] == 400
    assert s.doc["sequence"]["lost"] == 0
    assert s.doc["sequence"]["duplicates"] == 0
    assert lg.doc["totals"]["acks"] == 400
    # TLS costs bytes: the wire carries more than the MQTT packets
    t = lg.doc["totals"]
    assert t["wire_bytes_out"] > t["mqtt_bytes_out"] > t["payload_bytes_sent"]
    # the connect time splits into transport (TCP + TLS) and MQTT parts
    for c in lg.doc["connections"]:
        t = c["connect"]
        # the TLS handshake takes real time on top of the TCP connect
        assert 0 < t["tcp_us"] < t["transport_us"] < t["total_us"]
        assert abs(t["transport_us"] + t["mqtt_us"] - t["total_us"]) < 0.01
        assert t["total_us"] > 0
