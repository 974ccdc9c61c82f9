"""Aggregation: a run's JSON -> data files -> gnuplot figures -> report.

`make figures RUN=results/<run-id>` runs this on a finished (or
interrupted) run; `make bench` runs it at the end. Only JSON is read:
each ok cell's cell.json and its processes' JSON documents (every
figure is recomputed from them by runner/cell.py's compute()). The data
files are plain text for gnuplot, sorted and formatted the same way every
time: two runs of this step on the same run give byte-identical files.

  data/stats.dat            every metric: scenario, variant, profile,
                            transport, metric, n, mean, 95 % CI low, high
  data/<figure>.dat         one per figure, what its gnuplot script reads
  tables/summary.csv        data/stats.dat as CSV
  figures/<figure>.png/svg  PNG for reading, SVG for papers
  REPORT.md, report.html, tables.tex   (runner/report.py)
"""
import os
import shutil
import subprocess
import sys

from topologies.state import atomic_write

from . import results, stats
from .cell import compute
from .transports import NAMES as TRANSPORT_ORDER

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GP_DIR = os.path.join(REPO, "scripts", "figures")
FORMATS = ("png", "svg")


def _get(m, *path):
    for p in path:
        if not isinstance(m, dict):
            return None
        m = m.get(p)
    return m


def _scale(v, k):
    return None if v is None else v * k


# name: (extract(metrics), unit, short label)
METRICS = {
    "connect_ms": (lambda m: _get(m, "connect", "ms", "total", "median"),
                   "ms", "connect time, first packet to CONNACK (median "
                   "of a cell's connections)"),
    "connect_mean_ms": (lambda m: _get(m, "connect", "ms", "total",
                                       "mean"), "ms",
                        "connect time, mean of a cell's connections "
                        "(with loss retransmissions)"),
    # the parts: medians over a cell's connections, every cycle's
    "connect_tcp_ms": (lambda m: _get(m, "connect", "ms", "tcp", "median"),
                       "ms", "TCP handshake (median)"),
    "connect_handshake_ms": (lambda m: _get(m, "connect", "ms",
                                            "handshake", "median"), "ms",
                             "TLS handshake after TCP, or QUIC handshake "
                             "(median)"),
    "connect_mqtt_ms": (lambda m: _get(m, "connect", "ms", "mqtt",
                                       "median"),
                        "ms", "MQTT CONNECT to CONNACK (median)"),
    "latency_mean_ms": (lambda m: _get(m, "latency", "mean_ms"), "ms",
                        "latency, mean"),
    "latency_p50_ms": (lambda m: _get(m, "latency", "p50_ms"), "ms",
                       "latency p50"),
    "latency_p99_ms": (lambda m: _get(m, "latency", "p99_ms"), "ms",
                       "latency p99"),
    "latency_p50_vs_lossless": (lambda m: _get(m, "p50_vs_lossless"), "ratio",
                                "latency p50 over the same cell's at 0 % "
                                "loss (1: no queue built up; see "
                                "vs_lossless)"),
    "delivery_ratio": (lambda m: _get(m, "delivery", "ratio"), "",
                       "delivery ratio, all QoS"),
    "delivery_qos0": (lambda m: _get(m, "delivery", "by_qos", "0",
                                     "ratio"), "", "delivery ratio QoS 0"),
    "delivery_qos1": (lambda m: _get(m, "delivery", "by_qos", "1",
                                     "ratio"), "", "delivery ratio QoS 1"),
    "delivery_qos2": (lambda m: _get(m, "delivery", "by_qos", "2",
                                     "ratio"), "", "delivery ratio QoS 2"),
    "bytes_per_message": (lambda m: _get(m, "wire", "bytes_per_message"),
                          "B", "bytes on the bottleneck per message"),
    "frames_per_message": (lambda m: _get(m, "wire", "frames_per_message"),
                           "", "frames on the bottleneck per message"),
    "bytes_per_connection": (lambda m: _get(m, "wire",
                                            "bytes_per_connection"),
                             "B", "bytes on the bottleneck per connection"),
    "frames_per_connection": (lambda m: _get(m, "wire",
                                             "frames_per_connection"),
                              "", "frames on the bottleneck per "
                              "connection"),
    "goodput_mbps": (lambda m: _scale(m.get("goodput_bps"), 1e-6), "Mb/s",
                     "goodput at the subscriber"),
    "wake_to_puback_ms": (lambda m: _get(m, "cycles", "wake_to_puback_ms",
                                         "median"), "ms",
                          "wake cycle: wake to the last ack (median of a "
                          "cell's cycles)"),
    "bytes_per_cycle": (lambda m: _get(m, "cycles", "bytes_per_cycle"), "B",
                        "wake cycle: bytes on the bottleneck"),
    "frames_per_cycle": (lambda m: _get(m, "cycles", "frames_per_cycle"),
                         "", "wake cycle: frames on the bottleneck"),
}
def _flows(m, key):
    """A head-of-line figure of the (first) subscriber with raw records."""
    f = m.get("flows") or {}
    return f[sorted(f)[0]].get(key) if f else None


