"""A cell's figures, computed from the JSON documents its processes wrote
and from the link's counters; pure functions, used when a cell ends and
again by the aggregation (which never needs anything but JSON).

Definitions (they are repeated in the report):

  connect      per connection, loadgen's split: TCP handshake (SYN sent
               to SYN-ACK), transport handshake (TLS after TCP; QUIC's
               whole handshake; 0 for plain TCP), MQTT (transport ready
               to CONNACK), total = first packet sent to CONNACK
               received.
  latency      one-way, publisher's send() to the subscriber's read, from
               the payload's CLOCK_MONOTONIC stamp (hosts share the
               clock); every delivery at every subscriber counts once.
  delivery     scripts/reconcile.py, per (subscriber, publisher) whose
               topic the subscriber's filters match: expected = messages
               the publisher wrote, received = distinct sequence numbers
               the subscriber got from it, lost = expected - received (the
               tail counts); by effective QoS = min(publish QoS, granted
               QoS); what was never written is counted apart.
  wire         frames and bytes that entered the bottleneck in each
               direction (before the link's loss and queue: what the
               senders put on it), Ethernet header included, no
               preamble/FCS; per message = both directions / messages
               published; per connection = both directions /
               connections made (every cycle of a reconnecting client
               counts); everything on the link counts (handshakes, acks,
               keepalives, retransmissions, closes).
  goodput      payload bytes a subscriber received x 8 / its first-to-last
               message time.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from scripts import reconcile  # noqa: E402  the one reconciliation

QOS_LEVELS = (0, 1, 2)


# ---- small statistics ---------------------------------------------------------

def summarize(values):
    """n, mean, median, p90, min, max of a list (None when empty)."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    return {"n": len(v), "mean": sum(v) / len(v), "median": quantile(v, 0.5),
            "p90": quantile(v, 0.9), "min": v[0], "max": v[-1]}


