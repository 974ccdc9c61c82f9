#!/usr/bin/python3
"""Calibration: does each link profile measure as configured?

    make calibrate                        # every profile
    /usr/bin/python3 scripts/calibrate.py --profile 3g --profile wifi
    /usr/bin/python3 scripts/calibrate.py --backend userspace

For each profile, on a 2+2 dumbbell, from l1 across to r1:

  RTT   100 pings of 56 bytes (98-byte frames) every 20 ms on an idle
        link; the median is compared with twice the one-way delay plus
        the frame's serialisation time both ways, within max(0.5 ms, 3 %).
        The median, not the minimum: it is what a typical packet sees,
        emulator lateness included, and it is unmoved by symmetric jitter.
  loss  UDP at 70 % of the link rate (so only the loss model drops),
        small datagrams to count many of them in at most 20 s, with the
        queue made 10000 frames deep (the "deep queue": the loss model
        acts before the queue, so this changes nothing measured, but a
        sender's catch-up burst after a CPU stall cannot become queue
        drops); the number lost must lie in the central 95 % interval of
        the loss model for that many frames (exact binomial for
        Bernoulli).
  rate  UDP offered at 120 % of the link rate for 6 s, with the deep
        queue too (a sender paused by the CPU for a few ms must not let
        the link idle: 40 frames are 5 ms at 100 Mbit/s); the delivery
        rate over the steady-state seconds, converted from iperf3's
        payload to whole Ethernet frames (+ UDP 8, IPv4 20, Ethernet 14
        bytes per datagram, as the link counts), within 3 % of what the
        path delivers: the rate, or, where the profile also shapes the
        access links, each hop's rate less the losses of the hops after
        it (tolerance.PathModel.delivered_rate_bps).
  TCP   iperf3 for 5 s (after 1 s not counted), goodput over the
        receiver's full seconds but the first, on the profile
        as it is, queue included, reported with the link's ceiling for
        full-size segments (1448 of 1514 bytes); no pass/fail: it depends
        on the congestion control's answer to the loss (the kernel's
        default is recorded).

RTT and loss share one topology, rate and TCP get one each, so the
emulator's counters (linkem's drops, its timing error) describe each part
alone; the loss part's show that only the loss model dropped frames.

Writes results/calibration-<timestamp>/calibration.json (everything,
including raw RTTs and the emulator's statistics) and calibration.md
(the table), atomically, after every profile. Prints the table. Exit
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

from topologies import backends, measure, profiles, tolerance  # noqa: E402
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
LOSS_TARGET_LOST = 400     # expected losses to aim for (+-10 % interval)
MAX_PPS = 4000             # keeps the emulator and iperf3 far from CPU limits
LOSS_QUEUE = 10000         # queue depth during the loss test (deep_queue)
MIN_UDP_PAYLOAD = 16       # iperf3's UDP header fits in 16 bytes
MAX_UDP_PAYLOAD = 1400
TCP_SECONDS = 5
TCP_MSS_FRAME = (1448, 1514)   # payload and frame of a full TCP segment
MEASURE_TOOLS = {"iperf3": "iperf3", "ping": "iputils-ping"}


def loss_plan(model):
    """(payload, seconds, frame_bps) for the loss test: datagrams as small
    as LOSS_LOAD of the rate allows at MAX_PPS (more datagrams, a tighter
    interval), for as many seconds as LOSS_TARGET_LOST expected losses
    need, between LOSS_MIN_SECONDS and LOSS_MAX_SECONDS."""
    rate, loss = model.rate_bps(), model.loss()
    budget = LOSS_LOAD * rate / 8                            # frame bytes/s
    frame = max(tolerance.udp_frame_bytes(MIN_UDP_PAYLOAD),
                min(tolerance.udp_frame_bytes(MAX_UDP_PAYLOAD),
                    math.ceil(budget / MAX_PPS)))
    payload = frame - tolerance.UDP_FRAME_OVERHEAD
    pps = min(MAX_PPS, budget / frame)  # full-size frames may need less load
    want = LOSS_TARGET_LOST / loss if loss > 0 else 0
    seconds = min(LOSS_MAX_SECONDS, max(LOSS_MIN_SECONDS,
                                        math.ceil(want / pps)))
    return payload, seconds, pps * frame * 8


def deep_queue(prof):
    """prof with every queue LOSS_QUEUE frames deep, for the loss and rate
    tests.

    The loss model decides before the queue and the transmitter's rate
    does not depend on the queue's depth, so the depth changes nothing
    these tests measure. But a sender starved of CPU for a few ms (other
    work on the machine) pauses, then catches up with a burst: a shallow
    queue (20 frames for 3g) would drop part of the burst (losses the loss
    model did not make), or run empty during the pause (idle link time
    that is not the link's). TCP runs on the profile's own queue."""
    d = {n: dataclasses.replace(prof.direction(n), queue_packets=LOSS_QUEUE,
                                queue_bytes=None)
         for n in profiles.DIRECTIONS}
    return dataclasses.replace(prof, **d)


def rate_payload(rate_bps):
    """Datagram payload for the rate test: about 500 frames/s so that a
    4 s window counts enough frames to resolve 0.5 %, full-size frames
    on fast links."""
    frame = rate_bps / 8 / 500
    frame = max(200, min(tolerance.udp_frame_bytes(MAX_UDP_PAYLOAD), frame))
    return int(frame) - tolerance.UDP_FRAME_OVERHEAD


def _linkem_summary(stats):
    """The bits of linkem's stats worth a glance, per direction."""
    if not stats or not stats.get("links"):
        return None
    out = {}
    for label, st in stats["links"].items():
        if not st or "a2b" not in st:
            continue
        out[label] = {}
        for d, name in (("a2b", "left_to_right"), ("b2a", "right_to_left")):
            s = st[d]
            out[label][name] = {
                "frames_in": s["frames_in"], "frames_out": s["frames_out"],
                "dropped_loss": s["dropped_loss"],
                "dropped_queue": s["dropped_queue"],
                "timing_error_us": s.get("timing_error_us"),
            }
    return out


def calibrate(prof, backend, seed, log):
    model = tolerance.PathModel(prof)
    res = {"profile": prof.to_dict(), "path": model.hops,
           "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    rate = model.rate_bps()                 # what the offered load is set by
    delivered = model.delivered_rate_bps()  # what reaches r1 (= rate when
    p_loss = model.loss()                   # only the bottleneck is shaped)
    checks = {}

    deep = deep_queue(prof)
    # Topology 1 (deep queue): idle-link RTT, then loss below the rate.
    with dumbbell(deep, backend=backend, hosts=2, seed=seed, log=log) as db:
        res["topology"] = db.describe()
        log(f"{prof.name}: backend {db.backend_note}")
        ping = measure.ping(db, "l1", "r1", PING_COUNT, PING_INTERVAL)
        payload, seconds, frame_bps = loss_plan(model)
        loss = measure.udp(db, "l1", "r1", frame_bps, payload, seconds)
        db.check()
    res["link_stats_idle_and_loss"] = db.link_stats
    # Topology 2 (deep queue): the link saturated.
    with dumbbell(deep, backend=backend, hosts=2, seed=seed, log=log) as db:
        udp = measure.udp(db, "l1", "r1", RATE_LOAD * rate,
                          rate_payload(rate), RATE_SECONDS)
        db.check()
    res["link_stats_rate"] = db.link_stats
    # Topology 3 (the profile as it is): TCP.
    with dumbbell(prof, backend=backend, hosts=2, seed=seed, log=log) as db:
        res["topology_tcp"] = db.describe()
        tcp = measure.tcp(db, "l1", "r1", TCP_SECONDS)
        db.check()
    res["link_stats_tcp"] = db.link_stats

    exp_rtt = model.rtt_ms(ping["frame_bytes"])
    checks["rtt"] = {
        "expected_ms": exp_rtt, "measured_ms": ping["median_ms"],
        "tolerance_ms": tolerance.rtt_tolerance_ms(exp_rtt),
        "pass": tolerance.within_rtt(ping["median_ms"], exp_rtt)}
    checks["rate"] = {
        "configured_bps": rate,
        "expected_bps": delivered, "measured_bps": udp["delivered_frame_bps"],
        "tolerance_bps": tolerance.RATE_REL * delivered,
        "pass": tolerance.within_rate(udp["delivered_frame_bps"], delivered)}
    n, k = loss["datagrams"], loss["lost"]
    lo, hi = model.loss_interval(n)
    checks["loss"] = {
        "expected": p_loss, "datagrams": n, "lost": k,
        "measured": k / n if n else None, "interval_lost": [lo, hi],
        "interval": [lo / n, hi / n] if n else None,
        "confidence": tolerance.CONFIDENCE,
        "pass": n > 0 and lo <= k <= hi}
    # The userspace emulator counts its own queue drops: in the loss test
    # there should be none (else the sender's bursts, not the loss model,
    # dropped frames, and the loss figure is not the model's).
    em = _linkem_summary(res["link_stats_idle_and_loss"]) or {}
    qd = [em[h]["left_to_right"]["dropped_queue"] for h in model.hops
          if h in em]
    checks["loss"]["emulator_queue_drops"] = sum(qd) if qd else None
    checks["loss"]["receiver_drops"] = sum(loss["receiver_drops"].values())
    ceiling = delivered * TCP_MSS_FRAME[0] / TCP_MSS_FRAME[1]
    checks["tcp"] = {"goodput_bps": tcp["goodput_bps"],
                     "ceiling_bps": ceiling,
                     "share": tcp["goodput_bps"] / ceiling}
    res["measurements"] = {"ping": ping, "udp_loss": loss, "udp_rate": udp,
                           "tcp": tcp}
    res["checks"] = checks
    res["emulator"] = {
        "idle_and_loss": _linkem_summary(res["link_stats_idle_and_loss"]),
        "rate": _linkem_summary(res["link_stats_rate"]),
        "tcp": _linkem_summary(res["link_stats_tcp"])}
    res["pass"] = all(c["pass"] for c in checks.values() if "pass" in c)
    return res


BASELINE_TOML = ('description = "the testbed alone: no delay, no loss, '
                 '10 Gbit/s"\nrate = "10Gbit"\ndelay = "0ms"\nloss = "0%"\n')


def baseline(backend, seed, log):
    """RTT l1 -> r1 through the same emulator set to do nothing: the part
    of every measured RTT that is the testbed's own (veths, bridges, the
    emulator's I/O, wake-ups). Reported, not subtracted."""
    prof = profiles.parse_profile(BASELINE_TOML, "(calibrate.py)",
                                  "baseline")
    with dumbbell(prof, backend=backend, hosts=2, seed=seed,
                  log=log) as db:
        ping = measure.ping(db, "l1", "r1", PING_COUNT, PING_INTERVAL)
    return {k: ping[k] for k in ("min_ms", "median_ms", "p90_ms", "max_ms",
                                 "received")}


def _mark(ok):
    return "pass" if ok else "**FAIL**"


def _queue_note(loss):
    """Losses the loss model did not make, if any were seen."""
    note = ""
    if loss.get("emulator_queue_drops"):
        note += f"; {loss['emulator_queue_drops']} queue drops"
    if loss.get("receiver_drops"):
        note += f"; {loss['receiver_drops']} receiver drops"
    return note


def markdown(doc):
    rows = [
        f"Rate and loss are measured with every queue forced to "
        f"{LOSS_QUEUE:,} frames, not the profile's own (so that a sender's "
        f"catch-up burst after a CPU stall cannot turn into queue drops); "
        f"RTT is measured on that deep queue too, but idle, and TCP on "
        f"the profile as it is.",
        "",
        "| profile | backend | RTT expected (ms) | RTT median (ms) | | "
        "rate expected (Mb/s) | UDP delivered (Mb/s, frames) | | "
        "loss configured | loss measured (95% interval, n) | | "
        "TCP goodput (Mb/s) | result |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: "
        "| --- | ---: | --- |",
    ]
    for r in doc["profiles"]:
        name = r["profile"]["name"]
        if "error" in r:
            rows.append(f"| {name} | | | | | | | | | | | | **ERROR**: "
                        f"{r['error']} |")
            continue
        c = r["checks"]
        lo, hi = c["loss"]["interval"]
        rate_err = (c["rate"]["measured_bps"] / c["rate"]["expected_bps"] -
                    1) * 100
        rows.append(
            f"| {name} | {r['topology']['backend']} "
            f"| {c['rtt']['expected_ms']:.2f} | {c['rtt']['measured_ms']:.2f} "
            f"| {_mark(c['rtt']['pass'])} "
            f"| {c['rate']['expected_bps'] / 1e6:.3g} "
            f"| {c['rate']['measured_bps'] / 1e6:.5g} ({rate_err:+.2f}%) "
            f"| {_mark(c['rate']['pass'])} "
            f"| {c['loss']['expected'] * 100:.3g}% "
            f"| {c['loss']['measured'] * 100:.3g}% ({lo * 100:.3g}-"
            f"{hi * 100:.3g}%, n={c['loss']['datagrams']}"
            f"{_queue_note(c['loss'])}) "
            f"| {_mark(c['loss']['pass'])} "
            f"| {c['tcp']['goodput_bps'] / 1e6:.3g} "
            f"({c['tcp']['share'] * 100:.0f}% of ceiling) "
            f"| {'pass' if r['pass'] else '**FAIL**'} |")
    v = doc.get("versions", {})
    b = doc.get("baseline")
    base = (f" The testbed alone (same path, emulator set to no delay and "
            f"10 Gbit/s) has a median RTT of {b['median_ms']:.3f} ms, "
            f"included in every measured RTT." if b else "")
    rows += [
        "",
        f"Calibration {doc['started_at']}, kernel {v.get('kernel')}, "
        f"{v.get('iperf3')}, seed {doc['seed']}; l1 -> r1 on a 2+2 "
        f"dumbbell. RTT: median of {PING_COUNT} pings of 98-byte frames, "
        f"expected 2 x delay + the frame's serialisation both ways, "
        f"tolerance max({tolerance.RTT_ABS_MS:g} ms, "
        f"{tolerance.RTT_REL * 100:g}%). Rate: UDP at "
        f"{RATE_LOAD * 100:.0f}% of the rate, delivered whole Ethernet "
        f"frames per second, tolerance {tolerance.RATE_REL * 100:g}%; "
        f"expected: the configured rate, less the losses of later hops "
        f"where access links are shaped too. "
        f"Loss: UDP at up to {LOSS_LOAD * 100:.0f}% of the rate, datagrams "
        f"lost "
        f"against the central {tolerance.CONFIDENCE * 100:g}% interval of "
        f"the loss model for n frames. Loss and rate run with a "
        f"{LOSS_QUEUE}-frame queue, TCP on the profile as it is. TCP: "
        f"iperf3 goodput, ceiling = rate x 1448/1514 (no pass/fail)." +
        base,
    ]
    return "\n".join(rows) + "\n"


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
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    def usage(msg):
        print(f"error: {msg}", file=sys.stderr)
        return 2

    try:
        names = args.profile or profiles.profile_names()
        profs = [profiles.load_profile(n) for n in names]
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
                        "statistic": "median"},
               "rate": {"load": RATE_LOAD, "seconds": RATE_SECONDS},
               "loss": {"load": LOSS_LOAD, "max_seconds": LOSS_MAX_SECONDS,
                        "queue_packets": LOSS_QUEUE},
               "tcp": {"seconds": TCP_SECONDS},
               "tolerances": {"rtt_abs_ms": tolerance.RTT_ABS_MS,
                              "rtt_rel": tolerance.RTT_REL,
                              "rate_rel": tolerance.RATE_REL,
                              "loss_confidence": tolerance.CONFIDENCE}},
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
    return 1 if failed else 0


class _SaveError(Exception):
    """The results could not be written; one line."""


if __name__ == "__main__":
    sys.exit(main())