METRICS.update({
    "hol_spread_p50_ms": (lambda m: _flows(m, "spread_p50_ms"), "ms",
                          "spread between flows' latencies, median "
                          "window"),
    "hol_coincidence": (lambda m: _flows(m, "coincidence"), "",
                        "share of a flow's latency spikes shared with "
                        "another flow"),
    "hol_correlation": (lambda m: _flows(m, "correlation"), "",
                        "correlation of flows' windowed latencies"),
    "max_gap_ms": (lambda m: _flows(m, "max_gap_ms"), "ms",
                   "longest gap between two deliveries of one flow"),
    # a connection's move (loadgen --migrate-after): QUIC migrates, TCP
    # and TLS reconnect with the persistent session
    "migration_gap_ms": (lambda m: _get(m, "migration", "gap_ms"), "ms",
                         "delivery gap around the address change (last "
                         "delivery before it to the first after)"),
    "migration_down_ms": (lambda m: _get(m, "migration", "down_ms"), "ms",
                          "TCP/TLS: connection down, drop to the new "
                          "CONNACK"),
    "migration_validation_ms": (lambda m: _get(m, "migration",
                                               "path_validation_ms"),
                                "ms", "QUIC: path validation after the "
                                "move"),
    "migration_resent": (lambda m: _get(m, "migration", "resent"), "msgs",
                         "TCP/TLS: messages resent (DUP) after the "
                         "reconnect"),
})
PROCESS_KINDS = ("loadgen", "sink", "broker", "gateway", "linkem")
CONNECT_PARTS = (("connect_tcp_ms", "TCP"), ("connect_handshake_ms", "TLS"),
                 ("connect_mqtt_ms", "MQTT"))
for _k in PROCESS_KINDS:
    METRICS[f"cpu_{_k}_s"] = (
        (lambda k: lambda m: _get(m, "resources", k, "cpu_s"))(_k), "s",
        f"CPU time, all {_k} processes of a cell")
    METRICS[f"rss_{_k}_mib"] = (
        (lambda k: lambda m: _scale(_get(m, "resources", k, "max_rss_kib"),
                                    1 / 1024))(_k), "MiB",
        f"peak RSS, largest {_k} process of a cell")

GROUP = ("scenario", "variant", "profile", "transport")


def num(x):
    """Data-file number: fixed form, NaN for missing."""
    if x is None:
        return "NaN"
    return f"{x:.6g}"


def quote(s):
    return '"' + str(s).replace('"', "'") + '"'


# ---- reading -------------------------------------------------------------------

def collect(run_dir):
    """(run.json, [row]) where a row is one ok cell with its recomputed
    figures and its sinks' latency buckets."""
    run = results.read_json(os.path.join(run_dir, "run.json"))
    rows = []
    for d in results.cell_dirs(run_dir):
        c = results.read_json(os.path.join(d, "cell.json"))
        if c.get("status") != "ok":
            continue
        m = compute(d, c)
        buckets = {}
        for rec in c.get("processes") or []:
            if rec.get("kind") != "sink":
                continue
            try:
                doc = results.read_json(os.path.join(d, rec["json"]))
            except (OSError, ValueError):
                continue
            for b, n in (doc.get("latency") or {}).get("buckets") or []:
                buckets[int(b)] = buckets.get(int(b), 0) + int(n)
        rows.append({k: c.get(k) for k in GROUP + ("rep", "id")} |
                    {"metrics": m, "buckets": buckets, "cell": c})
    vs_lossless(rows)
    return run, rows


def _zero_loss(v):
    try:
        return float(str(v).strip().rstrip("%")) == 0.0
    except ValueError:
        return False


