#!/usr/bin/python3
"""Calibration: does each link profile measure as configured?

    make calibrate                        # every profile, and a GE check
    /usr/bin/python3 scripts/calibrate.py --profile 3g --profile wifi
    /usr/bin/python3 scripts/calibrate.py --backend userspace

For each profile, on a 2+2 dumbbell, between l1/l2 and r1/r2, judged by
topologies/tolerance.py (which says why each rule is what it is):

  RTT    100 pings of 56 bytes (98-byte frames) every 20 ms from l1 to r1
         on an idle link: median and 99th percentile against twice the
         one-way delay plus the frame's serialisation both ways.
  loss   numbered UDP datagrams (topologies/probe.py) both ways at once,
         l1 -> r1 and r2 -> l2, at up to 70 % of the rate (so only the
         loss model drops), small ones to count many in at most 20 s,
         with the queue made 10000 frames deep (the "deep queue": the
         loss model acts before the queue, so this changes nothing
         measured, but a sender's catch-up burst after a CPU stall cannot
         become queue drops); frames lost against the model's interval.
         For a Gilbert-Elliott profile, also the mean length of the runs
         of consecutive losses against the chain's (1/r).
  rate   UDP (iperf3) offered at 120 % of the rate for 6 s, each
         direction in turn, deep queue too: the delivery rate over the
         steady-state seconds, converted from iperf3's payload to whole
         Ethernet frames (+ UDP 8, IPv4 20, Ethernet 14 bytes), within
         1 % of what the path delivers (the rate less the framing's
         overhead; where access links are shaped too, less the losses of
         later hops).
  queue  on the profile as it is: a burst of full-size frames into the
         idle link, each direction in turn; the link must hold exactly
         its queue (plus the frame in transmission and those that began
         while the burst arrived), the largest queueing delay must be the
         queue's serialisation time, and every frame that did not arrive
         must be one the emulator counted as dropped.
  timing the emulator's timing error p99 over every topology, link and
         direction, below the limit (contention.py).
  TCP    iperf3 for 5 s (after 1 s not counted) on the profile as it is,
         queue included; goodput from the receiving interface's counters
         in the steady state (iperf3's own intervals read high on slow
         links), reported with the link's ceiling for full-size segments
         (1448 of 1514 bytes); no pass/fail: it depends on the congestion
         control's answer to the loss.

Every profile gets four topologies: RTT and loss, rate, queue, TCP; so
the emulator's counters (linkem's drops, its timing error) describe each
part alone. A run of every profile (no --profile) also calibrates a
Gilbert-Elliott check profile (GE_CHECK_TOML), since none of the shipped
profiles loses in bursts.

Writes results/calibration-<timestamp>/calibration.json (everything,
including raw RTTs and the emulator's statistics) and calibration.md
(the table), atomically, after every profile. Prints the table. With
--readme FILE (make calibrate gives README.md), a run of every profile
also replaces the table in FILE between README_BEGIN and README_END,
with a line saying where and when it was measured. Exit
status 0 if every check passes, 1 if one fails or a measurement cannot
be made, 2 on a usage error, 130 after Ctrl-C and 128+N after signal N
(SIGTERM, SIGHUP), each with one line saying so.
"""
import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from topologies import (backends, contention, measure,       # noqa: E402
                        profiles, tolerance)
from topologies.dumbbell import (MAX_SEED, Terminated,        # noqa: E402
                                 TopologyError, check_tools, dumbbell)
from topologies.state import atomic_write                     # noqa: E402

PING_COUNT = 100
PING_INTERVAL = 0.02
RATE_LOAD = 1.2
RATE_SECONDS = 6
LOSS_LOAD = 0.7
LOSS_MAX_SECONDS = 20
LOSS_MIN_SECONDS = 5
LOSS_TARGET_LOST = 400     # expected losses to aim for
MAX_PPS = 4000             # keeps the emulator and the probes far from CPU limits
LOSS_QUEUE = 10000         # queue depth during the loss and rate tests
MIN_UDP_PAYLOAD = 16       # the probe's and iperf3's UDP headers fit
MAX_UDP_PAYLOAD = 1400
BURST_PAYLOAD = 1472       # 1514-byte frames for the queue test
BURST_EXTRA = 20           # frames beyond twice what the link can hold
BURST_MAX = 400            # the TAP's own queue holds 500
TCP_SECONDS = 5
TCP_MSS_FRAME = (1448, 1514)   # payload and frame of a full TCP segment
MEASURE_TOOLS = {"iperf3": "iperf3", "ping": "iputils-ping"}
ARROWS = {"left_to_right": "->", "right_to_left": "<-"}
# Ends: (sender, receiver) per direction for the loss probes (both at
# once, on different hosts) and for the rate and queue tests.
LOSS_ENDS = {"left_to_right": ("l1", "r1"), "right_to_left": ("r2", "l2")}
ENDS = {"left_to_right": ("l1", "r1"), "right_to_left": ("r1", "l1")}