def quantile(sorted_values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    v = sorted_values
    if not v:
        return None
    pos = (len(v) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def merge_buckets(hists):
    """Sum the buckets ([[upper bound in ns, count], ...]) of histograms
    written by loadgen/sink: {bound_ns: count}."""
    out = {}
    for h in hists:
        for bound, count in (h or {}).get("buckets") or []:
            out[int(bound)] = out.get(int(bound), 0) + int(count)
    return out


def bucket_quantiles(buckets, qs):
    """{q: value in us} from merged buckets (a bucket's upper bound, as
    the tools report their own percentiles)."""
    total = sum(buckets.values())
    if not total:
        return {q: None for q in qs}
    items = sorted(buckets.items())
    out = {}
    for q in qs:
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bound, count in items:
            seen += count
            if seen >= rank:
                out[q] = bound / 1000.0
                break
    return out


# ---- per cell -------------------------------------------------------------------

def _hist_summary(h, scale=1e-3):
    """summarize()'s shape from one of the tools' histograms (in us),
    scaled to ms; the median is the histogram's p50 (about 1 %)."""
    if not h or not h.get("count"):
        return None
    return {"n": h["count"], "mean": h["mean_us"] * scale,
            "median": h["p50_us"] * scale, "p90": h["p90_us"] * scale,
            "min": h["min_us"] * scale, "max": h["max_us"] * scale}


CONNECT_PARTS = ("tcp", "handshake", "mqtt", "total")


def connect(loadgens):
    """Connection set-up over every loadgen document: per part (tcp,
    handshake, mqtt, total) n, mean, median, p90, min and max in ms, and
    the attempts that failed. loadgen's connect histograms hold every
    connection of every cycle, with buckets: merged over documents, the
    medians come from the merged buckets (about 1 % resolution, as the
    tools' own percentiles). Documents of an older loadgen (no buckets in
    the parts): exact values from the connection list; where a client
    reconnected (--cycles) that list holds only its last connection, so
    their histograms count instead, without medians where several merge,
    and a handshake with only a mean (transport's less tcp's)."""
    vals = {k: [] for k in CONNECT_PARTS}
    hists = {k: [] for k in CONNECT_PARTS}
    attempted = connected = failed = resumed = 0
    for d in loadgens:
        t = d.get("totals", {})
        attempted += t.get("connections", 0)
        connected += t.get("connected", 0)
        failed += t.get("failed", 0)
        c = d.get("connect") or {}
        conns = [x.get("connect") or {} for x in d.get("connections") or []]
        if d.get("cycles"):
            resumed += (d.get("early_data") or {}).get("accepted", 0)
        else:
            resumed += sum(bool(cn.get("tls_resumed")) for cn in conns)
        if all("buckets" in (c.get(k) or {}) for k in CONNECT_PARTS):
            for k in CONNECT_PARTS:
                hists[k].append(c[k])
        elif d.get("cycles"):
            for k in ("tcp", "mqtt", "total"):
                hists[k].append(c.get(k))
            hists["handshake"].append(_handshake_hist(c))
        else:
            for cn in conns:
                if cn.get("total_us") is None:
                    continue
                vals["tcp"].append(_ms(cn.get("tcp_us")))
                vals["handshake"].append(_ms(handshake_us(cn)))
                vals["mqtt"].append(_ms(cn.get("mqtt_us")))
                vals["total"].append(_ms(cn.get("total_us")))
    return {"attempted": attempted, "connected": connected,
            "failed": failed, "resumed": resumed,
            "ms": {k: _merge_part(vals[k], hists[k])
                   for k in CONNECT_PARTS}}


def _handshake_hist(c):
    """An older cycled document's handshake as a histogram with a mean
    only: transport counts from the first packet, so its mean less tcp's."""
    tr, tc = c.get("transport") or {}, c.get("tcp") or {}
    if not tr.get("count"):
        return None
    return {"count": tr["count"],
            "mean_us": tr["mean_us"] - (tc.get("mean_us") or 0) *
            (tc.get("count") or 0) / tr["count"]}


def _merge_part(values, hists):
    """summarize()'s shape, in ms, from exact values and the tools'
    histograms (in us) together: n-weighted mean; median and p90 from the
    merged buckets when every histogram has them (the exact values added
    as buckets of their own), from a lone histogram's own percentiles, or
    None; min and max where known."""
    values = [v for v in values if v is not None]
    hs = [h for h in hists if (h or {}).get("count")]
    if not hs:
        return summarize(values)
    n = sum(h["count"] for h in hs) + len(values)
    mean = (sum(h["mean_us"] * h["count"] for h in hs) / 1000 +
            sum(values)) / n
    if all("buckets" in h for h in hs):
        b = merge_buckets(hs)
        for v in values:
            k = int(v * 1e6)
            b[k] = b.get(k, 0) + 1
        q = {k: v / 1000 for k, v in
             bucket_quantiles(b, (0.5, 0.9)).items()}
    elif len(hs) == 1 and not values and hs[0].get("p50_us") is not None:
        q = {0.5: hs[0]["p50_us"] / 1000, 0.9: hs[0]["p90_us"] / 1000}
    else:                          # no buckets to merge: no quantiles
        q = {0.5: None, 0.9: None}
    lows = [h["min_us"] / 1000 for h in hs if h.get("min_us") is not None]
    highs = [h["max_us"] / 1000 for h in hs if h.get("max_us") is not None]
    return {"n": n, "mean": mean, "median": q[0.5], "p90": q[0.9],
            "min": min(lows + values) if lows or values else None,
            "max": max(highs + values) if highs or values else None}


def _ms(us):
    return None if us is None else us / 1000.0


def handshake_us(cn):
    """The transport's own handshake of one connection: loadgen's
    transport_us runs from the first packet to the transport being ready
    (TCP and TLS together), so TLS's part is transport_us - tcp_us; 0 for
    plain TCP; QUIC's whole handshake when there is no TCP part."""
    t = cn.get("transport_us")
    if t is None:
        return None
    return t - (cn.get("tcp_us") or 0)


def latency(sinks):
    hists = [d.get("latency") for d in sinks]
    b = merge_buckets(hists)
    n = sum(b.values())
    if not n:
        return {"count": 0}
    q = bucket_quantiles(b, (0.5, 0.9, 0.99, 0.999))
    mean = sum((h or {}).get("mean_us", 0) * (h or {}).get("count", 0)
               for h in hists) / n
    return {"count": n, "mean_ms": mean / 1000, "p50_ms": q[0.5] / 1000,
            "p90_ms": q[0.9] / 1000, "p99_ms": q[0.99] / 1000,
            "p999_ms": q[0.999] / 1000,
            "max_ms": max((h or {}).get("max_us") or 0 for h in hists)
            / 1000}


def delivery(loadgens, sinks, match=None):
    """Subscribers reconciled with publishers by the project's one
    reconciliation (scripts/reconcile.py: expected = what each publisher
    wrote, lost = written - received, tail included; what was never
    written counted apart), in the cell's shape, by effective QoS."""
    r = reconcile.reconcile(loadgens, sinks,
                            **({"match": match} if match else {}))
    t = r["totals"]

    def group(g):
        return {"expected": g["expected"], "received": g["received"],
                "lost": g["lost"], "duplicates": g["duplicates"],
                "ratio": g["delivered_ratio"]}
    return {"expected": t["expected"], "received": t["received"],
            "lost": t["lost"], "ratio": t["delivered_ratio"],
            "lost_tail": t["lost_tail"],
            "silent_publishers": t["silent_publishers"],
            "by_qos": {q: group(g) for q, g in r["by_qos"].items()},
            "unwritten": r["publishers"]["unwritten"],
            "reconcile_status": r["status"],
            "reconcile_errors": r["errors"],
            "per_publisher_truncated": any(
                "per_publisher_truncated" in w for w in r["warnings"])}


def wire(link, messages, connections, payload_bytes):
    """Bytes and frames on the bottleneck (see the module comment)."""
    bn = (link or {}).get("links", {}).get("bottleneck")
    if not bn:
        return None
    out = {"directions": bn, "counted": "offered"}
    tot_b = tot_f = 0
    for d in ("left_to_right", "right_to_left"):
        x = bn.get(d) or {}
        b, f = x.get("bytes_in"), x.get("frames_in")
        if b is None:
            # netem counts only what it sent: the delivered frames, a
            # little under what was offered (loss and queue drops apart)
            b, f = x.get("bytes_out"), x.get("frames_out")
            out["counted"] = "delivered"
        if b is None or f is None:
            return out | {"bytes": None}
        tot_b += b
        tot_f += f
    out.update({"bytes": tot_b, "frames": tot_f,
                "messages": messages, "connections": connections,
                "payload_bytes": payload_bytes,
                "bytes_per_message": tot_b / messages if messages else None,
                "frames_per_message": tot_f / messages if messages else None,
                "bytes_per_connection": tot_b / connections
                if connections else None,
                "frames_per_connection": tot_f / connections
                if connections else None})
    return out


def goodput(sinks):
    best = None
    for s in sinks:
        m, t = s.get("messages") or {}, s.get("throughput") or {}
        span = t.get("first_to_last_s")
        if span and m.get("bench_bytes"):
            g = m["bench_bytes"] * 8 / span
            best = g if best is None else max(best, g)
    return best


def cycles(loadgens):
    """Wake-publish-sleep, from the documents of clients that cycled
    (loadgen --cycles): cycles done, and per cycle the time from the wake
    (the connect call) to the last ack (QoS 1/2; the last message handed
    over at QoS 0), in ms, merged over documents. None without cycles."""
    docs = [d["cycles"] for d in loadgens if d.get("cycles")]
    if not docs:
        return None
    done = sum(c.get("done", 0) for c in docs)
    hs = [c.get("wake_to_done") for c in docs
          if (c.get("wake_to_done") or {}).get("count")]
    n = sum(h["count"] for h in hs)
    summ = None
    if n:
        b = merge_buckets(hs)
        q = bucket_quantiles(b, (0.5, 0.9))
        summ = {"n": n, "mean": sum(h["mean_us"] * h["count"]
                                    for h in hs) / n / 1000,
                "median": q[0.5] / 1000, "p90": q[0.9] / 1000,
                "min": min(h["min_us"] for h in hs) / 1000,
                "max": max(h["max_us"] for h in hs) / 1000}
    early = {"attempted": 0, "accepted": 0, "rejected": 0}
    for d in loadgens:
        for k in early:
            early[k] += (d.get("early_data") or {}).get(k, 0)
    return {"cycles": done, "wake_to_puback_ms": summ,
            "early_data": early}


def resources(docs_by_kind):
    """{kind: {"cpu_s": sum, "max_rss_kib": max, "processes": n}}."""
    out = {}
    for kind, docs in docs_by_kind.items():
        cpu = [d.get("cpu_total_s") for d in docs if d]
        rss = [d.get("max_rss_kib") for d in docs if d]
        cpu = [c for c in cpu if c is not None]
        rss = [r for r in rss if r is not None]
        if not cpu and not rss:
            continue
        out[kind] = {"processes": len(docs), "cpu_s": sum(cpu),
                     "max_rss_kib": max(rss) if rss else None}
    return out


def schedule(loadgens):
    late = sent = 0
    p99 = None
    for d in loadgens:
        s = d.get("schedule_lag") or {}
        late += s.get("late_messages") or 0
        sent += s.get("count") or 0
        if s.get("p99_us") is not None:
            p99 = max(p99 or 0, s["p99_us"] / 1000)
    return {"messages": sent, "late": late, "p99_max_ms": p99}


# ---- link statistics in one format ----------------------------------------------

DIR_KEYS = ("frames_in", "bytes_in", "frames_out", "bytes_out",
            "dropped_loss", "dropped_queue", "dropped")


def netem_stages(tc):
    """(loss stage, rate stage) of a direction's netem qdiscs from tc's
    JSON: the root (handle 1:) draws loss and delay, its child (10:) is
    the transmitter with the rate and the queue (topologies/backends.py).
    With the root only (a profile without rate or queue) its frames are
    what left and no frame was dropped for the queue; a missing qdisc
    is {}."""
    qs = [q for q in tc or [] if q.get("kind") == "netem"]
    root = next((q for q in qs if q.get("handle") == "1:"),
                qs[0] if qs else {})
    child = next((q for q in qs if q.get("handle") == "10:"), None)
    if child is None:
        child = {"packets": root.get("packets"), "bytes": root.get("bytes"),
                 "drops": 0 if root else None}
    return root, child


def normalize_link(raw):
    """Both backends' counters as {"backend", "links": {label: {
    "left_to_right": {...}, "right_to_left": {...}}}}; a value a backend
    cannot give is None (netem keeps no queueing-delay histogram)."""
    if not raw:
        return None
    out = {"backend": raw.get("backend"), "links": {}}
    for label, st in (raw.get("links") or {}).items():
        if raw.get("backend") == "userspace":
            if not st:
                out["links"][label] = None
                continue
            link = {}
            for src, dst in (("a2b", "left_to_right"),
                             ("b2a", "right_to_left")):
                x = st.get(src) or {}
                q = x.get("queue_delay") or {}
                te = x.get("timing_error") or {}
                link[dst] = {
                    "frames_in": x.get("frames_in"),
                    "bytes_in": x.get("bytes_in"),
                    "frames_out": x.get("frames_out"),
                    "bytes_out": x.get("bytes_out"),
                    "dropped_loss": x.get("dropped_loss"),
                    "dropped_queue": x.get("dropped_queue"),
                    "dropped": (x.get("dropped_loss") or 0) +
                    (x.get("dropped_queue") or 0),
                    "queue_delay_p99_us": q.get("p99_us"),
                    "queue_delay_max_us": q.get("max_us"),
                    "timing_error_p99_us": te.get("p99_us"),
                    "timing_error_max_us": te.get("max_us")}
            res = st.get("resources") or {}
            link["emulator"] = {"cpu_s": res.get("cpu_total_s"),
                                "max_rss_kib": res.get("max_rss_kib")}
            out["links"][label] = link
        else:
            link = {}
            for dname in ("left_to_right", "right_to_left"):
                x = (st or {}).get(dname) or {}
                loss_q, rate_q = netem_stages(x.get("tc"))
                sent = rate_q.get("packets")
                lost, qdrop = loss_q.get("drops"), rate_q.get("drops")
                link[dname] = {
                    "frames_in": None if sent is None else
                    sent + (lost or 0) + (qdrop or 0),
                    "bytes_in": None, "frames_out": sent,
                    "bytes_out": rate_q.get("bytes"),
                    "dropped_loss": lost, "dropped_queue": qdrop,
                    "dropped": None if lost is None and qdrop is None
                    else (lost or 0) + (qdrop or 0),
                    "queue_delay_p99_us": None, "queue_delay_max_us": None,
                    "timing_error_p99_us": None,
                    "timing_error_max_us": None}
            out["links"][label] = link
    return out


# ---- head-of-line blocking, from a sink's raw per-message records ---------------

HOL_WINDOW_MS = 100.0


def read_raw(path):
    """{publisher: [(recv_ms, latency_ms), ...]} from a sink's text raw
    file ('recv_ns publisher seq latency_ns size kind'); benchmark
    messages only."""
    flows = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            p = line.split()
            if len(p) < 6 or p[5] in ("foreign", "invalid", "clock_error") \
                    or p[3] == "-":
                continue
            flows.setdefault(int(p[1]), []).append(
                (int(p[0]) / 1e6, int(p[3]) / 1e6))
    return flows


def _pearson(a, b):
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    if va == 0 or vb == 0:
        return None
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / \
        math.sqrt(va * vb)


def hol(flows, window_ms=HOL_WINDOW_MS):
    """What isolates head-of-line blocking between flows (publishers):

      spread       per window of window_ms (by receive time) where two or
                   more flows have messages: the largest minus the
                   smallest of the flows' mean latencies; median and p90
      coincidence  a flow's spike is a message above twice the flow's
                   median latency; the share of a flow's spike windows in
                   which another flow also spikes (same or adjacent
                   window), averaged over flows with spikes: 1 = they are
                   blocked together, 0 = isolated
      correlation  Pearson correlation of two flows' per-window mean
                   latencies over their common windows, averaged over
                   pairs
      max_gap_ms   the longest time between two deliveries of one flow
    With one flow only max_gap_ms is defined (the others are None);
    None without flows."""
    if not flows:
        return None
    t0 = min(m[0] for v in flows.values() for m in v)
    means, spikes, gaps = {}, {}, []
    for pid, msgs in flows.items():
        lats = sorted(l for _, l in msgs)
        med = quantile(lats, 0.5)
        win = {}
        sp = set()
        for t, l in msgs:
            w = int((t - t0) // window_ms)
            win.setdefault(w, []).append(l)
            if l > 2 * med:
                sp.add(w)
        means[pid] = {w: sum(v) / len(v) for w, v in win.items()}
        spikes[pid] = sp
        ts = sorted(t for t, _ in msgs)
        gaps += [b - a for a, b in zip(ts, ts[1:])]
    windows = sorted({w for m in means.values() for w in m})
    spread = []
    for w in windows:
        vals = [m[w] for m in means.values() if w in m]
        if len(vals) >= 2:
            spread.append(max(vals) - min(vals))
    spread.sort()
    shares = []
    for pid, sp in spikes.items():
        if not sp:
            continue
        others = set().union(*(s for q, s in spikes.items() if q != pid))
        hit = sum(1 for w in sp if {w - 1, w, w + 1} & others)
        shares.append(hit / len(sp))
    pids = sorted(means)
    cors = []
    for i, a in enumerate(pids):
        for b in pids[i + 1:]:
            common = sorted(set(means[a]) & set(means[b]))
            if len(common) >= 5:
                c = _pearson([means[a][w] for w in common],
                             [means[b][w] for w in common])
                if c is not None:
                    cors.append(c)
    if len(flows) < 2:
        spread, shares, cors = [], [], []
    return {"flows": len(flows), "window_ms": window_ms,
            "spread_p50_ms": quantile(spread, 0.5),
            "spread_p90_ms": quantile(spread, 0.9),
            "coincidence": sum(shares) / len(shares) if shares else None,
            "flows_with_spikes": len(shares),
            "correlation": sum(cors) / len(cors) if cors else None,
            "max_gap_ms": max(gaps) if gaps else None}


# ---- a connection's move to a new address (migration) ----------------------------

def migration(loadgens, sinks_flows=()):
    """Every move loadgen recorded (--migrate-after, SIGUSR1) over the
    cell's documents: QUIC migrates the connection (path validation),
    TCP and TLS reconnect with the persistent session (down_us, resent).
    gap_ms, where subscribers' raw records are given (sinks_flows: per
    sink {publisher: [(recv_ms, latency_ms)]}, read_raw's), is what a
    user sees of it: per move, the longest time between two deliveries
    of its connection's flows, at any sink, from the last delivery before
    the move (on the shared CLOCK_MONOTONIC) to the first delivery of a
    message sent after the move was over (the new CONNACK; QUIC: the
    path validated), resends included. None without moves."""
    moves = []
    for d in loadgens:
        for c in d.get("connections") or []:
            pids = [f["publisher_id"] for f in c.get("flows") or []] or \
                [c.get("publisher_id")]
            for m in c.get("migrations") or []:
                took = m.get("down_us", m.get("path_validation_us"))
                at = m.get("at_ns")
                done = None if at is None or took is None else \
                    at + took * 1000
                moves.append({
                    "kind": m.get("kind"), "result": m.get("result"),
                    "down_ms": _ms(m.get("down_us")),
                    "path_validation_ms": _ms(m.get("path_validation_us")),
                    "resent": m.get("resent"),
                    "delayed": m.get("messages_delayed",
                                     m.get("sent_before_validation")),
                    "gap_ms": _gap_around(sinks_flows, pids, at, done)})
    if not moves:
        return None

    def stat(key, f):
        v = [m[key] for m in moves if m[key] is not None]
        return f(v) if v else None
    return {"moves": len(moves),
            "done": sum(m["result"] in ("reconnected", "validated")
                        for m in moves),
            "gap_ms": stat("gap_ms", max),
            "down_ms": stat("down_ms", max),
            "path_validation_ms": stat("path_validation_ms", max),
            "resent": stat("resent", sum),
            "delayed": stat("delayed", sum),
            "each": moves}


def _gap_around(sinks_flows, pids, at_ns, done_ns):
    """The longest gap between deliveries at one sink of one of the
    publishers pids, from the last delivery before at_ns to the first of
    a message sent at done_ns or later (the last one when done_ns is
    None), in ms; None without a delivery on both sides of at_ns."""
    if at_ns is None:
        return None
    at = at_ns / 1e6
    done = None if done_ns is None else done_ns / 1e6
    gaps = []
    for flows, pid in ((f, p) for f in sinks_flows for p in pids):
        recs = sorted(flows.get(pid) or [])
        first = sum(1 for t, _ in recs if t < at) - 1
        if first < 0 or first + 1 >= len(recs):
            continue
        last = next((i for i in range(first + 1, len(recs))
                     if done is not None and recs[i][0] - recs[i][1] >=
                     done), len(recs) - 1)
        gaps.append(max(recs[i + 1][0] - recs[i][0]
                        for i in range(first, last)))
    return max(gaps) if gaps else None