def vs_lossless(rows):
    """Where a scenario sweeps `loss` with a 0 % value (hol, loss-sweep):
    each cell's latency p50 over that of its twin at 0 % loss, the cell of
    the same scenario, other sweep values, profile, transport and
    repetition, as metrics["p50_vs_lossless"]. Loss alone moves the
    median little (a few messages wait for a retransmission); a queue
    that builds up under loss (recovery falling behind the offered load)
    moves it with every message behind it. A ratio near 1 says the tails
    and head-of-line figures measure loss recovery, not a standing
    queue."""
    def twin_key(r, values):
        return (r["scenario"], r["profile"], r["transport"], r["rep"],
                tuple(sorted((k, str(v)) for k, v in values.items()
                             if k != "loss")))
    base, lossy = {}, []
    for r in rows:
        values = r["cell"].get("values") or {}
        if "loss" not in values:
            continue
        if _zero_loss(values["loss"]):
            base[twin_key(r, values)] = r
        else:
            lossy.append((r, twin_key(r, values)))
    for r, k in lossy:
        twin = base.get(k)
        p = _get(r["metrics"], "latency", "p50_ms")
        p0 = twin and _get(twin["metrics"], "latency", "p50_ms")
        if p is not None and p0:
            r["metrics"]["p50_vs_lossless"] = p / p0


def orders(run, rows):
    """Display order of scenarios, profiles, variants: as the run listed
    its cells; transports tcp, tls, quic."""
    seen = {"scenario": [], "profile": [], "variant": []}
    for c in run.get("cells", []) + [r["cell"] for r in rows]:
        for k in seen:
            if c.get(k) not in seen[k]:
                seen[k].append(c.get(k))
    seen["transport"] = [t for t in TRANSPORT_ORDER] + sorted(
        {r["transport"] for r in rows} - set(TRANSPORT_ORDER))
    return seen


def grouped(rows):
    g = {}
    for r in rows:
        g.setdefault(tuple(r[k] for k in GROUP), []).append(r)
    return g


def stat_rows(rows, order):
    """Every metric's mean and CI per (scenario, variant, profile,
    transport), sorted for display."""
    out = []
    for key, rs in grouped(rows).items():
        for name, (fn, unit, _) in METRICS.items():
            ci = stats.mean_ci([fn(r["metrics"]) for r in rs])
            if ci is None:
                continue
            out.append(dict(zip(GROUP, key)) | {"metric": name,
                                                "unit": unit, **ci})
    return sorted(out, key=lambda s: _sortkey(s, order) + (s["metric"],))


def _sortkey(s, order):
    return tuple(order[k].index(s[k]) if s[k] in order[k] else 999
                 for k in GROUP)


def stats_index(srows):
    return {(s["scenario"], s["variant"], s["profile"], s["transport"],
             s["metric"]): s for s in srows}


# ---- data files and figure specifications ---------------------------------------

class Figure:
    def __init__(self, name, script, title, ylab, xlab, series, data,
                 caption, **params):
        self.name, self.script, self.title = name, script, title
        self.ylab, self.xlab, self.series = ylab, xlab, series
        self.data, self.caption, self.params = data, caption, params


def _group_label(profile, variant):
    return f"{profile} {variant}" if variant else profile


def _variant_axis(groups):
    """Group labels of a bar figure and its x-axis label. With sweeps the
    labels are the sweep values alone ("one-connection 4 10ms 2%") and
    the axis names the sweeps, the profile only where there are several."""
    variants = any(v for v, _, _, _ in groups)
    profiles = len({p for _, p, _, _ in groups}) > 1
    if not variants:
        return [p for _, p, _, _ in groups], "link profile"
    names = []
    labels = []
    for v, p, _, _ in groups:
        pairs = [kv.partition("=") for kv in v.split(",")] if v else []
        for k, _, _ in pairs:
            if k not in names:
                names.append(k)
        vals = " ".join(x for _, _, x in pairs)
        labels.append(f"{p} {vals}".strip() if profiles else vals)
    xlab = ", ".join((["link profile"] if profiles else []) + names)
    if not profiles and groups:
        xlab += f" (link profile {groups[0][1]})"
    return labels, xlab