GE_CHECK_TOML = """# calibration only: a Gilbert-Elliott link, 1 % loss in bursts of 4
description = "Gilbert-Elliott check: 4g with bursty loss"
rate = "4Mbit"
delay = "20ms"
loss_model = "gilbert-elliott"
loss = "1%"
queue = "30 packets"
[gilbert_elliott]
p = "0.2525%"
r = "25%"
loss_bad = "100%"
loss_good = "0%"
"""


def loss_plan(model, direction="left_to_right"):
    """(payload, seconds, pps) for the loss probe: datagrams as small as
    LOSS_LOAD of the path's frame rate allows at MAX_PPS (more datagrams,
    a tighter interval), for as many seconds as LOSS_TARGET_LOST expected
    losses need, between LOSS_MIN_SECONDS and LOSS_MAX_SECONDS."""
    lo = tolerance.udp_frame_bytes(MIN_UDP_PAYLOAD)
    hi = tolerance.udp_frame_bytes(MAX_UDP_PAYLOAD)
    frame = hi
    for f in range(lo, hi + 1):
        if LOSS_LOAD * model.rate_bps(direction, f) / (8 * f) <= MAX_PPS:
            frame = f
            break
    pps = min(MAX_PPS, LOSS_LOAD * model.rate_bps(direction, frame) /
              (8 * frame))
    loss = model.loss(direction, frame)
    want = LOSS_TARGET_LOST / loss if loss > 0 else 0
    seconds = min(LOSS_MAX_SECONDS, max(LOSS_MIN_SECONDS,
                                        math.ceil(want / pps)))
    return frame - tolerance.UDP_FRAME_OVERHEAD, seconds, pps


def deep_queue(prof):
    """prof with every queue LOSS_QUEUE frames deep, for the loss and rate
    tests.

    The loss model decides before the queue and the transmitter's rate
    does not depend on the queue's depth, so the depth changes nothing
    these tests measure. But a sender starved of CPU for a few ms (other
    work on the machine) pauses, then catches up with a burst: a shallow
    queue (20 frames for 3g) would drop part of the burst (losses the loss
    model did not make), or run empty during the pause (idle link time
    that is not the link's). The queue test and TCP run on the profile's
    own queue."""
    d = {n: dataclasses.replace(prof.direction(n), queue_packets=LOSS_QUEUE,
                                queue_bytes=None)
         for n in profiles.DIRECTIONS}
    return dataclasses.replace(prof, **d)


def rate_payload(rate_bps):
    """Datagram payload for the rate test: about 500 frames/s so that a
    4 s window counts enough frames to resolve 0.1 %, full-size frames
    on fast links."""
    frame = rate_bps / 8 / 500
    frame = max(200, min(tolerance.udp_frame_bytes(MAX_UDP_PAYLOAD), frame))
    return int(frame) - tolerance.UDP_FRAME_OVERHEAD


def _emulator(stats, label="bottleneck"):
    """linkem's stats of one link in a topology's link statistics."""
    return ((stats or {}).get("links") or {}).get(label)


def _summary(stats):
    """The bits of linkem's stats worth a glance, per link and direction."""
    out = {}
    for label, st in ((stats or {}).get("links") or {}).items():
        if not st or "a2b" not in st:
            continue
        out[label] = {}
        for d, name in (("a2b", "left_to_right"), ("b2a", "right_to_left")):
            s = st[d]
            out[label][name] = {
                k: s.get(k) for k in (
                    "frames_in", "frames_out", "dropped_loss",
                    "dropped_queue", "frame_max_bytes", "frames_above_mtu",
                    "tap_dropped_in")}
            out[label][name]["timing_error_p99_us"] = \
                (s.get("timing_error") or {}).get("p99_us")
    return out


