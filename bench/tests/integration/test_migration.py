"""loadgen --migrate-after and SIGUSR1 over TCP and TLS: the connection
is dropped and a new one made from a new local port (or --migrate-addr)
with the persistent MQTT session, which resends what was not
acknowledged (QUIC's own migration is in test_quic.py)."""
import re
import signal
import uuid

import pytest

from conftest import check_doc
from scripts import reconcile


def client_id():
    return "mig-" + uuid.uuid4().hex[:10]


def broker_ports(broker, cid):
    """(address, port) of every connection the broker saw from cid."""
    return re.findall(r"New client connected from ([0-9.]+):(\d+) as " +
                      re.escape(cid) + r" ", broker.read_log())


def one_move(doc):
    """The single move of a one-client document, checked for shape."""
    c = doc["connections"][0]
    m = c["migration"]
    assert m["count"] == 1 and c["migrations"] == [
        {k: v for k, v in m.items() if k != "count"}], c
    assert m["kind"] == "reconnect" and m["result"] == "reconnected", m
    assert m["session_present"] is True, m
    assert 0 < m["down_us"] < 5e6, m
    assert m["at_us"] > 0
    return m


@pytest.mark.parametrize("transport", ["tcp", "tls"])
@pytest.mark.parametrize("mqtt", ["3.1.1", "5"])
def test_reconnect_resumes_the_session(bench, broker, transport, mqtt):
    """After message 100 the connection is dropped and made again from a
    new port; the broker kept the session (clean session off / a session
    expiry), the unacknowledged messages are resent with DUP, TLS
    resumes its session, and the subscriber gets every message."""
    topic, cid = bench.topic(), client_id()
    conn = bench.conn_args(transport)
    sink = bench.start("sink", *bench.conn_args("tcp"), "--topic", topic,
                       "--qos", 1, "--expect", 300)
    # --rate 0: the window is full when the move comes, so there is
    # something to resend
    lg = bench.run("loadgen", *conn, "--mqtt", mqtt, "--client-id", cid,
                   "--count", 300, "--rate", 0, "--qos", 1, "--persistent",
                   "--migrate-after", 100, "--topic", topic)
    assert lg.rc == 0, lg
    check_doc(lg.doc, "loadgen")
    m = one_move(lg.doc)
    assert m["resent"] >= 1, m
    assert m["tls_resumed"] is (True if transport == "tls" else None), m
    t = lg.doc["totals"]
    assert t["acks"] == t["messages_sent"] == t["messages_written"] == 300
    assert lg.doc["connections"][0]["state"] == "closed"
    # the connect figures hold the first set-up only
    assert lg.doc["connect"]["total"]["count"] == 1
    s = sink.result()
    assert s.rc == 0, s
    assert s.doc["sequence"]["lost"] == 0
    p = s.doc["sequence"]["per_publisher"][0]
    assert p["unique"] == 300 and p["highest"] == 299
    assert reconcile.reconcile([lg.doc], [s.doc])["totals"]["lost"] == 0
    seen = broker_ports(broker, cid)
    assert len(seen) == 2 and seen[0][1] != seen[1][1], seen


def test_sigusr1_moves_and_migrate_addr_binds(bench, broker):
    """SIGUSR1 moves every connection at once; with --migrate-addr the
    new one leaves from that address (127.0.0.2, on loopback)."""
    topic, cid = bench.topic(), client_id()
    lg = bench.start("loadgen", *bench.conn_args("tcp"), "--client-id", cid,
                     "--clients", 2, "--rate", 50, "--qos", 1,
                     "--persistent", "--migrate-addr", "127.0.0.2",
                     "--topic", topic + "/{n}")
    # signals are taken lowest number first: the moves begin, then the
    # run stops, and each connection closes once its move is done
    lg.signal(signal.SIGUSR1)
    lg.signal(signal.SIGTERM)
    r = lg.result()
    assert r.rc == 0, r
    assert len(r.doc["connections"]) == 2
    for c in r.doc["connections"]:
        m = c["migration"]
        assert m["count"] == 1 and m["result"] == "reconnected", c
    for i in range(2):
        seen = broker_ports(broker, f"{cid}-{i}")
        assert [a for a, _ in seen] == ["127.0.0.1", "127.0.0.2"], seen


@pytest.mark.parametrize("qos", [0, 1])
def test_flows_written_across_a_drop(bench, qos):
    """Three flows, short and would-block writes (MQB_HOSTILE_IO), a drop
    in the middle: QoS 1 resends what was not acknowledged, so every flow
    writes and delivers all it queued; at QoS 0 what the dropped
    connection had not written is never written (and what was still in
    flight to the broker when it took the session over is lost), and each
    flow's written count still bounds what the subscriber got from it."""
    topic = bench.topic()
    env = {"MQB_HOSTILE_IO": "1", "MQB_HOSTILE_SEED": "7"}
    sink = bench.start("sink", *bench.conn_args("tcp"), "--topic",
                       topic + "/#", "--qos", qos, "--idle-timeout",
                       "500ms")
    lg = bench.run("loadgen", *bench.conn_args("tcp"), "--flows", 3,
                   "--count", 2000, "--rate", 0, "--qos", qos,
                   "--persistent", "--migrate-after", 1000, "--topic",
                   topic + "/{f}", env=env)
    assert lg.rc == 0, lg
    check_doc(lg.doc, "loadgen")
    one_move(lg.doc)
    s = sink.result()
    got = {p["publisher"]: p["unique"]
           for p in s.doc["sequence"]["per_publisher"]}
    for p in lg.doc["publishers"]:
        assert p["queued"] == 2000
        assert got.get(p["id"], 0) <= p["written"] <= p["queued"], (p, got)
        if qos:
            assert got[p["id"]] == p["written"] == 2000, (p, got)
    if qos:
        assert reconcile.reconcile([lg.doc], [s.doc])["totals"]["lost"] \
            == 0


def test_reconnect_needs_a_persistent_session(bench):
    r = bench.run("loadgen", *bench.conn_args("tls"), "--migrate-after",
                  10, "--count", 20, json_out=False)
    assert r.rc == 2, r
    assert len(r.err_lines) == 1 and "--persistent" in r.stderr, r