def bars(name, sc, metric, idx, order, title, ylab, caption, parts=(),
         **params):
    """A clustered-bar figure of one metric: groups = profile (x variant),
    series = transports with data. parts: [(metric, label)] instead, to
    set several metrics side by side, a group each per profile."""
    ms = list(parts) or [(metric, None)]
    trs = [t for t in order["transport"]
           if any(k[0] == sc and k[3] == t and k[4] in dict(ms) for k in idx)]
    groups = [(v, p, m, lab) for v in order["variant"]
              for p in order["profile"] for m, lab in ms
              if any(k[:3] == (sc, v, p) and k[4] == m for k in idx)]
    if not trs or not groups:
        return None
    lines = [f"# {title}: mean and 95 % CI over repetitions",
             "# group " + " ".join(f"{t}_mean {t}_lo {t}_hi" for t in trs)]
    labels, xlab = _variant_axis(groups)
    if len(groups) > 12:
        # many groups: a wider canvas, labels turned further
        params = {"width": min(2400, 60 * len(groups) + 200),
                  "height": 620, "xrot": -60} | params
    for (v, p, m, lab), glabel in zip(groups, labels):
        cols = []
        for t in trs:
            s = idx.get((sc, v, p, t, m))
            cols += [num(s and s["mean"]), num(s and s["lo"]),
                     num(s and s["hi"])]
        lines.append(" ".join([quote(glabel + (f": {lab}" if lab
                                              else ""))] + cols))
    return Figure(name, "bars.gp", title, ylab, xlab, trs,
                  "\n".join(lines) + "\n", caption, **params)


def cdf(name, sc, variant, profile, rows, order, caption):
    blocks, series = [], []
    for t in order["transport"]:
        merged, reps = {}, 0
        for r in rows:
            if (r["scenario"], r["variant"], r["profile"], r["transport"]) \
                    != (sc, variant, profile, t):
                continue
            reps += 1
            for b, n in r["buckets"].items():
                merged[b] = merged.get(b, 0) + n
        total = sum(merged.values())
        if not total:
            continue
        series.append(t)
        lines = [f"# {t}: {total} deliveries over {reps} repetitions; "
                 f"latency (ms, bucket upper bound) and cumulative fraction"]
        seen = 0
        for b in sorted(merged):
            seen += merged[b]
            lines.append(f"{num(b / 1e6)} {num(seen / total)}")
        blocks.append("\n".join(lines))
    if not series:
        return None
    label = _group_label(profile, variant)
    return Figure(name, "cdf.gp", f"{sc}: latency CDF on {label}",
                  "fraction of messages", "one-way latency (ms, log scale)",
                  series, "\n\n\n".join(blocks) + "\n", caption)


def sweep_lines(name, sc, metric, idx, order, rows, title, ylab, caption):
    """A metric against the variants (sweep values) of a scenario, one
    series per profile x transport."""
    variants = [v for v in order["variant"]
                if any(k[0] == sc and k[1] == v for k in idx)]
    if len(variants) < 2:
        return None
    blocks, series = [], []
    for p in order["profile"]:
        for t in order["transport"]:
            pts = [(i, idx.get((sc, v, p, t, metric)), v)
                   for i, v in enumerate(variants)]
            pts = [(i, s, v) for i, s, v in pts if s]
            if not pts:
                continue
            series.append(f"{p}/{t}")
            blocks.append("\n".join(
                [f"# {p} {t}: index, mean, lo, hi, variant"] +
                [f"{i} {num(s['mean'])} {num(s['lo'])} {num(s['hi'])} "
                 f"{quote(v)}" for i, s, v in pts]))
    if not series:
        return None
    return Figure(name, "lines.gp", title, ylab, "variant", series,
                  "\n\n\n".join(blocks) + "\n", caption, xlabels=1)


def goodput_lines(name, sc, idx, order, rows, caption):
    """Goodput against the link rate, one series per variant x
    transport."""
    rates = {}
    for r in rows:
        if r["scenario"] == sc:
            topo = r["cell"].get("topology") or {}
            d = (topo.get("profile") or {}).get("left_to_right") or {}
            if d.get("rate_bps"):
                rates[r["profile"]] = d["rate_bps"] / 1e6
    blocks, series = [], []
    for v in order["variant"]:
        for t in order["transport"]:
            pts = sorted((rates[p], idx.get((sc, v, p, t, "goodput_mbps")),
                          p) for p in order["profile"] if p in rates)
            pts = [x for x in pts if x[1]]
            if not pts:
                continue
            series.append(f"{v or sc}/{t}")
            blocks.append("\n".join(
                [f"# {v} {t}: link rate (Mb/s), goodput mean, lo, hi, "
                 f"profile"] +
                [f"{num(x)} {num(s['mean'])} {num(s['lo'])} {num(s['hi'])} "
                 f"{quote(p)}" for x, s, p in pts]))
    if not series:
        return None
    return Figure(name, "lines.gp", f"{sc}: goodput against link rate",
                  "goodput (Mb/s)", "link rate (Mb/s, log scale)", series,
                  "\n\n\n".join(blocks) + "\n", caption, logx=1)