def measure_loss(db, model):
    """Loss probes both ways at once; {direction: probe result}."""
    pairs, plans = {}, {}
    for i, (dname, (src, dst)) in enumerate(LOSS_ENDS.items()):
        payload, seconds, pps = loss_plan(model, dname)
        plans[dname] = (payload, seconds, pps)
        idle = 2.0 + model.rtt_ms(tolerance.udp_frame_bytes(payload)) / 1e3
        pairs[dname] = measure.probe_start(
            db, src, dst, int(seconds * pps), payload, pps,
            port=measure.PROBE_PORT + i, idle=idle)
    out = {}
    for dname, pair in pairs.items():
        payload, seconds, pps = plans[dname]
        res = measure.probe_finish(pair, seconds + 60)
        src, dst = LOSS_ENDS[dname]
        res.update(src=src, dst=dst, payload=payload, pps=pps,
                   seconds=seconds,
                   frame_bytes=tolerance.udp_frame_bytes(payload))
        out[dname] = res
    return out


def burst_size(d):
    """Frames in the queue test's burst: twice what the link holds, plus
    BURST_EXTRA, at most BURST_MAX."""
    q, _ = tolerance.expected_queue(d)
    return min(BURST_MAX, 2 * (q + 1) + BURST_EXTRA)


def measure_queue(db, model):
    """A burst of full-size frames into each direction's idle link, one
    after the other; {direction: probe result} (directions without a
    single rate-limited link are left out)."""
    out = {}
    for dname, (src, dst) in ENDS.items():
        d = model.queue_link(dname)
        if d is None:
            continue
        n = burst_size(d)
        drain = (n * d.serialisation_us(tolerance.MTU_FRAME) / 1e6 +
                 model.rtt_ms(tolerance.MTU_FRAME) / 1e3)
        out[dname] = measure.probe(db, src, dst, n, BURST_PAYLOAD,
                                   idle=2.0 + drain, timeout=drain + 60)
    return out


def check_all(prof, model, m, stats):
    """Judge everything measured (m) against the profile; {name: check}."""
    checks = {}
    ping = m["ping"]
    checks["rtt"] = tolerance.judge_rtt(ping["rtt_ms"],
                                        model.rtt_ms(ping["frame_bytes"]),
                                        model.jitter_ms())
    for dname in profiles.DIRECTIONS:
        arrow = dname
        if dname in m["rate"]:
            u = m["rate"][dname]
            checks[f"rate_{arrow}"] = tolerance.judge_rate(
                u["delivered_frame_bps"],
                model.delivered_rate_bps(dname, u["frame_bytes"]))
        pr = m["loss"][dname]
        frame = pr["frame_bytes"]
        n, k = pr["count"], pr["lost"]
        c = tolerance.judge_loss(
            n, k, model.loss_interval(n, dname, frame),
            model.loss(dname, frame))
        # The deep queue: only the loss model may have dropped frames.
        em = _emulator(stats["loss"])
        key = "a2b" if dname == "left_to_right" else "b2a"
        if em:
            qd = em[key]["dropped_queue"]
            c["emulator_queue_drops"] = qd
            if qd and c["pass"]:
                tolerance.fail(c, f"{qd} frames dropped by the queue in "
                               f"the loss test: not the loss model's")
        checks[f"loss_{arrow}"] = c
        ge = model.burst_model(dname)
        if ge is not None:
            checks[f"bursts_{arrow}"] = tolerance.judge_bursts(
                pr["loss_runs"], k, ge)
        if dname in m["queue"]:
            em = _emulator(stats["queue"])
            counted = None
            if em and len(model.hops) == 1:
                counted = {x: em[key][x]
                           for x in ("dropped_queue", "dropped_loss")}
            checks[f"queue_{arrow}"] = tolerance.judge_queue(
                model.queue_link(dname), m["queue"][dname], counted=counted)
    errors = {}
    for part, st in stats.items():
        if part == "tcp" and not all(model.limited(d)
                                     for d in profiles.DIRECTIONS):
            # No rate: the emulator forwards a TCP bulk flow as fast as
            # the CPUs let it, so its lateness there is its forwarding
            # cost, the floor the null profile measures, not a schedule
            # it failed to keep. Recorded in the stats, not judged.
            continue
        for lab, dirs in contention.timing_errors(
                (st or {}).get("links")).items():
            for dname, v in dirs.items():
                key = f"{part}/{lab}"
                errors.setdefault(key, {})[dname] = v
    checks["timing"] = tolerance.judge_timing(errors)
    return checks


