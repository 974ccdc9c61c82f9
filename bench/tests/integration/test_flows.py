"""loadgen --flows: several independent topic flows on one connection and
one MQTT session, each a publisher of its own (the head-of-line
experiment's one-connection arm)."""
import pytest

from conftest import check_doc
from scripts import reconcile

CLIENTS, FLOWS, COUNT, ID_BASE = 2, 3, 20, 5000


def raw_ids(path):
    """Publisher ids of the sink's raw records, in receive order."""
    return [int(l.split()[1]) for l in path.read_text().splitlines()
            if not l.startswith("#")]


@pytest.mark.parametrize("transport", ["tcp", "tls", "quic"])
def test_flows_share_one_session(bench, transport, tmp_path):
    """Each client's one connection carries three flows: each has its own
    publisher id (id-base + client x flows + flow), topic ({f}), sequence
    numbers and written count; --rate and --count are per flow; the flows
    take turns in the order they are due (QUIC: all on one stream)."""
    topic = bench.topic()
    raw = tmp_path / "raw.txt"
    conn = bench.conn_args(transport)
    total = CLIENTS * FLOWS * COUNT
    before = bench.gateway.stats() if transport == "quic" else None
    sink = bench.start("sink", *conn, "--topic", topic + "/#", "--qos", 1,
                       "--expect", total, "--raw", raw)
    lg = bench.run("loadgen", *conn, "--clients", CLIENTS, "--flows",
                   FLOWS, "--count", COUNT, "--rate", 200, "--qos", 1,
                   "--id-base", ID_BASE, "--topic", topic + "/{n}/{f}")
    assert lg.rc == 0, lg
    check_doc(lg.doc, "loadgen")
    t = lg.doc["totals"]
    assert t["connections"] == t["connected"] == CLIENTS
    assert t["messages_sent"] == t["messages_written"] == total
    assert lg.doc["config"]["rate_per_flow"] == 200
    assert lg.doc["config"]["rate_per_client"] == 200 * FLOWS
    assert lg.doc["throughput"]["configured_messages_per_s"] == \
        200 * FLOWS * CLIENTS
    pubs = lg.doc["publishers"]
    assert [(p["id"], p["topic"], p["client"], p["flow"]) for p in pubs] == \
        [(ID_BASE + i * FLOWS + f, f"{topic}/{i}/{f}", i, f)
         for i in range(CLIENTS) for f in range(FLOWS)]
    for p in pubs:
        assert p["queued"] == p["written"] == COUNT, p
        assert (p["first_seq"], p["last_seq"]) == (0, COUNT - 1)
    for c in lg.doc["connections"]:
        assert c["sent"] == FLOWS * COUNT
        assert [f["publisher_id"] for f in c["flows"]] == \
            [ID_BASE + c["index"] * FLOWS + f for f in range(FLOWS)]
        assert all(f["sent"] == f["written"] == COUNT for f in c["flows"])
    s = sink.result()
    assert s.rc == 0, s
    seq = s.doc["sequence"]
    assert seq["publishers"] == CLIENTS * FLOWS
    assert seq["lost"] == seq["duplicates"] == seq["reordered"] == 0
    for p in seq["per_publisher"]:
        assert p["received"] == COUNT, p
    # one stream keeps order, and the flows were due in turn (flow f a
    # third of a period after flow f - 1)
    ids = raw_ids(raw)
    mine = list(range(ID_BASE, ID_BASE + FLOWS))
    assert [i for i in ids if i in mine] == mine * COUNT
    r = reconcile.reconcile([lg.doc], [s.doc])
    assert r["totals"]["expected"] == r["totals"]["received"] == total
    if before is not None:
        # a connection and a stream per client, and the sink's
        after = bench.gateway.stats()
        assert after["quic"]["connections_total"] - \
            before["quic"]["connections_total"] == CLIENTS + 1
        assert after["relay"]["streams"] - before["relay"]["streams"] == \
            CLIENTS + 1


@pytest.mark.parametrize("args,words", [
    (("--flows", "0"), "--flows"),
    (("--flows", "2", "--idle"), "idle"),
    (("--flows", "3", "--total", "2"), "every flow"),
    (("--flows", "2", "--topic", "a/{g}"), "{f}"),
    (("--flows", "3", "--clients", "2", "--id-base", "4294967291"),
     "32-bit"),
])
def test_flows_user_errors(bench, args, words):
    r = bench.run("loadgen", *bench.conn_args("tcp"), *args,
                  json_out=False)
    assert r.rc == 2, r
    assert len(r.err_lines) == 1 and words in r.stderr, r