def resource_bars(name, sc, rows, order, what, caption):
    """CPU time or peak memory per process kind (groups), transports as
    series; mean and CI over every cell of the scenario (all profiles)."""
    key = "cpu_s" if what == "cpu" else "max_rss_kib"
    k_scale = 1.0 if what == "cpu" else 1 / 1024
    trs, data = [], {}
    for t in order["transport"]:
        for kind in PROCESS_KINDS:
            vals = [_get(r["metrics"], "resources", kind, key)
                    for r in rows if r["scenario"] == sc and
                    r["transport"] == t]
            vals = [v * k_scale for v in vals if v is not None]
            ci = stats.mean_ci(vals)
            if ci:
                data[(kind, t)] = ci
                if t not in trs:
                    trs.append(t)
    kinds = [k for k in PROCESS_KINDS if any((k, t) in data for t in trs)]
    if not kinds:
        return None
    unit = "CPU time per cell (s)" if what == "cpu" else \
        "peak RSS of the largest process (MiB)"
    lines = [f"# {sc}: {unit}, mean and 95 % CI over all cells",
             "# process " + " ".join(f"{t}_mean {t}_lo {t}_hi"
                                     for t in trs)]
    for kind in kinds:
        cols = []
        for t in trs:
            s = data.get((kind, t))
            cols += [num(s and s["mean"]), num(s and s["lo"]),
                     num(s and s["hi"])]
        lines.append(" ".join([quote(kind)] + cols))
    f = Figure(name, "bars.gp", f"{sc}: {unit}", unit, "process", trs,
               "\n".join(lines) + "\n", caption)
    return f


