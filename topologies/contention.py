"""What tells that a run's figures were made on a contended machine.

The emulator, the broker and the clients share a few cores. When they
fight for them, the emulator's frames leave late and every latency figure
carries the delay. Each run therefore records:

  - the machine's CPU time split from /proc/stat before and after the
    run: the share stolen by the hypervisor (steal) and the share busy;
  - the emulator's timing error p99 per link and direction (how late
    linkem wrote its frames against their schedule; linkem's stats), and
    linkem's own run-queue delay (time runnable but not running);
  - whether a timing error p99 exceeds TIMING_ERROR_P99_LIMIT_US: then the
    run says so in one line and in its link statistics.

Every process of the benchmark (loadgen, sink, linkem) also reports its
own run-queue delay in its JSON (resources.run_queue_delay_us).
"""

# Above this, linkem's timing error p99 says the emulated link did not
# keep its schedule. linkem runs SCHED_FIFO and polls before departures:
# on the 2-core development VM its p99 stays below ~60 us even with both
# cores loaded by other processes; 250 us is a twentieth of the shortest
# shipped round trip's 5 ms and more than a full-size frame's 121 us at
# 100 Mbit/s.
TIMING_ERROR_P99_LIMIT_US = 250.0
# A direction that carried fewer frames than this is not judged: below
# 100 frames a p99 is the one worst frame, and one frame late by a
# scheduler hiccup is not a late link.
MIN_FRAMES = 100

# /proc/stat's cpu line: user nice system idle iowait irq softirq steal
# guest guest_nice (guest time is counted in user already).
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq",
              "steal")


def cpu_times(path="/proc/stat"):
    """{field: clock ticks} of all CPUs together, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("cpu "):
                    vals = [int(v) for v in line.split()[1:]]
                    return dict(zip(CPU_FIELDS, vals))
    except (OSError, ValueError):
        pass
    return None


def cpu_shares(before, after):
    """What share of the CPU time between two cpu_times() readings was
    stolen and how much was busy (neither idle nor iowait)."""
    if not before or not after:
        return None
    d = {k: after.get(k, 0) - before.get(k, 0) for k in CPU_FIELDS}
    total = sum(d.values())
    if total <= 0:
        return None
    return {"ticks": total,
            "steal": d["steal"] / total,
            "busy": (total - d["idle"] - d["iowait"]) / total}


def timing_errors(links, min_frames=MIN_FRAMES):
    """{label: {direction: p99 us}} of every linkem's timing error, for
    the directions that carried at least min_frames frames. `links` is
    link_stats["links"] (label -> linkem's stats or None)."""
    out = {}
    for label, st in (links or {}).items():
        if not st:
            continue
        for key, name in (("a2b", "left_to_right"),
                          ("b2a", "right_to_left")):
            te = (st.get(key) or {}).get("timing_error") or {}
            if (te.get("count") or 0) >= min_frames and \
                    te.get("p99_us") is not None:
                out.setdefault(label, {})[name] = te["p99_us"]
    return out


def late(errors, limit_us=TIMING_ERROR_P99_LIMIT_US):
    """[(label, direction, p99)] of timing_errors() above limit_us."""
    return [(lab, d, v) for lab, dirs in sorted(errors.items())
            for d, v in sorted(dirs.items()) if v > limit_us]


def run_queue_delays(links):
    """{label: linkem's run-queue delay in us} (None where unknown)."""
    return {lab: ((st or {}).get("resources") or {}).get(
                "run_queue_delay_us")
            for lab, st in (links or {}).items()}


def late_line(late_list, limit_us, shares):
    """The one line a run prints when the emulator was late."""
    worst = max(late_list, key=lambda x: x[2])
    where = f"{worst[0]} {worst[1]}"
    more = f" and {len(late_list) - 1} more" if len(late_list) > 1 else ""
    steal = ""
    if shares:
        steal = (f"; CPU steal {shares['steal'] * 100:.1f} %, busy "
                 f"{shares['busy'] * 100:.0f} % during the run")
    return (f"warning: the link emulator kept its schedule badly: timing "
            f"error p99 {worst[2]:.0f} us on {where}{more} (limit "
            f"{limit_us:g} us){steal}; the CPUs were contended, so this "
            f"run's latency figures include the emulator's lateness")


def summary(links, before, after, limit_us=TIMING_ERROR_P99_LIMIT_US):
    """The "contention" record of a run's link statistics, and the line
    to print (None when the emulator kept time)."""
    shares = cpu_shares(before, after)
    errors = timing_errors(links)
    bad = late(errors, limit_us)
    rec = {
        "cpu_before": before, "cpu_after": after, "cpu": shares,
        "timing_error_p99_us": errors,
        "timing_error_limit_us": limit_us,
        "late": [{"link": lab, "direction": d, "p99_us": v}
                 for lab, d, v in bad],
        "emulator_late": bool(bad),
        "linkem_run_queue_delay_us": run_queue_delays(links),
    }
    return rec, (late_line(bad, limit_us, shares) if bad else None)
