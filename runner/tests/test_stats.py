"""Statistics and per-cell metrics on numbers worked out by hand."""
import math

import pytest

from runner import metrics, stats


def test_mean_ci_student_t():
    ci = stats.mean_ci([10.0, 12.0, 14.0])
    assert ci["n"] == 3 and ci["mean"] == 12.0
    # sd 2, t(2) = 4.303: half-width 4.303 * 2 / sqrt(3)
    h = 4.303 * 2 / math.sqrt(3)
    assert ci["lo"] == pytest.approx(12 - h) and ci["hi"] == pytest.approx(
        12 + h)
    one = stats.mean_ci([5.0, None])
    assert one == {"n": 1, "mean": 5.0, "lo": 5.0, "hi": 5.0, "sd": None}
    assert stats.mean_ci([None]) is None
    assert stats.t975(200) == pytest.approx(1.972, abs=0.003)


def test_overlap_and_wilson():
    a, b = {"lo": 1, "hi": 3}, {"lo": 2.5, "hi": 4}
    assert stats.overlap(a, b) and not stats.overlap(a, {"lo": 3.1,
                                                         "hi": 5})
    p, lo, hi = stats.wilson(15, 1000)
    assert p == 0.015 and lo < 0.015 < hi
    assert lo == pytest.approx(0.0091, abs=5e-4)
    assert hi == pytest.approx(0.0246, abs=5e-4)


def test_buckets_merge_and_quantiles():
    b = metrics.merge_buckets([{"buckets": [[1000, 2], [2000, 2]]},
                               {"buckets": [[2000, 1], [10000, 5]]}])
    assert b == {1000: 2, 2000: 3, 10000: 5}
    q = metrics.bucket_quantiles(b, (0.2, 0.5, 0.99))
    assert q == {0.2: 1.0, 0.5: 2.0, 0.99: 10.0}    # microseconds