CAPTIONS = {
    "connect": "Connection set-up time per link profile and transport: "
               "from the client's first packet (TCP SYN, or QUIC Initial) "
               "to the CONNACK it receives, measured by loadgen on "
               "CLOCK_MONOTONIC; the median of a cell's connections (so "
               "one lost SYN, which costs 1 s, does not decide it; the "
               "mean, with such retransmissions, is in the tables), then "
               "mean and 95 % CI (Student's t) over repetitions. Includes "
               "TCP, TLS/QUIC handshake and MQTT CONNECT/CONNACK; excludes "
               "process start and DNS (none).",
    "connect_parts": "Connection set-up in its parts, per link profile "
                     "and transport: TCP, TCP's handshake (SYN to "
                     "SYN-ACK; for QUIC: to the server's first packet); "
                     "TLS, the TLS handshake after it (for QUIC: the rest "
                     "of its handshake); MQTT, CONNECT to CONNACK; each "
                     "the median of a cell's "
                     "connections, every cycle of a reconnecting client "
                     "included (loadgen's histograms, merged), then mean "
                     "and 95 % CI over repetitions.",
    "latency_cdf": "One-way latency of every delivery at every subscriber "
                   "(publisher's send() to the subscriber's read, stamps "
                   "from the shared CLOCK_MONOTONIC in the payload), merged "
                   "over repetitions from the sinks' log-linear histograms "
                   "(about 1 % resolution). Includes both link crossings, "
                   "broker time and retransmissions; excludes time a "
                   "message waited in the publisher before send() "
                   "(schedule lag, reported apart).",
    "latency_p50": "Median one-way latency per cell (all deliveries), then "
                   "mean and 95 % CI over repetitions; what is in it: see "
                   "the latency CDF.",
    "latency_p99": "99th percentile of one-way latency per cell, then mean "
                   "and 95 % CI over repetitions; with a few hundred "
                   "deliveries per cell it rests on the largest few.",
    "delivery": "Delivery ratio: distinct messages received over messages "
                "published, summed over every (subscriber, publisher) pair "
                "whose filters match, from loadgen's per-connection counts "
                "and the sinks' per-publisher sequence numbers (so the "
                "tail counts); mean and 95 % CI over repetitions.",
    "bytes": "Bytes that entered the bottleneck (both directions, "
             "Ethernet header included, before the link's loss) divided by "
             "the messages published, or, where nothing is published, by "
             "the connections made. Everything counts: handshakes, acks, "
             "keepalives, retransmissions, closes.",
    "frames": "Frames that entered the bottleneck (both directions) per "
              "message, or per connection where nothing is published.",
    "cpu": "CPU time (user + system) of each kind of process, summed over "
           "a cell's processes of that kind, from their own getrusage "
           "(broker: /proc; linkem: its statistics); mean and 95 % CI over "
           "every cell of the scenario. The link emulator's CPU is the "
           "testbed's cost, not a transport's.",
    "memory": "Peak resident memory (VmHWM) of the largest process of each "
              "kind in a cell, sampled by the runner every 0.2 s while it "
              "runs; mean and 95 % CI over every cell of the scenario.",
    "goodput": "Goodput: payload bytes the subscriber received x 8 over "
               "its first-to-last message time, against the link's rate; "
               "one line per payload size and transport; mean and 95 % CI "
               "over repetitions.",
    "cycle_time": "Wake-publish-sleep: per cycle (loadgen --cycles: "
                  "connect, one QoS 1 PUBLISH, disconnect, sleep) the time "
                  "from the wake (the connect call) to the PUBACK, by "
                  "loadgen; the first cycle is a full handshake, the "
                  "others resume (TLS) or use 0-RTT (QUIC); median of a "
                  "cell's cycles, then mean and 95 % CI over "
                  "repetitions.",
    "cycle_bytes": "Wake-publish-sleep: bytes on the bottleneck per cycle "
                   "(both directions, everything from SYN to the close), "
                   "the cost that decides a battery's life.",
    "hol": "Head-of-line blocking: a flow's latency spike is a message "
           "above twice its median latency; the share of a flow's spike "
           "windows (100 ms, by receive time) in which another flow of the "
           "same device also spikes, averaged over flows: 1 = the flows "
           "are blocked together, 0 = isolated. From the subscriber's "
           "per-message records; mean and 95 % CI over repetitions.",
    "hol_spread": "Spread between the flows' latencies: in each 100 ms "
                  "window with two or more flows, the largest minus the "
                  "smallest flow mean; the median window per cell, then "
                  "mean and 95 % CI over repetitions.",
    "gap": "Address change mid-session (loadgen --migrate-after): the "
           "subscriber's delivery gap around it, from its last delivery "
           "before the move to its first after it (receive times on the "
           "shared CLOCK_MONOTONIC, the move's time from loadgen). QUIC "
           "migrates the connection to the new port and goes on while "
           "the path is validated; TCP and TLS drop the connection and "
           "reconnect from a new port with the persistent MQTT session "
           "(TCP and TLS handshakes, CONNECT, resent unacknowledged "
           "messages). Includes the regular gap between messages (the "
           "publishing interval); mean and 95 % CI over repetitions.",
    "sweep": "The metric against the scenario's swept parameter, one line "
             "per profile and transport; mean and 95 % CI over "
             "repetitions.",
}