def calibrate(prof, backend, seed, log):
    model = tolerance.PathModel(prof)
    res = {"profile": prof.to_dict(), "path": model.hops,
           "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    m, stats = {"rate": {}, "queue": {}}, {}
    deep = deep_queue(prof)

    def topo(p):
        return dumbbell(p, backend=backend, hosts=2, seed=seed, log=log)

    # 1 (deep queue): idle-link RTT, then loss both ways at once.
    with topo(deep) as db:
        res["topology"] = db.describe()
        log(f"{prof.name}: backend {db.backend_note}")
        m["ping"] = measure.ping(db, "l1", "r1", PING_COUNT, PING_INTERVAL)
        m["loss"] = measure_loss(db, model)
        db.check()
    stats["loss"] = db.link_stats
    # 2 (deep queue): the link saturated, one direction after the other.
    if any(model.limited(d) for d in profiles.DIRECTIONS):
        with topo(deep) as db:
            for dname, (src, dst) in ENDS.items():
                if not model.limited(dname):
                    continue
                rate = model.rate_bps(dname)
                m["rate"][dname] = measure.udp(
                    db, src, dst, RATE_LOAD * rate, rate_payload(rate),
                    RATE_SECONDS)
            db.check()
        stats["rate"] = db.link_stats
    # 3 (the profile as it is): a burst into each direction's queue.
    if any(model.queue_link(d) for d in profiles.DIRECTIONS):
        with topo(prof) as db:
            m["queue"] = measure_queue(db, model)
            db.check()
        stats["queue"] = db.link_stats
    # 4 (the profile as it is): TCP.
    with topo(prof) as db:
        res["topology_tcp"] = db.describe()
        m["tcp"] = measure.tcp(db, "l1", "r1", TCP_SECONDS)
        db.check()
    stats["tcp"] = db.link_stats

    checks = check_all(prof, model, m, stats)
    tcp = m["tcp"]
    ceiling = model.delivered_rate_bps() * TCP_MSS_FRAME[0] / \
        TCP_MSS_FRAME[1]
    checks["tcp"] = {"goodput_bps": tcp["goodput_bps"],
                     "ceiling_bps": ceiling if math.isfinite(ceiling)
                     else None,
                     "share": tcp["goodput_bps"] / ceiling
                     if math.isfinite(ceiling) else None}
    res["measurements"] = m
    res["checks"] = checks
    res["link_stats"] = stats
    res["emulator"] = {part: _summary(st) for part, st in stats.items()}
    res["contention"] = {part: (st or {}).get("contention")
                         for part, st in stats.items()}
    res["failed"] = [f"{name}: {c['why']}" for name, c in checks.items()
                     if not c.get("pass", True)]
    res["pass"] = not res["failed"]
    return res


def baseline(backend, seed, log):
    """RTT l1 -> r1 over the null profile (the same path, the emulator
    shaping nothing): the part of every measured RTT that is the
    testbed's own (veths, bridges, the emulator's I/O, wake-ups).
    Reported, not subtracted."""
    with dumbbell("null", backend=backend, hosts=2, seed=seed,
                  log=log) as db:
        ping = measure.ping(db, "l1", "r1", PING_COUNT, PING_INTERVAL)
    return _baseline_of(ping)


def _baseline_of(ping):
    return {k: ping[k] for k in ("min_ms", "median_ms", "p90_ms", "p99_ms",
                                 "max_ms", "received")}


def _mark(c):
    return "" if c.get("pass", True) else " **FAIL**"


def _mbit(bps):
    return f"{bps / 1e6:#.5g}"


def _cells(r):
    """The table's cells for one calibrated profile."""
    c = r["checks"]
    dirs = profiles.DIRECTIONS
    rtt = c["rtt"]
    cells = [f"{rtt['expected_ms']:.2f} / {rtt['p50_ms']:.2f} / "
             f"{rtt['p99_ms']:.2f}{_mark(rtt)}"]
    rates = [c.get(f"rate_{d}") for d in dirs]
    if any(rates):
        exp = " / ".join(_mbit(x["expected_bps"]) for x in rates if x)
        got = " / ".join(
            f"{_mbit(x['measured_bps'])} "
            f"({(x['measured_bps'] / x['expected_bps'] - 1) * 100:+.2f}%)"
            f"{_mark(x)}" for x in rates if x)
        cells += [exp, got]
    else:
        cells += ["unlimited", "-"]
    loss = [c[f"loss_{d}"] for d in dirs]
    cells.append(" / ".join(f"{x['expected'] * 100:.3g}%" for x in loss))
    cells.append(" / ".join(
        f"{x['measured'] * 100:.3g}% ({x['interval'][0] * 100:.3g}-"
        f"{x['interval'][1] * 100:.3g}%, n={x['datagrams']}){_mark(x)}"
        for x in loss))
    bursts = [c.get(f"bursts_{d}") for d in dirs]
    cells.append(" / ".join(
        f"{x['measured_mean']:.2f} of {x['expected_mean']:.2f}{_mark(x)}"
        if x.get("measured_mean") is not None else f"-{_mark(x)}"
        for x in bursts if x) or "-")
    queue = [c.get(f"queue_{d}") for d in dirs]
    cells.append(" / ".join(
        f"{x['received']} ({x['expected_received'][0]}-"
        f"{x['expected_received'][1]}), "
        f"{x['max_queue_delay_us'] / 1e3:.1f} of "
        f"{x['expected_max_queue_delay_us'][1] / 1e3:.1f} ms{_mark(x)}"
        for x in queue if x) or "-")
    t = c["timing"]
    cells.append(f"{t['worst_us']:.0f}{_mark(t)}"
                 if t["worst_us"] is not None else "-")
    tcp = c["tcp"]
    cells.append(f"{tcp['goodput_bps'] / 1e6:.3g}" +
                 (f" ({tcp['share'] * 100:.0f}%)" if tcp["share"] else ""))
    return cells


def markdown(doc):
    rows = [
        f"Rate and loss are measured with every queue forced to "
        f"{LOSS_QUEUE:,} frames, not the profile's own (so that a sender's "
        f"catch-up burst after a CPU stall cannot turn into queue drops); "
        f"RTT is measured on that deep queue too, but idle; the queue test "
        f"and TCP run on the profile as it is. Two figures a / b are left "
        f"to right / right to left.",
        "",
        "| profile | backend | RTT expected / p50 / p99 (ms) | "
        "rate expected (Mb/s) | UDP delivered (Mb/s, frames) | "
        "loss configured | loss measured (interval, n) | "
        "loss burst (frames) | queue: frames passed (expected), max delay | "
        "timing error p99 (us) | TCP (Mb/s) | result |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | ---: | "
        "--- | --- |",
    ]
    for r in doc["profiles"]:
        name = r["profile"]["name"]
        if "error" in r:
            rows.append(f"| {name} | | | | | | | | | | | **ERROR**: "
                        f"{r['error']} |")
            continue
        rows.append(f"| {name} | {r['topology']['backend']} | " +
                    " | ".join(_cells(r)) +
                    f" | {'pass' if r['pass'] else '**FAIL**'} |")
    v = doc.get("versions", {})
    b = doc.get("baseline")
    base = (f" The testbed alone (the null profile: same path, emulator "
            f"shaping nothing) has a median RTT of {b['median_ms']:.3f} ms "
            f"(p99 {b['p99_ms']:.3f} ms), included in every measured RTT."
            if b else "")
    rows += [
        "",
        f"Calibration {doc['started_at']}, kernel {v.get('kernel')}, "
        f"{v.get('iperf3')}, seed {doc['seed']}; a 2+2 dumbbell. RTT: "
        f"{PING_COUNT} pings of 98-byte frames l1 -> r1, expected 2 x "
        f"delay + the frame's serialisation both ways; median within "
        f"max({tolerance.RTT_ABS_MS:g} ms, {tolerance.RTT_REL * 100:g}%), "
        f"p99 at most max({tolerance.RTT_P99_ABS_MS:g} ms, "
        f"{tolerance.RTT_P99_REL * 100:g}%) above. Rate: UDP at "
        f"{RATE_LOAD * 100:.0f}% of the rate each way in turn, delivered "
        f"whole Ethernet frames per second, tolerance "
        f"{tolerance.RATE_REL * 100:g}%. Loss: numbered UDP both ways at "
        f"once at up to {LOSS_LOAD * 100:.0f}% of the rate, datagrams "
        f"lost against the central {tolerance.CONFIDENCE * 100:g}% "
        f"interval of the loss model; loss burst: mean run of consecutive "
        f"losses against the Gilbert-Elliott chain's. Queue: a burst of "
        f"1514-byte frames into the idle link with the profile's queue; "
        f"frames passed against queue + 1 (the one in transmission) up to "
        f"that plus those that began transmission while the burst "
        f"arrived; max delay = the largest queueing delay a frame saw, "
        f"against queue x serialisation time. Timing error: the "
        f"emulator's lateness p99, worst over every topology, link and "
        f"direction with at least {contention.MIN_FRAMES} frames (not "
        f"TCP on an unlimited link), limit "
        f"{contention.TIMING_ERROR_P99_LIMIT_US:g} us. TCP: iperf3 for "
        f"{TCP_SECONDS} s, goodput from the receiver's interface counters "
        f"(share of the frame rate x 1448/1514; no pass/fail)." + base,
    ]
    return "\n".join(rows) + "\n"


README_BEGIN = "<!-- calibration table: written by make calibrate -->"
README_END = "<!-- end of calibration table -->"


class _SaveError(Exception):
    """The results could not be written; one line."""


def readme_block(doc):
    """What goes between README_BEGIN and README_END."""
    v = doc.get("versions", {})
    backends_used = sorted({r["topology"]["backend"] for r in doc["profiles"]
                            if "topology" in r}) or [doc["backend"]]
    verdict = "every check passed" if doc.get("pass") else \
        "SOME CHECKS FAILED"
    head = (f"Measured by `make calibrate` on {doc['started_at']} (kernel "
            f"{v.get('kernel')}, {os.cpu_count()} CPUs, backend "
            f"{', '.join(backends_used)}, seed {doc['seed']}, "
            f"{doc.get('seconds', 0):.0f} s): {verdict}.")
    return head + "\n\n" + markdown(doc)


def update_readme(path, doc):
    """Replace the calibration table in the file at path; _SaveError if
    the file or its markers are missing."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise _SaveError(f"cannot read {path}: {e.strerror}") from None
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        raise _SaveError(f"{path} has no calibration table markers "
                         f"({README_BEGIN} ... {README_END})")
    new = (text[:a + len(README_BEGIN)] + "\n" + readme_block(doc) +
           text[b:])
    try:
        atomic_write(path, new)
    except OSError as e:
        raise _SaveError(f"cannot write {path}: {e.strerror}") from None


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def main(argv=None):
    """Exit status as the module says; SIGTERM and SIGHUP, like Ctrl-C,
    end the run with one line wherever they arrive (a topology being
    built or measured is torn down first)."""
    saved = {}
    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) == signal.SIG_DFL:
            saved[s] = signal.signal(s, _raise_terminated)
    progress = {"out": None, "created": False, "saved": False}
    try:
        return _main(argv, progress)
    except (KeyboardInterrupt, Terminated) as e:
        out = progress["out"]
        if progress["saved"]:
            where = f"partial results in {out}"
        else:
            where = "no results written"
            if progress["created"]:       # the empty folder we made
                with contextlib.suppress(OSError):
                    os.rmdir(out)
        if isinstance(e, KeyboardInterrupt):
            print(f"error: interrupted ({where})", file=sys.stderr)
            return 130
        print(f"error: {e} ({where})", file=sys.stderr)
        return 128 + e.signum
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def _main(argv, progress):
    ap = argparse.ArgumentParser(
        prog="scripts/calibrate.py",
        description="Measure every link profile (RTT, UDP rate and loss, "
        "TCP goodput) on the dumbbell and compare with its configuration.")
    ap.add_argument("--profile", action="append", default=[],
                    help="profile to calibrate (repeatable; default all)")
    ap.add_argument("--backend", default="auto",
                    choices=("auto", "netem", "userspace"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="results folder (default "
                    "results/calibration-<timestamp>)")
    ap.add_argument("--readme", metavar="FILE",
                    help="after a run of every profile, replace the "
                    "calibration table in FILE (make calibrate: README.md)")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    def usage(msg):
        print(f"error: {msg}", file=sys.stderr)
        return 2

    try:
        names = args.profile or profiles.profile_names()
        profs = [profiles.load_profile(n) for n in names]
        if not args.profile:
            profs.append(profiles.parse_profile(
                GE_CHECK_TOML, "(calibrate.py)", "ge-check"))
    except profiles.ProfileError as e:
        return usage(e)
    if not profs:
        return usage("no profiles in topologies/profiles/")
    if not 0 <= args.seed <= MAX_SEED:
        return usage(f"--seed must be a whole number from 0 to {MAX_SEED}")
    if os.geteuid() != 0:
        return usage("must run as root (Mininet)")
    try:
        check_tools(MEASURE_TOOLS)
    except TopologyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join(REPO, "results", f"calibration-{stamp}")
    created = not os.path.exists(out)
    try:
        os.makedirs(out, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        return usage(f"--out {out}: cannot write results there: "
                     f"{e.strerror or e}; give a folder that can be "
                     f"created and written")
    progress["out"], progress["created"] = out, created

    from mininet.log import setLogLevel
    setLogLevel("warning")
    doc = {"tool": "calibrate", "started_at": stamp, "backend": args.backend,
           "seed": args.seed, "versions": measure.tool_versions(),
           "method": {
               "ping": {"count": PING_COUNT, "interval_s": PING_INTERVAL,
                        "statistics": ["p50", "p99"]},
               "rate": {"load": RATE_LOAD, "seconds": RATE_SECONDS,
                        "directions": "each in turn"},
               "loss": {"load": LOSS_LOAD, "max_seconds": LOSS_MAX_SECONDS,
                        "max_pps": MAX_PPS, "queue_packets": LOSS_QUEUE,
                        "directions": "both at once"},
               "queue": {"frame_bytes": tolerance.MTU_FRAME,
                         "burst": f"2 x (queue + 1) + {BURST_EXTRA}, at "
                                  f"most {BURST_MAX}"},
               "tcp": {"seconds": TCP_SECONDS},
               "tolerances": {"rtt_abs_ms": tolerance.RTT_ABS_MS,
                              "rtt_rel": tolerance.RTT_REL,
                              "rtt_p99_abs_ms": tolerance.RTT_P99_ABS_MS,
                              "rtt_p99_rel": tolerance.RTT_P99_REL,
                              "rate_rel": tolerance.RATE_REL,
                              "loss_confidence": tolerance.CONFIDENCE,
                              "queue_abs_us": tolerance.QUEUE_ABS_US,
                              "queue_rel": tolerance.QUEUE_REL,
                              "timing_error_p99_us":
                                  contention.TIMING_ERROR_P99_LIMIT_US}},
           "profiles": []}

    def save():
        try:
            atomic_write(os.path.join(out, "calibration.json"),
                         json.dumps(doc, indent=1) + "\n")
            atomic_write(os.path.join(out, "calibration.md"), markdown(doc))
        except OSError as e:
            raise _SaveError(f"cannot write the results to {out}: "
                             f"{e.strerror or e}") from None
        progress["saved"] = True

    t0 = time.monotonic()
    failed = False
    if not any(p.name == "null" for p in profs):
        try:
            doc["baseline"] = baseline(args.backend, args.seed, log)
        except (TopologyError, backends.BackendError,
                measure.MeasureError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    try:
        for prof in profs:
            t = time.monotonic()
            log(f"{prof.name}: measuring ...")
            try:
                r = calibrate(prof, args.backend, args.seed, log)
            except (TopologyError, backends.BackendError,
                    measure.MeasureError) as e:
                r = {"profile": prof.to_dict(), "error": str(e),
                     "pass": False}
                log(f"error: {prof.name}: {e}")
            r["seconds"] = round(time.monotonic() - t, 1)
            doc["profiles"].append(r)
            failed |= not r["pass"]
            for line in r.get("failed", []):
                log(f"{prof.name}: FAIL {line}")
            if prof.name == "null" and "measurements" in r:
                doc["baseline"] = _baseline_of(r["measurements"]["ping"])
            save()
            if "error" in r and "sch_netem" in r["error"]:
                break      # same for every profile
        doc["seconds"] = round(time.monotonic() - t0, 1)
        doc["pass"] = not failed
        save()
    except _SaveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(markdown(doc), end="")
    print(f"\n{'all checks pass' if not failed else 'SOME CHECKS FAIL'}; "
          f"results in {os.path.relpath(out)} "
          f"({doc['seconds']:.0f} s)")
    if args.readme:
        if args.profile:
            log(f"{args.readme} left as it is: its table covers every "
                f"profile, this run only {', '.join(args.profile)}")
        else:
            try:
                update_readme(args.readme, doc)
            except _SaveError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            log(f"{args.readme}: calibration table updated")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