def _hist(values_us):
    """A loadgen histogram of exact values (us), buckets in ns."""
    v = sorted(values_us)
    b = {}
    for x in v:
        b[int(x * 1000)] = b.get(int(x * 1000), 0) + 1
    return {"count": len(v), "mean_us": sum(v) / len(v), "min_us": v[0],
            "max_us": v[-1], "p50_us": v[(len(v) - 1) // 2],
            "p90_us": v[-1], "buckets": sorted([k, n] for k, n in
                                               b.items())}


def _cycled(tcp, hs, mqtt):
    """A loadgen document of one client that reconnected (--cycles):
    its connection list holds only the last cycle, the histograms hold
    them all."""
    tot = [a + b + c for a, b, c in zip(tcp, hs, mqtt)]
    last = {"tcp_us": tcp[-1], "transport_us": tcp[-1] + hs[-1],
            "mqtt_us": mqtt[-1], "total_us": tot[-1]}
    return {"totals": {"connections": 1, "connected": 1, "failed": 0},
            "cycles": {"done": len(tcp)},
            "connect": {"tcp": _hist(tcp), "handshake": _hist(hs),
                        "transport": _hist([a + b for a, b in
                                            zip(tcp, hs)]),
                        "mqtt": _hist(mqtt), "total": _hist(tot)},
            "connections": [{"connect": last}]}


def test_connect_parts_are_medians_over_every_cycle():
    """Two processes of a cycling client: each part's median is over all
    six connections, not over the two last ones the lists keep."""
    a = _cycled([80e3, 81e3, 90e3], [85e3, 86e3, 200e3], [80e3] * 3)
    b = _cycled([82e3, 83e3, 300e3], [84e3, 87e3, 95e3], [81e3] * 3)
    ms = metrics.connect([a, b])["ms"]
    assert ms["tcp"]["n"] == 6 and ms["handshake"]["n"] == 6
    # sorted tcp: 80 81 82 83 90 300 -> the third of six (ceil(0.5 x 6))
    assert ms["tcp"]["median"] == pytest.approx(82.0)
    assert ms["handshake"]["median"] == pytest.approx(86.0)
    assert ms["mqtt"]["median"] == pytest.approx(80.0)
    assert ms["tcp"]["max"] == pytest.approx(300.0)
    # an older document (no buckets in the parts) still gives a mean
    old = _cycled([80e3, 90e3], [85e3, 95e3], [80e3, 80e3])
    for k in ("tcp", "handshake", "mqtt"):
        del old["connect"][k]["buckets"]
    del old["connect"]["handshake"]
    m = metrics.connect([old])["ms"]
    assert m["handshake"]["mean"] == pytest.approx(90.0)
    assert m["handshake"]["median"] is None
    assert m["tcp"]["median"] == pytest.approx(80.0)    # its own p50


def _pub(pid, topic, written, queued=None, state="closed"):
    return {"id": pid, "topic": topic, "state": state,
            "queued": written if queued is None else queued,
            "written": written}


def test_delivery_counts_the_tail_and_by_qos():
    """Through scripts/reconcile.py: the tail a sink cannot see counts,
    what was never written is apart, QoS is the effective one."""
    lg = [{"config": {"connection": {"qos": 1}},
           "publishers": [_pub(1, "a/x", 10, queued=12),
                          _pub(2, "b/x", 5)]},
          {"config": {"connection": {"qos": 0}},
           "publishers": [_pub(3, "a/y", 4)]}]
    sink = {"config": {"connection": {"qos": 2}, "filters": ["a/#"]},
            "subscription": {"filters": [{"filter": "a/#",
                                          "granted_qos": 2}]},
            "sequence": {"per_publisher": [
                {"publisher": 1, "first": 0, "highest": 7, "unique": 8,
                 "duplicates": 1},
                {"publisher": 3, "first": 0, "highest": 3, "unique": 4,
                 "duplicates": 0}]}}
    d = metrics.delivery(lg, [sink])
    # publisher 2 (b/x) is not subscribed; publisher 1 lost its last 2
    assert d["expected"] == 14 and d["received"] == 12 and d["lost"] == 2
    assert d["lost_tail"] == 2
    assert d["by_qos"]["1"]["expected"] == 10
    assert d["by_qos"]["1"]["lost"] == 2
    assert d["by_qos"]["0"]["ratio"] == 1.0
    assert d["unwritten"]["other"] == 2          # queued 12, wrote 10
    assert d["reconcile_status"] == "ok"


def test_wire_per_message_and_connection():
    link = {"links": {"bottleneck": {
        "left_to_right": {"frames_in": 10, "bytes_in": 1000},
        "right_to_left": {"frames_in": 5, "bytes_in": 400}}}}
    w = metrics.wire(link, messages=7, connections=2, payload_bytes=700)
    assert w["bytes"] == 1400 and w["bytes_per_message"] == 200
    assert w["bytes_per_connection"] == 700
    w = metrics.wire(link, messages=0, connections=2, payload_bytes=0)
    assert w["bytes_per_connection"] == 700 and w["frames_per_connection"] \
        == 7.5


def _flow(spikes_at, n=100, base=10.0, step=20.0):
    """A flow with a message every `step` ms, latency base, and spikes
    (5 x base) at the given message indices."""
    return [(i * step, base * (5 if i in spikes_at else 1))
            for i in range(n)]


def test_hol_isolated_and_blocked_together():
    iso = metrics.hol({1: _flow({10, 40}), 2: _flow({70, 90})})
    assert iso["coincidence"] == 0.0
    together = metrics.hol({1: _flow({10, 40, 70}), 2: _flow({10, 40, 70})})
    assert together["coincidence"] == 1.0
    assert together["correlation"] == pytest.approx(1.0)
    assert together["max_gap_ms"] == pytest.approx(20.0)
    one = metrics.hol({1: _flow(set(), step=30.0)})
    assert one["max_gap_ms"] == pytest.approx(30.0)
    assert one["coincidence"] is None and one["spread_p50_ms"] is None
    assert metrics.hol({}) is None


def test_link_counters_in_one_format_for_both_backends():
    # linkem's JSON (bench/linkem/linkem.c): histograms with *_us fields,
    # the process's resources as loadgen and sink report them
    linkem = {"backend": "userspace", "links": {"bottleneck": {
        "a2b": {"frames_in": 10, "bytes_in": 1000, "frames_out": 9,
                "bytes_out": 900, "dropped_loss": 1, "dropped_queue": 0,
                "queue_delay": {"count": 9, "p99_us": 5.0, "max_us": 7.0},
                "timing_error": {"count": 9, "p99_us": 20.0,
                                 "max_us": 30.0}},
        "b2a": {"frames_in": 5, "bytes_in": 300, "frames_out": 5,
                "bytes_out": 300, "dropped_loss": 0, "dropped_queue": 0},
        "resources": {"cpu_user_s": 0.1, "cpu_sys_s": 0.05,
                      "cpu_total_s": 0.15, "max_rss_kib": 2000}}}}
    u = metrics.normalize_link(linkem)["links"]["bottleneck"]
    assert u["left_to_right"]["frames_in"] == 10
    assert u["left_to_right"]["dropped"] == 1
    assert u["left_to_right"]["queue_delay_p99_us"] == 5.0
    assert u["left_to_right"]["timing_error_max_us"] == 30.0
    assert u["right_to_left"]["bytes_out"] == 300
    assert u["emulator"]["cpu_s"] == pytest.approx(0.15)
    assert u["emulator"]["max_rss_kib"] == 2000
    # tc -s -j qdisc show, netem in two stages (topologies/backends.py):
    # the root 1: drops for loss, its child 10: for the queue and sends
    netem = {"backend": "netem", "links": {"bottleneck": {
        "left_to_right": {"interface": "mqbs1-bn", "tc": [
            {"kind": "netem", "handle": "1:", "root": True, "bytes": 1100,
             "packets": 11, "drops": 1, "overlimits": 0, "requeues": 0,
             "backlog": 0, "qlen": 0},
            {"kind": "netem", "handle": "10:", "parent": "1:1",
             "bytes": 900, "packets": 9, "drops": 2, "overlimits": 0,
             "requeues": 0, "backlog": 0, "qlen": 0}]},
        "right_to_left": {"interface": "mqbs2-bn", "tc": None}}}}
    n = metrics.normalize_link(netem)["links"]["bottleneck"]
    assert n["left_to_right"]["frames_in"] == 12
    assert n["left_to_right"]["frames_out"] == 9
    assert n["left_to_right"]["dropped_loss"] == 1
    assert n["left_to_right"]["dropped_queue"] == 2
    assert n["left_to_right"]["dropped"] == 3
    assert n["left_to_right"]["bytes_out"] == 900
    assert n["left_to_right"]["bytes_in"] is None     # netem cannot tell
    assert n["right_to_left"]["frames_out"] is None
    # a profile with neither rate nor queue: the root stage alone
    one = {"backend": "netem", "links": {"bottleneck": {
        "left_to_right": {"interface": "mqbs1-bn", "tc": [
            {"kind": "netem", "handle": "1:", "bytes": 900, "packets": 9,
             "drops": 1}]}}}}
    o = metrics.normalize_link(one)["links"]["bottleneck"]["left_to_right"]
    assert (o["frames_in"], o["frames_out"], o["dropped_loss"],
            o["dropped_queue"]) == (10, 9, 1, 0)
    for d in ("left_to_right", "right_to_left"):
        assert set(metrics.DIR_KEYS) <= set(n[d]) and \
            set(metrics.DIR_KEYS) <= set(u[d])


def test_migration_gap_around_the_move():
    """The delivery gap is taken around the move, from the last delivery
    before it to the first message sent after it was over: a longer gap
    elsewhere in the flow (a loss) does not count, a resent old message
    delivered early does not end it."""
    def doc(pid, move):
        return {"connections": [{"publisher_id": pid,
                                 "migrations": [move]}]}
    tcp = doc(7, {"kind": "reconnect", "result": "reconnected",
                  "at_ns": 1_000_050_000_000, "down_us": 120_000.0,
                  "resent": 2, "messages_delayed": 1})
    quic = doc(8, {"kind": "migration", "result": "validated",
                   "at_ns": 1_000_050_000_000,
                   "path_validation_us": 45_000.0,
                   "sent_before_validation": 3})
    # (receive time, latency) in ms on the shared clock: every 100 ms,
    # a 500 ms hole at 10 s before (a loss), the move at 1,000,050 ms,
    # done 120 ms later; after it a resent message (sent long before),
    # the first one sent after the move, and a later 600 ms hole
    base = 1_000_000.0
    r7 = [(base - 10_000 + i * 100, 40.0) for i in range(5)] + \
        [(base - 10_000 + 900, 40.0), (base, 40.0), (base + 60, 400.0),
         (base + 400, 40.0), (base + 1000, 40.0)]
    t8 = [base, base + 100, base + 200]
    sink = {7: r7, 8: [(t, 40.0) for t in t8]}
    m = metrics.migration([tcp, quic], [sink])
    assert m["moves"] == 2 and m["done"] == 2
    assert m["each"][0]["gap_ms"] == pytest.approx(340.0)
    assert m["each"][1]["gap_ms"] == pytest.approx(100.0)
    assert m["gap_ms"] == pytest.approx(340.0)
    assert m["down_ms"] == pytest.approx(120.0)
    assert m["path_validation_ms"] == pytest.approx(45.0)
    assert m["resent"] == 2 and m["delayed"] == 4
    assert metrics.migration([{"connections": [{}]}]) is None


def test_p50_against_the_same_cell_at_zero_loss():
    """Each lossy cell's p50 is divided by its twin's at 0 % loss: same
    scenario, other sweep values, profile, transport and repetition; a
    cell without a twin, or not sweeping loss, gets nothing."""
    from runner.aggregate import vs_lossless

    def row(p50, rep=1, transport="tcp", **values):
        return {"scenario": "hol", "profile": "4g", "transport": transport,
                "rep": rep, "metrics": {"latency": {"p50_ms": p50}},
                "cell": {"values": values}}
    rows = [row(20.0, arm="one", loss="0%"),
            row(30.0, arm="one", loss="2%"),          # its twin: 20
            row(25.0, arm="one", loss="2%", rep=2),   # rep 2 has no 0 %
            row(10.0, arm="per", loss="0%"),
            row(11.0, arm="per", loss="2%"),          # its twin: 10
            row(40.0, arm="per", loss="2%", transport="quic"),
            row(50.0, arm="per")]                     # no loss sweep
    vs_lossless(rows)
    got = [r["metrics"].get("p50_vs_lossless") for r in rows]
    assert got == [None, 1.5, None, None, pytest.approx(1.1), None, None]


def test_bar_labels_name_the_sweeps_once():
    """A swept scenario's bar groups are labelled by their values and the
    axis names the sweeps; a scenario without sweeps keeps the profiles,
    even when the run's other scenarios have variants."""
    from runner.aggregate import _variant_axis
    hol = [("arm=one,flows=2,loss=2%", "4g", "m", None),
           ("arm=per,flows=8,loss=0%", "4g", "m", None)]
    assert _variant_axis(hol) == (["one 2 2%", "per 8 0%"],
                                  "arm, flows, loss (link profile 4g)")
    two = [("mode=full", "3g", "m", None), ("mode=full", "4g", "m", None)]
    assert _variant_axis(two) == (["3g full", "4g full"],
                                  "link profile, mode")
    plain = [("", "3g", "m", None), ("", "wifi", "m", None)]
    assert _variant_axis(plain) == (["3g", "wifi"], "link profile")