def figure_specs(run, rows, srows, order):
    idx = stats_index(srows)
    figs = []

    def add(f):
        if f:
            figs.append(f)
    for sc in order["scenario"]:
        scrows = [r for r in rows if r["scenario"] == sc]
        if not scrows:
            continue
        has = lambda metric: any(k[0] == sc and k[4] == metric  # noqa
                                 for k in idx)
        wanted = _scenario_figures(scrows[0]["cell"])
        if has("connect_ms"):
            add(bars(f"connect_{sc}", sc, "connect_ms", idx, order,
                     f"{sc}: connect time to CONNACK", "ms",
                     CAPTIONS["connect"]))
            # as the tables: where connecting is what the scenario
            # measures; a figure per variant, or the labels crowd
            for v in order["variant"] if not has("latency_p50_ms") else ():
                add(bars(f"connect_parts_{sc}" +
                         (f"_{results.safe_name(v)}" if v else ""), sc,
                         None, idx, dict(order, variant=[v]),
                         f"{sc} {v}: connect time in parts (medians)"
                         .replace("  ", " "), "ms",
                         CAPTIONS["connect_parts"], parts=CONNECT_PARTS))
        if has("latency_p50_ms"):
            for v in order["variant"]:
                for p in order["profile"]:
                    add(cdf(f"latency_cdf_{sc}_{results.safe_name(p)}"
                            + (f"_{results.safe_name(v)}" if v else ""),
                            sc, v, p, scrows, order,
                            CAPTIONS["latency_cdf"]))
            add(bars(f"latency_p50_{sc}", sc, "latency_p50_ms", idx, order,
                     f"{sc}: median one-way latency", "ms",
                     CAPTIONS["latency_p50"]))
            add(bars(f"latency_p99_{sc}", sc, "latency_p99_ms", idx, order,
                     f"{sc}: 99th percentile one-way latency", "ms",
                     CAPTIONS["latency_p99"]))
        if has("delivery_ratio"):
            add(bars(f"delivery_{sc}", sc, "delivery_ratio", idx, order,
                     f"{sc}: delivery ratio", "delivered / published",
                     CAPTIONS["delivery"]))
        per = "connection" if "per-connection" in wanted else "message"
        if has(f"bytes_per_{per}"):
            add(bars(f"bytes_{sc}", sc, f"bytes_per_{per}", idx, order,
                     f"{sc}: bytes on the bottleneck per {per}", "bytes",
                     CAPTIONS["bytes"]))
            add(bars(f"frames_{sc}", sc, f"frames_per_{per}", idx, order,
                     f"{sc}: frames on the bottleneck per {per}", "frames",
                     CAPTIONS["frames"]))
        add(resource_bars(f"cpu_{sc}", sc, scrows, order, "cpu",
                          CAPTIONS["cpu"]))
        add(resource_bars(f"memory_{sc}", sc, scrows, order, "memory",
                          CAPTIONS["memory"]))
        if has("wake_to_puback_ms"):
            add(bars(f"cycle_time_{sc}", sc, "wake_to_puback_ms", idx,
                     order, f"{sc}: wake to PUBACK per cycle", "ms",
                     CAPTIONS["cycle_time"]))
            add(bars(f"cycle_bytes_{sc}", sc, "bytes_per_cycle", idx, order,
                     f"{sc}: bytes on the bottleneck per cycle", "bytes",
                     CAPTIONS["cycle_bytes"]))
        if "hol" in wanted and has("hol_coincidence"):
            add(bars(f"hol_coincidence_{sc}", sc, "hol_coincidence", idx,
                     order, f"{sc}: latency spikes shared between flows",
                     "share of spike windows", CAPTIONS["hol"]))
            add(bars(f"hol_spread_{sc}", sc, "hol_spread_p50_ms", idx,
                     order, f"{sc}: spread between flows' latencies", "ms",
                     CAPTIONS["hol_spread"]))
        if "gap" in wanted and has("migration_gap_ms"):
            add(bars(f"gap_{sc}", sc, "migration_gap_ms", idx, order,
                     f"{sc}: delivery gap around the address change", "ms",
                     CAPTIONS["gap"]))
        if "goodput" in wanted and has("goodput_mbps"):
            add(goodput_lines(f"goodput_{sc}", sc, idx, order, scrows,
                              CAPTIONS["goodput"]))
        if len({r["variant"] for r in scrows}) > 1:
            for metric in ("latency_p50_ms", "latency_p99_ms",
                           "delivery_ratio"):
                if has(metric):
                    add(sweep_lines(f"sweep_{sc}_{metric}", sc, metric, idx,
                                    order, scrows,
                                    f"{sc}: {METRICS[metric][2]}",
                                    METRICS[metric][1] or "ratio",
                                    CAPTIONS["sweep"]))
    return figs


# Figures (and their tables) a scenario shows only when its file asks
# with `figures = [...]`, and the metrics that belong to them.
OPTIONAL = {"goodput": ("goodput_mbps",),
            "hol": ("hol_spread_p50_ms", "hol_coincidence",
                    "hol_correlation", "max_gap_ms"),
            "gap": ("max_gap_ms", "migration_gap_ms", "migration_down_ms",
                    "migration_validation_ms", "migration_resent")}


PER_MESSAGE = ("bytes_per_message", "frames_per_message")
PER_CONNECTION = ("bytes_per_connection", "frames_per_connection")


def shown_metrics(cell, metrics):
    """metrics less the optional ones the scenario did not ask for; bytes
    and frames per connection where it asks ("per-connection"), per
    message otherwise."""
    wanted = _scenario_figures(cell)
    allowed = {m for k in wanted for m in OPTIONAL.get(k, ())}
    optional = {m for v in OPTIONAL.values() for m in v}
    hide = PER_MESSAGE if "per-connection" in wanted else PER_CONNECTION
    return [m for m in metrics
            if (m not in optional or m in allowed) and m not in hide]


def _scenario_figures(cell):
    import tomllib
    try:
        raw = tomllib.loads((cell.get("scenario_file") or {}).get("text",
                                                                  ""))
    except Exception:
        return []
    return raw.get("figures") or []


# ---- drawing ---------------------------------------------------------------------

def gp_string(s):
    return "'" + str(s).replace("'", "`") + "'"


def draw(fig, data_path, fig_dir):
    """Run gnuplot for each format; returns the error lines (none if ok)."""
    errors = []
    for fmt in FORMATS:
        out = os.path.join(fig_dir, f"{fig.name}.{fmt}")
        tmp = out + ".tmp." + fmt
        sets = {"scriptdir": gp_string(GP_DIR), "datafile":
                gp_string(data_path), "outfile": gp_string(tmp),
                "fmt": gp_string(fmt), "ttl": gp_string(fig.title),
                "ylab": gp_string(fig.ylab), "xlab": gp_string(fig.xlab),
                "nseries": str(len(fig.series)),
                "names": gp_string(" ".join(s.replace(" ", "_")
                                            for s in fig.series))}
        sets.update({k: str(v) for k, v in fig.params.items()})
        expr = "; ".join(f"{k}={v}" for k, v in sets.items())
        r = subprocess.run(["gnuplot", "-e", expr,
                            os.path.join(GP_DIR, fig.script)],
                           capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(tmp):
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            errors.append(f"{fig.name}.{fmt}: gnuplot: {last}")
            if os.path.exists(tmp):
                os.unlink(tmp)
            continue
        os.replace(tmp, out)
    return errors


def build(run_dir):
    """Data files, figures and report of a run. Returns (0, or 1 if a
    figure could not be drawn (the rest is still written); the short
    table of the run's numbers)."""
    run, rows = collect(run_dir)
    order = orders(run, rows)
    srows = stat_rows(rows, order)
    data_dir = os.path.join(run_dir, "data")
    fig_dir = os.path.join(run_dir, "figures")
    tab_dir = os.path.join(run_dir, "tables")
    for d in (data_dir, fig_dir, tab_dir):
        os.makedirs(d, exist_ok=True)
    lines = ["# every metric: mean and 95 % CI (Student's t) over "
             "repetitions", "# scenario variant profile transport metric "
             "unit n mean lo hi"]
    for s in srows:
        lines.append(" ".join([quote(s["scenario"]), quote(s["variant"]),
                               quote(s["profile"]), quote(s["transport"]),
                               s["metric"], quote(s["unit"]), str(s["n"]),
                               num(s["mean"]), num(s["lo"]),
                               num(s["hi"])]))
    atomic_write(os.path.join(data_dir, "stats.dat"), "\n".join(lines) + "\n")
    atomic_write(os.path.join(tab_dir, "summary.csv"), results.csv_text(
        [{k: (float(f"{v:.9g}") if isinstance(v, float) else v)
          for k, v in s.items()} for s in srows],
        list(GROUP) + ["metric", "unit", "n", "mean", "lo", "hi", "sd"]))
    figs = figure_specs(run, rows, srows, order)
    errors = []
    have_gnuplot = shutil.which("gnuplot") is not None
    if not have_gnuplot:
        errors.append("gnuplot is not installed (make deps): data files "
                      "written, no figures")
    for f in figs:
        path = os.path.join(data_dir, f"{f.name}.dat")
        atomic_write(path, f.data)
        if have_gnuplot:
            errors += draw(f, path, fig_dir)
    from . import report
    report.write(run_dir, run, rows, srows, order, figs)
    for e in errors:
        print(f"warning: {e}", file=sys.stderr)
    return (1 if errors else 0), report.short_table(rows, srows, order)


def main(run_dir):
    if not os.path.exists(os.path.join(run_dir, "run.json")):
        print(f"error: {run_dir}: not a run folder (no run.json); give "
              f"RUN=results/<run-id>", file=sys.stderr)
        return 2
    rc, _ = build(run_dir)
    print(f"figures: {os.path.join(run_dir, 'figures')}; report: "
          f"{os.path.join(run_dir, 'REPORT.md')}")
    return rc
